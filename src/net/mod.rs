//! The network layer probes and channels share: the HTTP client as sonde builds
//! it, capped body reads, how request errors are classified, URL checks and the
//! forms in which URLs may be shown (`http`); SMTP's TLS modes, default ports,
//! lettre's TLS settings and a raw STARTTLS handshake (`smtp`); the rustls
//! pieces all of them share: the crypto provider, trust anchors and the
//! accept-any verifier (`tls`).
//!
//! A leaf layer: it depends only on other leaves (`spec`), never on probe
//! kinds, channels or outcomes; callers turn its typed errors into their own
//! (an `Outcome`, a `DeliveryError`).

pub(crate) mod http;
pub(crate) mod smtp;
pub(crate) mod tls;
