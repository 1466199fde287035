//! Node IDs and what derives from them (DESIGN.md §3). Pure functions: bytes in, text out.
//!
//! A node ID is the SHA-256 of the node's certificate DER: exactly the DTLS fingerprint that SDP
//! carries (`a=fingerprint:sha-256 AB:CD:...`), so a browser's RTCCertificate is an identity too.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// Length of the text form: 256 bits in base32 without padding.
pub const ID_TEXT_LEN: usize = 52;
/// Length of the short, human form.
pub const SHORT_ID_LEN: usize = 8;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// SHA-256 of a node's certificate DER.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 32]);

impl NodeId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The ID of the node whose certificate is `cert_der`.
    pub fn of_certificate(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 8 characters of the text form, for people; never for authentication.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(SHORT_ID_LEN);
        s
    }

    /// The mesh IPv6 address: `fd` then the first 15 bytes of the ID (a ULA, RFC 4193).
    /// It is a locator; the authenticated peer's full ID is always what is checked.
    pub fn ipv6(&self) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets[0] = 0xfd;
        octets[1..].copy_from_slice(&self.0[..15]);
        Ipv6Addr::from(octets)
    }

    /// The SDP fingerprint, `sha-256 AB:CD:...` (RFC 8122 §5).
    pub fn fingerprint(&self) -> String {
        let mut s = String::with_capacity(8 + 32 * 3);
        s.push_str("sha-256 ");
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            s.push_str(&format!("{b:02X}"));
        }
        s
    }

    /// Parses the hex part of an SDP fingerprint (`AB:CD:...`, any case), e.g. from
    /// `a=fingerprint:sha-256 AB:CD:...` or openssl's `-fingerprint -sha256` output.
    pub fn from_fingerprint_hex(hex: &str) -> Result<Self, ParseNodeIdError> {
        let mut bytes = [0u8; 32];
        let mut n = 0;
        for part in hex.trim().split(':') {
            if n == 32 || part.len() != 2 {
                return Err(ParseNodeIdError::Fingerprint);
            }
            bytes[n] = u8::from_str_radix(part, 16).map_err(|_| ParseNodeIdError::Fingerprint)?;
            n += 1;
        }
        if n != 32 {
            return Err(ParseNodeIdError::Fingerprint);
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32_encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseNodeIdError {
    #[error("a node ID is {ID_TEXT_LEN} base32 characters (a-z, 2-7), this has {0}")]
    Length(usize),
    #[error("a node ID is base32 (a-z, 2-7); {0:?} is not a base32 character")]
    Character(char),
    #[error("not a canonical node ID (the last character has bits set past the 256th)")]
    NonCanonical,
    #[error("a SHA-256 fingerprint is 32 hex bytes separated by colons (AB:CD:...)")]
    Fingerprint,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    /// Accepts the 52-character base32 form, in either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != ID_TEXT_LEN {
            return Err(ParseNodeIdError::Length(s.chars().count()));
        }
        let bytes = base32_decode(s)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes);
        // Two text forms must never name one ID: the 4 spare bits must be zero.
        if base32_encode(&id) != s.to_ascii_lowercase() {
            return Err(ParseNodeIdError::NonCanonical);
        }
        Ok(Self(id))
    }
}

