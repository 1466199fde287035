//! ICE-lite (RFC 8445 §2.5) on the shared port: the connectivity checks of the peers whose
//! offers the signaling answered.
//!
//! Signaling (another task) registers, for each answer it gives, our ufrag/pwd, the offer's
//! ufrag and the peer's expected DTLS fingerprint ([`IceLite::expect`]). The socket loop hands
//! every STUN Binding request that carries USERNAME here ([`IceLite::check`]): a check for a
//! known ufrag with a valid MESSAGE-INTEGRITY (short-term credentials: the key is our pwd) gets
//! a success response (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT) and marks the
//! check's source address as belonging to that peer, so the DTLS session that follows from
//! there must present that fingerprint ([`IceLite::expected_peer`]). A lite agent sends no
//! checks of its own and is always the controlled side; the full agent nominates.
//!
//! Browsers keep checking for as long as the connection lives (consent freshness, RFC 7675,
//! every few seconds), so an entry lives while it is used: [`IDLE`] after its last good check
//! (or after it was made) it is forgotten. Both tables are bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::stun::{self, Builder, Class, Message};

/// An entry (and an address it validated) is forgotten this long after its last good check.
pub const IDLE: Duration = Duration::from_secs(60);
/// Answers registered and not yet forgotten, at most.
pub const MAX_ENTRIES: usize = 1024;
/// Validated source addresses remembered, at most.
const MAX_VALIDATED: usize = 4096;

/// What [`IceLite::expect`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectError {
    /// [`MAX_ENTRIES`] answers are live.
    Full,
    /// That ufrag is already in use.
    Taken,
}

impl std::fmt::Display for ExpectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExpectError::Full => "too many ICE sessions being set up",
            ExpectError::Taken => "ICE ufrag already in use",
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A success response: send it back.
    Answer(Vec<u8>),
    /// An error response (401 unknown ufrag or bad integrity, 400 malformed): send it back.
    Refuse(Vec<u8>),
}

struct Entry {
    pwd: String,
    remote_ufrag: String,
    peer: [u8; 32],
    last: Instant,
}

#[derive(Default)]
struct Table {
    entries: HashMap<String, Entry>,
    /// Source address -> (the peer its checks were for, last good check).
    validated: HashMap<SocketAddr, ([u8; 32], Instant)>,
}

impl Table {
    fn expire(&mut self, now: Instant) {
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last) < IDLE);
        self.validated
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < IDLE);
    }
}

/// The ICE-lite credentials of one node, shared by its signaling and its shared ports.
#[derive(Clone, Default)]
pub struct IceLite {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for IceLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.lock();
        f.debug_struct("IceLite")
            .field("entries", &t.entries.len())
            .field("validated", &t.validated.len())
            .finish()
    }
}

impl IceLite {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Answers checks with USERNAME `ufrag:remote_ufrag` and integrity keyed by `pwd`, from a
    /// peer whose DTLS certificate must hash to `peer`.
    pub fn expect(
        &self,
        now: Instant,
        ufrag: &str,
        pwd: &str,
        remote_ufrag: &str,
        peer: [u8; 32],
    ) -> Result<(), ExpectError> {
        let mut t = self.lock();
        t.expire(now);
        if t.entries.contains_key(ufrag) {
            return Err(ExpectError::Taken);
        }
        if t.entries.len() >= MAX_ENTRIES {
            return Err(ExpectError::Full);
        }
        t.entries.insert(
            ufrag.to_owned(),
            Entry {
                pwd: pwd.to_owned(),
                remote_ufrag: remote_ufrag.to_owned(),
                peer,
                last: now,
            },
        );
        Ok(())
    }

    /// Answers a Binding request that carries USERNAME, received from `from`.
    pub fn check(&self, now: Instant, msg: &Message<'_>, from: SocketAddr) -> Check {
        let refuse = |code: u16, reason: &str| {
            Check::Refuse(
                Builder::response(msg, Class::Error)
                    .error(code, reason)
                    .fingerprint()
                    .finish(),
            )
        };
        let Some(username) = msg.text(stun::USERNAME) else {
            return refuse(400, "Bad Request: USERNAME is not UTF-8");
        };
        let (local, remote) = username.split_once(':').unwrap_or((username, ""));
        if !msg.has_integrity() {
            return refuse(400, "Bad Request: no MESSAGE-INTEGRITY");
        }
        let mut t = self.lock();
        t.expire(now);
        let Some(entry) = t.entries.get_mut(local) else {
            return refuse(401, "Unauthorized: unknown ufrag");
        };
        if entry.remote_ufrag != remote || !msg.check_integrity(entry.pwd.as_bytes()) {
            return refuse(401, "Unauthorized: bad credentials");
        }
        entry.last = now;
        let (peer, pwd) = (entry.peer, entry.pwd.clone());
        if t.validated.len() >= MAX_VALIDATED && !t.validated.contains_key(&from) {
            t.validated.clear();
        }
        t.validated.insert(from, (peer, now));
        drop(t);
        Check::Answer(
            Builder::response(msg, Class::Success)
                .xor_address(stun::XOR_MAPPED_ADDRESS, from)
                .integrity(pwd.as_bytes())
                .fingerprint()
                .finish(),
        )
    }

