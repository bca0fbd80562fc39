//! `sonde demo`: the lab, a freshly made OAuth certificate registered with it (on
//! the Exchange Online principal for ACS, and on a dedicated hybrid app in the
//! lab's directory), and the agent running the shipped PushNotifications.Proxy
//! and Exchange.HybridApp health sets against it, printing each result as it
//! comes. The agent also serves its API, `/metrics` and the status page on a
//! free loopback port, whose URLs the demo prints first; POST endpoints stay
//! off (no token: see `api_table`). Everything lives in a temporary directory
//! that is removed on exit.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Loader;
use crate::credential;
use crate::lab::{self, Lab, LabConfig};
use crate::outcome::RunRecord;

/// The shipped health set, built into the binary so that the demo runs from any
/// directory.
pub const HEALTH_SET: &str = include_str!("../probes/exchange-push-proxy.toml");

/// The shipped Exchange.HybridApp health set.
pub const HYBRID_APP_SET: &str = include_str!("../probes/exchange-hybrid-app.toml");

/// The demo's dedicated Exchange hybrid app and read-only monitoring app.
pub(crate) const HYBRID_APP_NAME: &str = "ExchangeServerApp-sonde-demo";
pub(crate) const MONITORING_APP_NAME: &str = "sonde monitoring (Application.Read.All)";

/// The demo's tenant.
pub(crate) const TENANT: &str = "contoso.onmicrosoft.com";

/// The OAuth certificate as the seed's script makes it: self-signed, RSA 2048,
/// five years, Exchange's subject name.
pub(crate) const OAUTH_SUBJECT: &str = "Microsoft Exchange Server Auth Certificate";
const FIVE_YEARS: i64 = 5 * 365 * 86_400 + 86_400;

/// Files the demo writes, in `dir`.
pub(crate) struct DemoFiles {
    pub config: PathBuf,
    pub env: HashMap<String, String>,
    /// The lab's id of the OAuth certificate (`DELETE /admin/credentials/{id}`
    /// revokes it).
    pub oauth_credential: u64,
}

