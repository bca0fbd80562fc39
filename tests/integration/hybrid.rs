//! The hybrid push chain against the lab, link by link: every failure mode of the
//! domain is made to happen and asserted by status, category and summary. The
//! lab runs in-process on 127.0.0.1 port 0; keys are made once by the openssl CLI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{json, Value};
use sonde::clock::{Clock, SystemClock};
use sonde::config::Loader;
use sonde::credential::{self, SigningCredential};
use sonde::lab::{self, Lab, LabConfig, Running};
use sonde::outcome::{Category, Outcome, Status};
use tokio_util::sync::CancellationToken;

use crate::support::openssl;

pub(crate) const TENANT: &str = "contoso.onmicrosoft.com";

/// RSA keys and certificates made once per test run by the openssl CLI.
pub(crate) struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub(crate) fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, bits, cn, days) in [
            ("lab", "2048", "lab ACS", "365"),
            ("rogue", "2048", "rogue ACS", "365"),
            (
                "oauth",
                "2048",
                "Microsoft Exchange Server Auth Certificate",
                "1826",
            ),
            (
                "other",
                "2048",
                "Microsoft Exchange Server Auth Certificate",
                "1826",
            ),
            (
                "small",
                "1024",
                "Microsoft Exchange Server Auth Certificate",
                "1826",
            ),
        ] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    &format!("rsa:{bits}"),
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    days,
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            );
        }
        openssl(
            d,
            &[
                "pkcs12",
                "-export",
                "-inkey",
                "oauth.key",
                "-in",
                "oauth.pem",
                "-out",
                "oauth.pfx",
                "-passout",
                "pass:s3cret-pfx",
            ],
        );
        std::fs::write(d.join("oauth.pfx.pass"), "s3cret-pfx\n").unwrap();
        Keys { dir }
    })
}

fn load(name: &str) -> SigningCredential {
    let k = keys();
    let key = std::fs::read(k.path(&format!("{name}.key"))).unwrap();
    let cert = std::fs::read(k.path(&format!("{name}.pem"))).unwrap();
    credential::from_pem(&key, &cert).unwrap()
}

/// A lab with the OAuth certificate registered.
pub(crate) async fn start_lab(signer: &str) -> (Running, CancellationToken) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let lab = Lab::new(TENANT, load(signer), clock);
    let oauth = load("oauth");
    lab.state()
        .register(oauth.cert_der(), oauth.not_before(), oauth.not_after())
        .unwrap();
    let stop = CancellationToken::new();
    let cfg = LabConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        smtp_listen: "127.0.0.1:0".parse().unwrap(),
        tenant_domain: TENANT.into(),
    };
    (lab::start(&cfg, lab, stop.clone()).await.unwrap(), stop)
}

/// The shipped health set plus an end-to-end probe, pointed at `lab`, written to
/// a fresh directory; `extra` is appended to sonde.toml.
fn write_config(dir: &Path, lab: &Running, extra: &str) -> PathBuf {
    let k = keys();
    std::fs::write(
        dir.join("exchange-push-proxy.toml"),
        sonde::demo::HEALTH_SET,
    )
    .unwrap();
    let base = lab.base_url();
    let config = format!(
        r#"include = ["exchange-push-proxy.toml"]

[[probe]]
name = "push-end-to-end"
kind = "push"
timeout = "20s"
mode = "end_to_end"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
tls = "none"
from = "sonde@{TENANT}"
to = "{mailbox}"
badge_url = "{base}/devices/{device}"
deadline = "3s"
warn_latency = "1s"
poll_every = "100ms"

[[probe]]
name = "metadata-openid"
kind = "metadata"
url = "{base}/{TENANT}/v2.0/.well-known/openid-configuration"

[[probe]]
name = "token-entra"
kind = "token"
mode = "entra"
tenant = "{TENANT}"
client_id = "11111111-2222-3333-4444-555555555555"
metadata_url = "{base}/{TENANT}/v2.0/.well-known/openid-configuration"
key_path = "{pfx}"
password_file = "{pfx_pass}"
{extra}
"#,
        smtp = lab.smtp.port(),
        mailbox = lab::default_mailbox(TENANT),
        device = lab::DEFAULT_DEVICE,
        pfx = k.path("oauth.pfx").display(),
        pfx_pass = k.path("oauth.pfx.pass").display(),
    );
    let path = dir.join("sonde.toml");
    std::fs::write(&path, config).unwrap();
    path
}

