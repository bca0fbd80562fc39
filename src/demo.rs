//! `sonde demo`: the lab, a freshly made OAuth certificate registered with it, and
//! the agent running the shipped PushNotifications.Proxy health set against it,
//! printing each result as it comes. Everything lives in a temporary directory
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

/// The demo's tenant.
pub const TENANT: &str = "contoso.onmicrosoft.com";

/// The OAuth certificate as the seed's script makes it: self-signed, RSA 2048,
/// five years, Exchange's subject name.
pub const OAUTH_SUBJECT: &str = "Microsoft Exchange Server Auth Certificate";
const FIVE_YEARS: i64 = 5 * 365 * 86_400 + 86_400;

/// Files the demo writes, in `dir`.
pub struct DemoFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub env: HashMap<String, String>,
}

/// Makes the OAuth certificate, registers it with `lab`, and writes the config
/// that points the shipped health set at the lab. `every` is the probes' interval.
pub fn prepare(
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
    lab.state()
        .register(
            oauth.credential.cert_der(),
            oauth.credential.not_before(),
            oauth.credential.not_after(),
        )
        .map_err(|e| anyhow::anyhow!("cannot register the OAuth certificate: {e}"))?;
    std::fs::write(dir.join("exchange-push-proxy.toml"), HEALTH_SET)
        .context("cannot write the health set")?;
    let base = format!("http://{http}");
    let mailbox = lab::default_mailbox(TENANT);
    let config = dir.join("sonde.toml");
    std::fs::write(
        &config,
        format!(
            r#"# Written by `sonde demo`: the shipped health set, pointed at the lab.
include = ["exchange-push-proxy.toml"]

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
        ("SONDE_EVERY", every.to_string()),
        ("SONDE_CERT_EVERY", every.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(DemoFiles {
        dir: dir.to_path_buf(),
        config,
        env,
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
pub fn line(r: &RunRecord) -> String {
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
        "sonde demo: making the lab's signing key and the OAuth certificate (RSA 2048)..."
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
    writeln!(out, "try:      curl -X PUT {base}/admin/faults -H 'content-type: application/json' -d '{{\"metadata\":\"5xx\"}}'")?;
    writeln!(
        out,
        "          curl -X DELETE {base}/admin/faults      (Ctrl-C stops the demo)"
    )?;
    writeln!(out)?;
    let env = files.env.clone();
    let lookup = move |k: &str| env.get(k).cloned().or_else(|| std::env::var(k).ok());
    let config = Loader { env: &lookup }
        .load(&files.config)
        .map_err(|e| anyhow::anyhow!("the demo's configuration is invalid:\n{e}"))?;
    let printed = crate::agent::run_with(config, clock, shutdown, |r| {
        crate::println!("{}", line(r));
    })
    .await;
    lab_stop.cancel();
    while running.tasks.join_next().await.is_some() {}
    printed.map_err(|e| anyhow::anyhow!("{e}"))
}