/// RFC 4648 base32, lowercase, without padding.
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Inverse of [`base32_encode`]; accepts either case. Trailing partial bits are dropped.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, ParseNodeIdError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in text.chars() {
        let v = match c {
            'a'..='z' => c as u32 - 'a' as u32,
            'A'..='Z' => c as u32 - 'A' as u32,
            '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return Err(ParseNodeIdError::Character(c)),
        };
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // agent/tests/data/test-cert.pem; the expected values were computed outside meshgate:
    //   openssl x509 -in test-cert.pem -noout -fingerprint -sha256
    //   openssl x509 -in test-cert.pem -outform DER | sha256sum | xxd -r -p | base32 | tr A-Z a-z
    const TEST_CERT: &str = include_str!("../../tests/data/test-cert.pem");
    const OPENSSL_FINGERPRINT: &str = "1C:E4:70:E3:12:AA:90:60:B7:97:27:CA:B7:30:05:FA:\
        25:D3:D0:06:94:37:01:70:6D:31:47:27:8B:D0:F2:47";
    const COREUTILS_BASE32: &str = "dtshbyysvkigbn4xe7flomaf7is5huagsq3qc4dngfdspc6q6jdq";
    const EXPECTED_IPV6: &str = "fd1c:e470:e312:aa90:60b7:9727:cab7:3005";

    fn test_id() -> NodeId {
        let der = pem::parse(TEST_CERT).expect("test cert is PEM");
        NodeId::of_certificate(der.contents())
    }

    #[test]
    fn id_of_fixed_certificate_matches_openssl_and_coreutils() {
        let id = test_id();
        assert_eq!(id.fingerprint(), format!("sha-256 {OPENSSL_FINGERPRINT}"));
        assert_eq!(id.to_string(), COREUTILS_BASE32);
        assert_eq!(id.short(), &COREUTILS_BASE32[..8]);
        assert_eq!(id.ipv6().to_string(), EXPECTED_IPV6);
        assert_eq!(NodeId::from_fingerprint_hex(OPENSSL_FINGERPRINT), Ok(id));
    }

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 §10, lowercased and unpadded.
        for (plain, enc) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ] {
            assert_eq!(base32_encode(plain.as_bytes()), enc);
            assert_eq!(base32_decode(enc).unwrap(), plain.as_bytes());
            assert_eq!(
                base32_decode(&enc.to_uppercase()).unwrap(),
                plain.as_bytes()
            );
        }
    }

    #[test]
    fn parse_rejects_bad_text() {
        let good = test_id().to_string();
        assert_eq!(good.parse::<NodeId>(), Ok(test_id()));
        assert_eq!(good.to_uppercase().parse::<NodeId>(), Ok(test_id()));
        assert_eq!(
            good[..51].parse::<NodeId>(),
            Err(ParseNodeIdError::Length(51))
        );
        let mut bad = good.clone();
        bad.replace_range(3..4, "1");
        assert_eq!(bad.parse::<NodeId>(), Err(ParseNodeIdError::Character('1')));
        // 'q' = 16 = 0b10000: the last char carries 1 real bit, so 'r' (0b10001) is non-canonical.
        let mut noncanon = good.clone();
        noncanon.replace_range(51..52, "r");
        assert_eq!(
            noncanon.parse::<NodeId>(),
            Err(ParseNodeIdError::NonCanonical)
        );
        assert!(NodeId::from_fingerprint_hex("AB:CD").is_err());
        assert!(NodeId::from_fingerprint_hex(&format!("{OPENSSL_FINGERPRINT}:00")).is_err());
        assert!(NodeId::from_fingerprint_hex(&OPENSSL_FINGERPRINT.replace("1C", "G8")).is_err());
    }

    proptest! {
        #[test]
        fn base32_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let enc = base32_encode(&data);
            prop_assert_eq!(enc.len(), (data.len() * 8).div_ceil(5));
            prop_assert_eq!(base32_decode(&enc).unwrap(), data);
        }

        #[test]
        fn node_id_text_round_trip(bytes in any::<[u8; 32]>()) {
            let id = NodeId::from_bytes(bytes);
            let text = id.to_string();
            prop_assert_eq!(text.len(), ID_TEXT_LEN);
            prop_assert_eq!(text.parse::<NodeId>().unwrap(), id);
            let hex = id.fingerprint();
            prop_assert_eq!(NodeId::from_fingerprint_hex(&hex["sha-256 ".len()..]).unwrap(), id);
            prop_assert_eq!(&id.ipv6().octets()[1..], &bytes[..15]);
        }
    }
}
