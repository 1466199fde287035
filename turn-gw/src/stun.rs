//! STUN messages (RFC 8489 §5, §14): a bounds-checked, zero-copy view for parsing, and a
//! builder for responses. Every accessor returns `Option`/`Result`: no input can panic it.
//!
//! Our own codec rather than the `stun` crate's: the shared port runs with `panic = "abort"`,
//! where one arithmetic slip on a hostile datagram kills the node, and the hot path (Send
//! indications) should not allocate per message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
/// More attributes than any real client sends; a bound on work per datagram.
const MAX_ATTRIBUTES: usize = 32;

// Methods (RFC 8489 §18.2, RFC 8656 §17).
pub const BINDING: u16 = 0x001;
pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const SEND: u16 = 0x006;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

// Attributes.
pub const MAPPED_ADDRESS: u16 = 0x0001;
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
pub const CHANNEL_NUMBER: u16 = 0x000C;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const ATTR_DATA: u16 = 0x0013;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const EVEN_PORT: u16 = 0x0018;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;
pub const DONT_FRAGMENT: u16 = 0x001A;
pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
pub const RESERVATION_TOKEN: u16 = 0x0022;
pub const PRIORITY: u16 = 0x0024;
pub const USE_CANDIDATE: u16 = 0x0025;
pub const SOFTWARE: u16 = 0x8022;
pub const FINGERPRINT: u16 = 0x8028;
pub const ICE_CONTROLLED: u16 = 0x8029;
pub const ICE_CONTROLLING: u16 = 0x802A;

const FINGERPRINT_XOR: u32 = 0x5354_554e;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunError {
    /// Shorter than a header, or than its length field says.
    Truncated,
    /// The two top bits are not zero, or the length is not a multiple of 4.
    NotStun,
    /// No magic cookie: an RFC 3489 message.
    Classic,
    /// An attribute runs past the end, or there are too many.
    BadAttribute,
    /// FINGERPRINT present but wrong, or not last.
    BadFingerprint,
    /// An attribute's value is malformed (wrong length, bad family...).
    BadValue(u16),
}

