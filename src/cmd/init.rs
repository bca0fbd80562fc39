//! `sonde init`, `sonde completions` and the hidden `sonde man`: the commands
//! that write files for an operator or a package rather than probe anything.

use std::path::Path;

use super::{chain, CmdResult, Done, Failure};
use crate::cli::{InitTemplate, Shell};

/// `sonde init exchange|blackbox`: writes a validated starter config and says
/// what is still to fill in.
pub fn init(template: &InitTemplate) -> CmdResult {
    crate::init::run(template)
        .map(|written| Done {
            stdout: written.to_string(),
            ..Done::default()
        })
        .map_err(|e| Failure::unknown(chain(&e)))
}

/// `sonde completions SHELL`: the completion script on stdout.
pub fn completions(shell: Shell) -> CmdResult {
    Ok(Done {
        stdout: String::from_utf8_lossy(&crate::cli::completions(shell)).into_owned(),
        ..Done::default()
    })
}

/// `sonde man DIR`: writes the man pages generated from the clap definitions.
pub fn man(dir: &Path) -> CmdResult {
    for (name, page) in crate::cli::man_pages() {
        let path = dir.join(&name);
        std::fs::write(&path, page)
            .map_err(|e| Failure::unknown(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(Done::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_subcommands() {
        let done = completions(Shell::Bash).unwrap();
        assert!(done.stdout.contains("validate"), "{}", done.stdout);
        assert_eq!(done.code, 0);
    }

    #[test]
    fn man_writes_one_page_per_command_and_reports_an_unwritable_directory() {
        let dir = tempfile::tempdir().unwrap();
        man(dir.path()).unwrap();
        assert!(dir.path().join("sonde.1").exists());
        assert!(dir.path().join("sonde-run.1").exists());
        let e = man(&dir.path().join("missing")).unwrap_err();
        assert!(e.stderr.starts_with("sonde: cannot write "), "{}", e.stderr);
        assert_eq!(e.code, super::super::EXIT_UNKNOWN);
    }
}
