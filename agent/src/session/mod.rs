//! Sessions between nodes and the TCP streams they carry (DESIGN.md §5, §6).
//!
//! Layers, bottom up:
//! - [`transport`]: the seam over the engines (DTLS, SCTP, DCEP): peers, channels, messages.
//! - This module: per shared port an [`Engine`] (turn-gw's `Sessions`, so it runs in the port's
//!   own task: one loop reads a datagram and runs DTLS, SCTP and the frame layer on it) keeps
//!   the sessions of that port, dials static peers with backoff, checks admission, keeps sessions
//!   alive, and runs the frame protocol of every stream. One node-wide [`Mesh`] knows which
//!   engine holds the session with which peer, so that a pair of nodes has one session.
//! - [`tcp`]: the task of each forwarded TCP connection.
//!
//! The session protocol on top of a transport session (decided here; DESIGN.md leaves it open):
//! - Channel 0 is the control channel (label `ctl`, protocol `meshgate/1`), opened by the DTLS
//!   client. Each side's first frame on it is OPEN with a hello, `meshgate/1 mesh=NAME
//!   role=ROLE`; the other side answers OPEN_OK, or OPEN_ERR with the reason and closes the
//!   session (another mesh). A side opens streams once it has the peer's valid hello and the
//!   OPEN_OK to its own. PING/PONG on channel 0 every [`PING_INTERVAL`]; nothing heard for
//!   [`DEAD_AFTER`] ends the session.
//! - Every other channel is one TCP connection: label `tcp`, protocol `meshgate/1`, frames of
//!   DESIGN.md §6 with per-stream credit. A receiver that gets DATA beyond the credit it granted
//!   resets the stream: memory per stream is bounded by [`frame::INITIAL_CREDIT`].

pub mod peers;
pub mod tcp;
pub mod transport;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use portable_atomic::Ordering;
use tokio::sync::mpsc;
use turn_gw::{Sessions, Transmit};

use crate::config::{HostPort, PeerRef, Role, StaticPeer};
use crate::frame::{self, Frame};
use crate::identity::NodeId;
pub use peers::Announced;
use peers::{HeldSession, Order, PeerTable};
use tcp::{EngineSide, EngineTx, FromTcp, StreamKey, TcpSide, ToTcp};
use transport::{Transport, TransportEvent};
use turn_gw::counters::bump;

/// A PING goes out when this long passed since the last one.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// A session that heard nothing from its peer for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(30);
/// How long a new stream waits for a session with its peer.
pub const OPEN_WAIT: Duration = Duration::from_secs(15);
/// How long the acceptor tries to connect a stream's target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Redial backoff: doubles from the first to the last.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A refused session stays up this long so that the OPEN_ERR saying why reaches the peer.
const DOOM_GRACE: Duration = Duration::from_millis(500);
/// Commands taken from the queue per wake-up, so that datagrams get their turn.
const WAKE_BATCH: usize = 512;
/// Receive window of each stream: right after OPEN (dialer) or OPEN_OK (acceptor) we grant the
/// peer this much beyond the protocol's [`frame::INITIAL_CREDIT`] with one CREDIT frame. The
/// credit loop runs through both nodes' event loops and TCP sockets; on loopback here one stream
/// moved 182-190 MB/s with 256 KiB, 236-245 with 2 MiB, 210-294 (noisy) with 4 MiB. It bounds
/// what one stream may have buffered here when its TCP side is slow: 2 MiB, a compromise with
/// routers' memory (it is per stream; a node-wide cap is a next step).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

pub const LABEL_CTL: &str = "ctl";
pub const LABEL_TCP: &str = "tcp";
pub const PROTOCOL: &str = "meshgate/1";
/// The stream target a gateway opens on a node to hand it a browser's offer (`POST
/// /v1/dial?to=`): one request message, one answer message, no TCP.
pub const DIAL_TARGET: &str = "meshgate:dial";
/// The most a relayed dial's request or answer may be.
pub const DIAL_MESSAGE_MAX: usize = 64 * 1024;

/// Answers offers relayed by a gateway (the signaling, on every node).
pub trait Dialer: Send + Sync {
    /// The answer message to a request message from `gateway`.
    fn relayed(&self, gateway: NodeId, request: &[u8]) -> Vec<u8>;
}
const CTL: u16 = 0;

turn_gw::counter_set! {
    /// Counters (and gauges) of sessions and streams, summed over the node's ports.
    pub struct SessionCounters {
        sessions => "sessions", "sessions up now (a gauge)";
        established => "sessions_established", "sessions that came up";
        lost => "sessions_lost", "sessions that ended (peer gone, closed, replaced, refused)";
        refused => "sessions_refused", "sessions refused: unexpected node ID, another mesh, or a duplicate";
        dial_failures => "session_dial_failures", "dials that failed (each retried with backoff)";
        streams => "streams", "streams open now (a gauge)";
        streams_opened => "streams_opened", "streams opened, either way";
        streams_refused => "streams_refused", "streams refused with OPEN_ERR (target not allowed or not reachable)";
        streams_reset => "streams_reset", "streams that ended in RESET (either side, or a lost session)";
        frame_errors => "frame_errors", "malformed or out-of-order frames (the stream or session is reset)";
        bytes_sent => "stream_bytes_sent", "payload bytes sent on streams";
        bytes_received => "stream_bytes_received", "payload bytes received on streams";
    }
}

/// What this node lets its peers reach: its `[[service]]` entries. `host:port` targets only
/// when a service names exactly that target.
#[derive(Debug, Clone, Default)]
pub struct Exposed {
    services: BTreeMap<String, HostPort>,
}

impl Exposed {
    pub fn new(services: &[crate::config::Service]) -> Self {
        Self {
            services: services
                .iter()
                .map(|s| (s.name.clone(), s.target.clone()))
                .collect(),
        }
    }

    /// Where a stream to `target` connects, or the reason it may not.
    pub fn resolve(&self, target: &str) -> Result<HostPort, String> {
        let names = || {
            if self.services.is_empty() {
                "it exposes no services".to_owned()
            } else {
                let names: Vec<&str> = self.services.keys().map(String::as_str).collect();
                format!("it has: {}", names.join(", "))
            }
        };
        match target.parse::<crate::config::Target>() {
            Ok(crate::config::Target::Service(name)) => self
                .services
                .get(&name)
                .cloned()
                .ok_or_else(|| format!("no service named {name:?} on this node ({})", names())),
            Ok(crate::config::Target::HostPort(hp)) => {
                if self.services.values().any(|t| *t == hp) {
                    Ok(hp)
                } else {
                    Err(format!(
                        "target {hp} is not exposed by this node (only [[service]] targets are; {})",
                        names()
                    ))
                }
            }
            Err(e) => Err(format!("bad target: {e}")),
        }
    }
}

