//! The caller's self-signed ES256 JWT on `POST /v1/dial` (DESIGN.md §11, "Signaling").
//!
//! A JWS compact token (RFC 7515) whose protected header carries the signing key as a JWK
//! (RFC 7517), so no key registry is needed: the token proves only that the caller holds *some*
//! key and names itself (`sub`) and this gateway (`aud`). What pins the caller is the DTLS
//! handshake against the offer's `a=fingerprint`, which must equal `sub`. Pure: time is an
//! argument (`now_unix`), and the clock skew is the caller's (`clock_skew_s`), because routers
//! often have no idea what time it is (DESIGN.md §3).

use ring::{agreement, rand, signature};
use serde::Deserialize;

use crate::identity::NodeId;

/// Longer tokens are refused before any parsing: a real one is about 600 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest accepted `exp - iat`, in seconds.
pub const MAX_LIFETIME_S: u64 = 300;

/// The claims of a verified token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// The caller: SHA-256 of its DTLS certificate, to be checked against the offer's fingerprint.
    pub sub: NodeId,
    /// This gateway (the `audience` the token was verified for).
    pub aud: NodeId,
    pub iat: u64,
    pub exp: u64,
}

/// Why a token was refused. The text is meant for the HTTP body and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a well-formed ES256 token with a P-256 JWK and node-ID claims (HTTP 400).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Well-formed, but the signature, the time or the audience is wrong (HTTP 401).
    #[error("token rejected: {0}")]
    Rejected(String),
}

impl JwtError {
    /// The HTTP status the signaling server answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            Self::Rejected(_) => 401,
        }
    }
}

fn malformed(why: impl Into<String>) -> JwtError {
    JwtError::Malformed(why.into())
}

fn rejected(why: impl Into<String>) -> JwtError {
    JwtError::Rejected(why.into())
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    jwk: Option<Jwk>,
    /// RFC 7515 §4.1.11: a recipient that does not understand a critical extension must reject.
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: String,
    #[serde(default)]
    x: String,
    #[serde(default)]
    y: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// RFC 7519 §4.1.3: a string or an array of strings.
    aud: serde_json::Value,
    iat: u64,
    exp: u64,
}

