//! Compact JWS with RS256, as the hybrid push chain uses it: the client
//! assertion sonde signs, and the access tokens it (and the lab) verify.
//!
//! Deliberately small: RS256 only. A token whose header names any other
//! algorithm (`none` included) never verifies; the signature is checked with
//! ring against a certificate's public key before any claim is trusted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};

/// Tokens larger than this are refused before decoding (real ones are ~1-2 KiB).
pub(crate) const MAX_TOKEN_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a compact JWT (expected three dot-separated parts)")]
    Shape,
    #[error("larger than {} KiB", MAX_TOKEN_BYTES / 1024)]
    TooLarge,
    #[error("the {0} is not base64url")]
    Base64(&'static str),
    #[error("the {0} is not a JSON object")]
    Json(&'static str),
    #[error("the algorithm is `{0}`, only RS256 is accepted")]
    Algorithm(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the verifying certificate: {0}")]
    Certificate(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// base64url without padding (RFC 7515 §2).
pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decodes base64url; tolerates trailing `=` padding that some issuers add.
pub(crate) fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

/// The `x5t` of a certificate: base64url (unpadded) SHA-1 of its DER.
pub(crate) fn x5t(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert_der);
    b64url(digest.as_ref())
}

#[cfg(test)]
/// The `x5t` for a SHA-1 thumbprint as Exchange prints it (hex, any case, spaces
/// allowed); `None` when it is not 40 hex digits.
pub(crate) fn x5t_from_thumbprint(hex: &str) -> Option<String> {
    let digits: String = hex
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if digits.len() != 40 {
        return None;
    }
    let bytes = (0..20)
        .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(b64url(&bytes))
}

/// Signs `header` and `claims` (JSON objects) with RS256.
pub(crate) fn sign_rs256(
    key: &RsaKeyPair,
    header: &Value,
    claims: &Value,
) -> Result<String, JwtError> {
    let mut token = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        token.as_bytes(),
        &mut sig,
    )
    .map_err(|_| JwtError::Sign("the RSA signing operation failed".into()))?;
    token.push('.');
    token.push_str(&b64url(&sig));
    Ok(token)
}

/// A decoded, not yet verified, token.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input_len: usize,
    raw: String,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWT. Nothing in it is trusted yet.
pub(crate) fn decode(token: &str) -> Result<Decoded, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let object = |part: &str, what: &'static str| -> Result<Map<String, Value>, JwtError> {
        let bytes = b64url_decode(part).map_err(|_| JwtError::Base64(what))?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(JwtError::Json(what)),
        }
    };
    let header = object(h, "header")?;
    let claims = object(c, "claims")?;
    let signature = b64url_decode(s).map_err(|_| JwtError::Base64("signature"))?;
    Ok(Decoded {
        header,
        claims,
        signing_input_len: h.len() + 1 + c.len(),
        raw: token.to_string(),
        signature,
    })
}

impl Decoded {
    pub(crate) fn alg(&self) -> Option<&str> {
        self.header_str("alg")
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric claim; ACS-style decimal strings are accepted too.
    pub(crate) fn claim_i64(&self, name: &str) -> Option<i64> {
        match self.claims.get(name)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// Verifies the RS256 signature against the public key of a certificate (DER).
    pub(crate) fn verify_rs256(&self, cert_der: &[u8]) -> Result<(), JwtError> {
        let key = rsa_public_key_of(cert_der).map_err(JwtError::Certificate)?;
        self.verify_rs256_with_key(&key)
    }

    /// Verifies the RS256 signature against a PKCS#1 `RSAPublicKey` (DER).
    pub(crate) fn verify_rs256_with_key(&self, rsa_public_key: &[u8]) -> Result<(), JwtError> {
        match self.alg() {
            Some("RS256") => {}
            Some(other) => return Err(JwtError::Algorithm(other.chars().take(32).collect())),
            None => return Err(JwtError::Algorithm("(none given)".into())),
        }
        let input = &self.raw.as_bytes()[..self.signing_input_len];
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, rsa_public_key)
            .verify(input, &self.signature)
            .map_err(|_| JwtError::BadSignature)
    }
}

/// The PKCS#1 `RSAPublicKey` of a certificate, or why there is none.
pub(crate) fn rsa_public_key_of(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = &cert.tbs_certificate.subject_pki;
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        return Err("its key is not an RSA key".into());
    }
    Ok(spki.subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn x5t_matches_the_documented_vectors() {
        assert_eq!(
            x5t_from_thumbprint("8bf833e6a7d8a7960f5802b5fffd188599e2a4b2").unwrap(),
            "i_gz5qfYp5YPWAK1__0YhZnipLI"
        );
        assert_eq!(
            x5t_from_thumbprint("84E05C1D98BCE3A5421D225B140B36E86A3D5534").unwrap(),
            "hOBcHZi846VCHSJbFAs26Go9VTQ"
        );
        assert_eq!(x5t_from_thumbprint("84 E0 5C"), None);
    }

    #[test]
    fn decode_rejects_what_is_not_a_jwt() {
        assert_eq!(decode("abc").unwrap_err(), JwtError::Shape);
        assert_eq!(decode("a.b.c.d").unwrap_err(), JwtError::Shape);
        assert_eq!(decode("!!.e30.").unwrap_err(), JwtError::Base64("header"));
        let h = b64url(b"[1]");
        assert_eq!(
            decode(&format!("{h}.e30.")).unwrap_err(),
            JwtError::Json("header")
        );
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(decode(&big).unwrap_err(), JwtError::TooLarge);
    }

    #[test]
    fn numeric_claims_accept_acs_strings() {
        let t = format!(
            "{}.{}.",
            b64url(br#"{"alg":"RS256"}"#),
            b64url(
                json!({"nbf": "1699307907", "exp": 1699394607, "x": true})
                    .to_string()
                    .as_bytes()
            )
        );
        let d = decode(&t).unwrap();
        assert_eq!(d.claim_i64("nbf"), Some(1_699_307_907));
        assert_eq!(d.claim_i64("exp"), Some(1_699_394_607));
        assert_eq!(d.claim_i64("x"), None);
        assert_eq!(d.alg(), Some("RS256"));
    }

    #[test]
    fn alg_none_never_verifies() {
        let t = format!("{}.{}.", b64url(br#"{"alg":"none"}"#), b64url(b"{}"));
        let d = decode(&t).unwrap();
        assert_eq!(
            d.verify_rs256_with_key(&[0u8; 10]).unwrap_err(),
            JwtError::Algorithm("none".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics_on_any_text(s in "\\PC*") {
            let _ = decode(&s);
        }

        #[test]
        fn decode_never_panics_on_any_parts(h in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                            c in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                            sig in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let token = format!("{}.{}.{}", b64url(&h), b64url(&c), b64url(&sig));
            if let Ok(d) = decode(&token) {
                let _ = (d.alg(), d.claim_i64("exp"), d.claim_str("aud"));
                proptest::prop_assert!(d.verify_rs256_with_key(&sig).is_err());
            }
        }
    }
}