/// A parsed STUN message borrowing its datagram.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub method: u16,
    pub class: Class,
    pub transaction_id: [u8; 12],
    raw: &'a [u8],
    /// (type, value offset, value length) for each attribute, in order.
    attrs: Vec<(u16, usize, usize)>,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if any.
    integrity_at: Option<usize>,
    has_fingerprint: bool,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Message<'a> {
    /// Parses one STUN message that fills `raw` exactly (as over UDP). Checks FINGERPRINT.
    pub fn parse(raw: &'a [u8]) -> Result<Self, StunError> {
        if raw.len() < HEADER_LEN {
            return Err(StunError::Truncated);
        }
        let typ = be16(raw, 0).ok_or(StunError::Truncated)?;
        let len = usize::from(be16(raw, 2).ok_or(StunError::Truncated)?);
        if typ & 0xC000 != 0 || len % 4 != 0 {
            return Err(StunError::NotStun);
        }
        if be32(raw, 4) != Some(MAGIC_COOKIE) {
            return Err(StunError::Classic);
        }
        if raw.len() != HEADER_LEN + len {
            return Err(StunError::Truncated);
        }
        let method = (typ & 0x000F) | ((typ & 0x00E0) >> 1) | ((typ & 0x3E00) >> 2);
        let class = match ((typ >> 7) & 0b10) | ((typ >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let mut transaction_id = [0u8; 12];
        transaction_id.copy_from_slice(&raw[8..20]);

        let mut attrs = Vec::new();
        let mut integrity_at = None;
        let mut has_fingerprint = false;
        let mut at = HEADER_LEN;
        while at < raw.len() {
            if attrs.len() == MAX_ATTRIBUTES || has_fingerprint {
                // Nothing may follow FINGERPRINT (RFC 8489 §14.7).
                return Err(StunError::BadAttribute);
            }
            let t = be16(raw, at).ok_or(StunError::BadAttribute)?;
            let l = usize::from(be16(raw, at + 2).ok_or(StunError::BadAttribute)?);
            let value = at + 4;
            let padded = l.div_ceil(4) * 4;
            if value + padded > raw.len() {
                return Err(StunError::BadAttribute);
            }
            match t {
                FINGERPRINT => {
                    if l != 4 {
                        return Err(StunError::BadFingerprint);
                    }
                    let want = crc32(&raw[..at]) ^ FINGERPRINT_XOR;
                    if be32(raw, value) != Some(want) {
                        return Err(StunError::BadFingerprint);
                    }
                    has_fingerprint = true;
                }
                MESSAGE_INTEGRITY if integrity_at.is_none() => {
                    if l != 20 {
                        return Err(StunError::BadValue(MESSAGE_INTEGRITY));
                    }
                    integrity_at = Some(at);
                }
                // Attributes after MESSAGE-INTEGRITY (but FINGERPRINT) are ignored (§14.5).
                _ if integrity_at.is_some() => {}
                _ => {}
            }
            attrs.push((t, value, l));
            at = value + padded;
        }
        Ok(Self {
            method,
            class,
            transaction_id,
            raw,
            attrs,
            integrity_at,
            has_fingerprint,
        })
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn has_fingerprint(&self) -> bool {
        self.has_fingerprint
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// The first value of attribute `t` that is covered by MESSAGE-INTEGRITY (if present).
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        let limit = self.integrity_at.unwrap_or(usize::MAX);
        self.attrs
            .iter()
            .find(|&&(typ, value, _)| typ == t && (value <= limit || t == MESSAGE_INTEGRITY))
            .map(|&(_, value, len)| &self.raw[value..value + len])
    }

    pub fn contains(&self, t: u16) -> bool {
        self.get(t).is_some()
    }

    /// Every value of attribute `t` (CreatePermission may carry several XOR-PEER-ADDRESSes).
    pub fn get_all(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + '_ {
        let limit = self.integrity_at.unwrap_or(usize::MAX);
        self.attrs
            .iter()
            .filter(move |&&(typ, value, _)| typ == t && value <= limit)
            .map(|&(_, value, len)| &self.raw[value..value + len])
    }

    /// Comprehension-required attributes (0x0000-0x7FFF) not in `known` (RFC 8489 §7.3.1).
    pub fn unknown_required(&self, known: &[u16]) -> Vec<u16> {
        let mut unknown: Vec<u16> = self
            .attrs
            .iter()
            .map(|&(t, _, _)| t)
            .filter(|t| *t < 0x8000 && !known.contains(t))
            .collect();
        unknown.dedup();
        unknown
    }

    pub fn text(&self, t: u16) -> Option<&'a str> {
        std::str::from_utf8(self.get(t)?).ok()
    }

    pub fn u32_attr(&self, t: u16) -> Result<Option<u32>, StunError> {
        match self.get(t) {
            None => Ok(None),
            Some(v) if v.len() == 4 => Ok(be32(v, 0)),
            Some(_) => Err(StunError::BadValue(t)),
        }
    }

    pub fn xor_address(&self, t: u16) -> Result<Option<SocketAddr>, StunError> {
        self.get(t)
            .map(|v| decode_xor_address(v, &self.transaction_id).ok_or(StunError::BadValue(t)))
            .transpose()
    }

    /// Checks MESSAGE-INTEGRITY (HMAC-SHA1, RFC 8489 §14.5) with `key`.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        // The HMAC covers the message up to the attribute, with the length field set as if
        // MESSAGE-INTEGRITY were the last attribute.
        let mut prefix = self.raw[..at].to_vec();
        let len = (at + 24 - HEADER_LEN) as u16;
        prefix[2..4].copy_from_slice(&len.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        hmac::verify(&key, &prefix, &self.raw[at + 4..at + 24]).is_ok()
    }
}

/// Decodes an XOR-MAPPED-ADDRESS-style value (RFC 8489 §14.2).
pub fn decode_xor_address(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *v.get(1)?;
    let port = be16(v, 2)? ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (family, v.len()) {
        (0x01, 8) => IpAddr::V4(Ipv4Addr::from(be32(v, 4)? ^ MAGIC_COOKIE)),
        (0x02, 20) => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&v[4..20]);
            let mut pad = [0u8; 16];
            pad[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            pad[4..].copy_from_slice(txid);
            for (x, p) in b.iter_mut().zip(pad) {
                *x ^= p;
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn encode_address(addr: SocketAddr, xor: Option<&[u8; 12]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = if xor.is_some() {
        addr.port() ^ (MAGIC_COOKIE >> 16) as u16
    } else {
        addr.port()
    };
    match addr.ip() {
        IpAddr::V4(ip) => {
            v.extend_from_slice(&[0, 0x01]);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if xor.is_some() {
                for (x, c) in o.iter_mut().zip(cookie) {
                    *x ^= c;
                }
            }
            v.extend_from_slice(&o);
        }
        IpAddr::V6(ip) => {
            v.extend_from_slice(&[0, 0x02]);
            v.extend_from_slice(&port.to_be_bytes());
            let mut o = ip.octets();
            if let Some(txid) = xor {
                let mut pad = [0u8; 16];
                pad[..4].copy_from_slice(&cookie);
                pad[4..].copy_from_slice(txid);
                for (x, p) in o.iter_mut().zip(pad) {
                    *x ^= p;
                }
            }
            v.extend_from_slice(&o);
        }
    }
    v
}

/// Builds a STUN message. Attributes are appended in call order; `integrity` then
/// `fingerprint` must come last, in that order.
#[derive(Debug, Clone)]
pub struct Builder {
    buf: Vec<u8>,
    transaction_id: [u8; 12],
}

impl Builder {
    pub fn new(method: u16, class: Class, transaction_id: [u8; 12]) -> Self {
        let m = method & 0x0FFF;
        let c = class.bits();
        let typ = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7);
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&typ.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        Self {
            buf,
            transaction_id,
        }
    }

    /// A response to `request` with the same method and transaction ID.
    pub fn response(request: &Message<'_>, class: Class) -> Self {
        Self::new(request.method, class, request.transaction_id)
    }

    fn set_len(&mut self, len: usize) {
        let len = u16::try_from(len - HEADER_LEN).unwrap_or(u16::MAX);
        self.buf[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn attr(mut self, t: u16, value: &[u8]) -> Self {
        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&t.to_be_bytes());
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(&value[..usize::from(len)]);
        let pad = (4 - self.buf.len() % 4) % 4;
        self.buf.extend_from_slice(&[0, 0, 0][..pad]);
        let total = self.buf.len();
        self.set_len(total);
        self
    }

    pub fn u32_attr(self, t: u16, v: u32) -> Self {
        self.attr(t, &v.to_be_bytes())
    }

    pub fn xor_address(self, t: u16, addr: SocketAddr) -> Self {
        let txid = self.transaction_id;
        self.attr(t, &encode_address(addr, Some(&txid)))
    }

    /// The RFC 3489 MAPPED-ADDRESS, for old clients.
    pub fn mapped_address(self, addr: SocketAddr) -> Self {
        self.attr(MAPPED_ADDRESS, &encode_address(addr, None))
    }

    pub fn error(self, code: u16, reason: &str) -> Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(ERROR_CODE, &v)
    }

    pub fn integrity(mut self, key: &[u8]) -> Self {
        let at = self.buf.len();
        self.set_len(at + 24);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
        let tag = hmac::sign(&key, &self.buf);
        self.buf.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        self.buf.extend_from_slice(&20u16.to_be_bytes());
        self.buf.extend_from_slice(tag.as_ref());
        self
    }

    pub fn fingerprint(mut self) -> Self {
        let at = self.buf.len();
        self.set_len(at + 8);
        let crc = crc32(&self.buf) ^ FINGERPRINT_XOR;
        self.buf.extend_from_slice(&FINGERPRINT.to_be_bytes());
        self.buf.extend_from_slice(&4u16.to_be_bytes());
        self.buf.extend_from_slice(&crc.to_be_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (ISO 3309 / ITU-T V.42, as FINGERPRINT uses).
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 5769 §2.1: sample request with short-term credentials, SOFTWARE, PRIORITY,
    /// ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_REQUEST: &str = "
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14
        9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf";

    #[test]
    fn rfc5769_request_parses_and_verifies() {
        let raw = unhex(RFC5769_REQUEST);
        let m = Message::parse(&raw).unwrap();
        assert_eq!((m.method, m.class), (BINDING, Class::Request));
        assert!(m.has_fingerprint());
        assert_eq!(m.text(USERNAME), Some("evtj:h6vY"));
        assert!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert!(!m.check_integrity(b"wrong"));
        assert_eq!(m.u32_attr(PRIORITY), Ok(Some(0x6e0001ff)));
    }

    /// RFC 5769 §2.2: IPv4 response; our builder must reproduce it byte for byte.
    #[test]
    fn rfc5769_ipv4_response_round_trip() {
        let want = unhex(
            "01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 08
             00 01 a1 47 e1 12 a6 43 00 08 00 14 2b 91 f5 99 fd 9e 90 c3
             8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7 80 28 00 04 c0 7d 4c 96",
        );
        let txid: [u8; 12] = want[8..20].try_into().unwrap();
        let mut built = Builder::new(BINDING, Class::Success, txid)
            .attr(SOFTWARE, b"test vector")
            .xor_address(XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap())
            .integrity(b"VOkJxbRl1RmTxUk/WvJxBt")
            .fingerprint()
            .finish();
        // RFC 5769 pads SOFTWARE with 0x20, we pad with zeros (both allowed); compare after
        // normalising that one byte, then check the real vector parses and verifies.
        built[35] = 0x20;
        let m = Message::parse(&want).unwrap();
        assert_eq!(
            m.xor_address(XOR_MAPPED_ADDRESS),
            Ok(Some("192.0.2.1:32853".parse().unwrap()))
        );
        assert!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
        assert_eq!(built[..32], want[..32]);
        assert_eq!(built[36..48], want[36..48]);
    }

    /// RFC 5769 §2.3: IPv6 XOR-MAPPED-ADDRESS.
    #[test]
    fn rfc5769_ipv6_address() {
        let raw = unhex(
            "01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
             80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 14
             00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
             00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75
             bf e3 ed 41 80 28 00 04 c8 fb 0b 4c",
        );
        let m = Message::parse(&raw).unwrap();
        assert_eq!(
            m.xor_address(XOR_MAPPED_ADDRESS),
            Ok(Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            ))
        );
    }

    #[test]
    fn built_messages_parse_back() {
        for addr in ["10.1.2.3:4567", "[fd00::1]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let raw = Builder::new(ALLOCATE, Class::Error, [7; 12])
                .error(401, "Unauthorized")
                .xor_address(XOR_RELAYED_ADDRESS, addr)
                .u32_attr(LIFETIME, 600)
                .integrity(b"key")
                .fingerprint()
                .finish();
            let m = Message::parse(&raw).unwrap();
            assert_eq!((m.method, m.class), (ALLOCATE, Class::Error));
            assert_eq!(m.xor_address(XOR_RELAYED_ADDRESS), Ok(Some(addr)));
            assert_eq!(m.u32_attr(LIFETIME), Ok(Some(600)));
            assert!(m.check_integrity(b"key"));
            assert_eq!(&m.get(ERROR_CODE).unwrap()[2..4], &[4, 1]);
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let raw = unhex(RFC5769_REQUEST);
        for n in 0..raw.len() {
            let _ = Message::parse(&raw[..n]);
        }
        // Flip every bit once.
        let mut m = raw.clone();
        for i in 0..m.len() * 8 {
            m[i / 8] ^= 1 << (i % 8);
            if let Ok(msg) = Message::parse(&m) {
                let _ = msg.check_integrity(b"k");
                let _ = msg.xor_address(XOR_MAPPED_ADDRESS);
            }
            m[i / 8] ^= 1 << (i % 8);
        }
        let mut bad_fp = raw.clone();
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 1;
        assert_eq!(
            Message::parse(&bad_fp).unwrap_err(),
            StunError::BadFingerprint
        );
        let mut classic = raw;
        classic[4] = 0;
        assert_eq!(Message::parse(&classic).unwrap_err(), StunError::Classic);
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