/// Verifies `token` (without the `Bearer ` prefix) for the gateway `audience` at wall-clock
/// time `now_unix`, allowing `skew_s` seconds of clock difference either way.
///
/// Structure is checked first (all [`JwtError::Malformed`]), then the signature, then the
/// lifetime, the time window and the audience (all [`JwtError::Rejected`]).
pub fn verify(
    token: &str,
    audience: &NodeId,
    now_unix: u64,
    skew_s: u64,
) -> Result<Token, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(malformed(format!(
            "{} bytes is longer than the {MAX_TOKEN_LEN} allowed",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "a JWS compact token is three base64url parts joined by '.'",
        ));
    };

    let header: Header = json(h64, "header")?;
    if header.alg != "ES256" {
        return Err(malformed(format!(
            "alg {:?} is not supported (only ES256)",
            header.alg
        )));
    }
    if header.crit.is_some() {
        return Err(malformed("critical header extensions are not supported"));
    }
    let jwk = header
        .jwk
        .ok_or_else(|| malformed("the header has no jwk (the signing public key)"))?;
    if jwk.kty != "EC" || jwk.crv != "P-256" {
        return Err(malformed(format!(
            "jwk is kty {:?} crv {:?}; ES256 needs kty \"EC\" crv \"P-256\"",
            jwk.kty, jwk.crv
        )));
    }
    // SEC 1 uncompressed point: 0x04 || x || y, each coordinate exactly 32 bytes (RFC 7518
    // §6.2.1.2 forbids shortened coordinates).
    let mut point = [4u8; 65];
    for (name, text, dst) in [("x", &jwk.x, 1..33), ("y", &jwk.y, 33..65)] {
        let bytes =
            b64url(text).ok_or_else(|| malformed(format!("jwk {name} is not base64url")))?;
        if bytes.len() != 32 {
            return Err(malformed(format!(
                "jwk {name} is {} bytes; a P-256 coordinate is 32",
                bytes.len()
            )));
        }
        point[dst].copy_from_slice(&bytes);
    }

    let claims: Claims = json(c64, "claims")?;
    let sub = node_id(&claims.sub, "sub")?;
    let aud_ok = match &claims.aud {
        serde_json::Value::String(s) => node_id(s, "aud")? == *audience,
        serde_json::Value::Array(list) => {
            let mut found = false;
            for v in list {
                let s = v
                    .as_str()
                    .ok_or_else(|| malformed("aud is an array with a non-string member"))?;
                found |= s.parse::<NodeId>().is_ok_and(|id| id == *audience);
            }
            found
        }
        _ => return Err(malformed("aud is neither a string nor an array of strings")),
    };

    let sig = b64url(s64).ok_or_else(|| malformed("the signature is not base64url"))?;
    if sig.len() != 64 {
        return Err(malformed(format!(
            "the signature is {} bytes; ES256 is r||s, 64 bytes (RFC 7518 §3.4), not DER",
            sig.len()
        )));
    }
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    let key = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point[..]);
    if key.verify(signed, &sig).is_err() {
        if !on_curve(&point) {
            return Err(malformed("jwk x, y is not a point on P-256"));
        }
        return Err(rejected("bad signature (not made by the header's jwk)"));
    }

    let (iat, exp) = (claims.iat, claims.exp);
    if exp <= iat {
        return Err(rejected(format!("exp {exp} is not after iat {iat}")));
    }
    if exp - iat > MAX_LIFETIME_S {
        return Err(rejected(format!(
            "lifetime exp - iat = {} s is longer than {MAX_LIFETIME_S} s",
            exp - iat
        )));
    }
    if now_unix > exp.saturating_add(skew_s) {
        return Err(rejected(format!(
            "token expired {} s ago (clock skew allowed: {skew_s} s)",
            now_unix - exp
        )));
    }
    if iat > now_unix.saturating_add(skew_s) {
        return Err(rejected(format!(
            "token issued {} s in the future (clock skew allowed: {skew_s} s)",
            iat - now_unix
        )));
    }
    if !aud_ok {
        return Err(rejected(format!(
            "aud does not name this gateway ({audience})"
        )));
    }
    Ok(Token {
        sub,
        aud: *audience,
        iat,
        exp,
    })
}

