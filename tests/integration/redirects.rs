//! Attack tests: a redirect must not carry an http probe's secrets away. A
//! server on 127.0.0.1 redirects to a second loopback address (127.0.0.2,
//! another host to the probe) or from https down to http; the real `sonde probe`
//! follows only what its config allows, and what it follows never receives the
//! configured header, a `Referer`, or the original query.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{sonde_in, stdout};

const KEY: &str = "planted-api-key-7f3a";
const QUERY_SECRET: &str = "planted-query-secret-91c2";

/// A server recording the head of every request it gets and answering each
/// with `answer(path)`: (status, Location).
struct Recorder {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(
        ip: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
        answer: impl Fn(&str) -> (u16, Option<String>) + Send + Sync + 'static,
    ) -> Recorder {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (seen, answer) = (heads.clone(), Arc::new(answer));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (seen, answer, tls) = (seen.clone(), answer.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => exchange(socket, &seen, &*answer).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(socket).await {
                                exchange(stream, &seen, &*answer).await;
                            }
                        }
                    }
                });
            }
        });
        Recorder { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// One request and its answer, then the connection closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    seen: &Mutex<Vec<String>>,
    answer: &(dyn Fn(&str) -> (u16, Option<String>) + Send + Sync),
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    seen.lock().unwrap().push(head);
    let (status, location) = answer(&path);
    let mut reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n");
    if let Some(location) = location {
        reply.push_str(&format!("location: {location}\r\n"));
    }
    reply.push_str("\r\nok");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Runs `sonde probe NAME --format json` on a config holding one http probe.
async fn probe(dir: &Path, url: &str, extra: &str) -> Value {
    let toml = format!(
        "[[probe]]\nname = \"p\"\nkind = \"http\"\nurl = \"{url}\"\n\
         headers = {{ X-Api-Key = \"{KEY}\" }}\n{extra}\n"
    );
    std::fs::write(dir.join("sonde.toml"), toml).unwrap();
    let dir = dir.to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        sonde_in(&dir, &["probe", "p", "--format", "json"], &[])
    })
    .await
    .unwrap();
    serde_json::from_str(stdout(&out).trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn assert_carries_no_secret(head: &str) {
    let lower = head.to_ascii_lowercase();
    assert!(!head.contains(KEY), "the configured header leaked: {head}");
    assert!(!lower.contains("x-api-key"), "{head}");
    assert!(!lower.contains("referer"), "a Referer was sent: {head}");
    assert!(
        !head.contains(QUERY_SECRET),
        "the original query leaked: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_refused_or_gets_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let other = Recorder::start("127.0.0.2", None, |_| (200, None)).await;
    let landing = format!("http://{}/landing", other.addr);
    let origin = Recorder::start("127.0.0.1", None, move |path| {
        if path.starts_with("/start") {
            (302, Some(landing.clone()))
        } else {
            (404, None)
        }
    })
    .await;
    let url = format!("http://{}/start?token={QUERY_SECRET}", origin.addr);

    // Default: only the URL's own host.
    let v = probe(dir.path(), &url, "").await;
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(v["category"], "protocol", "{v}");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.contains("redirect to host 127.0.0.2 refused"),
        "{summary}"
    );
    assert!(other.heads().is_empty(), "{:?}", other.heads());
    assert!(origin.heads()[0].contains(KEY), "{:?}", origin.heads());

    // Allowed, the other host is asked, without the secrets.
    let v = probe(dir.path(), &url, "redirect_hosts = [\"127.0.0.2\"]").await;
    assert_eq!(v["status"], "ok", "{v}");
    let heads = other.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("GET /landing HTTP/1.1"),
        "{}",
        heads[0]
    );
    assert_carries_no_secret(&heads[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_to_http_downgrade_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Recorder::start("127.0.0.1", None, |_| (200, None)).await;
    let target = format!("http://{}/plain", plain.addr);
    let secure = Recorder::start("127.0.0.1", Some(tls_acceptor()), move |_| {
        (301, Some(target.clone()))
    })
    .await;
    let url = format!("https://{}/?token={QUERY_SECRET}", secure.addr);

    let v = probe(dir.path(), &url, "verify = false").await;
    assert_eq!(v["status"], "critical", "{v}");
    assert_eq!(v["category"], "protocol", "{v}");
    let summary = v["summary"].as_str().unwrap();
    assert!(
        summary.contains("redirect from https to http://127.0.0.1:")
            && summary.contains("allow_downgrade"),
        "{summary}"
    );
    assert_eq!(secure.heads().len(), 1);
    assert!(plain.heads().is_empty(), "{:?}", plain.heads());

    // Allowed: followed, and the plain-text hop (another origin) gets no secret.
    let v = probe(dir.path(), &url, "verify = false\nallow_downgrade = true").await;
    assert_eq!(v["status"], "ok", "{v}");
    let heads = plain.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_carries_no_secret(&heads[0]);
}