struct Chain {
    lab: Running,
    stop: CancellationToken,
    dir: tempfile::TempDir,
    config: sonde::config::Config,
    /// The environment the shipped health set reads, for the binary too.
    env: Vec<(&'static str, String)>,
}

impl Chain {
    async fn new() -> Chain {
        Self::with("lab", "oauth", "").await
    }

    async fn with(signer: &str, cert: &str, extra: &str) -> Chain {
        let (lab, stop) = start_lab(signer).await;
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), &lab, extra);
        let k = keys();
        let oauth_cert = k.path(&format!("{cert}.pem"));
        // The credential for the ACS token probe: one PEM with key and certificate.
        let combined = dir.path().join("credential.pem");
        let mut both = std::fs::read(k.path(&format!("{cert}.key"))).unwrap();
        both.extend(std::fs::read(&oauth_cert).unwrap());
        std::fs::write(&combined, both).unwrap();
        let env = [
            ("SONDE_TENANT", TENANT.to_string()),
            ("SONDE_OAUTH_CERT", oauth_cert.display().to_string()),
            ("SONDE_OAUTH_THUMBPRINT", load("oauth").thumbprint_hex()),
            ("SONDE_OAUTH_KEY", combined.display().to_string()),
            ("SONDE_ACS_BASE", lab.base_url()),
            (
                "SONDE_PUSH_PROXY_URL",
                format!("{}/PushNotifications", lab.base_url()),
            ),
        ];
        let lookup = |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config = Loader { env: &lookup }
            .load(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        Chain {
            lab,
            stop,
            dir,
            config,
            env: env.to_vec(),
        }
    }

    fn lab(&self) -> &Lab {
        &self.lab.lab
    }

    async fn run(&self, probe: &str) -> Outcome {
        let p = self
            .config
            .probe(probe)
            .unwrap_or_else(|| panic!("no probe {probe}"));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        sonde::agent::run_probe_now(p, &self.config.probes, clock)
            .await
            .unwrap()
    }

    /// Runs the `sonde` binary with `args` on this chain's config and
    /// environment (off the runtime's threads: the lab runs on them).
    async fn sonde(&self, args: &[&str]) -> std::process::Output {
        let dir = self.dir.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = self.env.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::support::sonde_in(&dir, &args, &env)
        })
        .await
        .unwrap()
    }

    async fn faults(&self, f: Value) {
        let r = reqwest::Client::new()
            .put(format!("{}/admin/faults", self.lab.base_url()))
            .json(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = &self.dir;
    }
}

fn expect(o: &Outcome, status: Status, category: Option<Category>, words: &[&str]) {
    assert_eq!(o.status, status, "{o:?}");
    assert_eq!(o.category, category, "{o:?}");
    for w in words {
        assert!(o.summary.contains(w), "summary {:?} lacks {w:?}", o.summary);
    }
}

fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_chain_is_healthy_against_the_lab() {
    install_provider();
    let c = Chain::new().await;
    for probe in [
        "oauth-certificate",
        "auth-metadata",
        "metadata-openid",
        "token-issuance",
        "token-entra",
        "push-connectivity",
    ] {
        let o = c.run(probe).await;
        assert_eq!(o.status, Status::Ok, "{probe}: {o:?}");
    }
    let token = c.run("token-issuance").await;
    assert!(
        token.observations["clock_skew_seconds"].abs() <= 2.0,
        "{token:?}"
    );
    assert!(token.observations.contains_key("token_lifetime_seconds"));
    assert!(!token.summary.contains("eyJ"), "no token in the summary");
    let e2e = c.run("push-end-to-end").await;
    expect(&e2e, Status::Ok, None, &["badge rose from 0 to 1"]);
    assert!(e2e.observations["end_to_end_seconds"] < 1.0);
    let e2e = c.run("push-end-to-end").await;
    expect(&e2e, Status::Ok, None, &["from 1 to 2"]);
    assert_eq!(c.lab().state().mails.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_key_is_a_certificate_problem() {
    install_provider();
    let c = Chain::new().await;
    let id = c.lab().state().credentials[0].id;
    assert!(c.lab().state().revoke(id));
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["not registered with the service principal", "ACS50008"],
    );
    let o = c.run("token-entra").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["AADSTS700027"],
    );
    let o = c.run("push-connectivity").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["token: "],
    );
}

