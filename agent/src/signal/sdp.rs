//! The SDP of `POST /v1/dial` (DESIGN.md §11, "Signaling"): a WebRTC data-channel offer in, our
//! ICE-lite answer out. Only what a data channel needs (RFC 8841, RFC 8839, RFC 8122, JSEP
//! RFC 8829) is read; everything else in the offer is ignored. Pure text in, values out.
//!
//! The gateway is an ICE-lite agent (RFC 8445 §2.5) and the DTLS server (`a=setup:passive`):
//! it never sends connectivity checks, so the offer's candidates are information (logs, TURN
//! permissions), not addresses it will probe.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::identity::NodeId;

/// Longest accepted offer. Chromium's offer with a dozen candidates is about 2 KiB.
pub const MAX_OFFER_LEN: usize = 64 * 1024;
/// Longest accepted line.
pub const MAX_LINE_LEN: usize = 4096;
/// Candidates kept from an offer; the rest are ignored.
pub const MAX_CANDIDATES: usize = 32;
/// `a=sctp-port` when the offer has none (RFC 8841 §5.2), and the port we announce.
pub const DEFAULT_SCTP_PORT: u16 = 5000;
/// Longest accepted `a=mid` (it is echoed into the answer).
const MAX_MID_LEN: usize = 64;

/// The offerer's DTLS role (RFC 4145 §4, RFC 5763 §5). We answer `passive`, so the offerer
/// is the DTLS client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    ActPass,
    Active,
}

/// What the gateway needs from an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// The `a=fingerprint:sha-256` value: the caller's node ID, to check against the JWT's `sub`
    /// and then against the certificate in the DTLS handshake.
    pub fingerprint: NodeId,
    /// The data-channel m-line's `a=mid`.
    pub mid: Option<String>,
    /// The offer had `a=group:BUNDLE`.
    pub bundle: bool,
    /// Absent `a=setup` means `active` (RFC 4145 §4).
    pub setup: Setup,
    /// The offerer's SCTP port: the destination port of our SCTP packets.
    pub sctp_port: u16,
    /// `a=max-message-size`; `Some(0)` means "any size" (RFC 8841 §6).
    pub max_message_size: Option<u32>,
    /// UDP candidates with an IP literal (mDNS `.local` names and TCP are skipped), at most
    /// [`MAX_CANDIDATES`], in offer order, without duplicates.
    pub candidates: Vec<SocketAddr>,
}

/// Attributes that may sit at session level or in the media section; the media section's
/// value wins (RFC 8866 §5, RFC 8122 §5). Firefox puts ICE credentials and the fingerprint at
/// session level, Chromium and aiortc in the media section.
#[derive(Default)]
struct Level {
    ufrag: Option<String>,
    pwd: Option<String>,
    fingerprint: Option<NodeId>,
    setup: Option<Setup>,
}

/// [`parse_offer`] for a request body: bounded before the UTF-8 check.
pub fn parse_offer_bytes(body: &[u8]) -> Result<Offer, String> {
    if body.len() > MAX_OFFER_LEN {
        return Err(too_long(body.len()));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("the offer is not UTF-8 (at byte {})", e.valid_up_to()))?;
    parse_offer(text)
}

fn too_long(len: usize) -> String {
    format!("the offer is {len} bytes; at most {MAX_OFFER_LEN} are accepted")
}

