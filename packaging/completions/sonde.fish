# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sonde_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_sonde_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sonde_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sonde_using_subcommand
    set -l cmd (__fish_sonde_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sonde -n "__fish_sonde_needs_command" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_needs_command" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_needs_command" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "run" -d 'Run the agent: scheduler and probes until SIGINT/SIGTERM'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "probe" -d 'Run one probe (or a health set) now and exit with its Nagios code (0 ok, 1 warning, 2 critical, 3 unknown)'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "status" -d 'Print the running agent\'s health sets and probe states (from its /api/v1/health); exit 0 healthy, 1 degraded, 2 unhealthy, 3 otherwise'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "list" -d 'List probes with kind, health set, schedule and next fire time'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "validate" -d 'Check the configuration; exit 0 when valid, 2 when not'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "lab" -d 'Run the lab: a loopback emulation of the cloud side (ACS metadata and tokens, the push proxy, an APNs-shaped device endpoint, an SMTP mailbox)'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "demo" -d 'Start the lab, make and register an OAuth certificate, and run the shipped PushNotifications.Proxy health set against it until Ctrl-C'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "silence" -d 'Silence alerts: one-off windows kept in the store, seen by the running agent'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "init" -d 'Write a commented starter configuration for a use case, and validate it'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "completions" -d 'Print the shell completion script for SHELL on stdout'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "man" -d 'Write the man pages, sonde(1) and one per subcommand, into DIR'
complete -c sonde -n "__fish_sonde_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand run" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand run" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand run" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand probe" -l health-set -d 'Run every enabled probe of this health set (case-insensitive), each after the probes it depends on, and exit with the worst code' -r
complete -c sonde -n "__fish_sonde_using_subcommand probe" -s f -l format -d 'text, json (one object per probe and line), nagios, or ma (as Invoke-MonitoringProbe | Format-List)' -r -f -a "text\t''
json\t''
nagios\t''
ma\t''"
complete -c sonde -n "__fish_sonde_using_subcommand probe" -l remote -d 'Run it in the agent at this URL (e.g. http://127.0.0.1:9323) instead of here; the API token comes from SONDE_API_TOKEN or --token-file' -r
complete -c sonde -n "__fish_sonde_using_subcommand probe" -l token-file -d 'A file holding the API token for --remote' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand probe" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand probe" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand probe" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand status" -l remote -d 'The agent\'s URL (default: http:// plus [api] listen of the config)' -r
complete -c sonde -n "__fish_sonde_using_subcommand status" -s f -l format -r -f -a "text\t''
json\t''"
complete -c sonde -n "__fish_sonde_using_subcommand status" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand status" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand status" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand list" -s f -l format -r -f -a "text\t''
json\t''"
complete -c sonde -n "__fish_sonde_using_subcommand list" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand list" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand list" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand validate" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand validate" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand validate" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand lab" -l listen -d 'HTTP listen address (metadata, tokens, push, devices, admin API)' -r
complete -c sonde -n "__fish_sonde_using_subcommand lab" -l smtp-listen -d 'SMTP listen address of the test mailbox' -r
complete -c sonde -n "__fish_sonde_using_subcommand lab" -l tenant -d 'The tenant\'s domain; its id is derived from it' -r
complete -c sonde -n "__fish_sonde_using_subcommand lab" -l register -d 'Register this certificate (PEM or DER) as a credential at start; repeatable' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand lab" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand lab" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand lab" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand demo" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand demo" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand demo" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -f -a "add" -d 'Silence a probe (`NAME`), a health set (`set:NAME`) or everything (`*`)'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -f -a "list" -d 'The silences not yet over'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -f -a "remove" -d 'End a silence now'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and not __fish_seen_subcommand_from add list remove help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -l for -d 'How long, from now (or from --from): `2h`, `30m`' -r
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -l from -d 'Start later: an RFC 3339 time' -r
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -l comment -r
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from list" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from remove" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from help" -f -a "add" -d 'Silence a probe (`NAME`), a health set (`set:NAME`) or everything (`*`)'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from help" -f -a "list" -d 'The silences not yet over'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from help" -f -a "remove" -d 'End a silence now'
complete -c sonde -n "__fish_sonde_using_subcommand silence; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -f -a "exchange" -d 'Exchange hybrid push notifications: the PushNotifications.Proxy health set (OAuth certificate, auth metadata, token issuance, push connectivity)'
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -f -a "blackbox" -d 'A blackbox starter: an HTTP check and a TLS endpoint\'s certificate'
complete -c sonde -n "__fish_sonde_using_subcommand init; and not __fish_seen_subcommand_from exchange blackbox help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l tenant -d 'The tenant\'s domain, e.g. contoso.onmicrosoft.com' -r
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l auth-cert -d 'The OAuth (Auth) certificate as exported: .cer/.crt, PEM or DER' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l key -d 'The credential that signs the tokens: a .pfx, or a PEM holding key and certificate' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l tenant-id -d 'The tenant id (a GUID): the realm the auth metadata must name' -r
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l app-id -d 'The dedicated Exchange hybrid application\'s id (a GUID): adds its Entra token probe' -r
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -s o -l output -d 'The file to write' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -l force -d 'Overwrite the file if it exists'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from exchange" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from blackbox" -s o -l output -d 'The file to write' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from blackbox" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from blackbox" -l force -d 'Overwrite the file if it exists'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from blackbox" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from blackbox" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from help" -f -a "exchange" -d 'Exchange hybrid push notifications: the PushNotifications.Proxy health set (OAuth certificate, auth metadata, token issuance, push connectivity)'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from help" -f -a "blackbox" -d 'A blackbox starter: an HTTP check and a TLS endpoint\'s certificate'
complete -c sonde -n "__fish_sonde_using_subcommand init; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand completions" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand completions" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand completions" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand man" -s c -l config -d 'Config file (default ./sonde.toml)' -r -F
complete -c sonde -n "__fish_sonde_using_subcommand man" -s h -l help -d 'Print help'
complete -c sonde -n "__fish_sonde_using_subcommand man" -s V -l version -d 'Print version'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "run" -d 'Run the agent: scheduler and probes until SIGINT/SIGTERM'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "probe" -d 'Run one probe (or a health set) now and exit with its Nagios code (0 ok, 1 warning, 2 critical, 3 unknown)'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "status" -d 'Print the running agent\'s health sets and probe states (from its /api/v1/health); exit 0 healthy, 1 degraded, 2 unhealthy, 3 otherwise'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "list" -d 'List probes with kind, health set, schedule and next fire time'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "validate" -d 'Check the configuration; exit 0 when valid, 2 when not'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "lab" -d 'Run the lab: a loopback emulation of the cloud side (ACS metadata and tokens, the push proxy, an APNs-shaped device endpoint, an SMTP mailbox)'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "demo" -d 'Start the lab, make and register an OAuth certificate, and run the shipped PushNotifications.Proxy health set against it until Ctrl-C'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "silence" -d 'Silence alerts: one-off windows kept in the store, seen by the running agent'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "init" -d 'Write a commented starter configuration for a use case, and validate it'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "completions" -d 'Print the shell completion script for SHELL on stdout'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "man" -d 'Write the man pages, sonde(1) and one per subcommand, into DIR'
complete -c sonde -n "__fish_sonde_using_subcommand help; and not __fish_seen_subcommand_from run probe status list validate lab demo silence init completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sonde -n "__fish_sonde_using_subcommand help; and __fish_seen_subcommand_from silence" -f -a "add" -d 'Silence a probe (`NAME`), a health set (`set:NAME`) or everything (`*`)'
complete -c sonde -n "__fish_sonde_using_subcommand help; and __fish_seen_subcommand_from silence" -f -a "list" -d 'The silences not yet over'
complete -c sonde -n "__fish_sonde_using_subcommand help; and __fish_seen_subcommand_from silence" -f -a "remove" -d 'End a silence now'
complete -c sonde -n "__fish_sonde_using_subcommand help; and __fish_seen_subcommand_from init" -f -a "exchange" -d 'Exchange hybrid push notifications: the PushNotifications.Proxy health set (OAuth certificate, auth metadata, token issuance, push connectivity)'
complete -c sonde -n "__fish_sonde_using_subcommand help; and __fish_seen_subcommand_from init" -f -a "blackbox" -d 'A blackbox starter: an HTTP check and a TLS endpoint\'s certificate'