    /// The fingerprint the DTLS peer at `remote` must present: the one of the offer whose
    /// checks came from there, if any did recently.
    pub fn expected_peer(&self, now: Instant, remote: SocketAddr) -> Option<[u8; 32]> {
        let t = self.lock();
        t.validated
            .get(&remote)
            .filter(|(_, last)| now.saturating_duration_since(*last) < IDLE)
            .map(|(peer, _)| *peer)
    }

    /// Answers registered and live.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: [u8; 32] = [7; 32];

    fn request(username: &str, key: Option<&[u8]>) -> Vec<u8> {
        let b = Builder::new(stun::BINDING, Class::Request, [9; 12])
            .attr(stun::USERNAME, username.as_bytes())
            .u32_attr(stun::PRIORITY, 1_853_824_767)
            .attr(stun::ICE_CONTROLLING, &[1; 8])
            .attr(stun::USE_CANDIDATE, &[]);
        match key {
            Some(k) => b.integrity(k).fingerprint().finish(),
            None => b.fingerprint().finish(),
        }
    }

    fn from() -> SocketAddr {
        "10.77.0.2:50000".parse().unwrap()
    }

    #[test]
    fn a_valid_check_is_answered_with_integrity_and_validates_its_source() {
        let ice = IceLite::default();
        let now = Instant::now();
        ice.expect(now, "ourU", "ourpasswordourpassword", "theirU", PEER)
            .unwrap();
        let raw = request("ourU:theirU", Some(b"ourpasswordourpassword"));
        let msg = Message::parse(&raw).unwrap();
        let Check::Answer(resp) = ice.check(now, &msg, from()) else {
            panic!("refused");
        };
        let resp = Message::parse(&resp).unwrap();
        assert_eq!(resp.class, Class::Success);
        assert_eq!(resp.transaction_id, [9; 12]);
        assert_eq!(resp.xor_address(stun::XOR_MAPPED_ADDRESS), Ok(Some(from())));
        assert!(resp.check_integrity(b"ourpasswordourpassword"));
        assert!(resp.has_fingerprint());
        assert_eq!(ice.expected_peer(now, from()), Some(PEER));
        assert_eq!(ice.expected_peer(now, "10.77.0.3:1".parse().unwrap()), None);
    }

    fn code(check: Check) -> u16 {
        let Check::Refuse(raw) = check else {
            panic!("answered");
        };
        let msg = Message::parse(&raw).unwrap();
        assert_eq!(msg.class, Class::Error);
        let v = msg.get(stun::ERROR_CODE).unwrap();
        u16::from(v[2]) * 100 + u16::from(v[3])
    }

    #[test]
    fn bad_checks_are_refused_and_validate_nothing() {
        let ice = IceLite::default();
        let now = Instant::now();
        ice.expect(now, "ourU", "ourpasswordourpassword", "theirU", PEER)
            .unwrap();
        let cases: [(&str, Option<&[u8]>, u16); 4] = [
            ("nope:theirU", Some(b"ourpasswordourpassword"), 401),
            ("ourU:theirU", Some(b"wrongpasswordwrongpass"), 401),
            ("ourU:other", Some(b"ourpasswordourpassword"), 401),
            ("ourU:theirU", None, 400),
        ];
        for (user, key, want) in cases {
            let raw = request(user, key);
            let msg = Message::parse(&raw).unwrap();
            assert_eq!(code(ice.check(now, &msg, from())), want, "{user}");
        }
        assert_eq!(ice.expected_peer(now, from()), None);
    }

    #[test]
    fn entries_live_while_used_and_are_bounded() {
        let ice = IceLite::default();
        let t0 = Instant::now();
        ice.expect(t0, "ourU", "ourpasswordourpassword", "theirU", PEER)
            .unwrap();
        assert_eq!(
            ice.expect(t0, "ourU", "x", "y", PEER),
            Err(ExpectError::Taken)
        );
        let raw = request("ourU:theirU", Some(b"ourpasswordourpassword"));
        let msg = Message::parse(&raw).unwrap();
        // Consent checks every 50 s keep it alive well past IDLE.
        for i in 1..=4 {
            let now = t0 + Duration::from_secs(50 * i);
            assert!(matches!(ice.check(now, &msg, from()), Check::Answer(_)));
        }
        let late = t0 + Duration::from_secs(200 + 61);
        assert_eq!(ice.expected_peer(late, from()), None);
        assert_eq!(code(ice.check(late, &msg, from())), 401);
        assert!(ice.is_empty());

        for i in 0..MAX_ENTRIES {
            ice.expect(late, &format!("u{i}"), "p", "r", PEER).unwrap();
        }
        assert_eq!(
            ice.expect(late, "one-more", "p", "r", PEER),
            Err(ExpectError::Full)
        );
        // They expire unused, and room comes back.
        let later = late + IDLE;
        ice.expect(later, "one-more", "p", "r", PEER).unwrap();
        assert_eq!(ice.len(), 1);
    }
}
