//! The Exchange.HybridApp health set against the lab: the registration check
//! reading the lab's Graph with a monitoring app (certificate or secret), the
//! dedicated hybrid app's Entra token with the Auth certificate, and each finding
//! of the CVE-2025-53786 clean-up made to happen, asserted by status, category
//! and summary words. Keys come from the openssl-made set of `hybrid`.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use sonde::clock::{Clock, SystemClock};
use sonde::config::Loader;
use sonde::credential::{self, SigningCredential};
use sonde::lab::graph::{KeyCredential, READ_ALL};
use sonde::lab::{Lab, Running};
use sonde::outcome::{Category, Outcome, Status};
use tokio_util::sync::CancellationToken;

use crate::hybrid::{keys, start_lab, TENANT};

const HYBRID_APP: &str = "6f2a4c31-8d3e-4b7a-9c15-2e0d8f4b1a77";
const MONITOR_APP: &str = "0b5e7d21-3c4a-4f6b-8e9d-1a2b3c4d5e6f";
const MONITOR_SECRET: &str = "lab~Secret.Value-7Qz";

fn load(name: &str) -> SigningCredential {
    let k = keys();
    let key = std::fs::read(k.path(&format!("{name}.key"))).unwrap();
    let cert = std::fs::read(k.path(&format!("{name}.pem"))).unwrap();
    credential::from_pem(&key, &cert).unwrap()
}

fn key_of(name: &str) -> KeyCredential {
    let c = load(name);
    KeyCredential::new(c.cert_der(), c.not_before(), c.not_after()).unwrap()
}

/// The lab's directory as after a clean `-FullyConfigureExchangeHybridApplication`:
/// the Auth certificate (`oauth`) on the dedicated app only, and a monitoring app
/// (certificate `rogue`, and a secret) allowed to read app registrations.
fn clean_directory(lab: &Lab) {
    let mut s = lab.state();
    s.graph
        .app(HYBRID_APP, "ExchangeServerApp-test")
        .key_credentials
        .push(key_of("oauth"));
    let monitor = s.graph.app(MONITOR_APP, "sonde monitoring");
    monitor.key_credentials.push(key_of("rogue"));
    monitor.secret = Some(MONITOR_SECRET.into());
    monitor.roles = vec![READ_ALL.into()];
}

struct Set {
    lab: Running,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
    config: sonde::config::Config,
}

