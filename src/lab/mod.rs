//! The lab: a loopback emulation of the cloud side of the hybrid push chain, in
//! one process, for demos and tests (`sonde lab`, `sonde demo`).
//!
//! It serves what Office 365 serves and checks what it checks: the ACS metadata
//! document and its OpenID Connect variant (`acs`), the token endpoints with real
//! RS256 verification against registered credentials (`acs`), the push proxy and
//! an APNs-shaped device endpoint (`push`), an SMTP listener standing for the
//! test mailbox (`smtp`), Entra app registrations and the Microsoft Graph reads
//! of the hybrid app check (`graph`), and an admin API to register credentials,
//! inject faults and read state (`admin`). Plain HTTP on loopback: the probes' TLS
//! handling is tested against real TLS servers elsewhere.

pub(crate) mod acs;
pub(crate) mod admin;
pub mod graph;
pub(crate) mod push;
pub(crate) mod smtp;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::credential::SigningCredential;

/// Exchange / Exchange Online's application id.
pub(crate) const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
/// ACS's application id.
pub(crate) const ACS_APP_ID: &str = "00000001-0000-0000-c000-000000000000";
/// How far the lab tolerates a client's clock, as ACS does.
pub(crate) const ALLOWED_SKEW_SECONDS: i64 = 300;
/// Lifetime of the access tokens the lab issues.
pub(crate) const ACCESS_TOKEN_SECONDS: i64 = 86_399;

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabConfig {
    pub listen: SocketAddr,
    pub smtp_listen: SocketAddr,
    /// The tenant's domain, e.g. `contoso.onmicrosoft.com`.
    pub tenant_domain: String,
}

/// A credential registered on the Exchange Online service principal.
#[derive(Debug, Clone, Serialize)]
pub struct Registered {
    pub id: u64,
    #[serde(skip)]
    pub cert_der: Vec<u8>,
    pub x5t: String,
    pub thumbprint: String,
    pub subject: String,
    /// StartDate / EndDate of the key credential, unix seconds.
    pub start: i64,
    pub end: i64,
}

/// Faults an operator (or a test) injects through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// `5xx`, `empty`, `invalid_json`, `no_keys`, `no_issuing_endpoint`.
    #[serde(default)]
    pub metadata: Option<MetadataFault>,
    /// Added before the token endpoint answers.
    #[serde(default)]
    pub token_latency_ms: u64,
    /// The lab's clock runs this many seconds ahead of the host's (negative: behind).
    #[serde(default)]
    pub clock_skew_seconds: i64,
    #[serde(default)]
    pub push: Option<PushFault>,
    /// Added before the push proxy answers, and before a mail's badge arrives.
    #[serde(default)]
    pub push_latency_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataFault {
    #[serde(rename = "5xx")]
    ServerError,
    Empty,
    InvalidJson,
    NoKeys,
    NoIssuingEndpoint,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PushFault {
    /// The proxy answers `status` with a fault body.
    Fault {
        #[serde(default = "default_fault_status")]
        status: u16,
        #[serde(default)]
        can_retry: bool,
        #[serde(default)]
        backoff_ms: u64,
    },
    /// The proxy answers 200 but nothing reaches the devices.
    Drop,
}

fn default_fault_status() -> u16 {
    503
}

/// A badge update delivered to a device.
#[derive(Debug, Clone, Serialize)]
pub struct BadgeEvent {
    pub device: String,
    pub badge: u32,
    pub at: i64,
}

/// A mail the SMTP listener accepted.
#[derive(Debug, Clone, Serialize)]
pub struct MailEvent {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub bytes: usize,
    pub at: i64,
}

/// A mailbox and the devices subscribed to its badge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Mailbox {
    pub unseen: u32,
    pub devices: Vec<String>,
}

/// Everything the lab knows; behind one mutex, never held across an await.
#[derive(Debug)]
pub struct LabState {
    pub tenant_domain: String,
    pub tenant_id: String,
    pub credentials: Vec<Registered>,
    next_id: u64,
    pub faults: Faults,
    pub mailboxes: BTreeMap<String, Mailbox>,
    pub badges: BTreeMap<String, u32>,
    pub badge_log: VecDeque<BadgeEvent>,
    pub mails: VecDeque<MailEvent>,
    pub tokens_issued: u64,
    pub pushes_accepted: u64,
    /// App registrations and what Graph shows of them.
    pub graph: graph::GraphState,
}

/// Bound on the in-memory event logs.
const LOG_CAP: usize = 1000;