/// Parses a data-channel offer. The error is a reason for the HTTP 400 body.
pub fn parse_offer(text: &str) -> Result<Offer, String> {
    if text.len() > MAX_OFFER_LEN {
        return Err(too_long(text.len()));
    }
    let (mut session, mut media) = (Level::default(), Level::default());
    let mut m_line = false;
    let mut mid = None;
    let mut bundle = false;
    let mut sctp_port = None;
    let mut max_message_size = None;
    let mut candidates = Vec::new();

    for (i, line) in text.split('\n').enumerate() {
        let at = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.len() > MAX_LINE_LEN {
            return Err(format!("line {at} is longer than {MAX_LINE_LEN} bytes"));
        }
        if let Some(c) = line.chars().find(|c| c.is_control()) {
            return Err(format!("line {at} has the control character {c:?}"));
        }
        if i == 0 && line != "v=0" {
            return Err("not an SDP offer: the first line must be v=0".into());
        }
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=').filter(|(k, _)| k.len() == 1) else {
            return Err(format!("line {at} is not <type>=<value> (RFC 8866 §5)"));
        };
        match kind {
            "m" => {
                if m_line {
                    return Err(format!(
                        "only one data-channel m-line is supported (line {at} is a second: m={})",
                        head(value)
                    ));
                }
                data_channel_m_line(value)?;
                m_line = true;
            }
            "a" => {
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                let level = if m_line { &mut media } else { &mut session };
                match name {
                    "ice-ufrag" => once(&mut level.ufrag, ice_chars(val, 4, name)?, name, at)?,
                    "ice-pwd" => once(&mut level.pwd, ice_chars(val, 22, name)?, name, at)?,
                    "fingerprint" => fingerprint(&mut level.fingerprint, val, at)?,
                    "setup" => once(&mut level.setup, setup(val)?, name, at)?,
                    "ice-lite" => {
                        return Err("the offer is ICE-lite, and so is this gateway: \
                             two lite agents cannot connect (RFC 8445 §2.5)"
                            .into());
                    }
                    "group" => bundle |= val.split_whitespace().next() == Some("BUNDLE"),
                    "mid" if m_line => once(&mut mid, mid_token(val)?, name, at)?,
                    "sctp-port" => {
                        let port = val.parse().ok().filter(|&p| p != 0).ok_or_else(|| {
                            format!(
                                "line {at}: a=sctp-port:{} is not a port (1-65535)",
                                clip(val)
                            )
                        })?;
                        once(&mut sctp_port, port, name, at)?;
                    }
                    "max-message-size" => {
                        // Larger than 4 GiB is as good as unlimited.
                        let n = val.parse::<u64>().map_err(|_| {
                            format!(
                                "line {at}: a=max-message-size:{} is not a number",
                                clip(val)
                            )
                        })?;
                        let n = u32::try_from(n).unwrap_or(u32::MAX);
                        once(&mut max_message_size, n, name, at)?;
                    }
                    "candidate" => {
                        if let Some(addr) = candidate(val)
                            && candidates.len() < MAX_CANDIDATES
                            && !candidates.contains(&addr)
                        {
                            candidates.push(addr);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    if !m_line {
        return Err("the offer has no m-line; only one data-channel m-line is supported".into());
    }
    Ok(Offer {
        ice_ufrag: media
            .ufrag
            .or(session.ufrag)
            .ok_or("the offer has no a=ice-ufrag")?,
        ice_pwd: media
            .pwd
            .or(session.pwd)
            .ok_or("the offer has no a=ice-pwd")?,
        fingerprint: media.fingerprint.or(session.fingerprint).ok_or(
            "the offer has no a=fingerprint:sha-256 (the caller's certificate, its node ID)",
        )?,
        mid,
        bundle,
        setup: media.setup.or(session.setup).unwrap_or(Setup::Active),
        sctp_port: sctp_port.unwrap_or(DEFAULT_SCTP_PORT),
        max_message_size,
        candidates,
    })
}

/// The first three fields of an m-line, for messages.
fn head(value: &str) -> String {
    let three: Vec<&str> = value.split_whitespace().take(3).collect();
    clip(&three.join(" ")).to_owned()
}

/// At most 40 characters of something from the offer, for messages.
fn clip(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

fn data_channel_m_line(value: &str) -> Result<(), String> {
    let f: Vec<&str> = value.split_whitespace().collect();
    match f[..] {
        ["application", port, "UDP/DTLS/SCTP", "webrtc-datachannel"]
            if port.parse::<u16>().is_ok() =>
        {
            Ok(())
        }
        ["application", ..] => Err(format!(
            "the m-line must be \"m=application <port> UDP/DTLS/SCTP webrtc-datachannel\" \
             (RFC 8841), not \"m={}\"",
            head(value)
        )),
        _ => Err(format!(
            "only one data-channel m-line is supported (the offer has m={})",
            head(value)
        )),
    }
}

fn once<T>(slot: &mut Option<T>, value: T, name: &str, at: usize) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("line {at}: a second a={name} in the same section"));
    }
    *slot = Some(value);
    Ok(())
}

/// `ice-char = ALPHA / DIGIT / "+" / "/"`, `min..=256` of them (RFC 8839 §5.4).
fn ice_chars(val: &str, min: usize, name: &str) -> Result<String, String> {
    let ok = val
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !ok || !(min..=256).contains(&val.len()) {
        return Err(format!(
            "a={name} must be {min} to 256 characters of A-Z a-z 0-9 + / (RFC 8839 §5.4)"
        ));
    }
    Ok(val.to_owned())
}

/// Of several fingerprints (aiortc sends sha-256, sha-384 and sha-512) the sha-256 one is the
/// node ID. Two different sha-256 values in one section would be two identities: refused.
fn fingerprint(slot: &mut Option<NodeId>, val: &str, at: usize) -> Result<(), String> {
    let (hash, hex) = val.split_once(' ').unwrap_or((val, ""));
    if !hash.eq_ignore_ascii_case("sha-256") {
        return Ok(());
    }
    let hex = hex.trim();
    let id = hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b':')
        .then(|| NodeId::from_fingerprint_hex(hex).ok())
        .flatten()
        .ok_or_else(|| {
            format!("line {at}: a=fingerprint:sha-256 is not 32 hex bytes (AB:CD:...)")
        })?;
    match slot {
        Some(old) if *old != id => Err(format!(
            "line {at}: two different sha-256 fingerprints; the caller must have one certificate"
        )),
        _ => {
            *slot = Some(id);
            Ok(())
        }
    }
}

fn setup(val: &str) -> Result<Setup, String> {
    match val {
        "actpass" => Ok(Setup::ActPass),
        "active" => Ok(Setup::Active),
        "passive" => Err(
            "a=setup:passive: this gateway is the DTLS server (passive) too; offer actpass".into(),
        ),
        _ => Err(format!("a=setup:{} is not actpass or active", clip(val))),
    }
}

/// RFC 8866 §9 `token`: the mid goes back into our answer, so it must be one.
fn mid_token(val: &str) -> Result<String, String> {
    let ok = val.bytes().all(|b| {
        matches!(b, 0x21 | 0x23..=0x27 | 0x2a | 0x2b | 0x2d | 0x2e | 0x30..=0x39 | 0x41..=0x5a | 0x5e..=0x7e)
    });
    if !ok || !(1..=MAX_MID_LEN).contains(&val.len()) {
        return Err(format!(
            "a=mid must be 1 to {MAX_MID_LEN} token characters (RFC 8866 §9)"
        ));
    }
    Ok(val.to_owned())
}

/// `foundation component transport priority address port typ type ...` (RFC 8839 §5.1);
/// `None` for anything but a UDP component-1 candidate with an IP literal.
fn candidate(val: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = val.split_whitespace().take(6).collect();
    let [_, "1", transport, _, addr, port] = f[..] else {
        return None;
    };
    if !transport.eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip: IpAddr = addr.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

/// One of our candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub addr: SocketAddr,
    /// `Some(mapped address)`: a TURN relayed address (`typ relay raddr .. rport ..`);
    /// `None`: a host address (the shared port).
    pub relay: Option<SocketAddr>,
}

/// What goes into our answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub ufrag: &'a str,
    pub pwd: &'a str,
    /// Our node ID, which is our certificate's SHA-256.
    pub fingerprint: NodeId,
    /// The offer's `mid` and `bundle`.
    pub mid: Option<&'a str>,
    pub bundle: bool,
    /// Only the low 63 bits are used (JSEP, RFC 8829 §5.2.1).
    pub session_id: u64,
    pub max_message_size: u32,
    /// In order of preference; the first is also the m-line's port and `c=` address.
    pub candidates: &'a [Candidate],
}

/// Our ICE-lite, DTLS-passive answer (CRLF lines, every candidate included, so no trickle).
pub fn answer(a: &Answer<'_>) -> String {
    let mut s = String::with_capacity(512 + 96 * a.candidates.len());
    let first = a
        .candidates
        .first()
        .map_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9), |c| {
            c.addr
        });
    let _ = write!(
        s,
        "v=0\r\no=- {} 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n",
        a.session_id & (i64::MAX as u64)
    );
    if let (true, Some(mid)) = (a.bundle, a.mid) {
        let _ = write!(s, "a=group:BUNDLE {mid}\r\n");
    }
    let _ = write!(
        s,
        "m=application {} UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN {} {}\r\n",
        first.port(),
        if first.is_ipv4() { "IP4" } else { "IP6" },
        first.ip()
    );
    if let Some(mid) = a.mid {
        let _ = write!(s, "a=mid:{mid}\r\n");
    }
    let _ = write!(
        s,
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:{}\r\na=setup:passive\r\n\
         a=sctp-port:{DEFAULT_SCTP_PORT}\r\na=max-message-size:{}\r\n",
        a.ufrag,
        a.pwd,
        a.fingerprint.fingerprint(),
        a.max_message_size
    );
    for (i, c) in a.candidates.iter().enumerate() {
        // RFC 8445 §5.1.2.1: type preference 126 host, 0 relay; local preference by order;
        // component 1.
        let type_pref: u32 = if c.relay.is_some() { 0 } else { 126 };
        let local_pref = 65_535 - u32::try_from(i).unwrap_or(65_535).min(65_535);
        let priority = (type_pref << 24) | (local_pref << 8) | 255;
        let _ = write!(
            s,
            "a=candidate:{} 1 udp {priority} {} {} typ ",
            i + 1,
            c.addr.ip(),
            c.addr.port()
        );
        let _ = match c.relay {
            Some(r) => write!(s, "relay raddr {} rport {}\r\n", r.ip(), r.port()),
            None => write!(s, "host\r\n"),
        };
    }
    s.push_str("a=end-of-candidates\r\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Chromium 156.0.8078.79 (Debian), headless, captured offline: `new RTCPeerConnection({
    /// iceServers: []})`, `createDataChannel("meshgate")`, `createOffer()`, then the local
    /// description after gathering. Run with `--disable-features=WebRtcHideLocalIpsWithMdns`
    /// so the host candidates are IP literals (by default they are `<uuid>.local`).
    const CHROMIUM: &str = "v=0
o=- 6119247532691839031 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic: WMS
m=application 49902 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 192.0.2.2
a=candidate:3329188648 1 udp 2113937151 192.0.2.2 49902 typ host generation 0 network-cost 999
a=candidate:3239907224 1 udp 2113942271 fd00::2 39585 typ host generation 0 network-cost 999
a=ice-ufrag:tXWP
a=ice-pwd:CSKvSAZehbYg3RxkQzR1eC1b
a=ice-options:trickle
a=fingerprint:sha-256 FA:E1:A9:DC:DC:C0:4E:C7:36:9C:2C:8E:CC:9E:BE:E7:F3:09:EC:48:D3:FD:B5:84:38:15:91:3C:7F:CC:C3:91
a=setup:actpass
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
";

    /// aiortc 1.16.0, captured offline: `RTCPeerConnection(RTCConfiguration(iceServers=[]))`
    /// (without `[]` aiortc gathers from a public STUN server), `createDataChannel("meshgate")`,
    /// `setLocalDescription(await createOffer())`. Note the three fingerprints, the candidates
    /// before the ICE credentials, and a 22-character password (the RFC 8839 minimum).
    const AIORTC: &str = "v=0
o=- 4004311187 4004311187 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0
a=msid-semantic:WMS *
m=application 39476 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 192.0.2.2
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
a=candidate:f957a2332b1715da3b0ef8ba684454eb 1 udp 2130706431 192.0.2.2 39476 typ host
a=candidate:d0bcf3d9c29a2bc887618212a1623bfa 1 udp 2130706431 fd00::2 56206 typ host
a=end-of-candidates
a=ice-ufrag:fjpU
a=ice-pwd:Wv2F896fZo7kiuYME1gjg8
a=fingerprint:sha-256 67:8E:EA:15:28:34:B0:A9:B0:04:E4:8A:30:01:8D:57:11:B6:E3:52:8A:9F:B6:BF:12:0E:AC:5A:8A:BC:AF:D4
a=fingerprint:sha-384 DD:08:EB:B8:B8:C4:4A:B3:98:2E:13:92:D8:1A:39:16:D2:70:89:9C:F2:ED:69:BB:57:54:86:D6:CB:E7:CC:0B:AE:D1:96:9E:5A:EF:F1:2E:62:2A:64:1D:2C:CD:1E:F6
a=fingerprint:sha-512 71:38:EC:50:B0:EB:4F:41:C0:B6:CE:69:F9:CD:CC:3C:48:C3:DF:6D:12:84:A8:9E:89:45:BD:1B:E3:0D:69:64:97:46:DB:D2:1D:50:F3:B5:4E:2E:8C:13:2A:81:81:53:F6:DF:FD:13:81:D8:91:25:CD:42:94:0E:EE:C7:DE:B4
a=setup:actpass
";

    fn crlf(text: &str) -> String {
        text.replace('\n', "\r\n")
    }

    fn fp(hex: &str) -> NodeId {
        NodeId::from_fingerprint_hex(hex).expect("fingerprint")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn chromium_offer() {
        let want = Offer {
            ice_ufrag: "tXWP".into(),
            ice_pwd: "CSKvSAZehbYg3RxkQzR1eC1b".into(),
            fingerprint: fp("FA:E1:A9:DC:DC:C0:4E:C7:36:9C:2C:8E:CC:9E:BE:E7:\
                             F3:09:EC:48:D3:FD:B5:84:38:15:91:3C:7F:CC:C3:91"),
            mid: Some("0".into()),
            bundle: true,
            setup: Setup::ActPass,
            sctp_port: 5000,
            max_message_size: Some(262_144),
            candidates: vec![sa("192.0.2.2:49902"), sa("[fd00::2]:39585")],
        };
        assert_eq!(parse_offer(&crlf(CHROMIUM)), Ok(want.clone()));
        assert_eq!(parse_offer(CHROMIUM), Ok(want.clone()));
        assert_eq!(parse_offer_bytes(crlf(CHROMIUM).as_bytes()), Ok(want));
    }

    #[test]
    fn aiortc_offer() {
        let offer = parse_offer(&crlf(AIORTC)).expect("aiortc offer");
        assert_eq!(offer.ice_ufrag, "fjpU");
        assert_eq!(offer.ice_pwd, "Wv2F896fZo7kiuYME1gjg8");
        assert_eq!(
            offer.fingerprint,
            fp("67:8E:EA:15:28:34:B0:A9:B0:04:E4:8A:30:01:8D:57:\
                11:B6:E3:52:8A:9F:B6:BF:12:0E:AC:5A:8A:BC:AF:D4")
        );
        assert_eq!(offer.mid.as_deref(), Some("0"));
        assert!(offer.bundle);
        assert_eq!(offer.setup, Setup::ActPass);
        assert_eq!(
            (offer.sctp_port, offer.max_message_size),
            (5000, Some(262_144))
        );
        assert_eq!(
            offer.candidates,
            [sa("192.0.2.2:39476"), sa("[fd00::2]:56206")]
        );
    }

    /// Firefox-style placement (written for this test, not captured): ICE credentials and the
    /// fingerprint at session level, no a=setup, no a=mid, no BUNDLE, no a=sctp-port.
    #[test]
    fn session_level_attributes_and_defaults() {
        let fpr = NodeId::from_bytes([7; 32]);
        let text = format!(
            "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
             a=fingerprint:SHA-256 {}\r\na=ice-ufrag:abcd\r\na=ice-pwd:{}\r\n\
             m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n",
            &fpr.fingerprint()[8..].to_lowercase(),
            "p".repeat(22)
        );
        let offer = parse_offer(&text).expect("session-level offer");
        assert_eq!(offer.fingerprint, fpr);
        assert_eq!(
            (offer.ice_ufrag.as_str(), offer.ice_pwd.len()),
            ("abcd", 22)
        );
        assert_eq!((offer.mid, offer.bundle), (None, false));
        assert_eq!(offer.setup, Setup::Active);
        assert_eq!((offer.sctp_port, offer.max_message_size), (5000, None));
        assert!(offer.candidates.is_empty());

        // The media section's values win over the session's.
        let text = text.replace(
            "c=IN IP4 0.0.0.0\r\n",
            "c=IN IP4 0.0.0.0\r\na=ice-ufrag:wxyz\r\na=setup:actpass\r\na=sctp-port:5001\r\n",
        );
        let offer = parse_offer(&text).expect("both levels");
        assert_eq!(offer.ice_ufrag, "wxyz");
        assert_eq!((offer.setup, offer.sctp_port), (Setup::ActPass, 5001));
    }

    #[test]
    fn candidates_filtered() {
        let mut text = crlf(CHROMIUM);
        let extra = [
            // Chromium's default, mDNS-hidden host candidate.
            "a=candidate:1 1 udp 2113937151 2cf0b2c0-0842-4fe3-aaa0-4556a2dfbadc.local 33192 typ host",
            "a=candidate:2 1 tcp 1518280447 192.0.2.2 9 typ host tcptype active",
            "a=candidate:3 2 udp 2113937150 192.0.2.2 49903 typ host",
            "a=candidate:4 1 UDP 1677729535 198.51.100.7 62793 typ srflx raddr 0.0.0.0 rport 0",
            "a=candidate:5 1 udp 2113937151 192.0.2.2 49902 typ host",
            "a=candidate:6 1 udp 2113937151 fe80::1%eth0 1 typ host",
            "a=candidate:7 1 udp 2113937151 0.0.0.0 1 typ host",
            "a=candidate:8 1 udp 2113937151 192.0.2.9 0 typ host",
            "a=candidate:9 1 udp 2113937151 192.0.2.9",
            "a=candidate:garbage",
        ];
        text.push_str(&extra.join("\r\n"));
        text.push_str("\r\n");
        let offer = parse_offer(&text).expect("offer");
        assert_eq!(
            offer.candidates,
            [
                sa("192.0.2.2:49902"),
                sa("[fd00::2]:39585"),
                sa("198.51.100.7:62793")
            ]
        );

        let mut text = crlf(CHROMIUM);
        for i in 0..40 {
            text.push_str(&format!(
                "a=candidate:{i} 1 udp 1 10.0.0.{i} 1000 typ host\r\n"
            ));
        }
        let offer = parse_offer(&text).expect("offer");
        assert_eq!(offer.candidates.len(), MAX_CANDIDATES);
        assert_eq!(offer.candidates[31], sa("10.0.0.29:1000"));
    }

    #[track_caller]
    fn refused(text: &str, needle: &str) {
        match parse_offer(text) {
            Err(e) => assert!(e.contains(needle), "{e:?} lacks {needle:?}"),
            Ok(o) => panic!("accepted {o:?}, wanted an error with {needle:?}"),
        }
    }

    /// The Chromium offer with `from` replaced by `to` (which must be there).
    fn edit(from: &str, to: &str) -> String {
        assert!(CHROMIUM.contains(from), "{from:?}");
        crlf(&CHROMIUM.replace(from, to))
    }

    #[test]
    fn rejections() {
        let only_one = "only one data-channel m-line is supported";
        refused(
            &edit(
                "m=application 49902 UDP/DTLS/SCTP webrtc-datachannel",
                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            ),
            only_one,
        );
        refused(
            &edit(
                "a=max-message-size:262144\n",
                "a=max-message-size:262144\nm=video 9 UDP/TLS/RTP/SAVPF 96\n",
            ),
            &format!("{only_one} (line 20 is a second: m=video 9 UDP/TLS/RTP/SAVPF)"),
        );
        refused(
            &edit(
                "a=max-message-size:262144\n",
                "a=max-message-size:262144\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\n",
            ),
            only_one,
        );
        refused(
            "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
            "no m-line",
        );
        // The pre-RFC 8841 format, and SCTP over TCP.
        refused(
            &edit("49902 UDP/DTLS/SCTP webrtc-datachannel", "9 DTLS/SCTP 5000"),
            "must be \"m=application <port> UDP/DTLS/SCTP webrtc-datachannel\"",
        );
        refused(
            &edit("UDP/DTLS/SCTP", "TCP/DTLS/SCTP"),
            "not \"m=application 49902 TCP/DTLS/SCTP\"",
        );
        refused(&edit("49902 UDP", "70000 UDP"), "must be \"m=application");

        refused(&edit("a=ice-ufrag:tXWP\n", ""), "no a=ice-ufrag");
        refused(
            &edit("a=ice-pwd:CSKvSAZehbYg3RxkQzR1eC1b\n", ""),
            "no a=ice-pwd",
        );
        refused(
            &edit("ufrag:tXWP", "ufrag:tXW"),
            "a=ice-ufrag must be 4 to 256",
        );
        refused(
            &edit("ufrag:tXWP", &format!("ufrag:{}", "u".repeat(257))),
            "4 to 256",
        );
        refused(&edit("ufrag:tXWP", "ufrag:tX-P"), "A-Z a-z 0-9 + /");
        refused(&edit("ufrag:tXWP", "ufrag:tX\u{e9}P"), "A-Z a-z 0-9 + /");
        refused(
            &edit("CSKvSAZehbYg3RxkQzR1eC1b", "CSKvSAZehbYg3RxkQzR1e"),
            "a=ice-pwd must be 22 to 256",
        );
        refused(
            &edit("a=ice-ufrag:tXWP\n", "a=ice-ufrag:tXWP\na=ice-ufrag:abcd\n"),
            "a second a=ice-ufrag",
        );

        let fpr_line = CHROMIUM
            .lines()
            .find(|l| l.starts_with("a=fingerprint"))
            .expect("fingerprint line");
        refused(&edit(fpr_line, ""), "no a=fingerprint:sha-256");
        refused(&edit("sha-256", "sha-1"), "no a=fingerprint:sha-256");
        refused(&edit(":91\n", "\n"), "not 32 hex bytes");
        refused(&edit("FA:E1", "FG:E1"), "not 32 hex bytes");
        // u8::from_str_radix alone would take "+A" as 0x0A.
        refused(&edit("FA:E1", "+A:E1"), "not 32 hex bytes");
        refused(
            &edit(
                "a=setup:actpass\n",
                &format!(
                    "a=setup:actpass\na=fingerprint:sha-256 {}\n",
                    &NodeId::from_bytes([1; 32]).fingerprint()[8..]
                ),
            ),
            "two different sha-256 fingerprints",
        );
        // The same one twice is fine.
        assert!(
            parse_offer(&edit(
                "a=setup:actpass\n",
                &format!("a=setup:actpass\n{fpr_line}\n")
            ))
            .is_ok()
        );

        refused(&edit("setup:actpass", "setup:passive"), "a=setup:passive");
        refused(
            &edit("setup:actpass", "setup:holdconn"),
            "not actpass or active",
        );
        let long = format!("setup:{}", "\u{e9}".repeat(100));
        let e = parse_offer(&edit("setup:actpass", &long)).expect_err("refused");
        assert!(
            e.len() < 150 && e.ends_with(" is not actpass or active"),
            "{e}"
        );
        assert_eq!(
            parse_offer(&edit("setup:actpass", "setup:active")).map(|o| o.setup),
            Ok(Setup::Active)
        );
        refused(
            &edit("a=group:BUNDLE 0\n", "a=group:BUNDLE 0\na=ice-lite\n"),
            "two lite agents cannot connect",
        );
        refused(&edit("sctp-port:5000", "sctp-port:0"), "not a port");
        refused(&edit("sctp-port:5000", "sctp-port:x"), "not a port");
        refused(
            &edit("max-message-size:262144", "max-message-size:-1"),
            "not a number",
        );
        assert_eq!(
            parse_offer(&edit(
                "max-message-size:262144",
                "max-message-size:99999999999"
            ))
            .map(|o| o.max_message_size),
            Ok(Some(u32::MAX))
        );
        refused(&edit("a=mid:0", "a=mid:a b"), "a=mid must be");
        refused(&edit("a=mid:0", "a=mid:"), "a=mid must be");
        refused(
            &edit("a=mid:0", &format!("a=mid:{}", "m".repeat(65))),
            "a=mid must be",
        );
        refused(&edit("a=mid:0", "a=mid:0\na=mid:1"), "a second a=mid");
    }

    #[test]
    fn input_bounds() {
        refused("", "first line must be v=0");
        refused(&edit("v=0", "v=1"), "first line must be v=0");
        refused(&edit("s=-", "s"), "line 3 is not <type>=<value>");
        refused(&edit("s=-", "ss=-"), "line 3 is not <type>=<value>");
        refused(
            &edit("s=-", "s=\t-"),
            "line 3 has the control character '\\t'",
        );
        refused(&edit("s=-", "s=\0"), "control character");
        refused(&edit("s=-\n", "s=-\r\r\n"), "control character '\\r'");
        refused(&edit("s=-", "s=\u{85}"), "control character");
        refused(
            &edit("s=-", &format!("s={}", "x".repeat(4095))),
            "line 3 is longer than 4096",
        );
        assert!(parse_offer(&edit("s=-", &format!("s={}", "x".repeat(4094)))).is_ok());
        let big = crlf(CHROMIUM) + &"a=x\r\n".repeat(13_000);
        refused(&big, "at most 65536");
        assert_eq!(parse_offer_bytes(big.as_bytes()), parse_offer(&big));
        let mut bytes = crlf(CHROMIUM).into_bytes();
        bytes[20] = 0xff;
        assert_eq!(
            parse_offer_bytes(&bytes),
            Err("the offer is not UTF-8 (at byte 20)".into())
        );
    }

    fn answer_for(offer: &Offer, candidates: &[Candidate]) -> String {
        answer(&Answer {
            ufrag: "gw01",
            pwd: "0123456789abcdefghijkl+/",
            fingerprint: NodeId::from_bytes([0xab; 32]),
            mid: offer.mid.as_deref(),
            bundle: offer.bundle,
            session_id: 0xffff_ffff_ffff_ffff,
            max_message_size: 262_144,
            candidates,
        })
    }

    const OURS: [Candidate; 3] = [
        Candidate {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 3478),
            relay: None,
        },
        Candidate {
            addr: SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 3478),
            relay: None,
        },
        Candidate {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 49152),
            relay: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                40000,
            )),
        },
    ];

    /// This exact text was checked offline against real peers, each with a fresh offer of its
    /// own (data channel, no ICE servers; all our candidates are loopback): aiortc 1.16.0's and
    /// headless Chromium 156's `setRemoteDescription({type: "answer"})` both accepted it
    /// (Chromium refused the same text with a 5-character ice-pwd, so the check has teeth).
    const GOLDEN_ANSWER: &str = "v=0\r