impl Set {
    /// The shipped Exchange.HybridApp set plus a registration probe that uses a
    /// client secret; `extra` is appended to sonde.toml.
    async fn new(extra: &str) -> Set {
        let (lab, stop) = start_lab("lab").await;
        clean_directory(&lab.lab);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let k = keys();
        std::fs::write(
            d.join("exchange-hybrid-app.toml"),
            sonde::demo::HYBRID_APP_SET,
        )
        .unwrap();
        std::fs::write(d.join("graph.secret"), format!("{MONITOR_SECRET}\n")).unwrap();
        let combine = |name: &str, to: &Path| {
            let mut both = std::fs::read(k.path(&format!("{name}.key"))).unwrap();
            both.extend(std::fs::read(k.path(&format!("{name}.pem"))).unwrap());
            std::fs::write(to, both).unwrap();
        };
        combine("oauth", &d.join("auth.pem"));
        combine("rogue", &d.join("graph.pem"));
        let base = lab.base_url();
        let config = format!(
            r#"include = ["exchange-hybrid-app.toml"]

[[probe]]
name = "registration-secret"
kind = "registration"
tenant = "{TENANT}"
token_url = "{base}/{TENANT}/oauth2/v2.0/token"
graph_url = "{base}"
client_id = "{MONITOR_APP}"
secret_file = "graph.secret"
app_id = "{HYBRID_APP}"
auth_cert = "{oauth_cert}"
{extra}
"#,
            oauth_cert = k.path("oauth.pem").display(),
        );
        let path = d.join("sonde.toml");
        std::fs::write(&path, config).unwrap();
        let env: Vec<(&str, String)> = vec![
            ("SONDE_TENANT", TENANT.into()),
            (
                "SONDE_OAUTH_CERT",
                k.path("oauth.pem").display().to_string(),
            ),
            ("SONDE_OAUTH_THUMBPRINT", load("oauth").thumbprint_hex()),
            ("SONDE_OAUTH_KEY", d.join("auth.pem").display().to_string()),
            ("SONDE_HYBRID_APP_ID", HYBRID_APP.into()),
            ("SONDE_GRAPH_CLIENT_ID", MONITOR_APP.into()),
            ("SONDE_GRAPH_KEY", d.join("graph.pem").display().to_string()),
            ("SONDE_ENTRA_BASE", base.clone()),
            ("SONDE_GRAPH_URL", base.clone()),
        ];
        let lookup = move |name: &str| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
        let config = Loader { env: &lookup }
            .load(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        Set {
            lab,
            stop,
            _dir: dir,
            config,
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

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut r =
            reqwest::Client::new().request(method, format!("{}{path}", self.lab.base_url()));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap().status().as_u16()
    }
}

impl Drop for Set {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[track_caller]
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

fn pem(name: &str) -> String {
    std::fs::read_to_string(keys().path(&format!("{name}.pem"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_set_is_healthy_against_a_clean_directory() {
    install_provider();
    let s = Set::new("").await;
    let thumb = load("oauth").thumbprint_hex();
    let o = s.run("auth-certificate").await;
    expect(
        &o,
        Status::Ok,
        None,
        &[
            "Auth certificate CN=Microsoft Exchange Server Auth Certificate",
            "no next certificate configured",
        ],
    );
    for probe in ["hybrid-app-registration", "registration-secret"] {
        let o = s.run(probe).await;
        expect(&o, Status::Ok, None, &[
            &format!("the hybrid app ExchangeServerApp-test ({HYBRID_APP}) holds the Auth certificate {thumb}"),
            "the shared principal holds none of them",
        ]);
        assert_eq!(o.observations["registered_keys"], 1.0, "{probe}");
        assert_eq!(o.observations["first_party_matches"], 0.0, "{probe}");
        assert!(
            o.observations["seconds_left"] > 1800.0 * 86_400.0,
            "{probe}: {o:?}"
        );
        assert!(!o.summary.contains("eyJ") && !o.summary.contains(MONITOR_SECRET));
    }
    let o = s.run("hybrid-app-token").await;
    expect(
        &o,
        Status::Ok,
        None,
        &["for https://outlook.office365.com", "signature verified"],
    );
    assert_eq!(s.lab().state().graph.graph_reads, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_certificate_on_the_shared_principal_is_a_security_finding() {
    install_provider();
    let s = Set::new("").await;
    let thumb = load("oauth").thumbprint_hex();
    let status = s
        .admin(
            reqwest::Method::POST,
            "/admin/graph/first-party/keys",
            Some(json!({"cert_pem": pem("oauth")})),
        )
        .await;
    assert_eq!(status, 201);
    let o = s.run("hybrid-app-registration").await;
    expect(&o, Status::Critical, Some(Category::Security), &[
        "CVE-2025-53786",
        &format!("the Auth certificate {thumb} is still a key credential of the shared Office 365 Exchange Online principal"),
        &format!("-ResetFirstPartyServicePrincipalKeyCredentials -CertificateInformation {thumb}"),
    ]);
    assert_eq!(o.observations["first_party_matches"], 1.0);
    // Cleaned up: ok again.
    assert_eq!(
        s.admin(
            reqwest::Method::DELETE,
            "/admin/graph/first-party/keys",
            None
        )
        .await,
        204
    );
    assert_eq!(s.run("hybrid-app-registration").await.status, Status::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_ended_upload_fails_the_registration_and_the_token() {
    install_provider();
    let s = Set::new("").await;
    let path = format!("/admin/graph/applications/{HYBRID_APP}/keys");
    assert_eq!(s.admin(reqwest::Method::DELETE, &path, None).await, 204);
    let o = s.run("hybrid-app-registration").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["is not uploaded to the hybrid app", "-UpdateCertificate"],
    );
    let o = s.run("hybrid-app-token").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["AADSTS700027"],
    );

    // Uploaded again, but with an endDateTime already past.
    let now = SystemClock.now().timestamp();
    let body =
        json!({"cert_pem": pem("oauth"), "start": now - 400 * 86_400, "end": now - 2 * 86_400});
    assert_eq!(s.admin(reqwest::Method::POST, &path, Some(body)).await, 201);
    let o = s.run("registration-secret").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["only with an endDateTime already past", "2d ago"],
    );
    assert!(o.observations["seconds_left"] < 0.0);
    let o = s.run("hybrid-app-token").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["has expired", "AADSTS700027"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_certificate_and_lingering_credentials_are_warnings() {
    install_provider();
    let next = keys().path("other.pem");
    let s = Set::new(&format!(
        "next_auth_cert = {:?}",
        next.display().to_string()
    ))
    .await;
    let next_thumb = load("other").thumbprint_hex();
    let o = s.run("registration-secret").await;
    expect(
        &o,
        Status::Warning,
        Some(Category::Certificate),
        &[
            &format!("the next Auth certificate {next_thumb}"),
            "is not uploaded",
        ],
    );
    let path = format!("/admin/graph/applications/{HYBRID_APP}/keys");
    assert_eq!(
        s.admin(
            reqwest::Method::POST,
            &path,
            Some(json!({"cert_pem": pem("other")}))
        )
        .await,
        201
    );
    let o = s.run("registration-secret").await;
    expect(
        &o,
        Status::Ok,
        None,
        &[&format!("the next one {next_thumb} is uploaded too")],
    );
    assert_eq!(o.observations["registered_keys"], 2.0);

    // An old certificate's credential left behind after a rotation.
    let now = SystemClock.now().timestamp();
    let old = json!({"cert_pem": pem("lab"), "start": "2019-01-01T00:00:00Z", "end": now - 86_400});
    assert_eq!(s.admin(reqwest::Method::POST, &path, Some(old)).await, 201);
    let o = s.run("registration-secret").await;
    expect(
        &o,
        Status::Warning,
        Some(Category::Certificate),
        &[
            "1 expired credential(s) linger",
            &load("lab").thumbprint_hex(),
            "remove them",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_errors_name_the_permission_or_the_id() {
    install_provider();
    let s = Set::new(&format!(
        r#"
[[probe]]
name = "registration-wrong-app"
kind = "registration"
tenant = "{TENANT}"
token_url = "{base}/{TENANT}/oauth2/v2.0/token"
graph_url = "{base}"
client_id = "{MONITOR_APP}"
secret_file = "graph.secret"
app_id = "99999999-8888-7777-6666-555555555555"
auth_cert = "{cert}""#,
        base = "${SONDE_GRAPH_URL}",
        cert = keys().path("oauth.pem").display()
    ))
    .await;
    // A real 404 from the lab's directory.
    let o = s.run("registration-wrong-app").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Config),
        &[
            "no application with appId 99999999-8888-7777-6666-555555555555",
            "Request_ResourceNotFound",
            "check app_id",
        ],
    );

    // The monitoring app without its permission: a real 403.
    s.lab().state().graph.app(MONITOR_APP, "").roles.clear();
    let o = s.run("hybrid-app-registration").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Config),
        &["Authorization_RequestDenied", "Application.Read.All"],
    );
    s.lab().state().graph.app(MONITOR_APP, "").roles = vec![READ_ALL.into()];

    // Injected faults.
    for (status, category, words) in [
        (
            401,
            Category::Auth,
            vec![
                "HTTP 401",
                "InvalidAuthenticationToken",
                "Application.Read.All",
            ],
        ),
        (
            403,
            Category::Config,
            vec![
                "HTTP 403",
                "Insufficient privileges",
                "Application.Read.All",
            ],
        ),
        (
            404,
            Category::Config,
            vec![
                "HTTP 404",
                &*format!("no application with appId {HYBRID_APP}"),
            ],
        ),
    ] {
        assert_eq!(
            s.admin(
                reqwest::Method::PUT,
                "/admin/graph/fault",
                Some(json!({"status": status}))
            )
            .await,
            200
        );
        let o = s.run("registration-secret").await;
        expect(&o, Status::Critical, Some(category), &words);
    }
    assert_eq!(
        s.admin(
            reqwest::Method::PUT,
            "/admin/graph/fault",
            Some(json!({"status": 500}))
        )
        .await,
        400
    );
    assert_eq!(
        s.admin(reqwest::Method::DELETE, "/admin/graph/fault", None)
            .await,
        204
    );
    assert_eq!(s.run("registration-secret").await.status, Status::Ok);

    // A wrong client secret is refused by the token endpoint, and never shown.
    s.lab().state().graph.app(MONITOR_APP, "").secret = Some("another-secret".into());
    let o = s.run("registration-secret").await;
    assert_eq!(o.status, Status::Critical, "{o:?}");
    assert!(
        o.summary.contains("Graph token refused (HTTP 401)") && o.summary.contains("AADSTS7000215"),
        "{}",
        o.summary
    );
    assert!(!o.summary.contains(MONITOR_SECRET) && !o.summary.contains("another-secret"));
    // An unregistered monitoring certificate: the token kind's own words.
    s.lab()
        .state()
        .graph
        .app(MONITOR_APP, "")
        .key_credentials
        .clear();
    let o = s.run("hybrid-app-registration").await;
    expect(
        &o,
        Status::Critical,
        Some(Category::Certificate),
        &["Graph token: ", "AADSTS700027"],
    );
}
