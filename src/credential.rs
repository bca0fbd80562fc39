//! The OAuth signing credential: an RSA private key and the certificate that
//! carries its public key, read from PEM (PKCS#8 or PKCS#1 key, PEM or DER
//! certificate) or from PKCS#12, or made fresh (`sonde demo`).
//!
//! The key never leaves this module except as signatures; `Debug` shows the
//! certificate's identity only.

use std::fmt;

use ring::signature::RsaKeyPair;
use serde_json::Value;

use crate::jwt;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("no private key found (expected a PEM `PRIVATE KEY` or `RSA PRIVATE KEY` block)")]
    NoKey,
    #[error("the private key is encrypted: use a PKCS#12 file with password_env or password_file")]
    EncryptedKey,
    #[error("the private key is not a usable RSA key: {0}")]
    BadKey(String),
    #[error("no certificate found (expected a PEM `CERTIFICATE` block or a DER certificate)")]
    NoCertificate,
    #[error("no certificate matches the private key")]
    Mismatch,
    #[error("bad PEM: {0}")]
    Pem(String),
    #[error("wrong password or corrupt PKCS#12")]
    Pkcs12Password,
    #[error("invalid PKCS#12: {0}")]
    Pkcs12(String),
    #[error("cannot make the credential: {0}")]
    Generate(String),
}

/// A private key with its certificate.
pub struct SigningCredential {
    key: RsaKeyPair,
    cert_der: Vec<u8>,
    x5t: String,
    thumbprint: String,
    subject: String,
    not_before: i64,
    not_after: i64,
}

impl fmt::Debug for SigningCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningCredential")
            .field("subject", &self.subject)
            .field("thumbprint", &self.thumbprint)
            .field("key_bits", &self.key_bits())
            .finish_non_exhaustive()
    }
}