o=- 9223372036854775807 2 IN IP4 0.0.0.0\r
s=-\r
t=0 0\r
a=ice-lite\r
a=group:BUNDLE 0\r
m=application 3478 UDP/DTLS/SCTP webrtc-datachannel\r
c=IN IP4 127.0.0.1\r
a=mid:0\r
a=ice-ufrag:gw01\r
a=ice-pwd:0123456789abcdefghijkl+/\r
a=fingerprint:sha-256 AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB\r
a=setup:passive\r
a=sctp-port:5000\r
a=max-message-size:262144\r
a=candidate:1 1 udp 2130706431 127.0.0.1 3478 typ host\r
a=candidate:2 1 udp 2130706175 ::1 3478 typ host\r
a=candidate:3 1 udp 16776703 127.0.0.1 49152 typ relay raddr 127.0.0.2 rport 40000\r
a=end-of-candidates\r
";

    #[test]
    fn answers_to_real_offers() {
        for offer in [CHROMIUM, AIORTC] {
            let offer = parse_offer(offer).expect("offer");
            assert_eq!(answer_for(&offer, &OURS), GOLDEN_ANSWER);
        }
        // RFC 8445 §5.1.2.1 by hand: 126 << 24 | 65535 << 8 | 255, 126 << 24 | 65534 << 8 | 255,
        // and 0 << 24 | 65533 << 8 | 255.
        assert_eq!(
            [2_130_706_431u32, 2_130_706_175, 16_776_703],
            [
                (126 << 24) | (65_535 << 8) | 255,
                (126 << 24) | (65_534 << 8) | 255,
                (65_533 << 8) | 255
            ]
        );
    }

    #[test]
    fn answer_without_mid_bundle_or_candidates() {
        let offer = Offer {
            mid: None,
            bundle: true,
            ..parse_offer(CHROMIUM).expect("offer")
        };
        let text = answer_for(&offer, &[]);
        assert!(
            !text.contains("a=group") && !text.contains("a=mid"),
            "{text}"
        );
        assert!(text.contains(
            "\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        ));
        assert!(text.ends_with("a=max-message-size:262144\r\na=end-of-candidates\r\n"));
        // A bundled mid without BUNDLE in the offer: a=mid, no group.
        let offer = Offer {
            bundle: false,
            ..parse_offer(CHROMIUM).expect("offer")
        };
        let text = answer_for(&offer, &OURS[1..2]);
        assert!(!text.contains("a=group") && text.contains("\r\na=mid:0\r\n"));
        assert!(text.contains(
            "\r\nm=application 3478 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP6 ::1\r\n"
        ));
        // Every line is CRLF-terminated and no line is empty.
        let body = text.strip_suffix("\r\n").expect("ends with CRLF");
        assert!(
            body.split("\r\n")
                .all(|l| !l.is_empty() && !l.contains(['\r', '\n']))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}|(.|\r|\n){0,400}") {
            let _ = parse_offer(&s);
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_offer_bytes(&b);
        }

        /// A real offer with one line replaced by something arbitrary: deeper than random text.
        #[test]
        fn mutated_real_offer_never_panics(line in 0usize..20, s in "[a-z]=[ -~]{0,80}|a=[a-z-]{1,20}:[ -~]{0,80}") {
            let mut lines: Vec<&str> = AIORTC.lines().collect();
            let at = line % lines.len();
            lines[at] = &s;
            let _ = parse_offer(&lines.join("\r\n"));
        }
    }
}