/// `sonde probe` as an Exchange admin uses `Invoke-MonitoringProbe`: a probe
/// named `HealthSet\Probe` in any case, a whole health set in dependency
/// order with the worst exit code, and results as Format-List prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_probes_and_sets_as_managed_availability_names_them() {
    use crate::support::{stderr, stdout};
    install_provider();
    let c = Chain::new().await;
    let out = c
        .sonde(&[
            "probe",
            r"PushNotifications.Proxy\push-connectivity",
            "-f",
            "json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (v["probe"].as_str(), v["status"].as_str()),
        (Some("push-connectivity"), Some("ok"))
    );
    let out = c
        .sonde(&[
            "probe",
            r"pushnotifications.proxy\TOKEN-ISSUANCE",
            "--format",
            "ma",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .map(|l| l.split(" : ").next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "MachineName       ",
            "ResultName        ",
            "ResultType        ",
            "Error             ",
            "ExecutionStartTime",
            "ExecutionEndTime  ",
            "SampleValue       ",
            "StateAttribute1   ",
        ]
    );
    assert!(
        text.contains("ResultName         : PushNotifications.Proxy\\token-issuance\n"),
        "{text}"
    );
    assert!(text.contains("ResultType         : Succeeded\n"), "{text}");
    assert!(text.ends_with("StateAttribute1    : \n"), "{text}");

    // The whole set, each probe after those it depends on: all healthy.
    let out = c
        .sonde(&[
            "probe",
            "--health-set",
            "pushnotifications.PROXY",
            "-f",
            "json",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let ran: Vec<(String, String)> = stdout(&out)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["probe"].as_str().unwrap().into(),
                v["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    let ok = |p: &str| (p.to_string(), "ok".to_string());
    assert_eq!(
        ran,
        [
            ok("oauth-certificate"),
            ok("auth-metadata"),
            ok("token-issuance"),
            ok("push-connectivity")
        ]
    );

    // The OAuth certificate no longer registered: token and push fail, as
    // Authentication; the set exits 2.
    let id = c.lab().state().credentials[0].id;
    assert!(c.lab().state().revoke(id));
    let out = c
        .sonde(&[
            "probe",
            "--health-set",
            "PushNotifications.Proxy",
            "-f",
            "ma",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(blocks.len(), 4, "{text}");
    let field = |block: &str, name: &str| {
        block
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name:<18} : "))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("{name} in {block}"))
    };
    assert_eq!(
        field(blocks[0], "ResultName"),
        r"PushNotifications.Proxy\oauth-certificate"
    );
    assert_eq!(field(blocks[0], "ResultType"), "Succeeded");
    assert_eq!(
        field(blocks[2], "ResultName"),
        r"PushNotifications.Proxy\token-issuance"
    );
    assert_eq!(field(blocks[2], "ResultType"), "Failed");
    assert!(field(blocks[2], "Error").contains("ACS50008"), "{text}");
    assert_eq!(field(blocks[2], "StateAttribute1"), "Authentication");
    assert_eq!(
        field(blocks[3], "ResultName"),
        r"PushNotifications.Proxy\push-connectivity"
    );
    assert_eq!(field(blocks[3], "StateAttribute1"), "Authentication");
    let sample: f64 = field(blocks[2], "SampleValue").parse().unwrap();
    assert!(sample > 0.0 && sample < 10_000.0, "milliseconds: {sample}");

    // The Nagios form: the worst first, each probe in the long text.
    let out = c
        .sonde(&[
            "probe",
            "--health-set",
            "PushNotifications.Proxy",
            "-f",
            "nagios",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with(
            "CRITICAL - PushNotifications.Proxy: token-issuance critical, push-connectivity critical; 2 of 4 ok |"
        ),
        "{text}"
    );
    assert!(
        lines[0].contains("'token-issuance::latency_seconds'="),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[1].starts_with("OK oauth-certificate: "), "{text}");

    // An unknown set: exit 3, naming the sets there are.
    let out = c.sonde(&["probe", "--health-set", "Exchange.Nope"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("no health set `Exchange.Nope` in sonde.toml (health sets: PushNotifications.Proxy, default)"),
        "{}",
        stderr(&out)
    );
    let out = c
        .sonde(&["probe", r"Exchange.Nope\push-connectivity"])
        .await;
    assert_eq!(out.status.code(), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_thumbprint_is_caught_twice() {
    install_provider();
    // The credential in use is another certificate than the registered one.
    let c = Chain::with("lab", "other", "").await;
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["not registered"],
    );
    // And the certificate probe sees the thumbprint drift from the expected one.
    let o = c.run("oauth-certificate").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["does not match expected"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_credential_past_its_end_date_is_expired() {
    install_provider();
    let c = Chain::new().await;
    {
        let mut s = c.lab().state();
        let id = s.credentials[0].id;
        s.revoke(id);
        let oauth = load("oauth");
        let now = chrono::Utc::now().timestamp();
        s.register(oauth.cert_der(), now - 86_400 * 400, now - 86_400)
            .unwrap();
    }
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["registered with the service principal has expired"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_key_is_critical() {
    install_provider();
    let c = Chain::with("lab", "small", "").await;
    let o = c.run("oauth-certificate").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["RSA key 1024 bits < 2048"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_faults_are_distinct() {
    install_provider();
    let c = Chain::new().await;
    for (fault, words) in [
        ("5xx", vec!["503"]),
        ("empty", vec!["empty"]),
        ("invalid_json", vec!["not valid JSON"]),
        ("no_keys", vec!["no signing key"]),
        ("no_issuing_endpoint", vec!["no issuing endpoint"]),
    ] {
        c.faults(json!({"metadata": fault})).await;
        let o = c.run("auth-metadata").await;
        assert_eq!(o.status, Status::Critical, "{fault}: {o:?}");
        assert_eq!(o.category, Some(Category::Protocol), "{fault}: {o:?}");
        for w in words {
            assert!(
                o.summary.contains(w),
                "{fault}: {:?} lacks {w:?}",
                o.summary
            );
        }
        let t = c.run("token-issuance").await;
        assert_eq!(t.status, Status::Critical, "{fault}: {t:?}");
        assert!(t.summary.starts_with("metadata: "), "{fault}: {t:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_metadata_is_a_network_problem() {
    install_provider();
    let c = Chain::new().await;
    c.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = c.run("auth-metadata").await;
    expect(&o, Status::Critical, Some(Category::Network), &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_measured_and_judged() {
    install_provider();
    let c = Chain::new().await;
    c.faults(json!({"clock_skew_seconds": 90})).await;
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Warning,
        Some(Category::Auth),
        &["clock skew 1m3"],
    );
    c.faults(json!({"clock_skew_seconds": 432})).await;
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Auth),
        &["clock skew 7m1"],
    );
    assert!(o.observations["clock_skew_seconds"] >= 430.0, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_an_unknown_key_is_refused() {
    install_provider();
    // The lab signs tokens with a key its metadata does not publish: build a
    // token probe whose metadata comes from a second lab with another key.
    let c = Chain::new().await;
    let (rogue, stop) = start_lab("rogue").await;
    // The first lab's metadata (its signing key), but the rogue lab's issuing
    // endpoint: the rogue signs with a key the metadata does not publish.
    let meta = reqwest::get(format!(
        "{}/metadata/json/1/?realm={TENANT}",
        c.lab.base_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let rogue_meta = meta.replace(&c.lab.base_url(), &rogue.base_url());
    let srv = crate::support::serve_forever(rogue_meta.into_bytes()).await;
    let dir = tempfile::tempdir().unwrap();
    // The issuing endpoint is on another origin than the metadata: allowed
    // by token_hosts (without it, nothing would be signed or sent).
    let cfg = format!(
        "[[probe]]\nname = \"t\"\nkind = \"token\"\ntenant = \"{TENANT}\"\nmetadata_url = \"http://{srv}/m\"\nkey_path = \"{}\"\ntoken_hosts = [\"{}\"]\n",
        c.dir.path().join("credential.pem").display(),
        rogue.base_url()
    );
    std::fs::write(dir.path().join("sonde.toml"), cfg).unwrap();
    let config = sonde::config::load(&dir.path().join("sonde.toml")).unwrap();
    let o = sonde::agent::run_probe_now(&config.probes[0], &config.probes, Arc::new(SystemClock))
        .await
        .unwrap();
    expect(
        &o,
        Status::Critical,
        Some(Category::Auth),
        &["does not verify against the metadata's signing keys"],
    );
    stop.cancel();
}

/// Regression: the metadata names the issuing endpoint, and the signed
/// assertion goes there only when it is on the metadata's own origin or in
/// `token_hosts`; elsewhere the probe stops with a `protocol` error naming the
/// origin, and that host sees no connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_on_another_origin_gets_no_assertion() {
    install_provider();
    let c = Chain::new().await;
    let meta = reqwest::get(format!(
        "{}/metadata/json/1/?realm={TENANT}",
        c.lab.base_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    // Another origin: a listener of this test on another port.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let elsewhere_origin = format!("http://{}", elsewhere.local_addr().unwrap());
    let moved = meta.replace(&c.lab.base_url(), &elsewhere_origin);
    assert_ne!(
        moved, meta,
        "the lab's document names its issuing endpoints"
    );
    let srv = crate::support::serve_forever(moved.into_bytes()).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        format!(
            "[[probe]]\nname = \"t\"\nkind = \"token\"\ntenant = \"{TENANT}\"\nmetadata_url = \"http://{srv}/m\"\nkey_path = \"{}\"\n",
            c.dir.path().join("credential.pem").display()
        ),
    )
    .unwrap();
    let config = sonde::config::load(&dir.path().join("sonde.toml")).unwrap();
    let o = sonde::agent::run_probe_now(&config.probes[0], &config.probes, Arc::new(SystemClock))
        .await
        .unwrap();
    expect(
        &o,
        Status::Critical,
        Some(Category::Protocol),
        &[
            &format!("the issuing endpoint is on {elsewhere_origin}"),
            &format!("not on the document's origin http://{srv}"),
            "no assertion signed or sent",
            &format!("add \"{elsewhere_origin}\" to token_hosts"),
        ],
    );
    assert!(
        o.observations.contains_key("metadata_latency_seconds"),
        "{o:?}"
    );
    let contacted = tokio::time::timeout(Duration::from_millis(300), elsewhere.accept()).await;
    assert!(contacted.is_err(), "the other origin was contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_push_proxy_rejects_a_foreign_token_with_401() {
    install_provider();
    // Tokens from one lab are foreign to another lab's proxy.
    let (other, stop) = start_lab("rogue").await;
    let extra = format!(
        "[[probe]]\nname = \"push-elsewhere\"\nkind = \"push\"\ntoken_probe = \"token-issuance\"\nproxy_url = \"{}/PushNotifications\"\n",
        other.base_url()
    );
    let c = Chain::with("lab", "oauth", &extra).await;
    let o = c.run("push-elsewhere").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Auth),
        &[
            "rejected the token (HTTP 401)",
            "the proxy trusts any ACS realm (00000001-0000-0000-c000-000000000000@*)",
            "matches: check that the OnPrem-Proxy partner application is enabled",
        ],
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_faults_slow_and_dropped_pushes() {
    install_provider();
    let c = Chain::new().await;
    c.faults(
        json!({"push": {"kind": "fault", "status": 503, "can_retry": true, "backoff_ms": 30000}}),
    )
    .await;
    let o = c.run("push-connectivity").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Push),
        &["HTTP 503", "CanRetry: true", "back off 30000 ms"],
    );
    c.faults(json!({"push": {"kind": "drop"}})).await;
    let o = c.run("push-connectivity").await;
    expect(&o, Status::Ok, None, &[]);
    let o = c.run("push-end-to-end").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Push),
        &["did not rise within 3s"],
    );
    c.faults(json!({"push_latency_ms": 1500})).await;
    let o = c.run("push-end-to-end").await;
    expect(
        &o,
        Status::Warning,
        Some(Category::Push),
        &["slower than 1s"],
    );
    assert!(o.observations["end_to_end_seconds"] >= 1.5, "{o:?}");
}

/// Serves one HTTP request on loopback: keeps its body, answers `status` with `body`.
async fn capture_one(status: u16, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the request ended early");
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
                return String::from_utf8(buf[end + 4..end + 4 + len].to_vec()).unwrap();
            }
        }
    });
    (format!("http://{addr}"), task)
}

/// The assertion the token probe sends, checked by PyJWT (Debian's python3-jwt)
/// against the certificate: header exactly typ/alg/x5t with the x5t computed by
/// Python, claims exactly iss/aud/nbf/exp, ten minutes, RS256 signature valid;
/// and the same token with one claim changed is refused by PyJWT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_jwt_library_accepts_the_assertion() {
    install_provider();
    let tenant_id = "3f2b6a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
    let (base, request) = capture_one(
        400,
        r#"{"error":"invalid_request","error_description":"ACS90004: The request is not properly formatted."}"#,
    )
    .await;
    let k = keys();
    let c = Chain::with(
        "lab",
        "oauth",
        &format!(
            "[[probe]]\nname = \"t\"\nkind = \"token\"\ntenant = \"{tenant_id}\"\ntoken_url = \"{base}/{tenant_id}/tokens/OAuth/2\"\nkey_path = \"{}\"\ncert_path = \"{}\"\n",
            k.path("oauth.key").display(),
            k.path("oauth.pem").display(),
        ),
    )
    .await;
    let o = c.run("t").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Protocol),
        &["ACS90004"],
    );
    let form = request.await.unwrap();
    let pairs: std::collections::HashMap<String, String> =
        reqwest::Url::parse(&format!("http://x/?{form}"))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    assert_eq!(
        pairs["grant_type"],
        "http://oauth.net/grant_type/jwt/1.0/bearer"
    );
    assert_eq!(
        pairs["resource"],
        format!("00000002-0000-0ff1-ce00-000000000000/outlook.office365.com@{tenant_id}")
    );
    assert_eq!(pairs.len(), 3, "no client_id or anything else: {pairs:?}");
    let authority = base.trim_start_matches("http://");
    let script = r#"
import base64, hashlib, json, sys
import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
tok, cert_path, aud, iss = sys.argv[1:]
cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
x5t = base64.urlsafe_b64encode(hashlib.sha1(cert.public_bytes(Encoding.DER)).digest()).rstrip(b"=").decode()
header = jwt.get_unverified_header(tok)
assert header == {"typ": "JWT", "alg": "RS256", "x5t": x5t}, header
claims = jwt.decode(tok, cert.public_key(), algorithms=["RS256"], audience=aud, issuer=iss)
assert set(claims) == {"iss", "aud", "nbf", "exp"}, claims
assert claims["exp"] - claims["nbf"] == 600, claims
h, p, s = tok.split(".")
forged = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
forged["exp"] += 3600
p2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
try:
    jwt.decode(h + "." + p2 + "." + s, cert.public_key(), algorithms=["RS256"], audience=aud, issuer=iss)
    sys.exit("a forged token verified")
except jwt.InvalidSignatureError:
    pass
print("verified")
"#;
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            script,
            &pairs["assertion"],
            &k.path("oauth.pem").display().to_string(),
            &format!("00000001-0000-0000-c000-000000000000/{authority}@{tenant_id}"),
            &format!("00000002-0000-0ff1-ce00-000000000000@{tenant_id}"),
        ])
        .output()
        .expect("/usr/bin/python3 with python3-jwt (scripts/test installs it)");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "verified",
        "PyJWT: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_of_another_realm_or_too_large_is_refused() {
    install_provider();
    let c = Chain::with(
        "lab",
        "oauth",
        "[[probe]]\nname = \"m-realm\"\nkind = \"metadata\"\nurl = \"${SONDE_ACS_BASE}/metadata/json/1/?realm=${SONDE_TENANT}\"\nexpect_realm = \"00000000-0000-0000-0000-000000000001\"\n\n[[probe]]\nname = \"m-small\"\nkind = \"metadata\"\nurl = \"${SONDE_ACS_BASE}/metadata/json/1/?realm=${SONDE_TENANT}\"\nmax_body = 200\n",
    )
    .await;
    let o = c.run("m-realm").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Protocol),
        &[
            "realm is `",
            "expected `00000000-0000-0000-0000-000000000001`",
        ],
    );
    let o = c.run("m-small").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Protocol),
        &["larger than max_body (200 bytes)"],
    );
    // The real realm is accepted, whatever its case.
    let ok = c.run("auth-metadata").await;
    expect(&ok, Status::Ok, None, &["1 signing key"]);
    assert!(ok.observations["seconds_left"] > 0.0);
}

/// A `?realm=` forgotten in AuthMetadataUrl: the lab serves ACS's realm-less
/// document, which looks healthy; both probes name the missing realm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_realm_is_named_by_both_probes() {
    install_provider();
    let c = Chain::with(
        "lab",
        "oauth",
        "[[probe]]\nname = \"m-no-realm\"\nkind = \"metadata\"\nurl = \"${SONDE_ACS_BASE}/metadata/json/1/\"\n\n[[probe]]\nname = \"t-no-realm\"\nkind = \"token\"\ntenant = \"${SONDE_TENANT}\"\nmetadata_url = \"${SONDE_ACS_BASE}/metadata/json/1/\"\nkey_path = \"${SONDE_OAUTH_KEY}\"\n",
    )
    .await;
    let doc: Value = reqwest::get(format!("{}/metadata/json/1/", c.lab.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["realm"], "");
    assert_eq!(doc["issuer"], "00000001-0000-0000-c000-000000000000@*");
    assert_eq!(
        doc["endpoints"][0]["location"],
        format!("{}/tokens/OAuth/2", c.lab.base_url())
    );
    let words = ["the metadata names no tenant: AuthMetadataUrl must end with ?realm=<tenant>"];
    let o = c.run("m-no-realm").await;
    expect(&o, Status::Warning, Some(Category::Config), &words);
    let o = c.run("t-no-realm").await;
    expect(&o, Status::Critical, Some(Category::Config), &words);
    assert_eq!(c.lab().state().tokens_issued, 0);
    // The realm-less issuing endpoint refuses every request, as ACS does.
    let r = reqwest::Client::new()
        .post(format!("{}/tokens/OAuth/2", c.lab.base_url()))
        .form(&[("grant_type", "http://oauth.net/grant_type/jwt/1.0/bearer")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("ACS90004"));
}

/// The push proxy is WCF: only the escaped `"\/Date(ms)\/"` text is a DateTime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_refuses_an_unescaped_wcf_date_as_the_proxy_does() {
    install_provider();
    let c = Chain::new().await;
    let tenant = c.lab().tenant_id();
    let now = chrono::Utc::now().timestamp();
    let token = c
        .lab()
        .signer
        .sign_rs256(
            &json!({"typ": "JWT", "alg": "RS256"}),
            &json!({
                "aud": format!("00000002-0000-0ff1-ce00-000000000000/outlook.office365.com@{tenant}"),
                "iss": format!("00000001-0000-0000-c000-000000000000@{tenant}"),
                "nbf": now, "exp": now + 3600,
            }),
        )
        .unwrap();
    let post = |date: &str| {
        let body = format!(
            r#"{{"notifications":[{{"payload":{{"tenantId":"","unseenEmailCount":1,"isMonitoring":true}},"recipients":[{{"appId":"MonitoringProbeAppId","deviceId":"00","lastSubscriptionUpdate":{date}}}]}}]}}"#
        );
        reqwest::Client::new()
            .post(format!(
                "{}/PushNotifications/service.svc/PublishOnPremNotifications",
                c.lab.base_url()
            ))
            .header("content-type", "application/json")
            .bearer_auth(&token)
            .body(body)
            .send()
    };
    let ms = (now - 86_400) * 1000;
    let r = post(&format!(r#""/Date({ms})/""#)).await.unwrap();
    assert_eq!(r.status(), 400);
    let fault: Value = r.json().await.unwrap();
    assert!(
        fault["Message"]
            .as_str()
            .unwrap()
            .contains("does not start with '\\/Date(' and end with ')\\/'"),
        "{fault}"
    );
    let r = post(&format!(r#""\/Date({ms})\/""#)).await.unwrap();
    assert_eq!(r.status(), 200);
    // And the probe's own batch passes.
    let o = c.run("push-connectivity").await;
    expect(&o, Status::Ok, None, &["accepted the monitoring batch"]);
}

/// Entra's multi-tenant discovery names no tenant; read for the tenant, its
/// keys bound to the template sign; a token probe on `common` does not load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_discovery_is_read_for_a_tenant_and_refused_for_tokens() {
    install_provider();
    let tenant_id = lab::tenant_id_for(TENANT);
    let c = Chain::with(
        "lab",
        "oauth",
        &format!("[[probe]]\nname = \"m-common\"\nkind = \"metadata\"\nurl = \"${{SONDE_ACS_BASE}}/common/v2.0/.well-known/openid-configuration\"\n\n[[probe]]\nname = \"m-common-tenant\"\nkind = \"metadata\"\nurl = \"${{SONDE_ACS_BASE}}/common/v2.0/.well-known/openid-configuration\"\nexpect_realm = \"{tenant_id}\"\n"),
    )
    .await;
    let o = c.run("m-common").await;
    expect(
        &o,
        Status::Warning,
        Some(Category::Config),
        &["the discovery document names no tenant", "{tenantid}"],
    );
    let o = c.run("m-common-tenant").await;
    expect(
        &o,
        Status::Ok,
        None,
        &[&format!("realm {tenant_id}"), "1 signing key"],
    );
    // The Entra token probe against the lab: v1 issuer accepted.
    let o = c.run("token-entra").await;
    expect(&o, Status::Ok, None, &["token issued by"]);
    // On `common` it is a configuration error, said at load.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sonde.toml"),
        "[[probe]]\nname = \"t\"\nkind = \"token\"\nmode = \"entra\"\ntenant = \"contoso.onmicrosoft.com\"\nclient_id = \"c\"\ntoken_url = \"https://login.microsoftonline.com/common/oauth2/v2.0/token\"\nkey_path = \"k.pfx\"\n",
    )
    .unwrap();
    let err = match sonde::config::load(&dir.path().join("sonde.toml")) {
        Ok(_) => panic!("a token probe on common must not load"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("token_url"), "{err}");
    assert!(
        err.contains(
            "`common` is Entra's multi-tenant token endpoint, where client credentials are refused"
        ),
        "{err}"
    );
    // And the lab refuses client credentials there, as Entra does.
    let r = reqwest::Client::new()
        .post(format!("{}/common/oauth2/v2.0/token", c.lab.base_url()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("AADSTS50194"));
}

/// A skew beyond max_skew is said beside the STS's own reason for refusing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_keeps_the_sts_reason_beside_the_clock_skew() {
    install_provider();
    let c = Chain::new().await;
    let id = c.lab().state().credentials[0].id;
    assert!(c.lab().state().revoke(id));
    c.faults(json!({"clock_skew_seconds": 432})).await;
    let o = c.run("token-issuance").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &[
            "token request refused (HTTP 401): the signing key is not registered",
            "ACS50008",
            "; clock skew 7m1",
            "differs from the STS's by more than 5m",
        ],
    );
}

/// The badge document must hold the pointer: a pointer that does not resolve
/// is the configuration's fault, not a badge that did not rise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badge_pointer_that_does_not_resolve_is_named() {
    install_provider();
    let extra = |name: &str, pointer: &str| {
        format!(
            "[[probe]]\nname = \"{name}\"\nkind = \"push\"\ntimeout = \"20s\"\nmode = \"end_to_end\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = ${{SONDE_SMTP_PORT}}\ntls = \"none\"\nfrom = \"sonde@{TENANT}\"\nto = \"{mailbox}\"\nbadge_url = \"${{SONDE_ACS_BASE}}/mailboxes/{mailbox}\"\nbadge_pointer = \"{pointer}\"\ndeadline = \"3s\"\nwarn_latency = \"2s\"\npoll_every = \"100ms\"\n",
            mailbox = lab::default_mailbox(TENANT)
        )
    };
    let (lab, stop) = start_lab("lab").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n{}",
        extra("e2e-wrong", "/badge"),
        extra("e2e-unseen", "/devices/0/badge")
    )
    .replace("${SONDE_SMTP_PORT}", &lab.smtp.port().to_string())
    .replace("${SONDE_ACS_BASE}", &lab.base_url());
    std::fs::write(dir.path().join("sonde.toml"), cfg).unwrap();
    let config = sonde::config::load(&dir.path().join("sonde.toml")).unwrap();
    let run = |name: &str| {
        let p = config.probe(name).unwrap();
        sonde::agent::run_probe_now(p, &config.probes, Arc::new(SystemClock))
    };
    let o = run("e2e-wrong").await.unwrap();
    expect(
        &o,
        Status::Critical,
        Some(Category::Config),
        &[
            "badge_pointer `/badge` does not resolve in the document at",
            "/mailboxes/monitoring@",
            "its members are /address, /devices, /unseen",
        ],
    );
    assert!(
        lab.lab.state().mails.is_empty(),
        "no mail before the pointer works"
    );
    // The mailbox document as README describes it: the device's badge rises.
    let o = run("e2e-unseen").await.unwrap();
    expect(&o, Status::Ok, None, &["badge rose from 0 to 1"]);
    stop.cancel();
}

/// A run cut off by its timeout says where it was and keeps what it measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_token_run_names_its_phase() {
    install_provider();
    let c = Chain::with(
        "lab",
        "oauth",
        "[[probe]]\nname = \"t-slow\"\nkind = \"token\"\ntimeout = \"1s\"\ntenant = \"${SONDE_TENANT}\"\nmetadata_url = \"${SONDE_ACS_BASE}/metadata/json/1/?realm=${SONDE_TENANT}\"\nkey_path = \"${SONDE_OAUTH_KEY}\"\n",
    )
    .await;
    c.faults(json!({"token_latency_ms": 3000})).await;
    let o = c.run("t-slow").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Timeout),
        &["timed out after 1s while requesting a token"],
    );
    assert!(
        o.observations.contains_key("metadata_latency_seconds"),
        "{o:?}"
    );
    // As Managed Availability shows it: TimedOut, on the path to the service.
    let out = c.sonde(&["probe", r"default\T-SLOW", "-f", "ma"]).await;
    assert_eq!(out.status.code(), Some(2));
    let text = crate::support::stdout(&out);
    assert!(text.contains("ResultType         : TimedOut\n"), "{text}");
    assert!(
        text.contains("Error              : timed out after 1s while requesting a token"),
        "{text}"
    );
    assert!(text.contains("StateAttribute1    : Networking\n"), "{text}");
}