/// Makes the OAuth certificate, registers it with `lab`, and writes the config
/// that points the shipped health set at the lab. `every` is the probes' interval.
pub(crate) fn prepare(
    dir: &Path,
    lab: &Lab,
    http: SocketAddr,
    smtp: SocketAddr,
    now: i64,
    every: &str,
) -> anyhow::Result<DemoFiles> {
    let oauth = credential::generate_self_signed(OAUTH_SUBJECT, 2048, now - 60, now + FIVE_YEARS)
        .context("cannot make the OAuth certificate")?;
    let cert_path = dir.join("OAuthCert.cer");
    std::fs::write(&cert_path, oauth.credential.cert_der())
        .context("cannot write OAuthCert.cer")?;
    let key_path = dir.join("oauth-credential.pem");
    std::fs::write(
        &key_path,
        format!("{}{}", oauth.key_pkcs8_pem, oauth.cert_pem),
    )
    .context("cannot write the credential")?;
    restrict(&key_path);
    let oauth_credential = lab
        .state()
        .register(
            oauth.credential.cert_der(),
            oauth.credential.not_before(),
            oauth.credential.not_after(),
        )
        .map_err(|e| anyhow::anyhow!("cannot register the OAuth certificate: {e}"))?
        .id;
    std::fs::write(dir.join("exchange-push-proxy.toml"), HEALTH_SET)
        .context("cannot write the health set")?;
    std::fs::write(dir.join("exchange-hybrid-app.toml"), HYBRID_APP_SET)
        .context("cannot write the hybrid app health set")?;
    // The directory as a tenant looks after the CVE-2025-53786 clean-up: the Auth
    // certificate on a dedicated hybrid app (not on the shared principal), and a
    // monitoring app allowed to read app registrations.
    let monitoring =
        credential::generate_self_signed("sonde monitoring", 2048, now - 60, now + 365 * 86_400)
            .context("cannot make the monitoring app's certificate")?;
    let graph_key_path = dir.join("graph-credential.pem");
    std::fs::write(
        &graph_key_path,
        format!("{}{}", monitoring.key_pkcs8_pem, monitoring.cert_pem),
    )
    .context("cannot write the monitoring app's credential")?;
    restrict(&graph_key_path);
    let hybrid_app_id = crate::guid::from_name(HYBRID_APP_NAME);
    let monitoring_app_id = crate::guid::from_name(MONITORING_APP_NAME);
    {
        let auth = lab::graph::KeyCredential::new(
            oauth.credential.cert_der(),
            oauth.credential.not_before(),
            oauth.credential.not_after(),
        )
        .map_err(|e| anyhow::anyhow!("cannot upload the Auth certificate: {e}"))?;
        let reader = lab::graph::KeyCredential::new(
            monitoring.credential.cert_der(),
            monitoring.credential.not_before(),
            monitoring.credential.not_after(),
        )
        .map_err(|e| anyhow::anyhow!("cannot register the monitoring certificate: {e}"))?;
        let mut state = lab.state();
        state
            .graph
            .app(&hybrid_app_id, HYBRID_APP_NAME)
            .key_credentials
            .push(auth);
        let app = state.graph.app(&monitoring_app_id, MONITORING_APP_NAME);
        app.key_credentials.push(reader);
        app.roles = vec![lab::graph::READ_ALL.to_string()];
    }
    let base = format!("http://{http}");
    let mailbox = lab::default_mailbox(TENANT);
    let config = dir.join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `sonde demo`: the shipped health sets, pointed at the lab.
include = ["exchange-push-proxy.toml", "exchange-hybrid-app.toml"]

[agent]
drain_timeout = "5s"

# Beyond connectivity: a tagged mail to the test mailbox must raise the badge
# on its device.
[[probe]]
name = "push-end-to-end"
kind = "push"
health_set = "PushNotifications.Proxy"
every = "30s"
timeout = "45s"
depends_on = ["push-connectivity"]
mode = "end_to_end"
smtp_host = "{smtp_host}"
smtp_port = {smtp_port}
tls = "none"
from = "sonde@{TENANT}"
to = "{mailbox}"
badge_url = "{base}/devices/{device}"
badge_pointer = "/badge"
deadline = "30s"
warn_latency = "10s"
poll_every = "250ms"
"#,
            smtp_host = smtp.ip(),
            smtp_port = smtp.port(),
            device = lab::DEFAULT_DEVICE,
        ),
    )
    .context("cannot write sonde.toml")?;
    let env: HashMap<String, String> = [
        ("SONDE_TENANT", TENANT.to_string()),
        ("SONDE_OAUTH_CERT", cert_path.display().to_string()),
        ("SONDE_OAUTH_THUMBPRINT", oauth.credential.thumbprint_hex()),
        ("SONDE_OAUTH_KEY", key_path.display().to_string()),
        ("SONDE_ACS_BASE", base.clone()),
        ("SONDE_PUSH_PROXY_URL", format!("{base}/PushNotifications")),
        ("SONDE_HYBRID_APP_ID", hybrid_app_id),
        ("SONDE_GRAPH_CLIENT_ID", monitoring_app_id),
        ("SONDE_GRAPH_KEY", graph_key_path.display().to_string()),
        ("SONDE_ENTRA_BASE", base.clone()),
        ("SONDE_GRAPH_URL", base.clone()),
        ("SONDE_EVERY", every.to_string()),
        ("SONDE_CERT_EVERY", every.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(DemoFiles {
        config,
        env,
        oauth_credential,
    })
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_path: &Path) {}

/// One result as a line for people.
pub(crate) fn line(r: &RunRecord) -> String {
    format!(
        "{}  {:<8}  {:<18}  {}",
        r.outcome.started_at.format("%H:%M:%S"),
        r.outcome.status.as_str().to_uppercase(),
        r.probe,
        r.outcome.summary
    )
}

/// Runs the demo until `shutdown`.
pub async fn run(clock: Arc<dyn Clock>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("sonde-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(&dir, clock, shutdown).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &Path,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    writeln!(
        out,
        "sonde demo: making the lab's signing key, the OAuth certificate and the monitoring app's (RSA 2048)..."
    )?;
    let now = clock.now().timestamp();
    let signer = credential::generate_self_signed(
        "sonde lab ACS signing",
        2048,
        now - 60,
        now + 2 * 365 * 86_400,
    )
    .context("cannot make the lab's signing key")?;
    let lab = Lab::new(TENANT, signer.credential, clock.clone());
    let lab_config = LabConfig {
        listen: "127.0.0.1:0".parse()?,
        smtp_listen: "127.0.0.1:0".parse()?,
        tenant_domain: TENANT.into(),
    };
    let lab_stop = CancellationToken::new();
    let mut running = lab::start(&lab_config, lab, lab_stop.clone())
        .await
        .context("cannot start the lab")?;
    let files = prepare(dir, &running.lab, running.http, running.smtp, now, "10s")?;
    let base = running.base_url();
    writeln!(
        out,
        "lab:      {base} (tenant {TENANT}, id {})",
        running.lab.tenant_id()
    )?;
    writeln!(
        out,
        "          SMTP {} for {}",
        running.smtp,
        lab::default_mailbox(TENANT)
    )?;
    writeln!(out, "config:   {}", files.config.display())?;
    let with_api =
        std::fs::read_to_string(&files.config).context("cannot read the demo's sonde.toml")?;
    let mut result = Ok(());
    for attempt in 1..=API_ATTEMPTS {
        let listen = free_loopback_port().context("cannot find a free loopback port")?;
        std::fs::write(&files.config, format!("{with_api}{}", api_table(listen)))
            .context("cannot write sonde.toml")?;
        let env = files.env.clone();
        let lookup = move |k: &str| env.get(k).cloned().or_else(|| std::env::var(k).ok());
        let config = Loader { env: &lookup }
            .load(&files.config)
            .map_err(|e| anyhow::anyhow!("the demo's configuration is invalid:\n{e}"))?;
        for line in urls(listen, &base, files.oauth_credential) {
            writeln!(out, "{line}")?;
        }
        writeln!(out)?;
        match crate::agent::run_with(config, clock.clone(), shutdown.clone(), |r| {
            crate::println!("{}", line(r));
        })
        .await
        {
            // Another program took the port between our look and the
            // agent's bind: nothing has run yet, so try another.
            Err(crate::agent::AgentError::Api(e)) if attempt < API_ATTEMPTS => {
                writeln!(out, "{e}; trying another port")?;
            }
            ended => {
                result = ended.map_err(|e| anyhow::anyhow!("{e}"));
                break;
            }
        }
    }
    lab_stop.cancel();
    while running.tasks.join_next().await.is_some() {}
    result
}

/// How many free ports the demo tries for its API before giving up.
const API_ATTEMPTS: u32 = 3;

/// A port free on loopback now, as the kernel picks one for port 0. The agent
/// binds `[api] listen` itself; the moment between this look and its bind is
/// covered by trying again (`API_ATTEMPTS`).
fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// The demo's `[api]` table: loopback only, and no token, so the POST
/// endpoints (on-demand runs, reload) answer 403. A token would have to be
/// printed for anyone to use it, and sonde prints no secret; the demo prints
/// every result as it comes anyway.
pub(crate) fn api_table(listen: SocketAddr) -> String {
    format!(
        "\n# The API, /metrics and the status page, on a free loopback port.\n\
         # No token: POST endpoints are refused in the demo.\n\
         [api]\nlisten = \"{listen}\"\n"
    )
}

/// What the demo prints about where to look and what to try.
pub(crate) fn urls(listen: SocketAddr, lab: &str, oauth_credential: u64) -> Vec<String> {
    let at = format!("http://{listen}");
    vec![
        format!("status:   {at}/"),
        format!("api:      {at}/api/v1/health  {at}/api/v1/probes"),
        format!("metrics:  {at}/metrics"),
        format!("healthz:  {at}/healthz"),
        format!("try:      curl -X PUT {lab}/admin/faults -H 'content-type: application/json' -d '{{\"metadata\":\"5xx\"}}'"),
        format!("          curl -X DELETE {lab}/admin/faults"),
        format!("          curl -X DELETE {lab}/admin/credentials/{oauth_credential}   (revoke the OAuth certificate)"),
        "          POST endpoints are off in the demo (no token); Ctrl-C stops it".to_string(),
    ]
}
