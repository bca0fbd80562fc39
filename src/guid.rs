//! GUIDs as Microsoft's services write them (`8-4-4-4-12` lowercase hex, version
//! 4 layout): random ones for request ids, stable ones derived from a name.

/// A random GUID, for `client-request-id`, `jti` and trace ids.
pub(crate) fn random() -> String {
    let mut b = [0u8; 16];
    // SystemRandom only fails when the OS has no entropy source; a zeroed id is
    // still a well-formed request id.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    format(b)
}

/// A stable GUID derived from `name` (SHA-256), e.g. a lab tenant id from its
/// domain, case-insensitively.
pub(crate) fn from_name(name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, name.to_ascii_lowercase().as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d.as_ref()[..16]);
    format(b)
}

fn format(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40; // version 4
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex digits, any case).
pub(crate) fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_well_formed_and_stable_by_name() {
        let r = random();
        assert!(is_guid(&r), "{r}");
        assert_ne!(r, random());
        let a = from_name("contoso.onmicrosoft.com");
        assert!(is_guid(&a), "{a}");
        assert_eq!(&a[14..15], "4");
        assert_eq!(a, from_name("Contoso.onmicrosoft.com"));
        assert_ne!(a, from_name("fabrikam.onmicrosoft.com"));
        assert!(!is_guid("not-a-guid"));
        assert!(!is_guid(""));
        assert!(!is_guid("0000000-0000-0000-0000-000000000000"));
    }
}
