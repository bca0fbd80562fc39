//! TLS pieces the probes and channels share: the crypto provider (ring, passed
//! explicitly so no process-wide default is needed), trust anchors (the system's
//! read and parsed once per process), and the verifier that accepts any chain
//! while still checking handshake signatures.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The crypto provider every TLS config of sonde uses: one per process (it is
/// constant data), so configs built by the thousand share it.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's trust anchors, read once per process: probes are built by the
/// thousand and the store does not change while the agent runs. Certificates that
/// fail to load are skipped (fewer anchors surface as UnknownIssuer, which names
/// the problem).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let native = rustls_native_certs::load_native_certs();
        if !native.errors.is_empty() {
            tracing::debug!(
                errors = native.errors.len(),
                "some system root certificates did not load"
            );
        }
        native.certs
    })
}

/// The system's trust anchors as a parsed store, built once per process from
/// `system_roots`.
fn system_store() -> &'static RootCertStore {
    static STORE: OnceLock<RootCertStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        roots
    })
}

/// System roots plus the certificates of `ca_file` (a PEM bundle). An unreadable
/// or empty `ca_file` is an error naming it.
pub(crate) fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    match ca_file {
        None => Ok(system_store().clone()),
        Some(ca_file) => {
            let pem = crate::file::read_blocking(ca_file, crate::file::MAX_SIZE)
                .map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
            roots_with_pem(ca_file, &pem)
        }
    }
}

/// System roots plus the certificates of a PEM bundle read from `ca_file` (named
/// in errors). A bundle without a certificate is an error.
pub(crate) fn roots_with_pem(ca_file: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let shown = ca_file.display();
    let mut roots = system_store().clone();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca_file {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ca_file {shown}: no CERTIFICATE in it"));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("ca_file {shown}: {e}"))?;
    }
    Ok(roots)
}

/// Accepts any certificate chain, so that a handshake finishes whatever the
/// chain (`verify = false`, or to read a bad chain and verify it afterwards), but
/// still checks the handshake signatures: the peer must hold the key of the
/// certificate it shows. Stateless, so one config serves concurrent runs.
#[derive(Debug)]
pub(crate) struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    pub(crate) fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