impl SigningCredential {
    fn new(key: RsaKeyPair, certs: Vec<Vec<u8>>) -> Result<Self, CredentialError> {
        if certs.is_empty() {
            return Err(CredentialError::NoCertificate);
        }
        let public = key.public().as_ref().to_vec();
        let cert_der = certs
            .into_iter()
            .find(|c| jwt::rsa_public_key_of(c).is_ok_and(|k| k == public))
            .ok_or(CredentialError::Mismatch)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|_| CredentialError::NoCertificate)?;
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let thumbprint = sha1_hex(&cert_der);
        Ok(SigningCredential {
            key,
            x5t: jwt::x5t(&cert_der),
            cert_der,
            thumbprint,
            subject,
            not_before,
            not_after,
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
    /// base64url SHA-1 of the certificate: the JWT header's `x5t`.
    pub fn x5t(&self) -> String {
        self.x5t.clone()
    }
    /// SHA-1 thumbprint in upper-case hex, as Exchange prints it.
    pub fn thumbprint_hex(&self) -> String {
        self.thumbprint.clone()
    }
    pub(crate) fn subject(&self) -> &str {
        &self.subject
    }
    /// Certificate validity, unix seconds.
    pub fn not_before(&self) -> i64 {
        self.not_before
    }
    pub fn not_after(&self) -> i64 {
        self.not_after
    }
    pub(crate) fn key_bits(&self) -> usize {
        self.key.public().modulus_len() * 8
    }
    pub fn sign_rs256(&self, header: &Value, claims: &Value) -> Result<String, jwt::JwtError> {
        jwt::sign_rs256(&self.key, header, claims)
    }
}

/// SHA-1 of a DER certificate in upper-case hex: Exchange's thumbprint.
fn sha1_hex(der: &[u8]) -> String {
    hex::encode_upper(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// The thumbprint of the first certificate in `data` (PEM or DER, as a `.cer`
/// is exported), after checking that it parses as X.509.
pub(crate) fn certificate_thumbprint(data: &[u8]) -> Result<String, CredentialError> {
    let der = if is_pem(data) {
        pem_blocks(data)?
            .certs
            .into_iter()
            .next()
            .ok_or(CredentialError::NoCertificate)?
    } else {
        data.to_vec()
    };
    x509_parser::parse_x509_certificate(&der).map_err(|_| CredentialError::NoCertificate)?;
    Ok(sha1_hex(&der))
}

fn rsa_key(der: &[u8], pkcs8: bool) -> Result<RsaKeyPair, CredentialError> {
    let r = if pkcs8 {
        RsaKeyPair::from_pkcs8(der)
    } else {
        RsaKeyPair::from_der(der)
    };
    r.map_err(|e| {
        let why = e.to_string();
        if pkcs8 && !is_rsa_pkcs8(der) {
            CredentialError::BadKey(
                "it is not an RSA key (ACS and Entra assertions are RS256)".into(),
            )
        } else if why.contains("TooSmall") || why.contains("too small") {
            CredentialError::BadKey("the key is smaller than 2048 bits".into())
        } else {
            CredentialError::BadKey(why)
        }
    })
}

/// rsaEncryption OID bytes inside a PKCS#8 AlgorithmIdentifier.
fn is_rsa_pkcs8(der: &[u8]) -> bool {
    const RSA_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    der.windows(RSA_OID.len()).take(64).any(|w| w == RSA_OID)
}

fn is_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

/// What a PEM buffer holds, in order.
#[derive(Default)]
struct PemParts {
    /// DER keys, `true` for PKCS#8, `false` for PKCS#1.
    keys: Vec<(Vec<u8>, bool)>,
    certs: Vec<Vec<u8>>,
    encrypted: bool,
}

fn pem_blocks(data: &[u8]) -> Result<PemParts, CredentialError> {
    let PemParts {
        mut keys,
        mut certs,
        mut encrypted,
    } = PemParts::default();
    for block in x509_parser::pem::Pem::iter_from_buffer(data) {
        let pem = block.map_err(|e| CredentialError::Pem(e.to_string()))?;
        match pem.label.as_str() {
            "PRIVATE KEY" => keys.push((pem.contents, true)),
            "RSA PRIVATE KEY" => keys.push((pem.contents, false)),
            "ENCRYPTED PRIVATE KEY" => encrypted = true,
            "CERTIFICATE" | "X509 CERTIFICATE" | "TRUSTED CERTIFICATE" => certs.push(pem.contents),
            _ => {}
        }
    }
    Ok(PemParts {
        keys,
        certs,
        encrypted,
    })
}

/// From a PEM key file and a certificate file (PEM or DER). The key file may
/// hold the certificate too; `cert` may then be empty.
pub fn from_pem(key: &[u8], cert: &[u8]) -> Result<SigningCredential, CredentialError> {
    let PemParts {
        keys,
        mut certs,
        encrypted,
    } = pem_blocks(key)?;
    let Some((der, pkcs8)) = keys.into_iter().next() else {
        return Err(if encrypted {
            CredentialError::EncryptedKey
        } else {
            CredentialError::NoKey
        });
    };
    let pair = rsa_key(&der, pkcs8)?;
    if !cert.is_empty() {
        if is_pem(cert) {
            certs.extend(pem_blocks(cert)?.certs);
        } else {
            certs.push(cert.to_vec());
        }
    }
    SigningCredential::new(pair, certs)
}

/// From a PKCS#12 (`.pfx`) file holding the key and its certificate.
pub(crate) fn from_pkcs12(
    data: &[u8],
    password: &str,
) -> Result<SigningCredential, CredentialError> {
    use p12_keystore::error::Error as P12Error;
    let archive =
        p12_keystore::Pkcs12Archive::from_pkcs12(data, password).map_err(|e| match e {
            P12Error::MacError(_)
            | P12Error::UnpadError
            | P12Error::Pkcs5Error(_)
            | P12Error::InvalidPrivateKey
            | P12Error::InvalidData => CredentialError::Pkcs12Password,
            other => CredentialError::Pkcs12(other.to_string()),
        })?;
    let bag = archive.keys.first().ok_or(CredentialError::NoKey)?;
    let pair = rsa_key(bag.key.as_der(), true)?;
    let certs = archive
        .certs
        .iter()
        .map(|b| b.cert.as_der().to_vec())
        .collect();
    SigningCredential::new(pair, certs)
}

/// A freshly made self-signed credential and its PEM forms.
pub struct Generated {
    /// PKCS#8 PEM of the private key: write it with owner-only permissions.
    pub key_pkcs8_pem: String,
    pub cert_pem: String,
    pub credential: SigningCredential,
}

/// Makes an RSA key of `bits` and a self-signed certificate for `common_name`
/// valid from `not_before` to `not_after` (unix seconds), as Exchange's
/// `New-ExchangeCertificate` does for the OAuth certificate.
pub fn generate_self_signed(
    common_name: &str,
    bits: usize,
    not_before: i64,
    not_after: i64,
) -> Result<Generated, CredentialError> {
    use rsa::pkcs8::EncodePrivateKey;
    let gen_err = |e: &dyn fmt::Display| CredentialError::Generate(e.to_string());
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, bits).map_err(|e| gen_err(&e))?;
    let pkcs8 = key.to_pkcs8_der().map_err(|e| gen_err(&e))?;
    let pkcs8_der = pkcs8.as_bytes().to_vec();
    let key_pkcs8_pem = pkcs8
        .to_pem("PRIVATE KEY", rsa::pkcs8::LineEnding::LF)
        .map_err(|e| gen_err(&e))?
        .to_string();
    let signer = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8_der.clone()),
        &rcgen::PKCS_RSA_SHA256,
    )
    .map_err(|e| gen_err(&e))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| gen_err(&e));
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(|e| gen_err(&e))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&signer).map_err(|e| gen_err(&e))?;
    let pair = rsa_key(&pkcs8_der, true)?;
    let credential = SigningCredential::new(pair, vec![cert.der().to_vec()])?;
    Ok(Generated {
        key_pkcs8_pem,
        cert_pem: cert.pem(),
        credential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_credential_signs_tokens_its_certificate_verifies() {
        let g = generate_self_signed(
            "Microsoft Exchange Server Auth Certificate",
            2048,
            1_700_000_000,
            1_860_000_000,
        )
        .unwrap();
        let c = &g.credential;
        assert_eq!(c.key_bits(), 2048);
        assert_eq!(c.not_before(), 1_700_000_000);
        assert_eq!(c.not_after(), 1_860_000_000);
        assert_eq!(c.subject(), "CN=Microsoft Exchange Server Auth Certificate");
        assert_eq!(
            jwt::x5t_from_thumbprint(&c.thumbprint_hex()).unwrap(),
            c.x5t()
        );
        let token = c
            .sign_rs256(
                &json!({"alg": "RS256", "x5t": c.x5t()}),
                &json!({"aud": "x"}),
            )
            .unwrap();
        let d = jwt::decode(&token).unwrap();
        d.verify_rs256(c.cert_der()).unwrap();
        // The PEM forms read back to the same credential, key and certificate in one file.
        let again = from_pem(format!("{}{}", g.key_pkcs8_pem, g.cert_pem).as_bytes(), b"").unwrap();
        assert_eq!(again.thumbprint_hex(), c.thumbprint_hex());
        // ...and with the certificate as DER, as Exchange exports OAuthCert.cer.
        let again = from_pem(g.key_pkcs8_pem.as_bytes(), c.cert_der()).unwrap();
        assert_eq!(again.x5t(), c.x5t());
        // A tampered token does not verify.
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = jwt::b64url(br#"{"aud":"y"}"#);
        parts[1] = &other;
        assert_eq!(
            jwt::decode(&parts.join("."))
                .unwrap()
                .verify_rs256(c.cert_der())
                .unwrap_err(),
            jwt::JwtError::BadSignature
        );
        assert!(!format!("{c:?}").contains("PRIVATE"));
        // The thumbprint of the certificate alone, PEM or DER, is the credential's.
        assert_eq!(
            certificate_thumbprint(g.cert_pem.as_bytes()).unwrap(),
            c.thumbprint_hex()
        );
        assert_eq!(
            certificate_thumbprint(c.cert_der()).unwrap(),
            c.thumbprint_hex()
        );
        assert!(matches!(
            certificate_thumbprint(g.key_pkcs8_pem.as_bytes()),
            Err(CredentialError::NoCertificate)
        ));
        assert!(matches!(
            certificate_thumbprint(b"not a certificate"),
            Err(CredentialError::NoCertificate)
        ));
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        let g = generate_self_signed("a", 2048, 1_700_000_000, 1_800_000_000).unwrap();
        let other = generate_self_signed("b", 2048, 1_700_000_000, 1_800_000_000).unwrap();
        assert!(matches!(
            from_pem(b"", b"").unwrap_err(),
            CredentialError::NoKey
        ));
        assert!(matches!(
            from_pem(g.key_pkcs8_pem.as_bytes(), b"").unwrap_err(),
            CredentialError::NoCertificate
        ));
        assert!(matches!(
            from_pem(g.key_pkcs8_pem.as_bytes(), other.cert_pem.as_bytes()).unwrap_err(),
            CredentialError::Mismatch
        ));
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(matches!(
            from_pem(enc, b"").unwrap_err(),
            CredentialError::EncryptedKey
        ));
        let garbage = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            from_pem(garbage, g.cert_pem.as_bytes()).unwrap_err(),
            CredentialError::BadKey(_)
        ));
        assert!(matches!(
            from_pkcs12(b"not a pfx", "x").unwrap_err(),
            CredentialError::Pkcs12(_) | CredentialError::Pkcs12Password
        ));
    }

    proptest::proptest! {
        #[test]
        fn readers_never_panic_on_any_bytes(key in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
                                            cert in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            proptest::prop_assert!(from_pem(&key, &cert).is_err());
            proptest::prop_assert!(from_pkcs12(&key, "x").is_err());
        }

        #[test]
        fn readers_never_panic_on_pem_framed_garbage(body in "[A-Za-z0-9+/=\\n]{0,400}") {
            let key = format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
            let cert = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            proptest::prop_assert!(from_pem(key.as_bytes(), cert.as_bytes()).is_err());
        }
    }
}