impl LabState {
    /// Registers a certificate (DER) as a key credential valid from `start` to
    /// `end` (unix seconds), as `New-MsolServicePrincipalCredential` does.
    pub fn register(
        &mut self,
        cert_der: &[u8],
        start: i64,
        end: i64,
    ) -> Result<Registered, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
        self.next_id += 1;
        let r = Registered {
            id: self.next_id,
            cert_der: cert_der.to_vec(),
            x5t: crate::jwt::x5t(cert_der),
            thumbprint: hex::encode_upper(sha1),
            subject: cert.subject().to_string(),
            start,
            end,
        };
        self.credentials.push(r.clone());
        Ok(r)
    }

    pub fn revoke(&mut self, id: u64) -> bool {
        let before = self.credentials.len();
        self.credentials.retain(|c| c.id != id);
        before != self.credentials.len()
    }

    /// Records a badge delivered to `device`.
    pub(crate) fn set_badge(&mut self, device: &str, badge: u32, at: i64) {
        self.badges.insert(device.to_string(), badge);
        self.badge_log.push_back(BadgeEvent {
            device: device.to_string(),
            badge,
            at,
        });
        while self.badge_log.len() > LOG_CAP {
            self.badge_log.pop_front();
        }
    }

    pub(crate) fn record_mail(&mut self, mail: MailEvent) {
        self.mails.push_back(mail);
        while self.mails.len() > LOG_CAP {
            self.mails.pop_front();
        }
    }
}

/// Shared handle to the lab: its state, its signing key, its clock.
#[derive(Clone)]
pub struct Lab {
    state: Arc<Mutex<LabState>>,
    /// The key the lab (as ACS) signs access tokens with; published in metadata.
    pub signer: Arc<SigningCredential>,
    clock: Arc<dyn Clock>,
}

impl Lab {
    pub fn new(tenant_domain: &str, signer: SigningCredential, clock: Arc<dyn Clock>) -> Lab {
        let tenant_id = tenant_id_for(tenant_domain);
        let mut mailboxes = BTreeMap::new();
        mailboxes.insert(
            default_mailbox(tenant_domain),
            Mailbox {
                unseen: 0,
                devices: vec![DEFAULT_DEVICE.to_string()],
            },
        );
        Lab {
            state: Arc::new(Mutex::new(LabState {
                tenant_domain: tenant_domain.to_string(),
                tenant_id,
                credentials: Vec::new(),
                next_id: 0,
                faults: Faults::default(),
                mailboxes,
                badges: BTreeMap::new(),
                badge_log: VecDeque::new(),
                mails: VecDeque::new(),
                tokens_issued: 0,
                pushes_accepted: 0,
                graph: graph::GraphState::default(),
            })),
            signer: Arc::new(signer),
            clock,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lab's notion of now, in unix seconds: the host clock plus any
    /// injected skew.
    pub(crate) fn now(&self) -> i64 {
        let skew = self.state().faults.clock_skew_seconds;
        self.clock.now().timestamp() + skew
    }

    pub fn tenant_id(&self) -> String {
        self.state().tenant_id.clone()
    }

    pub(crate) fn router(&self) -> Router {
        Router::new()
            .merge(acs::routes())
            .merge(push::routes())
            .merge(graph::routes())
            .merge(admin::routes())
            .with_state(self.clone())
    }
}

/// The device token of the test mailbox's default device (64 hex digits, APNs style).
pub const DEFAULT_DEVICE: &str = "5a1e000000000000000000000000000000000000000000000000000000000001";

/// The test mailbox the lab creates: `monitoring@<tenant domain>`.
pub fn default_mailbox(tenant_domain: &str) -> String {
    format!("monitoring@{tenant_domain}")
}

/// A stable tenant id for a domain, so that demos and tests see the same realm
/// every time.
pub fn tenant_id_for(domain: &str) -> String {
    crate::guid::from_name(domain)
}

pub(crate) use crate::guid::is_guid;

/// A certificate file's DER: PEM (first CERTIFICATE block) or DER as is.
pub(crate) fn cert_der_from(data: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    if data.windows(11).any(|w| w == b"-----BEGIN ") {
        rustls::pki_types::CertificateDer::from_pem_slice(data)
            .map(|c| c.to_vec())
            .map_err(|e| format!("no PEM certificate: {e}"))
    } else {
        Ok(data.to_vec())
    }
}

/// A running lab: its addresses and how to stop it.
pub struct Running {
    pub lab: Lab,
    pub http: SocketAddr,
    pub smtp: SocketAddr,
    pub tasks: tokio::task::JoinSet<()>,
}

impl Running {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.http)
    }
}

/// Binds both listeners and serves until `shutdown`.
pub async fn start(
    config: &LabConfig,
    lab: Lab,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}"))
        })
    };
    let http_listener = bind(config.listen, "HTTP").await?;
    let smtp_listener = bind(config.smtp_listen, "SMTP").await?;
    let http = http_listener.local_addr()?;
    let smtp = smtp_listener.local_addr()?;
    let mut tasks = tokio::task::JoinSet::new();
    let router = lab.router();
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let serve = axum::serve(http_listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "lab HTTP server failed");
        }
    });
    tasks.spawn(smtp::serve(smtp_listener, lab.clone(), shutdown));
    Ok(Running {
        lab,
        http,
        smtp,
        tasks,
    })
}

/// Sleeps for an injected latency, if any.
pub(crate) async fn delay(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}
