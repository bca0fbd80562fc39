//! `sonde lab`: the loopback emulation of the cloud side, with the certificates
//! of `--register` registered first; prints where everything listens and serves
//! until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{chain, Failure};
use crate::clock::Clock;
use crate::lab::{self, Lab, LabConfig};
// Output that ends quietly on a closed pipe (see `output::write_stdout`).
use crate::println;

/// The lab's settings from the command line.
pub struct LabArgs {
    pub listen: SocketAddr,
    pub smtp_listen: SocketAddr,
    pub tenant: String,
    pub register: Vec<PathBuf>,
}

/// Starts the lab and serves until a signal stops it.
pub async fn lab(args: LabArgs, clock: Arc<dyn Clock>) -> Result<(), Failure> {
    let LabArgs {
        listen,
        smtp_listen,
        tenant,
        register,
    } = args;
    let now = clock.now().timestamp();
    let signer = crate::credential::generate_self_signed(
        "sonde lab ACS signing",
        2048,
        now - 60,
        now + 2 * 365 * 86_400,
    )
    .map_err(|e| Failure::unknown(format!("cannot make the lab's signing key: {}", chain(&e))))?;
    let lab = Lab::new(&tenant, signer.credential, clock);
    for file in &register {
        let (der, start, end) = read_certificate(file)?;
        let r = lab
            .state()
            .register(&der, start, end)
            .map_err(Failure::unknown)?;
        println!(
            "registered {} (thumbprint {})",
            file.display(),
            r.thumbprint
        );
    }
    let shutdown = CancellationToken::new();
    super::signal::shutdown_on_signals(shutdown.clone())
        .map_err(|e| Failure::unknown(format!("cannot install signal handlers: {}", chain(&e))))?;
    let config = LabConfig {
        listen,
        smtp_listen,
        tenant_domain: tenant.clone(),
    };
    let mut running = lab::start(&config, lab, shutdown.clone())
        .await
        .map_err(|e| Failure::unknown(format!("the lab cannot start: {}", chain(&e))))?;
    let base = running.base_url();
    let id = running.lab.tenant_id();
    println!("sonde lab for tenant {tenant} (id {id})");
    println!("  ACS metadata   {base}/metadata/json/1/?realm={tenant}");
    println!("  OpenID         {base}/{id}/v2.0/.well-known/openid-configuration");
    println!("  token (ACS)    {base}/{id}/tokens/OAuth/2");
    println!("  token (Entra)  {base}/{id}/oauth2/v2.0/token");
    println!("  push proxy     {base}/PushNotifications");
    println!("  devices        {base}/devices/<token>, APNs-style POST {base}/3/device/<token>");
    println!(
        "  SMTP mailbox   {} for {}",
        running.smtp,
        lab::default_mailbox(&tenant)
    );
    println!(
        "  admin          {base}/admin/state, /admin/credentials, /admin/faults, /admin/mailboxes"
    );
    while running.tasks.join_next().await.is_some() {}
    Ok(())
}

/// A certificate file (PEM or DER) to register: its DER and validity (unix seconds).
fn read_certificate(file: &Path) -> Result<(Vec<u8>, i64, i64), Failure> {
    let data = std::fs::read(file)
        .map_err(|e| Failure::unknown(format!("cannot read {}: {}", file.display(), chain(&e))))?;
    let der = lab::cert_der_from(&data)
        .map_err(|e| Failure::unknown(format!("{} is not a certificate: {e}", file.display())))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        Failure::unknown(format!(
            "{} is not an X.509 certificate: {e}",
            file.display()
        ))
    })?;
    let validity = cert.validity();
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    Ok((der, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_read_as_pem_with_their_validity() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["lab.test".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2027, 1, 1);
        params.not_after = rcgen::date_time_ymd(2028, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let file = dir.path().join("c.pem");
        std::fs::write(&file, cert.pem()).unwrap();
        let (der, start, end) = read_certificate(&file).unwrap();
        assert_eq!(der, cert.der().to_vec());
        assert_eq!((start, end), (1_798_761_600, 1_830_297_600));
    }

    #[test]
    fn unreadable_and_foreign_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let failure = read_certificate(&missing).unwrap_err();
        assert_eq!(
            failure,
            Failure::unknown(format!(
                "cannot read {}: No such file or directory (os error 2)",
                missing.display()
            ))
        );
        let text = dir.path().join("notes.pem");
        std::fs::write(&text, "not a certificate").unwrap();
        let failure = read_certificate(&text).unwrap_err();
        assert!(
            failure
                .stderr
                .starts_with(&format!("sonde: {} is not", text.display())),
            "{failure:?}"
        );
    }
}