/// The node-wide settings the engines need.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub local_id: NodeId,
    pub mesh: String,
    pub role: Role,
    pub exposed: Exposed,
    pub static_peers: Vec<StaticPeer>,
    /// ICE-lite credentials: an accepted DTLS peer whose address passed ICE checks must present
    /// the fingerprint of the offer those checks were for.
    pub ice: turn_gw::IceLite,
}

/// The hello each side sends first on the control channel.
fn hello(config: &MeshConfig) -> String {
    let role = match config.role {
        Role::Gateway => "gateway",
        Role::Node => "node",
    };
    format!("{PROTOCOL} mesh={} role={role}", config.mesh)
}

/// The mesh name and role (if it says a known one) in a peer's hello, or why it is not one.
fn parse_hello(text: &str) -> Result<(String, Option<Role>), String> {
    let mut words = text.split(' ');
    if words.next() != Some(PROTOCOL) {
        return Err(format!("not a {PROTOCOL} hello: {text:?}"));
    }
    let mut mesh = None;
    let mut role = None;
    for word in words {
        if let Some(m) = word.strip_prefix("mesh=") {
            mesh = Some(m.to_owned());
        } else if let Some(r) = word.strip_prefix("role=") {
            role = match r {
                "gateway" => Some(Role::Gateway),
                "node" => Some(Role::Node),
                _ => None,
            };
        }
    }
    let mesh = mesh.ok_or_else(|| format!("hello without a mesh name: {text:?}"))?;
    Ok((mesh, role))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    engine: usize,
    remote: SocketAddr,
    /// Who dialled: the tie-break between two sessions of one pair.
    dialer: NodeId,
    since: Instant,
}

enum Claim {
    Fresh,
    Replace(Held),
    Lose(Held),
}

struct EngineRef {
    local: SocketAddr,
    tx: mpsc::UnboundedSender<Cmd>,
}

struct Inner {
    engines: Vec<EngineRef>,
    sessions: HashMap<NodeId, Held>,
    table: PeerTable,
}

impl Inner {
    fn held(&self) -> HashMap<NodeId, HeldSession> {
        self.sessions
            .iter()
            .map(|(id, h)| (*id, HeldSession { remote: h.remote }))
            .collect()
    }

    /// Brings the engines' dials in line with the peer table.
    fn reconcile(&mut self) {
        let locals: Vec<SocketAddr> = self.engines.iter().map(|e| e.local).collect();
        let held = self.held();
        for order in self.table.reconcile(&locals, &held) {
            let (engine, cmd) = match order {
                Order::Want {
                    engine,
                    peer,
                    addr,
                    delay,
                } => (engine, Cmd::Want { peer, addr, delay }),
                Order::Unwant { engine, peer } => (engine, Cmd::Unwant { peer }),
            };
            if let Some(e) = self.engines.get(engine) {
                let _ = e.tx.send(cmd);
            }
        }
    }
}

/// Node-wide: the engines and which of them holds the session with which peer.
pub struct Mesh {
    config: MeshConfig,
    inner: Mutex<Inner>,
    counters: Arc<SessionCounters>,
    dialer: std::sync::OnceLock<Arc<dyn Dialer>>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Tx(mpsc::UnboundedSender<Cmd>);

impl EngineTx for Tx {
    fn send(&self, key: StreamKey, msg: FromTcp) {
        let _ = self.0.send(Cmd::Tcp { key, msg });
    }
}

impl Mesh {
    pub fn new(config: MeshConfig) -> Arc<Self> {
        let table = PeerTable::new(config.local_id, config.role, &config.static_peers);
        Arc::new(Self {
            config,
            inner: Mutex::new(Inner {
                engines: Vec::new(),
                sessions: HashMap::new(),
                table,
            }),
            counters: Arc::new(SessionCounters::default()),
            dialer: std::sync::OnceLock::new(),
        })
    }

    /// Who answers the offers gateways relay to this node.
    pub fn set_dialer(&self, dialer: Arc<dyn Dialer>) {
        let _ = self.dialer.set(dialer);
    }

    /// The remote address of the session held with `peer`, if one is.
    pub fn session_remote(&self, peer: NodeId) -> Option<SocketAddr> {
        self.lock().sessions.get(&peer).map(|h| h.remote)
    }

    pub fn counters(&self) -> Arc<SessionCounters> {
        Arc::clone(&self.counters)
    }

