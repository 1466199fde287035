//! What the local API shows of the mesh: the peer table and the sessions, as plain data
//! (DESIGN.md §11 names the JSON keys of `/peers`).

use serde::Serialize;

/// One row of `GET /peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerView {
    /// The full node ID.
    pub id: String,
    pub short_id: String,
    pub ipv6: String,
    /// `gateway` or `node`; `None` until an announcement or the peer's hello said.
    pub role: Option<&'static str>,
    /// Where the peer can be reached (announced over mDNS or configured), best first.
    pub addrs: Vec<String>,
    /// Seconds since anything was heard of the peer (0 while a session is up); `None` if
    /// nothing ever was (a static peer not reached yet).
    pub last_seen_s: Option<u64>,
    /// `none`, `connecting` or `up`.
    pub session: &'static str,
    /// How this node knows the peer: any of `static`, `mdns`, `inbound`.
    pub source: Vec<&'static str>,
    /// The address of the session, when one is up.
    pub remote: Option<String>,
    /// Why the last dial failed, while no session is up.
    pub error: Option<String>,
}

/// One row of `GET /sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    /// The peer's full node ID.
    pub peer: String,
    pub short_id: String,
    pub role: Option<&'static str>,
    /// The peer's address and the local port's address.
    pub remote: String,
    pub local: String,
    /// `us` if this node dialled, `peer` if the peer did.
    pub initiator: &'static str,
    /// Seconds since the session came up.
    pub up_s: u64,
}
