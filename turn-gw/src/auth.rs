//! TURN long-term credentials (RFC 8489 §9.2, RFC 8656 §7.2) and coturn's REST-style
//! time-limited credentials (`use-auth-secret`: username `expiry[:name]`, password
//! `base64(HMAC-SHA1(secret, username))`). Pure: time is an argument.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// Where passwords come from.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub realm: String,
    /// Static long-term users: name -> password.
    pub users: HashMap<String, String>,
    /// REST shared secret; `None` when off.
    pub secret: Option<String>,
    /// Routers often have no clock: an expired REST username is still accepted this long after
    /// its expiry (DESIGN.md §3).
    pub clock_skew: Duration,
}

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    UnknownUser,
    /// A REST username whose timestamp is in the past (beyond the skew).
    Expired,
}

impl Credentials {
    /// The password for `username` at wall-clock time `now`.
    pub fn password(&self, username: &str, now: SystemTime) -> Result<String, Refused> {
        if let Some(p) = self.users.get(username) {
            return Ok(p.clone());
        }
        let Some(secret) = &self.secret else {
            return Err(Refused::UnknownUser);
        };
        let stamp = username.split_once(':').map_or(username, |(t, _)| t);
        let expiry: u64 = stamp.parse().map_err(|_| Refused::UnknownUser)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if expiry.saturating_add(self.clock_skew.as_secs()) < now {
            return Err(Refused::Expired);
        }
        Ok(rest_password(secret, username))
    }

    /// The long-term key, MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
    pub fn key(&self, username: &str, password: &str) -> Vec<u8> {
        md5(format!("{username}:{}:{password}", self.realm).as_bytes()).to_vec()
    }
}

/// coturn's REST password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    base64(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Stateless nonces: `<hex seconds><hex HMAC tag>`, valid for [`NONCE_LIFETIME`]. Nothing is
/// stored per client, so a flood of unauthenticated requests costs no memory.
#[derive(Debug)]
pub struct Nonces {
    key: hmac::Key,
}

pub const NONCE_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    Stale,
    Invalid,
}

impl Nonces {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// `now` is seconds on a monotonic clock of the caller's choosing.
    pub fn issue(&self, now: u64) -> String {
        let stamp = format!("{now:016x}");
        let tag = hmac::sign(&self.key, stamp.as_bytes());
        format!("{stamp}{}", hex(&tag.as_ref()[..8]))
    }

    pub fn check(&self, nonce: &str, now: u64) -> NonceCheck {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return NonceCheck::Invalid;
        }
        let (stamp, tag) = nonce.split_at(16);
        let expected = hmac::sign(&self.key, stamp.as_bytes());
        if !constant_time_eq(tag.as_bytes(), hex(&expected.as_ref()[..8]).as_bytes()) {
            return NonceCheck::Invalid;
        }
        match u64::from_str_radix(stamp, 16) {
            Ok(t) if now.saturating_sub(t) <= NONCE_LIFETIME.as_secs() && t <= now => {
                NonceCheck::Valid
            }
            Ok(_) => NonceCheck::Stale,
            Err(_) => NonceCheck::Invalid,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// MD5 (RFC 1321), needed only for the long-term credential key, which RFC 8489 fixes as MD5.
/// ring has no MD5, and one small function beats a crate for it.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] = std::array::from_fn(|i| {
        // floor(abs(sin(i + 1)) * 2^32), as RFC 1321 §3.4 defines it.
        ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32
    });
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for block in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_rfc1321_vectors() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(hex(&md5(input.as_bytes())), want, "{input:?}");
        }
    }

    #[test]
    fn long_term_key_like_rfc5769() {
        // RFC 5769 §2.4's credentials (username in katakana, password after SASLprep); the
        // expected key from Python's hashlib:
        //   hashlib.md5('<username>:example.org:TheMatrIX'.encode()).hexdigest()
        let creds = Credentials {
            realm: "example.org".into(),
            ..Default::default()
        };
        let key = creds.key(
            "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}",
            "TheMatrIX",
        );
        assert_eq!(hex(&key), "e8ca7ad59d5eb0518e312911d2dab2a9");
    }

    #[test]
    fn rest_credentials_like_coturn() {
        // coturn: secret "north", username "1600000000:alice":
        //   echo -n 1600000000:alice | openssl dgst -binary -sha1 -hmac north | base64
        assert_eq!(
            rest_password("north", "1600000000:alice"),
            "gq98pTOhhHaAu0we9aV79kOVVv0="
        );
        let creds = Credentials {
            realm: "r".into(),
            users: HashMap::new(),
            secret: Some("north".into()),
            clock_skew: Duration::from_secs(60),
        };
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(
            creds.password("1600000000:alice", at(1_599_999_000)),
            Ok("gq98pTOhhHaAu0we9aV79kOVVv0=".into())
        );
        // Within the skew after expiry: still accepted; beyond it: expired.
        assert!(
            creds
                .password("1600000000:alice", at(1_600_000_059))
                .is_ok()
        );
        assert_eq!(
            creds.password("1600000000:alice", at(1_600_000_061)),
            Err(Refused::Expired)
        );
        assert_eq!(creds.password("alice", at(0)), Err(Refused::UnknownUser));
        assert!(creds.password("1600000000", at(0)).is_ok());
    }

    #[test]
    fn base64_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let n = Nonces::new(b"k");
        let nonce = n.issue(1000);
        assert_eq!(n.check(&nonce, 1000), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1000 + 600), NonceCheck::Valid);
        assert_eq!(n.check(&nonce, 1000 + 601), NonceCheck::Stale);
        assert_eq!(
            Nonces::new(b"other").check(&nonce, 1000),
            NonceCheck::Invalid
        );
        let mut forged = nonce.clone();
        forged.replace_range(15..16, "f");
        assert_eq!(n.check(&forged, 1000), NonceCheck::Invalid);
        assert_eq!(n.check("short", 1000), NonceCheck::Invalid);
        assert_eq!(
            n.check("\u{e9}".repeat(16).as_str(), 1000),
            NonceCheck::Invalid
        );
    }
}