fn json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, JwtError> {
    let bytes = b64url(part).ok_or_else(|| malformed(format!("the {what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| malformed(format!("the {what}: {e}")))
}

fn node_id(text: &str, claim: &str) -> Result<NodeId, JwtError> {
    text.parse()
        .map_err(|e| malformed(format!("{claim} is not a node ID: {e}")))
}

/// ring's verifier says only "no"; an ECDH with a throwaway key tells a point off the curve
/// (a malformed key) from a bad signature. Called only after a failed verification.
fn on_curve(point: &[u8; 65]) -> bool {
    let rng = rand::SystemRandom::new();
    let Ok(ours) = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng) else {
        return true;
    };
    let theirs = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(ours, &theirs, |_| ()).is_ok()
}

/// Unpadded base64url (RFC 4648 §5, as RFC 7515 §2 uses it). Strict: no padding, no other
/// characters, and the unused bits of the last character must be zero, so one token has
/// exactly one spelling.
fn b64url(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    const NOW: u64 = 1_700_000_000;
    const SKEW: u64 = 300;

    fn id(n: u8) -> NodeId {
        NodeId::from_bytes([n; 32])
    }

    fn enc(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// Makes tokens the way a native node or a browser's WebCrypto would.
    struct Signer {
        key: EcdsaKeyPair,
        rng: rand::SystemRandom,
    }

    impl Signer {
        fn new() -> Self {
            let rng = rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("keygen");
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .expect("pkcs8");
            Self { key, rng }
        }

        fn header(&self) -> serde_json::Value {
            let p = self.key.public_key().as_ref();
            serde_json::json!({"alg": "ES256", "typ": "JWT",
                "jwk": {"kty": "EC", "crv": "P-256", "x": enc(&p[1..33]), "y": enc(&p[33..65])}})
        }

        fn sign_raw(&self, header: &serde_json::Value, claims: &serde_json::Value) -> String {
            let input = format!(
                "{}.{}",
                enc(header.to_string().as_bytes()),
                enc(claims.to_string().as_bytes())
            );
            let sig = self.key.sign(&self.rng, input.as_bytes()).expect("sign");
            format!("{input}.{}", enc(sig.as_ref()))
        }

        fn sign(&self, claims: &serde_json::Value) -> String {
            self.sign_raw(&self.header(), claims)
        }

        fn token(&self, iat: u64, exp: u64) -> String {
            self.sign(&claims(iat, exp))
        }
    }

    fn claims(iat: u64, exp: u64) -> serde_json::Value {
        serde_json::json!({"sub": id(1).to_string(), "aud": id(2).to_string(), "iat": iat, "exp": exp})
    }

    fn check(token: &str) -> Result<Token, JwtError> {
        verify(token, &id(2), NOW, SKEW)
    }

    fn reason(r: Result<Token, JwtError>) -> JwtError {
        r.expect_err("token must be refused")
    }

    #[track_caller]
    fn assert_malformed(r: Result<Token, JwtError>, needle: &str) {
        match reason(r) {
            JwtError::Malformed(m) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            e => panic!("expected Malformed({needle:?}), got {e:?}"),
        }
    }

    #[track_caller]
    fn assert_rejected(r: Result<Token, JwtError>, needle: &str) {
        match reason(r) {
            JwtError::Rejected(m) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            e => panic!("expected Rejected({needle:?}), got {e:?}"),
        }
    }

    #[test]
    fn good_token_verifies() {
        let s = Signer::new();
        let t = check(&s.token(NOW - 10, NOW + 290)).expect("valid");
        assert_eq!(
            t,
            Token {
                sub: id(1),
                aud: id(2),
                iat: NOW - 10,
                exp: NOW + 290
            }
        );
        // aud as an array (RFC 7519 §4.1.3), with something else in it too.
        let mut c = claims(NOW, NOW + 60);
        c["aud"] = serde_json::json!(["https://example.invalid", id(2).to_string()]);
        assert_eq!(check(&s.sign(&c)).map(|t| t.aud), Ok(id(2)));
        // Upper-case node IDs are the same IDs.
        let mut c = claims(NOW, NOW + 60);
        c["sub"] = id(1).to_string().to_uppercase().into();
        assert_eq!(check(&s.sign(&c)).map(|t| t.sub), Ok(id(1)));
    }

    #[test]
    fn bad_signatures_are_rejected() {
        let s = Signer::new();
        let good = s.token(NOW, NOW + 60);
        // One bit flipped in r.
        let dot = good.rfind('.').expect("three parts");
        let mut sig = b64url(&good[dot + 1..]).expect("b64");
        sig[5] ^= 1;
        let flipped = format!("{}.{}", &good[..dot], enc(&sig));
        assert_rejected(check(&flipped), "bad signature");
        // Signed by one key, carrying another's jwk.
        let other = Signer::new();
        let forged = other.sign_raw(&s.header(), &claims(NOW, NOW + 60));
        assert_rejected(check(&forged), "bad signature");
        // Claims changed after signing.
        let parts: Vec<&str> = good.split('.').collect();
        let c = enc(claims(NOW, NOW + 61).to_string().as_bytes());
        assert_rejected(
            check(&format!("{}.{c}.{}", parts[0], parts[2])),
            "bad signature",
        );
    }

    #[test]
    fn time_window_and_skew() {
        let s = Signer::new();
        // Expired 200 s ago: within the 300 s skew.
        assert!(check(&s.token(NOW - 260, NOW - 200)).is_ok());
        // Expired 412 s ago: beyond it.
        let r = check(&s.token(NOW - 472, NOW - 412));
        assert_eq!(
            r,
            Err(JwtError::Rejected(
                "token expired 412 s ago (clock skew allowed: 300 s)".into()
            ))
        );
        // A gateway with a larger skew takes it.
        assert!(verify(&s.token(NOW - 472, NOW - 412), &id(2), NOW, 500).is_ok());
        // Issued in the future: within the skew, then beyond it.
        assert!(check(&s.token(NOW + 300, NOW + 360)).is_ok());
        assert_rejected(
            check(&s.token(NOW + 301, NOW + 360)),
            "issued 301 s in the future",
        );
        // A router that believes it is 1970.
        assert_rejected(
            verify(&s.token(NOW, NOW + 60), &id(2), 0, SKEW),
            "in the future",
        );
        // Lifetime.
        assert!(check(&s.token(NOW, NOW + 300)).is_ok());
        assert_rejected(check(&s.token(NOW, NOW + 301)), "longer than 300 s");
        assert_rejected(check(&s.token(NOW, NOW)), "not after iat");
        assert_rejected(check(&s.token(NOW, NOW - 1)), "not after iat");
        // Huge values do not overflow.
        assert_rejected(check(&s.token(u64::MAX - 10, u64::MAX)), "in the future");
        assert!(verify(&s.token(u64::MAX - 10, u64::MAX), &id(2), u64::MAX, SKEW).is_ok());
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let s = Signer::new();
        let t = s.token(NOW, NOW + 60);
        assert_rejected(
            verify(&t, &id(3), NOW, SKEW),
            "aud does not name this gateway",
        );
        let mut c = claims(NOW, NOW + 60);
        c["aud"] = serde_json::json!([id(3).to_string(), "x"]);
        assert_rejected(check(&s.sign(&c)), "aud does not name");
        c["aud"] = serde_json::json!([]);
        assert_rejected(check(&s.sign(&c)), "aud does not name");
    }

    #[test]
    fn wrong_algorithms_and_keys_are_malformed() {
        let s = Signer::new();
        let c = claims(NOW, NOW + 60);
        for alg in ["none", "HS256", "ES384", "es256", "RS256"] {
            let mut h = s.header();
            h["alg"] = alg.into();
            assert_malformed(check(&s.sign_raw(&h, &c)), "not supported (only ES256)");
        }
        // The classic alg=none token with an empty signature.
        let none = format!(
            "{}.{}.",
            enc(br#"{"alg":"none","typ":"JWT"}"#),
            enc(c.to_string().as_bytes())
        );
        assert_malformed(check(&none), "\"none\" is not supported");

        let mut h = s.header();
        h.as_object_mut().expect("object").remove("jwk");
        assert_malformed(check(&s.sign_raw(&h, &c)), "no jwk");
        let mut h = s.header();
        h["jwk"]["crv"] = "P-384".into();
        assert_malformed(check(&s.sign_raw(&h, &c)), "crv \"P-384\"");
        let mut h = s.header();
        h["jwk"] = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"});
        assert_malformed(check(&s.sign_raw(&h, &c)), "kty \"OKP\"");
        let mut h = s.header();
        h["jwk"]["x"] = enc(&[1; 31]).into();
        assert_malformed(check(&s.sign_raw(&h, &c)), "jwk x is 31 bytes");
        let mut h = s.header();
        h["jwk"]["y"] = "AA==".into();
        assert_malformed(check(&s.sign_raw(&h, &c)), "jwk y is not base64url");
        // (1, 1) is not on the curve.
        let mut h = s.header();
        let mut one = [0u8; 32];
        one[31] = 1;
        h["jwk"]["x"] = enc(&one).into();
        h["jwk"]["y"] = enc(&one).into();
        assert_malformed(check(&s.sign_raw(&h, &c)), "not a point on P-256");
        let mut h = s.header();
        h["crit"] = serde_json::json!(["b64"]);
        assert_malformed(check(&s.sign_raw(&h, &c)), "critical");
    }

    #[test]
    fn bad_claims_are_malformed() {
        let s = Signer::new();
        let mut c = claims(NOW, NOW + 60);
        c["sub"] = "alice".into();
        assert_malformed(check(&s.sign(&c)), "sub is not a node ID");
        let mut c = claims(NOW, NOW + 60);
        c["aud"] = "gateway".into();
        assert_malformed(check(&s.sign(&c)), "aud is not a node ID");
        c["aud"] = 7.into();
        assert_malformed(check(&s.sign(&c)), "aud is neither");
        c["aud"] = serde_json::json!([7]);
        assert_malformed(check(&s.sign(&c)), "non-string");
        let mut c = claims(NOW, NOW + 60);
        c["iat"] = "1700000000".into();
        assert_malformed(check(&s.sign(&c)), "the claims");
        let mut c = claims(NOW, NOW + 60);
        c["exp"] = serde_json::json!(1.7e9);
        assert_malformed(check(&s.sign(&c)), "the claims");
        let mut c = claims(NOW, NOW + 60);
        c["iat"] = serde_json::json!(-1);
        assert_malformed(check(&s.sign(&c)), "the claims");
        let mut c = claims(NOW, NOW + 60);
        c.as_object_mut().expect("object").remove("exp");
        assert_malformed(check(&s.sign(&c)), "missing field `exp`");
        // Duplicate keys are refused, not resolved one way or the other.
        let h = enc(s.header().to_string().as_bytes());
        let dup = format!(
            r#"{{"sub":"{}","aud":"{}","iat":{NOW},"iat":0,"exp":{}}}"#,
            id(1),
            id(2),
            NOW + 60
        );
        assert_malformed(
            check(&format!("{h}.{}.AAAA", enc(dup.as_bytes()))),
            "duplicate field",
        );
        // A DER signature (the classic mistake) says so.
        let good = s.token(NOW, NOW + 60);
        let dot = good.rfind('.').expect("dot");
        let der = format!("{}.{}", &good[..dot], enc(&[0x30; 71]));
        assert_malformed(check(&der), "71 bytes");
    }

    #[test]
    fn garbage_is_malformed() {
        let s = Signer::new();
        let good = s.token(NOW, NOW + 60);
        for t in [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "not a token",
            "Bearer x.y.z",
            "eyJ.eyJ.sig",
        ] {
            assert!(matches!(check(t), Err(JwtError::Malformed(_))), "{t:?}");
        }
        assert_malformed(check(&format!("{good}.x")), "three base64url parts");
        assert_malformed(check(&format!("{good}=")), "signature is not base64url");
        assert_malformed(check(&format!(" {good}")), "header is not base64url");
        assert_malformed(check(&"a".repeat(5000)), "longer than the 4096");
        let not_json = format!(
            "{}.{}.AAAA",
            enc(s.header().to_string().as_bytes()),
            enc(b"[1,")
        );
        assert_malformed(check(&not_json), "the claims");
        assert_eq!(JwtError::Malformed("x".into()).status(), 400);
        assert_eq!(JwtError::Rejected("x".into()).status(), 401);
        assert_eq!(
            JwtError::Rejected("token expired 1 s ago".into()).to_string(),
            "token rejected: token expired 1 s ago"
        );
    }

    #[test]
    fn base64url_is_strict() {
        // RFC 4648 §10 vectors (the url alphabet agrees with the standard one here).
        for (plain, text) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64url(text).as_deref(), Some(plain.as_bytes()), "{text}");
            assert_eq!(enc(plain.as_bytes()), text);
        }
        assert_eq!(b64url("-_8"), Some(vec![0xfb, 0xff]));
        for bad in ["Zg==", "Zm8=", "Z", "Zh", "Zm+v", "Zm/v", "Zm9v\n", "Zm 9"] {
            assert_eq!(b64url(bad), None, "{bad:?}");
        }
    }

    /// A token from a non-Rust signer: Python `cryptography` 50.0.2, which signs DER and was
    /// converted to r||s with `decode_dss_signature` (tests/data is not involved; the script
    /// ran once, offline, and its output is pasted here):
    ///
    /// ```python
    /// key = ec.generate_private_key(ec.SECP256R1())
    /// n = key.public_key().public_numbers()
    /// header = {"alg": "ES256", "typ": "JWT", "jwk": {"kty": "EC", "crv": "P-256",
    ///           "x": b64u(n.x.to_bytes(32, "big")), "y": b64u(n.y.to_bytes(32, "big"))}}
    /// claims = {"sub": b32(sha256(b"caller")), "aud": b32(sha256(b"gateway")),
    ///           "iat": 1700000000, "exp": 1700000300}
    /// r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    /// ```
    #[test]
    fn python_cryptography_token_verifies() {
        let caller = NodeId::of_certificate(b"caller");
        let gateway = NodeId::of_certificate(b"gateway");
        assert_eq!(PY_SUB, caller.to_string());
        let token = format!("{PY_HEADER}.{PY_CLAIMS}.{PY_SIG_RS}");
        let der = format!("{PY_HEADER}.{PY_CLAIMS}.{PY_SIG_DER}");
        let t = verify(&token, &gateway, 1_700_000_100, 0).expect("python token verifies");
        assert_eq!(
            (t.sub, t.iat, t.exp),
            (caller, 1_700_000_000, 1_700_000_300)
        );
        // The same signature in DER, as `key.sign` returns it, is refused with a hint.
        assert_malformed(verify(&der, &gateway, 1_700_000_100, 0), "not DER");
        assert_rejected(
            verify(&token, &gateway, 1_700_000_301, 0),
            "expired 1 s ago",
        );
    }

    const PY_SUB: &str = "mhpflortrcxmj7pw5t6g534en6ypdmj6fdgihajhbqt77iytv3sq";
    const PY_HEADER: &str = concat!(
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImp3ayI6eyJrdHkiOiJFQyIsImNydiI6IlAtMjU2IiwieCI6IlBE",
        "Z0pMRUpjdVFnRXEzVGNjSko2QmxiRWhRblBYb0kyYnczdWVzbHpXdjAiLCJ5IjoiWnNtNVk3NzgtVXA3THItSUJk",
        "eEVRdE1DZnJJSVAwQlo1MElyLTdPYlpLVSJ9fQ",
    );
    const PY_CLAIMS: &str = concat!(
        "eyJzdWIiOiJtaHBmbG9ydHJjeG1qN3B3NXQ2ZzUzNGVuNnlwZG1qNmZkZ2loYWpoYnF0NzdpeXR2M3NxIiwiYXVk",
        "IjoiajJzNjQyaDZ1Ymt5bWVkaXNkcG5rNHp5ZWM1eHB3aXp6d3JoeHJmeWNvbnh6dXozcmNlcSIsImlhdCI6MTcw",
        "MDAwMDAwMCwiZXhwIjoxNzAwMDAwMzAwfQ",
    );
    const PY_SIG_RS: &str =
        "qCDY6Y-chOqproZ8H6FrYd99MxyQZ6deC4HRAlyn28wiSnIueeqCrtVRmP9SQL2EIjEImKb52ALKSZYD-dLFwg";
    const PY_SIG_DER: &str = "MEUCIQCoINjpj5yE6qmuhnwfoWth330zHJBnp14LgdECXKfbzAIgIkpyLnnqgq7VUZj_UkC9hCIxCJim-dgCykmWA_nSxcI";

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,600}") {
            let _ = verify(&s, &id(2), NOW, SKEW);
        }

        #[test]
        fn arbitrary_parts_never_panic(
            h in proptest::collection::vec(any::<u8>(), 0..300),
            c in proptest::collection::vec(any::<u8>(), 0..300),
            sig in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let t = format!("{}.{}.{}", enc(&h), enc(&c), enc(&sig));
            prop_assert!(verify(&t, &id(2), NOW, SKEW).is_err());
        }

        #[test]
        fn arbitrary_claims_never_panic(iat in any::<u64>(), exp in any::<u64>(), now in any::<u64>(), skew in any::<u64>()) {
            // One key for all cases would be faster, but keygen is cheap enough at 256 cases.
            let s = Signer::new();
            let _ = verify(&s.token(iat, exp), &id(2), now, skew);
        }

        #[test]
        fn base64url_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(b64url(&enc(&data)), Some(data));
        }
    }
}