    pub fn local_id(&self) -> NodeId {
        self.config.local_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The engine of the shared port bound at `local`, driving `transport`.
    pub fn add_engine(self: &Arc<Self>, transport: Transport, local: SocketAddr) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inner = self.lock();
        let idx = inner.engines.len();
        inner.engines.push(EngineRef {
            local,
            tx: tx.clone(),
        });
        drop(inner);
        Engine {
            idx,
            mesh: Arc::clone(self),
            transport,
            rx,
            tx: Arc::new(Tx(tx)),
            inbox: Vec::new(),
            sessions: HashMap::new(),
            dials: HashMap::new(),
            streams: HashMap::new(),
            channels: HashMap::new(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The full ID of a peer named in config or on the command line.
    pub fn resolve_peer(&self, peer: &PeerRef) -> Result<NodeId, String> {
        match peer {
            PeerRef::Id(id) => Ok(*id),
            PeerRef::Short(short) => {
                let inner = self.lock();
                let mut found: Vec<NodeId> = inner
                    .table
                    .ids()
                    .chain(inner.sessions.keys().copied())
                    .filter(|id| id.short() == *short)
                    .collect();
                found.sort();
                found.dedup();
                match found.as_slice() {
                    [id] => Ok(*id),
                    [] => Err(format!(
                        "no known peer has the short ID {short} (not announced, not in \
                         [discovery] peers, not connected)"
                    )),
                    _ => Err(format!(
                        "the short ID {short} is ambiguous: give the full node ID"
                    )),
                }
            }
        }
    }

    /// Opens a stream to `target` on `peer`: the caller pumps the returned side with its TCP
    /// connection. Data may flow at once; [`TcpSide::opened`] waits for the peer's answer.
    pub fn open(&self, peer: NodeId, target: &str) -> Result<TcpSide, String> {
        if peer == self.config.local_id {
            return Err("that is this node's own ID".to_owned());
        }
        let mut inner = self.lock();
        let idx = match inner.sessions.get(&peer) {
            Some(held) => held.engine,
            None => {
                if inner.table.dialling(peer).is_none() {
                    if !inner.table.demand(peer) {
                        return Err(format!(
                            "peer {} is unknown: not announced over mDNS, not in [discovery] \
                             peers, and no session with it",
                            peer.short()
                        ));
                    }
                    inner.reconcile();
                }
                inner.table.dialling(peer).ok_or_else(|| {
                    format!(
                        "peer {} has no address of a family this node listens on",
                        peer.short()
                    )
                })?
            }
        };
        let engine = &inner.engines[idx];
        let key = tcp::next_key();
        let (side, tcp_side) = tcp::stream_pair(key, Arc::new(Tx(engine.tx.clone())));
        engine
            .tx
            .send(Cmd::Open {
                key,
                peer,
                target: target.to_owned(),
                side,
            })
            .map_err(|_| "the node is shutting down".to_owned())?;
        Ok(tcp_side)
    }

    /// Starts dialling what the peer table wants (static peers, at first); call once every
    /// port's engine was added.
    pub fn start(&self) {
        self.lock().reconcile();
    }

    /// An mDNS announcement of a peer of this mesh.
    pub fn announced(&self, id: NodeId, role: Role, addrs: Vec<SocketAddr>) -> Announced {
        let mut inner = self.lock();
        let shown = addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let result = inner.table.announced(Instant::now(), id, role, addrs);
        match result {
            Announced::New => {
                tracing::info!("discovered {role} {} at {shown}", id.short());
                tracing::debug!("discovered peer {id}");
            }
            Announced::Full => tracing::debug!(
                "peer table full ({} peers): announcement of {} dropped",
                peers::MAX_PEERS,
                id.short()
            ),
            Announced::Known | Announced::Own => {}
        }
        inner.reconcile();
        result
    }

    /// A peer's mDNS announcement was withdrawn (goodbye) or expired.
    pub fn withdrawn(&self, id: NodeId) {
        let mut inner = self.lock();
        if inner.table.withdrawn(id) {
            tracing::info!("peer {} is no longer announced", id.short());
        }
        inner.reconcile();
    }

    /// Announced peers whose session was lost: discovery asks whether they are still there.
    pub fn take_suspects(&self) -> Vec<NodeId> {
        self.lock().table.take_suspects()
    }

    /// The peer table as the local API shows it.
    pub fn peer_views(&self) -> Vec<views::PeerView> {
        let inner = self.lock();
        inner.table.views(Instant::now(), &inner.held())
    }

    /// The sessions up now, as the local API shows them.
    pub fn session_views(&self) -> Vec<views::SessionView> {
        let inner = self.lock();
        let now = Instant::now();
        let mut out: Vec<views::SessionView> = inner
            .sessions
            .iter()
            .map(|(id, held)| views::SessionView {
                peer: id.to_string(),
                short_id: id.short(),
                role: inner.table.role(*id).map(peers::role_name),
                remote: held.remote.to_string(),
                local: inner.engines[held.engine].local.to_string(),
                initiator: if held.dialer == self.config.local_id {
                    "us"
                } else {
                    "peer"
                },
                up_s: now.saturating_duration_since(held.since).as_secs(),
            })
            .collect();
        out.sort_by(|a, b| a.peer.cmp(&b.peer));
        out
    }

    /// An engine's session with `peer` is up (and holds).
    fn note_up(&self, peer: NodeId, inbound: bool) {
        let mut inner = self.lock();
        inner.table.session_up(Instant::now(), peer, inbound);
        inner.reconcile();
    }

    fn note_role(&self, peer: NodeId, role: Role) {
        self.lock().table.learned_role(peer, role);
    }

    fn note_dial_failed(&self, peer: NodeId, addr: SocketAddr, reason: &str) {
        let mut inner = self.lock();
        inner.table.dial_failed(peer, addr, reason);
        inner.reconcile();
    }

    fn claim(&self, peer: NodeId, new: Held) -> Claim {
        let mut inner = self.lock();
        let local = self.config.local_id;
        match inner.sessions.get(&peer).copied() {
            None => {
                inner.sessions.insert(peer, new);
                Claim::Fresh
            }
            Some(old) if old.engine == new.engine && old.remote == new.remote => {
                inner.sessions.insert(peer, new);
                Claim::Fresh
            }
            Some(old) => {
                // Same dialer: the newer one (a redial). Otherwise the lower ID's dial wins, on
                // both nodes alike.
                let new_wins = old.dialer == new.dialer || new.dialer == local.min(peer);
                if new_wins {
                    inner.sessions.insert(peer, new);
                    Claim::Replace(old)
                } else {
                    Claim::Lose(old)
                }
            }
        }
    }

    /// The session with `peer` at `remote` on `engine` ended: if it was the one held, the
    /// peer table learns it was lost.
    fn release(&self, peer: NodeId, engine: usize, remote: SocketAddr, reason: &str) {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(&peer)
            .is_some_and(|h| h.engine == engine && h.remote == remote)
        {
            inner.sessions.remove(&peer);
            inner.table.session_down(Instant::now(), peer, reason);
            inner.reconcile();
        }
    }

    fn tell(&self, engine: usize, cmd: Cmd) {
        if let Some(e) = self.lock().engines.get(engine) {
            let _ = e.tx.send(cmd);
        }
    }

    /// The node ID configured for `remote`, if a static peer names that address.
    fn expected_at(&self, remote: SocketAddr) -> Option<NodeId> {
        self.config
            .static_peers
            .iter()
            .find(|p| p.addr == remote)
            .map(|p| p.id)
    }
}

/// Commands to an engine, from the TCP side and from other engines.
enum Cmd {
    Open {
        key: StreamKey,
        peer: NodeId,
        target: String,
        side: EngineSide,
    },
    Tcp {
        key: StreamKey,
        msg: FromTcp,
    },
    /// Close the session with `remote` (it lost to a session on another port).
    Drop {
        remote: SocketAddr,
        reason: String,
    },
    /// Keep a session with `peer`, dialling `addr` (the peer table's policy).
    Want {
        peer: NodeId,
        addr: SocketAddr,
        delay: Duration,
    },
    /// Stop dialling `peer`.
    Unwant {
        peer: NodeId,
    },
}

struct Session {
    peer: NodeId,
    client: bool,
    /// The peer's hello was valid (same mesh).
    peer_ok: bool,
    /// The peer accepted our hello.
    acked: bool,
    ctl_open: bool,
    last_rx: Instant,
    next_ping: Instant,
    /// Refused: closed at this instant (after the OPEN_ERR is out).
    doomed: Option<Instant>,
    next_channel: u16,
}

impl Session {
    fn usable(&self) -> bool {
        self.peer_ok && self.acked && self.doomed.is_none()
    }
}

struct Dial {
    addr: SocketAddr,
    attempt: u32,
    next_at: Option<Instant>,
    connecting: bool,
    last_error: Option<String>,
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_MIN
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Dialer: waiting for a usable session with the peer.
    Waiting,
    /// Dialer: OPEN sent, no answer yet.
    Opening,
    /// Acceptor: connecting the target.
    Connecting,
    Open,
}

struct Stream {
    peer: NodeId,
    target: String,
    side: EngineSide,
    state: StreamState,
    remote: Option<SocketAddr>,
    channel: Option<u16>,
    /// Credit we granted the peer in total, and bytes it sent.
    recv_allowed: u64,
    recv_total: u64,
    eof_in: bool,
    eof_out: bool,
    /// Frames from TCP before the stream had a channel (bounded by the send credit).
    pending: Vec<Bytes>,
    pending_eof: bool,
    deadline: Option<Instant>,
}

impl Stream {
    /// A stream on `wire` (remote, channel), or waiting for one, with the protocol's initial
    /// window granted.
    fn new(
        peer: NodeId,
        target: String,
        side: EngineSide,
        state: StreamState,
        wire: Option<(SocketAddr, u16)>,
    ) -> Self {
        Self {
            peer,
            target,
            side,
            state,
            remote: wire.map(|w| w.0),
            channel: wire.map(|w| w.1),
            recv_allowed: u64::from(frame::INITIAL_CREDIT),
            recv_total: 0,
            eof_in: false,
            eof_out: false,
            pending: Vec::new(),
            pending_eof: false,
            deadline: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chan {
    /// The peer opened it; its OPEN frame is next.
    AwaitOpen,
    Stream(StreamKey),
}

/// The sessions of one shared port. See the module documentation.
pub struct Engine {
    idx: usize,
    mesh: Arc<Mesh>,
    transport: Transport,
    rx: mpsc::UnboundedReceiver<Cmd>,
    tx: Arc<Tx>,
    inbox: Vec<Cmd>,
    sessions: HashMap<SocketAddr, Session>,
    dials: HashMap<NodeId, Dial>,
    streams: HashMap<StreamKey, Stream>,
    channels: HashMap<(SocketAddr, u16), Chan>,
    counters: Arc<SessionCounters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("idx", &self.idx)
            .field("sessions", &self.sessions.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

fn encode(frame: &Frame) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame::HEADER_LEN + 64);
    // Every frame built here is within bounds: reasons are cut to fit first.
    let _ = frame.encode(0, &mut buf);
    buf.freeze()
}

impl Engine {
    /// Sends `last` (if any) on `channel`, then forgets the channel and resets its SCTP stream.
    fn end_channel(&mut self, now: Instant, remote: SocketAddr, channel: u16, last: Option<Frame>) {
        if let Some(frame) = last {
            let _ = self.send_frame(now, remote, channel, &frame);
        }
        self.channels.remove(&(remote, channel));
        self.transport.close_channel(now, remote, channel);
    }

    fn send_frame(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        channel: u16,
        frame: &Frame,
    ) -> Result<(), String> {
        self.transport.send(now, remote, channel, &encode(frame))
    }

    fn handle_cmd(&mut self, now: Instant, cmd: Cmd, out: &mut Vec<Transmit>) {
        match cmd {
            Cmd::Open {
                key,
                peer,
                target,
                side,
            } => {
                let stream = Stream::new(peer, target, side, StreamState::Waiting, None);
                self.streams.insert(
                    key,
                    Stream {
                        deadline: Some(now + OPEN_WAIT),
                        ..stream
                    },
                );
                match self.usable_session(peer) {
                    Some(remote) => self.start_stream(now, key, remote),
                    None => match self.dials.get_mut(&peer) {
                        Some(dial) if !dial.connecting => {
                            // Somebody wants this peer now: no need to wait out the backoff.
                            dial.next_at = Some(now);
                        }
                        Some(_) => {}
                        None if self.sessions.values().any(|s| s.peer == peer) => {}
                        None => self.fail_stream(
                            now,
                            key,
                            format!("no session with peer {} on this port", peer.short()),
                        ),
                    },
                }
            }
            Cmd::Tcp { key, msg } => self.on_tcp(now, key, msg),
            Cmd::Drop { remote, reason } => self.close_session(now, remote, reason, out),
            Cmd::Want { peer, addr, delay } => match self.dials.get_mut(&peer) {
                // An attempt under way ends first; the next one uses the new address.
                Some(dial) if !dial.connecting => dial.addr = addr,
                Some(_) => {}
                None => {
                    self.dials.insert(
                        peer,
                        Dial {
                            addr,
                            attempt: 0,
                            next_at: Some(now + delay),
                            connecting: false,
                            last_error: None,
                        },
                    );
                }
            },
            Cmd::Unwant { peer } => {
                self.dials.remove(&peer);
            }
        }
    }

    fn usable_session(&self, peer: NodeId) -> Option<SocketAddr> {
        self.sessions
            .iter()
            .find(|(_, s)| s.peer == peer && s.usable())
            .map(|(remote, _)| *remote)
    }

    fn alloc_channel(&mut self, remote: SocketAddr) -> Option<u16> {
        let parity = self.transport.channel_parity(remote)?;
        let session = self.sessions.get_mut(&remote)?;
        for _ in 0..32_768u32 {
            let candidate = session.next_channel;
            let next = candidate.wrapping_add(2);
            // 0 is the control channel; wrap to the first of our parity after it.
            session.next_channel = if next < 2 { 2 + parity } else { next };
            if candidate >= 2
                && !self.channels.contains_key(&(remote, candidate))
                && !self.transport.channel_exists(remote, candidate)
            {
                return Some(candidate);
            }
        }
        None
    }

    fn start_stream(&mut self, now: Instant, key: StreamKey, remote: SocketAddr) {
        let Some(channel) = self.alloc_channel(remote) else {
            self.fail_stream(now, key, "no free channel on the session".to_owned());
            return;
        };
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.remote = Some(remote);
        stream.channel = Some(channel);
        stream.state = StreamState::Opening;
        stream.deadline = None;
        let target = stream.target.clone();
        let pending = std::mem::take(&mut stream.pending);
        let pending_eof = stream.pending_eof;
        self.channels.insert((remote, channel), Chan::Stream(key));
        let result = self
            .transport
            .open_channel(now, remote, channel, LABEL_TCP, PROTOCOL)
            .and_then(|()| self.send_frame(now, remote, channel, &Frame::Open(target)));
        if let Err(e) = result {
            self.fail_stream(now, key, format!("cannot open a channel: {e}"));
            return;
        }
        self.widen_window(now, key);
        bump(&self.counters.streams_opened);
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        for data in pending {
            if let Err(e) = self.transport.send(now, remote, channel, &data) {
                self.fail_stream(now, key, e);
                return;
            }
        }
        if pending_eof {
            self.on_tcp(now, key, FromTcp::Eof);
        }
    }

    /// Grants the peer the rest of [`STREAM_WINDOW`] on a stream that just started.
    fn widen_window(&mut self, now: Instant, key: StreamKey) {
        let extra = STREAM_WINDOW.saturating_sub(frame::INITIAL_CREDIT);
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let (Some(remote), Some(channel)) = (stream.remote, stream.channel) else {
            return;
        };
        if extra == 0 {
            return;
        }
        stream.recv_allowed += u64::from(extra);
        let _ = self.send_frame(now, remote, channel, &Frame::Credit(extra));
    }

    /// Ends a stream with `reason`: the TCP side is reset, the peer gets RESET.
    fn fail_stream(&mut self, now: Instant, key: StreamKey, reason: String) {
        let Some(stream) = self.streams.remove(&key) else {
            return;
        };
        let _ = stream.side.to_tcp.send(ToTcp::Reset(reason.clone()));
        self.forget_stream(now, &stream, Some(&reason));
    }

    /// Removes a stream's channel; `reset` sends RESET with that reason first.
    fn forget_stream(&mut self, now: Instant, stream: &Stream, reset: Option<&str>) {
        if reset.is_some() {
            bump(&self.counters.streams_reset);
        }
        let (Some(remote), Some(channel)) = (stream.remote, stream.channel) else {
            return;
        };
        if stream.state != StreamState::Waiting {
            self.counters.streams.fetch_sub(1, Ordering::Relaxed);
        }
        self.end_channel(now, remote, channel, reset.map(Frame::reset_truncated));
    }

    fn maybe_finish(&mut self, now: Instant, key: StreamKey) {
        if self
            .streams
            .get(&key)
            .is_some_and(|s| s.eof_in && s.eof_out)
            && let Some(stream) = self.streams.remove(&key)
        {
            self.forget_stream(now, &stream, None);
        }
    }

    fn on_tcp(&mut self, now: Instant, key: StreamKey, msg: FromTcp) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let wire = stream.remote.zip(stream.channel);
        match msg {
            FromTcp::Data(data) => {
                let payload = data.len().saturating_sub(frame::HEADER_LEN) as u64;
                self.counters
                    .bytes_sent
                    .fetch_add(payload, Ordering::Relaxed);
                match wire {
                    None => stream.pending.push(data),
                    Some((remote, channel)) => {
                        if let Err(e) = self.transport.send(now, remote, channel, &data) {
                            self.fail_stream(now, key, format!("send failed: {e}"));
                        }
                    }
                }
            }
            FromTcp::Eof => match wire {
                None => stream.pending_eof = true,
                Some((remote, channel)) => {
                    stream.eof_out = true;
                    let _ = self.send_frame(now, remote, channel, &Frame::Eof);
                    self.maybe_finish(now, key);
                }
            },
            FromTcp::Reset(reason) => {
                if let Some(stream) = self.streams.remove(&key) {
                    tracing::debug!("stream to {} reset here: {reason}", stream.target);
                    self.forget_stream(now, &stream, Some(&reason));
                }
            }
            FromTcp::Credit(n) => {
                stream.recv_allowed += u64::from(n);
                if let Some((remote, channel)) = wire
                    && !stream.eof_in
                {
                    let _ = self.send_frame(now, remote, channel, &Frame::Credit(n));
                }
            }
            FromTcp::Connected(Ok(())) => {
                stream.state = StreamState::Open;
                if let Some((remote, channel)) = wire {
                    let _ = self.send_frame(now, remote, channel, &Frame::OpenOk);
                    self.widen_window(now, key);
                }
            }
            FromTcp::Connected(Err(reason)) => {
                bump(&self.counters.streams_refused);
                tracing::info!(
                    "stream from {} to {}: {reason}",
                    stream.peer.short(),
                    stream.target
                );
                if let Some(stream) = self.streams.remove(&key)
                    && let (Some(remote), Some(channel)) = (stream.remote, stream.channel)
                {
                    self.counters.streams.fetch_sub(1, Ordering::Relaxed);
                    let err = Frame::open_err_truncated(&reason);
                    self.end_channel(now, remote, channel, Some(err));
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: TransportEvent, out: &mut Vec<Transmit>) {
        match event {
            TransportEvent::Up {
                remote,
                peer,
                client,
            } => self.session_up(now, remote, peer, client, out),
            TransportEvent::Down { remote, reason } => self.session_down(now, remote, &reason),
            TransportEvent::Failed {
                remote,
                client,
                reason,
            } => self.dial_failed(now, remote, client, &reason),
            TransportEvent::ChannelOpened {
                remote,
                channel,
                label,
                protocol,
            } => self.channel_opened(now, remote, channel, &label, &protocol),
            TransportEvent::Message {
                remote,
                channel,
                data,
            } => {
                if channel == CTL {
                    self.on_ctl(now, remote, data, out);
                } else {
                    self.on_stream_message(now, remote, channel, data);
                }
            }
            TransportEvent::ChannelClosed { remote, channel } => {
                if let Some(Chan::Stream(key)) = self.channels.remove(&(remote, channel))
                    && let Some(stream) = self.streams.remove(&key)
                {
                    let done = stream.eof_in && stream.eof_out;
                    if !done {
                        let _ = stream
                            .side
                            .to_tcp
                            .send(ToTcp::Reset("the peer closed the stream".to_owned()));
                        bump(&self.counters.streams_reset);
                    }
                    if stream.state != StreamState::Waiting {
                        self.counters.streams.fetch_sub(1, Ordering::Relaxed);
                    }
                    self.transport.close_channel(now, remote, channel);
                }
            }
        }
    }

    fn refuse(&mut self, now: Instant, remote: SocketAddr, why: &str, out: &mut Vec<Transmit>) {
        bump(&self.counters.refused);
        tracing::warn!("session with {remote} refused: {why}");
        self.transport.close(now, remote, out);
        if let Some(dial) = self.dials.values_mut().find(|d| d.addr == remote) {
            dial.connecting = false;
            dial.last_error = Some(why.to_owned());
            dial.attempt += 1;
            dial.next_at = Some(now + backoff(dial.attempt));
        }
    }

    fn session_up(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        peer: NodeId,
        client: bool,
        out: &mut Vec<Transmit>,
    ) {
        if !client
            && let Some(expect) = self.mesh.config.ice.expected_peer(now, remote)
            && expect != *peer.as_bytes()
        {
            let why = format!(
                "it presented node {peer}, but the offer its ICE checks were for has \
                 fingerprint {}",
                NodeId::from_bytes(expect)
            );
            self.refuse(now, remote, &why, out);
            return;
        }
        if !client
            && let Some(expect) = self.mesh.expected_at(remote)
            && expect != peer
        {
            let why = format!(
                "it presented node {peer}, but [discovery] peers says {remote} is {expect}"
            );
            self.refuse(now, remote, &why, out);
            return;
        }
        let local = self.mesh.local_id();
        let held = Held {
            engine: self.idx,
            remote,
            dialer: if client { local } else { peer },
            since: now,
        };
        match self.mesh.claim(peer, held) {
            Claim::Fresh => {}
            Claim::Replace(old) => {
                let reason = format!("replaced by a new session from {remote}");
                if old.engine == self.idx {
                    self.close_session(now, old.remote, reason, out);
                } else {
                    self.mesh.tell(
                        old.engine,
                        Cmd::Drop {
                            remote: old.remote,
                            reason,
                        },
                    );
                }
            }
            Claim::Lose(old) => {
                bump(&self.counters.refused);
                tracing::debug!(
                    "session with {} at {remote} dropped: one at {} wins",
                    peer.short(),
                    old.remote
                );
                self.transport.close(now, remote, out);
                return;
            }
        }
        bump(&self.counters.established);
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        self.mesh.note_up(peer, !client);
        tracing::info!(
            "session with {} at {remote} up ({})",
            peer.short(),
            if client { "we dialled" } else { "it dialled" }
        );
        tracing::debug!("session peer {peer}");
        if let Some(dial) = self.dials.get_mut(&peer) {
            dial.connecting = false;
            dial.attempt = 0;
            dial.next_at = None;
            dial.last_error = None;
        }
        let parity = u16::from(!client);
        self.sessions.insert(
            remote,
            Session {
                peer,
                client,
                peer_ok: false,
                acked: false,
                ctl_open: client,
                last_rx: now,
                next_ping: now + PING_INTERVAL,
                doomed: None,
                next_channel: 2 + parity,
            },
        );
        if client {
            let hello = Frame::Open(hello(&self.mesh.config));
            let result = self
                .transport
                .open_channel(now, remote, CTL, LABEL_CTL, PROTOCOL)
                .and_then(|()| self.send_frame(now, remote, CTL, &hello));
            if let Err(e) = result {
                self.close_session(now, remote, format!("control channel: {e}"), out);
            }
        }
    }

    fn close_session(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        reason: String,
        out: &mut Vec<Transmit>,
    ) {
        self.transport.close(now, remote, out);
        self.session_down(now, remote, &reason);
    }

    fn session_down(&mut self, now: Instant, remote: SocketAddr, reason: &str) {
        let Some(session) = self.sessions.remove(&remote) else {
            return;
        };
        let peer = session.peer;
        self.mesh.release(peer, self.idx, remote, reason);
        bump(&self.counters.lost);
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::info!("session with {} at {remote} down: {reason}", peer.short());
        let keys: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| s.remote == Some(remote))
            .map(|(k, _)| *k)
            .collect();
        let why = format!("the session with peer {} was lost: {reason}", peer.short());
        for key in keys {
            if let Some(stream) = self.streams.remove(&key) {
                let _ = stream.side.to_tcp.send(ToTcp::Reset(why.clone()));
                bump(&self.counters.streams_reset);
                if stream.state != StreamState::Waiting {
                    self.counters.streams.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        self.channels.retain(|(r, _), _| *r != remote);
        if let Some(dial) = self.dials.get_mut(&peer) {
            dial.connecting = false;
            dial.next_at = Some(now + BACKOFF_MIN);
        }
    }

    fn dial_failed(&mut self, now: Instant, remote: SocketAddr, client: bool, reason: &str) {
        let Some((peer, dial)) = self.dials.iter_mut().find(|(_, d)| d.addr == remote) else {
            if !client {
                tracing::debug!("handshake from {remote} failed: {reason}");
            }
            return;
        };
        let peer = *peer;
        if !dial.connecting {
            return;
        }
        dial.connecting = false;
        dial.attempt += 1;
        let wait = backoff(dial.attempt);
        dial.next_at = Some(now + wait);
        let first = dial.last_error.as_deref() != Some(reason);
        dial.last_error = Some(reason.to_owned());
        bump(&self.counters.dial_failures);
        self.mesh.note_dial_failed(peer, remote, reason);
        if first {
            tracing::info!(
                "cannot reach peer {} at {remote}: {reason} (retrying, next in {wait:?})",
                peer.short()
            );
        } else {
            tracing::debug!("cannot reach peer {} at {remote}: {reason}", peer.short());
        }
        let why = format!("cannot reach peer {} at {remote}: {reason}", peer.short());
        let waiting: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| s.peer == peer && s.state == StreamState::Waiting)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            self.fail_stream(now, key, why.clone());
        }
    }

    fn channel_opened(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        channel: u16,
        label: &str,
        protocol: &str,
    ) {
        let Some(session) = self.sessions.get_mut(&remote) else {
            self.transport.close_channel(now, remote, channel);
            return;
        };
        if channel == CTL && label == LABEL_CTL && protocol == PROTOCOL && !session.client {
            session.ctl_open = true;
            let hello = Frame::Open(hello(&self.mesh.config));
            let _ = self.send_frame(now, remote, CTL, &hello);
            return;
        }
        if label == LABEL_TCP && protocol == PROTOCOL && session.peer_ok && session.doomed.is_none()
        {
            self.channels.insert((remote, channel), Chan::AwaitOpen);
            return;
        }
        bump(&self.counters.frame_errors);
        tracing::debug!(
            "channel {channel} ({label:?}, {protocol:?}) from {remote} refused: not a meshgate \
             stream, or the session is not admitted"
        );
        self.transport.close_channel(now, remote, channel);
    }

    fn on_ctl(&mut self, now: Instant, remote: SocketAddr, data: Bytes, out: &mut Vec<Transmit>) {
        let Some(session) = self.sessions.get_mut(&remote) else {
            return;
        };
        let peer = session.peer;
        let frame = match Frame::decode(data) {
            Ok((_, frame)) => frame,
            Err(e) => {
                bump(&self.counters.frame_errors);
                self.close_session(now, remote, format!("bad control frame: {e}"), out);
                return;
            }
        };
        match frame {
            Frame::Open(text) => match parse_hello(&text) {
                Ok((mesh, role)) if mesh == self.mesh.config.mesh => {
                    session.peer_ok = true;
                    if let Some(role) = role {
                        self.mesh.note_role(peer, role);
                    }
                    let _ = self.send_frame(now, remote, CTL, &Frame::OpenOk);
                    self.start_waiting(now, remote);
                }
                Ok((mesh, _)) => {
                    let why = format!(
                        "node {} is in mesh {mesh:?}, this node in {:?}",
                        peer.short(),
                        self.mesh.config.mesh
                    );
                    self.doom(now, remote, &why);
                }
                Err(why) => self.doom(now, remote, &why),
            },
            Frame::OpenOk => {
                session.acked = true;
                self.start_waiting(now, remote);
            }
            Frame::OpenErr(reason) => {
                bump(&self.counters.refused);
                tracing::warn!(
                    "peer {} at {remote} refused this node: {reason}",
                    peer.short()
                );
                self.close_session(now, remote, format!("refused by the peer: {reason}"), out);
                if let Some(dial) = self.dials.get_mut(&peer) {
                    dial.attempt += 4;
                    dial.next_at = Some(now + backoff(dial.attempt));
                    dial.last_error = Some(reason);
                }
            }
            Frame::Ping(x) => {
                let _ = self.send_frame(now, remote, CTL, &Frame::Pong(x));
            }
            _ => {}
        }
    }

    fn doom(&mut self, now: Instant, remote: SocketAddr, why: &str) {
        bump(&self.counters.refused);
        tracing::warn!("session with {remote} refused: {why}");
        let _ = self.send_frame(now, remote, CTL, &Frame::open_err_truncated(why));
        if let Some(session) = self.sessions.get_mut(&remote) {
            session.doomed = Some(now + DOOM_GRACE);
        }
    }

    /// Streams waiting for the session with `remote`'s peer start once it is usable.
    fn start_waiting(&mut self, now: Instant, remote: SocketAddr) {
        let Some(session) = self.sessions.get(&remote) else {
            return;
        };
        if !session.usable() {
            return;
        }
        let peer = session.peer;
        let mut waiting: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| s.peer == peer && s.state == StreamState::Waiting)
            .map(|(k, _)| *k)
            .collect();
        waiting.sort_unstable();
        for key in waiting {
            self.start_stream(now, key, remote);
        }
    }

    fn on_stream_message(&mut self, now: Instant, remote: SocketAddr, channel: u16, data: Bytes) {
        let Some(chan) = self.channels.get(&(remote, channel)).copied() else {
            return;
        };
        let frame = match Frame::decode(data) {
            Ok((_, frame)) => frame,
            Err(e) => {
                bump(&self.counters.frame_errors);
                let reason = format!("protocol error: {e}");
                match chan {
                    Chan::Stream(key) => self.fail_stream(now, key, reason),
                    Chan::AwaitOpen => {
                        let reset = Frame::reset_truncated(&reason);
                        self.end_channel(now, remote, channel, Some(reset));
                    }
                }
                return;
            }
        };
        match chan {
            Chan::AwaitOpen => self.on_open_request(now, remote, channel, frame),
            Chan::Stream(key) => self.on_stream_frame(now, key, frame),
        }
    }

    fn on_open_request(&mut self, now: Instant, remote: SocketAddr, channel: u16, frame: Frame) {
        let Some(peer) = self.sessions.get(&remote).map(|s| s.peer) else {
            return;
        };
        let target = match frame {
            Frame::Open(target) => target,
            other => {
                bump(&self.counters.frame_errors);
                let why = format!("expected OPEN first, got frame type {}", other.kind());
                self.end_channel(now, remote, channel, Some(Frame::reset_truncated(&why)));
                return;
            }
        };
        if target == DIAL_TARGET {
            self.accept_dial(now, remote, channel, peer);
            return;
        }
        let hp = match self.mesh.config.exposed.resolve(&target) {
            Ok(hp) => hp,
            Err(why) => {
                bump(&self.counters.streams_refused);
                tracing::info!("stream from {} to {target:?} refused: {why}", peer.short());
                self.end_channel(now, remote, channel, Some(Frame::open_err_truncated(&why)));
                return;
            }
        };
        let (key, tcp_side) = self.accept_stream(remote, channel, peer, target.clone());
        tracing::debug!("stream from {} to {target} ({hp})", peer.short());
        tokio::spawn(async move {
            let addr = hp.to_string();
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&addr)).await;
            match connected {
                Ok(Ok(tcp)) => {
                    tcp_side.engine.send(key, FromTcp::Connected(Ok(())));
                    let end = tcp_side.pump(tcp).await;
                    tracing::debug!("stream to {addr} ended: {end:?}");
                }
                Ok(Err(e)) => {
                    let why = format!("cannot connect to {target} ({addr}): {e}");
                    tcp_side.engine.send(key, FromTcp::Connected(Err(why)));
                }
                Err(_) => {
                    let why = format!(
                        "cannot connect to {target} ({addr}): no answer in {CONNECT_TIMEOUT:?}"
                    );
                    tcp_side.engine.send(key, FromTcp::Connected(Err(why)));
                }
            }
        });
    }

    /// The peer's stream on `channel` to `target`, accepted: the engine's half is registered,
    /// the other half is for the task that serves it.
    fn accept_stream(
        &mut self,
        remote: SocketAddr,
        channel: u16,
        peer: NodeId,
        target: String,
    ) -> (StreamKey, TcpSide) {
        let key = tcp::next_key();
        let engine: Arc<dyn EngineTx> = self.tx.clone();
        let (side, tcp_side) = tcp::stream_pair(key, engine);
        let stream = Stream::new(
            peer,
            target,
            side,
            StreamState::Connecting,
            Some((remote, channel)),
        );
        self.streams.insert(key, stream);
        self.channels.insert((remote, channel), Chan::Stream(key));
        bump(&self.counters.streams_opened);
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        (key, tcp_side)
    }

    /// A gateway hands us a browser's offer: the answer comes from the [`Dialer`], in a task.
    fn accept_dial(&mut self, now: Instant, remote: SocketAddr, channel: u16, peer: NodeId) {
        let Some(dialer) = self.mesh.dialer.get().cloned() else {
            let why = "this node takes no relayed dials";
            self.end_channel(now, remote, channel, Some(Frame::open_err_truncated(why)));
            return;
        };
        let (key, mut tcp_side) = self.accept_stream(remote, channel, peer, DIAL_TARGET.to_owned());
        tokio::spawn(async move {
            tcp_side.engine.send(key, FromTcp::Connected(Ok(())));
            let request =
                tokio::time::timeout(CONNECT_TIMEOUT, tcp_side.read_message(DIAL_MESSAGE_MAX))
                    .await
                    .unwrap_or_else(|_| Err("no request in time".to_owned()));
            match request {
                Ok(request) => {
                    let answer = dialer.relayed(peer, &request);
                    if let Err(e) = tcp_side.send_message(&answer) {
                        tcp_side.engine.send(key, FromTcp::Reset(e));
                    }
                    // Hold our side until the gateway has read the answer and closed.
                    let _ = tokio::time::timeout(CONNECT_TIMEOUT, tcp_side.read_message(0)).await;
                }
                Err(e) => tracing::debug!("relayed dial from {}: {e}", peer.short()),
            }
        });
    }

    fn on_stream_frame(&mut self, now: Instant, key: StreamKey, frame: Frame) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        match frame {
            Frame::Data(data) => {
                let len = data.len() as u64;
                stream.recv_total += len;
                if stream.eof_in {
                    bump(&self.counters.frame_errors);
                    self.fail_stream(now, key, "protocol error: DATA after EOF".to_owned());
                    return;
                }
                if stream.recv_total > stream.recv_allowed {
                    bump(&self.counters.frame_errors);
                    let why = format!(
                        "protocol error: the peer sent beyond its credit ({} > {} bytes)",
                        stream.recv_total, stream.recv_allowed
                    );
                    self.fail_stream(now, key, why);
                    return;
                }
                self.counters
                    .bytes_received
                    .fetch_add(len, Ordering::Relaxed);
                let _ = stream.side.to_tcp.send(ToTcp::Data(data));
            }
            Frame::OpenOk if stream.state == StreamState::Opening => {
                stream.state = StreamState::Open;
                let _ = stream.side.to_tcp.send(ToTcp::Opened);
            }
            Frame::OpenErr(reason) if stream.state == StreamState::Opening => {
                bump(&self.counters.streams_refused);
                tracing::info!(
                    "peer {} refused the stream to {}: {reason}",
                    stream.peer.short(),
                    stream.target
                );
                let why = format!("peer {} refused: {reason}", stream.peer.short());
                if let Some(stream) = self.streams.remove(&key) {
                    let _ = stream.side.to_tcp.send(ToTcp::Reset(why));
                    self.forget_stream(now, &stream, None);
                }
            }
            Frame::Eof => {
                stream.eof_in = true;
                let _ = stream.side.to_tcp.send(ToTcp::Eof);
                self.maybe_finish(now, key);
            }
            Frame::Reset(reason) => {
                if let Some(stream) = self.streams.remove(&key) {
                    tracing::debug!("stream to {} reset by the peer: {reason}", stream.target);
                    let _ = stream
                        .side
                        .to_tcp
                        .send(ToTcp::Reset(format!("reset by the peer: {reason}")));
                    bump(&self.counters.streams_reset);
                    self.forget_stream(now, &stream, None);
                }
            }
            Frame::Credit(n) => stream.side.credit.grant(u64::from(n)),
            other => {
                bump(&self.counters.frame_errors);
                let why = format!("protocol error: unexpected frame type {}", other.kind());
                self.fail_stream(now, key, why);
            }
        }
    }

    fn timers(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let mut doomed = Vec::new();
        let mut dead = Vec::new();
        let mut ping = Vec::new();
        for (remote, s) in &self.sessions {
            if s.doomed.is_some_and(|t| t <= now) {
                doomed.push(*remote);
            } else if now.saturating_duration_since(s.last_rx) >= DEAD_AFTER {
                dead.push(*remote);
            } else if s.ctl_open && s.next_ping <= now {
                ping.push(*remote);
            }
        }
        for remote in doomed {
            self.close_session(now, remote, "refused".to_owned(), out);
        }
        for remote in dead {
            self.close_session(
                now,
                remote,
                format!("nothing heard from the peer for {DEAD_AFTER:?}"),
                out,
            );
        }
        for remote in ping {
            let stamp = now.elapsed().as_nanos() as u64;
            let _ = self.send_frame(now, remote, CTL, &Frame::Ping(stamp));
            if let Some(s) = self.sessions.get_mut(&remote) {
                s.next_ping = now + PING_INTERVAL;
            }
        }
        let due: Vec<(NodeId, SocketAddr)> = self
            .dials
            .iter()
            .filter(|(_, d)| !d.connecting && d.next_at.is_some_and(|t| t <= now))
            .map(|(p, d)| (*p, d.addr))
            .collect();
        for (peer, addr) in due {
            let has_session = self.sessions.values().any(|s| s.peer == peer)
                || self.mesh.lock().sessions.contains_key(&peer);
            let Some(dial) = self.dials.get_mut(&peer) else {
                continue;
            };
            dial.next_at = None;
            if has_session {
                // Its end reschedules the dial.
                continue;
            }
            if self.transport.is_active(addr) {
                // A handshake of theirs with us is under way: look again once it is settled.
                dial.next_at = Some(now + BACKOFF_MIN);
                continue;
            }
            dial.connecting = true;
            tracing::debug!("dialling {} at {addr}", peer.short());
            self.transport.dial(now, addr, peer, out);
        }
        let expired: Vec<StreamKey> = self
            .streams
            .iter()
            .filter(|(_, s)| s.deadline.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let peer = self.streams.get(&key).map(|s| s.peer.short());
            let why = format!(
                "no session with peer {} after {OPEN_WAIT:?}",
                peer.unwrap_or_default()
            );
            self.fail_stream(now, key, why);
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let sessions = self.sessions.values().flat_map(|s| {
            [
                s.doomed,
                Some(s.last_rx + DEAD_AFTER),
                s.ctl_open.then_some(s.next_ping),
            ]
        });
        let dials = self
            .dials
            .values()
            .map(|d| if d.connecting { None } else { d.next_at });
        let streams = self.streams.values().map(|s| s.deadline);
        sessions.chain(dials).chain(streams).flatten().min()
    }

    /// Handles what the transport reported and sends what that queued, until quiet.
    fn settle(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        for _ in 0..64 {
            self.transport.flush(now, out);
            let mut any = false;
            while let Some(event) = self.transport.poll_event() {
                any = true;
                self.on_event(now, event, out);
            }
            if !any {
                break;
            }
        }
        self.transport.flush(now, out);
    }
}

impl Sessions for Engine {
    fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Transmit>,
    ) {
        if let Some(s) = self.sessions.get_mut(&from) {
            s.last_rx = now;
        }
        self.transport.datagram_deferred(now, from, datagram, out);
    }

    /// The end of a datagram batch: run the associations it fed (one SACK per batch).
    fn flush(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.settle(now, out);
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        [self.transport.poll_timeout(), self.next_timer()]
            .into_iter()
            .flatten()
            .min()
    }

    fn timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.transport.timeout(now, out);
        self.timers(now, out);
        self.settle(now, out);
    }

    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.inbox.len() < WAKE_BATCH {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(cmd)) => self.inbox.push(cmd),
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if self.inbox.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    fn wake(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let inbox = std::mem::take(&mut self.inbox);
        for cmd in inbox {
            self.handle_cmd(now, cmd, out);
        }
        self.settle(now, out);
    }

    /// Closes every session (SCTP ABORT, DTLS close_notify): peers see us go at once.
    fn shutdown(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.dials.clear();
        let remotes: Vec<SocketAddr> = self.sessions.keys().copied().collect();
        for remote in remotes {
            self.close_session(now, remote, "this node is stopping".to_owned(), out);
        }
    }
}
