//! The embedded TURN server (RFC 8656, UDP relaying), run inline in the shared port's loop.
//!
//! Requests are decided here; each allocation owns a relay socket and one task that carries
//! peer -> client datagrams straight to the shared socket. Client -> peer datagrams are sent on
//! the relay socket from the loop that read them: no datagram hops between tasks.
//!
//! Why not the `turn` crate's server: it has no hook to refuse a peer at CreatePermission (the
//! policy must answer 403, RFC 8656 §9.1), no quotas, and it answers 400 for bad integrity where
//! RFC 8489 says 401. Its wire helpers need the `stun` crate, which we replaced (see stun.rs).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use std::os::fd::AsRawFd;

use tokio::net::UdpSocket;

use crate::auth::{Credentials, NonceCheck, Nonces, Refused};
use crate::counters::Counters;
use crate::peers::{BindError, PeerTable};
use crate::policy::RelayPolicy;
use crate::stun::{self, Builder, Class, Message};
use crate::udp::Local;

pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a reserved relay port is held (RFC 8656 §7.2 suggests about 30 s).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Socket buffers of a relay socket: smaller than the shared port's, there can be a thousand.
const RELAY_BUFFER: usize = 1 << 20;
const SOFTWARE: &[u8] = concat!("meshgate ", env!("CARGO_PKG_VERSION")).as_bytes();

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub credentials: Credentials,
    pub policy: RelayPolicy,
    /// Address relay sockets bind to. Unspecified: the local address that reaches the client.
    pub relay_ip: IpAddr,
    pub relay_ports: RangeInclusive<u16>,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
}

struct Allocation {
    username: String,
    key: Vec<u8>,
    relay: Arc<UdpSocket>,
    relayed: SocketAddr,
    expires: Instant,
    peers: Arc<Mutex<PeerTable>>,
    task: tokio::task::JoinHandle<()>,
    /// The Allocate transaction and our answer, for retransmissions (RFC 8656 §7.2).
    allocate_txid: [u8; 12],
    allocate_response: Vec<u8>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who a request authenticated as.
struct Auth {
    username: String,
    key: Vec<u8>,
}

pub struct TurnServer {
    config: TurnConfig,
    nonces: Nonces,
    epoch: Instant,
    allocations: HashMap<SocketAddr, Allocation>,
    per_user: HashMap<String, usize>,
    /// Relay sockets held for a later Allocate with RESERVATION-TOKEN (EVEN-PORT R=1).
    reservations: HashMap<[u8; 8], (UdpSocket, Instant)>,
    shared: Arc<UdpSocket>,
    counters: Arc<Counters>,
    rng: u64,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("allocations", &self.allocations.len())
            .finish_non_exhaustive()
    }
}

fn lock(peers: &Mutex<PeerTable>) -> std::sync::MutexGuard<'_, PeerTable> {
    // A panic elsewhere cannot leave a table half-updated in a way that matters here.
    peers.lock().unwrap_or_else(PoisonError::into_inner)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b) | 1
}

/// The attributes we understand in requests (others that are comprehension-required get 420).
const KNOWN: &[u16] = &[
    stun::USERNAME,
    stun::MESSAGE_INTEGRITY,
    stun::MESSAGE_INTEGRITY_SHA256,
    stun::REALM,
    stun::NONCE,
    stun::CHANNEL_NUMBER,
    stun::LIFETIME,
    stun::XOR_PEER_ADDRESS,
    stun::ATTR_DATA,
    stun::REQUESTED_ADDRESS_FAMILY,
    stun::EVEN_PORT,
    stun::REQUESTED_TRANSPORT,
    stun::DONT_FRAGMENT,
    stun::RESERVATION_TOKEN,
    stun::XOR_MAPPED_ADDRESS,
];

impl TurnServer {
    pub fn new(config: TurnConfig, shared: Arc<UdpSocket>, counters: Arc<Counters>) -> Self {
        let secret = random_u64().to_le_bytes();
        Self {
            config,
            nonces: Nonces::new(&secret),
            epoch: Instant::now(),
            allocations: HashMap::new(),
            per_user: HashMap::new(),
            reservations: HashMap::new(),
            shared,
            counters,
            rng: random_u64(),
        }
    }

    pub fn allocations(&self) -> usize {
        self.allocations.len()
    }

    fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() + 1
    }

    /// A TURN request or indication from `from`; returns the response to send back, if any.
    ///
    /// `server` is the address the request came to; `local` the same with its interface, from
    /// IP_PKTINFO, which the allocation's Data indications and ChannelData are sent from.
    pub fn handle(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        server: SocketAddr,
        local: Option<Local>,
        msg: &Message<'_>,
    ) -> Option<Vec<u8>> {
        if msg.class == Class::Indication {
            if msg.method == stun::SEND {
                self.send_indication(now, from, msg);
            }
            return None;
        }
        if msg.class != Class::Request {
            return None;
        }
        let unknown = msg.unknown_required(KNOWN);
        if !unknown.is_empty() {
            let list: Vec<u8> = unknown.iter().flat_map(|t| t.to_be_bytes()).collect();
            return Some(
                Builder::response(msg, Class::Error)
                    .error(420, "Unknown Attribute")
                    .attr(stun::UNKNOWN_ATTRIBUTES, &list)
                    .fingerprint()
                    .finish(),
            );
        }
        let auth = match self.authenticate(now, wall, msg) {
            Ok(a) => a,
            Err(response) => return Some(response),
        };
        let reply = match msg.method {
            stun::ALLOCATE => self.allocate(now, from, server, local, msg, &auth),
            stun::REFRESH => self.refresh(now, from, msg, &auth),
            stun::CREATE_PERMISSION => self.create_permission(now, from, msg, &auth),
            stun::CHANNEL_BIND => self.channel_bind(now, from, msg, &auth),
            _ => Err((400, "Bad Request: unknown method")),
        };
        Some(match reply {
            Ok(response) => response,
            Err((code, reason)) => Builder::response(msg, Class::Error)
                .error(code, reason)
                .attr(stun::SOFTWARE, SOFTWARE)
                .integrity(&auth.key)
                .fingerprint()
                .finish(),
        })
    }

    fn challenge(&self, now: Instant, msg: &Message<'_>, code: u16, reason: &str) -> Vec<u8> {
        Builder::response(msg, Class::Error)
            .error(code, reason)
            .attr(stun::REALM, self.config.credentials.realm.as_bytes())
            .attr(stun::NONCE, self.nonces.issue(self.seconds(now)).as_bytes())
            .attr(stun::SOFTWARE, SOFTWARE)
            .fingerprint()
            .finish()
    }

    fn authenticate(
        &mut self,
        now: Instant,
        wall: SystemTime,
        msg: &Message<'_>,
    ) -> Result<Auth, Vec<u8>> {
        if !msg.has_integrity() {
            // The first, unauthenticated Allocate of every client lands here: not a failure.
            return Err(self.challenge(now, msg, 401, "Unauthorized"));
        }
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.text(stun::USERNAME),
            msg.text(stun::REALM),
            msg.text(stun::NONCE),
        ) else {
            Counters::add(&self.counters.turn_auth_failures, 1);
            return Err(Builder::response(msg, Class::Error)
                .error(400, "Bad Request: USERNAME, REALM and NONCE are required")
                .fingerprint()
                .finish());
        };
        match self.nonces.check(nonce, self.seconds(now)) {
            NonceCheck::Valid => {}
            NonceCheck::Stale => return Err(self.challenge(now, msg, 438, "Stale Nonce")),
            NonceCheck::Invalid => {
                Counters::add(&self.counters.turn_auth_failures, 1);
                return Err(self.challenge(now, msg, 401, "Unauthorized: unknown nonce"));
            }
        }
        let creds = &self.config.credentials;
        let refuse = |counters: &Counters, why: &str| {
            Counters::add(&counters.turn_auth_failures, 1);
            tracing::debug!(username, "TURN authentication refused: {why}");
        };
        if realm != creds.realm {
            refuse(&self.counters, "wrong realm");
            return Err(self.challenge(now, msg, 401, "Unauthorized: wrong realm"));
        }
        let password = match creds.password(username, wall) {
            Ok(p) => p,
            Err(Refused::UnknownUser) => {
                refuse(&self.counters, "unknown user");
                return Err(self.challenge(now, msg, 401, "Unauthorized"));
            }
            Err(Refused::Expired) => {
                refuse(&self.counters, "expired REST username");
                return Err(self.challenge(now, msg, 401, "Unauthorized: credentials expired"));
            }
        };
        let key = creds.key(username, &password);
        if !msg.check_integrity(&key) {
            refuse(&self.counters, "bad MESSAGE-INTEGRITY");
            return Err(self.challenge(now, msg, 401, "Unauthorized"));
        }
        Ok(Auth {
            username: username.to_owned(),
            key,
        })
    }

    /// The allocation of `from`, checked to belong to the authenticated user (§5).
    fn owned(&self, from: SocketAddr, auth: &Auth) -> Result<&Allocation, (u16, &'static str)> {
        let alloc = self
            .allocations
            .get(&from)
            .ok_or((437, "Allocation Mismatch: no allocation for this client"))?;
        if alloc.username != auth.username || alloc.key != auth.key {
            return Err((441, "Wrong Credentials"));
        }
        Ok(alloc)
    }

    fn success(msg: &Message<'_>, auth: &Auth, build: impl FnOnce(Builder) -> Builder) -> Vec<u8> {
        build(Builder::response(msg, Class::Success))
            .attr(stun::SOFTWARE, SOFTWARE)
            .integrity(&auth.key)
            .fingerprint()
            .finish()
    }

    fn lifetime(msg: &Message<'_>) -> Result<Duration, (u16, &'static str)> {
        let requested = msg
            .u32_attr(stun::LIFETIME)
            .map_err(|_| (400, "Bad Request: malformed LIFETIME"))?;
        Ok(match requested {
            None => DEFAULT_LIFETIME,
            Some(0) => Duration::ZERO,
            Some(s) => Duration::from_secs(u64::from(s)).clamp(DEFAULT_LIFETIME, MAX_LIFETIME),
        })
    }

    fn allocate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        server: SocketAddr,
        local: Option<Local>,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<Vec<u8>, (u16, &'static str)> {
        if let Some(existing) = self.allocations.get(&from) {
            if existing.allocate_txid == msg.transaction_id {
                return Ok(existing.allocate_response.clone());
            }
            return Err((
                437,
                "Allocation Mismatch: this client already has an allocation",
            ));
        }
        match msg.get(stun::REQUESTED_TRANSPORT) {
            None => return Err((400, "Bad Request: REQUESTED-TRANSPORT is required")),
            Some([17, ..]) => {}
            Some(_) => return Err((442, "Unsupported Transport Protocol: UDP only")),
        }
        let token = msg.get(stun::RESERVATION_TOKEN);
        let even_port = msg.get(stun::EVEN_PORT);
        if token.is_some() && (even_port.is_some() || msg.contains(stun::REQUESTED_ADDRESS_FAMILY))
        {
            return Err((
                400,
                "Bad Request: RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        let lifetime = Self::lifetime(msg)?;
        if self.allocations.len() + self.reservations.len() >= self.config.max_allocations {
            Counters::add(&self.counters.turn_quota_refused, 1);
            return Err((508, "Insufficient Capacity: allocation limit reached"));
        }
        let used = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if used >= self.config.max_allocations_per_user {
            Counters::add(&self.counters.turn_quota_refused, 1);
            return Err((486, "Allocation Quota Reached"));
        }
        let mut reserved_token = None;
        let relay = if let Some(token) = token {
            let token: [u8; 8] = token
                .try_into()
                .map_err(|_| (400, "Bad Request: malformed RESERVATION-TOKEN"))?;
            match self.reservations.remove(&token) {
                Some((socket, expires)) if expires > now => socket,
                _ => return Err((508, "Insufficient Capacity: no such reservation")),
            }
        } else {
            let relay_ip = self
                .relay_ip_for(from, server)
                .map_err(|_| (508, "Insufficient Capacity: no relay address"))?;
            if let Some(family) = msg.get(stun::REQUESTED_ADDRESS_FAMILY) {
                let wants_v6 = family.first() == Some(&0x02);
                if wants_v6 != relay_ip.is_ipv6() {
                    return Err((440, "Address Family not Supported"));
                }
            }
            // EVEN-PORT's R bit asks us to hold the next port for a second allocation.
            let reserve = even_port
                .and_then(|v| v.first())
                .is_some_and(|b| b & 0x80 != 0);
            let (relay, next) = self
                .bind_relay(relay_ip, even_port.is_some(), reserve)
                .map_err(|_| (508, "Insufficient Capacity: no free relay port"))?;
            if let Some(next) = next {
                let token = random_u64().to_be_bytes();
                self.reservations
                    .insert(token, (next, now + RESERVATION_LIFETIME));
                reserved_token = Some(token);
            }
            relay
        };
        let relayed = relay
            .local_addr()
            .map_err(|_| (508, "Insufficient Capacity: no relay address"))?;
        let relay = Arc::new(relay);
        let peers = Arc::new(Mutex::new(PeerTable::default()));
        let task = tokio::spawn(relay_to_client(
            Arc::clone(&relay),
            Arc::clone(&self.shared),
            from,
            local,
            Arc::clone(&peers),
            Arc::clone(&self.counters),
        ));
        let lifetime = if lifetime.is_zero() {
            DEFAULT_LIFETIME
        } else {
            lifetime
        };
        let response = Self::success(msg, auth, |b| {
            let b = b
                .xor_address(stun::XOR_RELAYED_ADDRESS, relayed)
                .u32_attr(stun::LIFETIME, lifetime.as_secs() as u32)
                .xor_address(stun::XOR_MAPPED_ADDRESS, from);
            match reserved_token {
                Some(token) => b.attr(stun::RESERVATION_TOKEN, &token),
                None => b,
            }
        });
        self.allocations.insert(
            from,
            Allocation {
                username: auth.username.clone(),
                key: auth.key.clone(),
                relay,
                relayed,
                expires: now + lifetime,
                peers,
                task,
                allocate_txid: msg.transaction_id,
                allocate_response: response.clone(),
            },
        );
        *self.per_user.entry(auth.username.clone()).or_default() += 1;
        Counters::add(&self.counters.turn_allocations_total, 1);
        self.set_gauge();
        tracing::debug!(%from, %relayed, user = auth.username, "TURN allocation");
        Ok(response)
    }

    fn refresh(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<Vec<u8>, (u16, &'static str)> {
        self.owned(from, auth)?;
        let lifetime = Self::lifetime(msg)?;
        if lifetime.is_zero() {
            self.remove(from);
        } else if let Some(a) = self.allocations.get_mut(&from) {
            a.expires = now + lifetime;
        }
        Ok(Self::success(msg, auth, |b| {
            b.u32_attr(stun::LIFETIME, lifetime.as_secs() as u32)
        }))
    }

    /// Checks one XOR-PEER-ADDRESS against the allocation's family and the relay policy.
    fn check_peer(&self, alloc: &Allocation, peer: SocketAddr) -> Result<(), (u16, &'static str)> {
        if peer.is_ipv4() != alloc.relayed.is_ipv4() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        if let Err(denied) = self.config.policy.check(peer.ip()) {
            Counters::add(&self.counters.turn_relay_denied, 1);
            tracing::debug!(%peer, "TURN peer refused by relay policy: {}", denied.as_str());
            return Err((
                403,
                "Forbidden: relaying there is not allowed by this gateway's policy",
            ));
        }
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<Vec<u8>, (u16, &'static str)> {
        let alloc = self.owned(from, auth)?;
        let mut peers = Vec::new();
        for value in msg.get_all(stun::XOR_PEER_ADDRESS) {
            let peer = stun::decode_xor_address(value, &msg.transaction_id)
                .ok_or((400, "Bad Request: malformed XOR-PEER-ADDRESS"))?;
            self.check_peer(alloc, peer)?;
            peers.push(peer);
        }
        if peers.is_empty() {
            return Err((400, "Bad Request: XOR-PEER-ADDRESS is required"));
        }
        let mut table = lock(&alloc.peers);
        for peer in peers {
            if !table.permit(peer.ip(), now) {
                return Err((508, "Insufficient Capacity: too many permissions"));
            }
        }
        drop(table);
        Ok(Self::success(msg, auth, |b| b))
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        from: SocketAddr,
        msg: &Message<'_>,
        auth: &Auth,
    ) -> Result<Vec<u8>, (u16, &'static str)> {
        let alloc = self.owned(from, auth)?;
        let number = match msg.get(stun::CHANNEL_NUMBER) {
            Some(&[a, b, _, _]) => u16::from_be_bytes([a, b]),
            _ => return Err((400, "Bad Request: CHANNEL-NUMBER is required")),
        };
        let peer = msg
            .xor_address(stun::XOR_PEER_ADDRESS)
            .map_err(|_| (400, "Bad Request: malformed XOR-PEER-ADDRESS"))?
            .ok_or((400, "Bad Request: XOR-PEER-ADDRESS is required"))?;
        self.check_peer(alloc, peer)?;
        lock(&alloc.peers)
            .bind(number, peer, now)
            .map_err(|e| match e {
                BindError::BadNumber => (400, "Bad Request: channel number outside 0x4000-0x7FFF"),
                BindError::Conflict => {
                    (400, "Bad Request: channel or peer already bound otherwise")
                }
                BindError::TooMany => (508, "Insufficient Capacity: too many permissions"),
            })?;
        Ok(Self::success(msg, auth, |b| b))
    }

    fn send_indication(&self, now: Instant, from: SocketAddr, msg: &Message<'_>) {
        let Some(alloc) = self.allocations.get(&from) else {
            Counters::add(&self.counters.turn_drop_no_allocation, 1);
            return;
        };
        let (Ok(Some(peer)), Some(data)) = (
            msg.xor_address(stun::XOR_PEER_ADDRESS),
            msg.get(stun::ATTR_DATA),
        ) else {
            Counters::add(&self.counters.drop_malformed, 1);
            return;
        };
        self.to_peer(alloc, now, peer, data);
    }

    /// ChannelData from a client (RFC 8656 §12.4).
    pub fn channel_data(&self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some((number, data)) = crate::demux::channel_data(datagram) else {
            Counters::add(&self.counters.drop_malformed, 1);
            return;
        };
        let Some(alloc) = self.allocations.get(&from) else {
            Counters::add(&self.counters.turn_drop_no_allocation, 1);
            return;
        };
        let Some(peer) = lock(&alloc.peers).channel_peer(number, now) else {
            Counters::add(&self.counters.turn_drop_no_permission, 1);
            return;
        };
        self.to_peer(alloc, now, peer, data);
    }

    fn to_peer(&self, alloc: &Allocation, now: Instant, peer: SocketAddr, data: &[u8]) {
        if !lock(&alloc.peers).permitted(peer.ip(), now) {
            Counters::add(&self.counters.turn_drop_no_permission, 1);
            return;
        }
        if self.config.policy.check_send(peer).is_err() {
            Counters::add(&self.counters.turn_relay_denied, 1);
            return;
        }
        match alloc.relay.try_send_to(data, peer) {
            Ok(_) => {
                Counters::add(&self.counters.turn_to_peer_datagrams, 1);
                Counters::add(&self.counters.turn_to_peer_bytes, data.len() as u64);
            }
            Err(_) => Counters::add(&self.counters.tx_errors, 1),
        }
    }

    fn remove(&mut self, client: SocketAddr) {
        if let Some(a) = self.allocations.remove(&client) {
            if let Some(n) = self.per_user.get_mut(&a.username) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_user.remove(&a.username);
                }
            }
            tracing::debug!(%client, relayed = %a.relayed, "TURN allocation ended");
        }
        self.set_gauge();
    }

    fn set_gauge(&self) {
        self.counters.turn_allocations.store(
            self.allocations.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Ends expired allocations and forgets expired permissions and channels.
    pub fn expire(&mut self, now: Instant) {
        let expired: Vec<SocketAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(&c, _)| c)
            .collect();
        for client in expired {
            self.remove(client);
        }
        for a in self.allocations.values() {
            lock(&a.peers).expire(now);
        }
        self.reservations.retain(|_, (_, expires)| *expires > now);
    }

    fn relay_ip_for(&self, client: SocketAddr, local: SocketAddr) -> io::Result<IpAddr> {
        if !self.config.relay_ip.is_unspecified() {
            return Ok(self.config.relay_ip);
        }
        if !local.ip().is_unspecified() {
            return Ok(local.ip());
        }
        // The address this host would use to reach the client: a connected UDP socket's
        // local address (no packet is sent).
        let probe = StdUdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
        probe.connect(client)?;
        Ok(probe.local_addr()?.ip())
    }

    /// Binds a relay socket on a random port of the range; with `even`, an even port; with
    /// `reserve` also the next (odd) port, returned second, for a RESERVATION-TOKEN.
    fn bind_relay(
        &mut self,
        ip: IpAddr,
        even: bool,
        reserve: bool,
    ) -> io::Result<(UdpSocket, Option<UdpSocket>)> {
        let (lo, hi) = (
            u32::from(*self.config.relay_ports.start()),
            u32::from(*self.config.relay_ports.end()),
        );
        let span = hi - lo + 1;
        let bind = |port: u32| -> io::Result<UdpSocket> {
            let port =
                u16::try_from(port).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let (s, _) = crate::socket::bind_udp_with(SocketAddr::new(ip, port), RELAY_BUFFER)?;
            UdpSocket::from_std(s)
        };
        let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free relay port");
        for _ in 0..64 {
            // xorshift64: port choice only needs to be hard to guess for off-path peers.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let mut port = lo + (self.rng % u64::from(span)) as u32;
            if even && port % 2 == 1 {
                port += 1;
            }
            if port > hi || (reserve && port + 1 > hi) {
                continue;
            }
            let first = match bind(port) {
                Ok(s) => s,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if !reserve {
                return Ok((first, None));
            }
            match bind(port + 1) {
                Ok(second) => return Ok((first, Some(second))),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Peer -> client for one allocation: ChannelData when the peer has a channel, else a Data
/// indication (RFC 8656 §11.5, §12.6). Only from peers with a permission.
async fn relay_to_client(
    relay: Arc<UdpSocket>,
    shared: Arc<UdpSocket>,
    client: SocketAddr,
    local: Option<Local>,
    peers: Arc<Mutex<PeerTable>>,
    counters: Arc<Counters>,
) {
    // Peers' datagrams beyond a jumbo frame arrive truncated; nothing we relay for is that big.
    let mut buf = vec![0u8; 4 + crate::udp::SLOT];
    let mut txid_state = random_u64();
    loop {
        let (n, peer) = match relay.recv_from(&mut buf[4..]).await {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::warn!(%client, "relay socket failed: {e}");
                return;
            }
        };
        let now = Instant::now();
        let (permitted, channel) = {
            let t = lock(&peers);
            (t.permitted(peer.ip(), now), t.channel_of(peer, now))
        };
        if !permitted {
            Counters::add(&counters.turn_drop_no_permission, 1);
            continue;
        }
        let sent = if let (Some(number), Ok(len)) = (channel, u16::try_from(n)) {
            buf[0..2].copy_from_slice(&number.to_be_bytes());
            buf[2..4].copy_from_slice(&len.to_be_bytes());
            send_from(&shared, client, local, &buf[..4 + n]).await
        } else {
            txid_state = txid_state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let mut txid = [0u8; 12];
            txid[..8].copy_from_slice(&txid_state.to_le_bytes());
            let indication = Builder::new(stun::DATA, Class::Indication, txid)
                .xor_address(stun::XOR_PEER_ADDRESS, peer)
                .attr(stun::ATTR_DATA, &buf[4..4 + n])
                .finish();
            send_from(&shared, client, local, &indication).await
        };
        match sent {
            Ok(_) => {
                Counters::add(&counters.turn_to_client_datagrams, 1);
                Counters::add(&counters.turn_to_client_bytes, n as u64);
            }
            Err(_) => Counters::add(&counters.tx_errors, 1),
        }
    }
}

/// Sends one datagram on the shared socket from the address the client's allocation was made
/// on, waiting for room in the send buffer.
async fn send_from(
    shared: &UdpSocket,
    to: SocketAddr,
    from: Option<Local>,
    data: &[u8],
) -> io::Result<usize> {
    let fd = shared.as_raw_fd();
    let item = [crate::udp::Outgoing { to, from, data }];
    shared
        .async_io(tokio::io::Interest::WRITABLE, || {
            crate::udp::send(fd, &item)
        })
        .await
        .map(|_| data.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Builder, Class, Message};
    use portable_atomic::Ordering;
    use std::net::Ipv4Addr;

    const REALM: &str = "mesh.test";

    fn config(max_total: usize, max_per_user: usize) -> TurnConfig {
        TurnConfig {
            credentials: Credentials {
                realm: REALM.into(),
                users: [
                    ("alice".to_owned(), "a".to_owned()),
                    ("bob".to_owned(), "b".to_owned()),
                ]
                .into_iter()
                .collect(),
                secret: None,
                clock_skew: Duration::from_secs(300),
            },
            policy: RelayPolicy::default(),
            relay_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            relay_ports: 40000..=60000,
            max_allocations: max_total,
            max_allocations_per_user: max_per_user,
        }
    }

    async fn server(max_total: usize, max_per_user: usize) -> TurnServer {
        let shared = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        TurnServer::new(
            config(max_total, max_per_user),
            shared,
            Arc::new(Counters::default()),
        )
    }

    /// Sends `build(request)` as `user` from `from`, answering the 401 challenge first.
    /// Returns the error code (0 for success) and the response.
    fn request(
        s: &mut TurnServer,
        now: Instant,
        from: SocketAddr,
        (user, password): (&str, &str),
        method: u16,
        txid: u8,
        build: impl Fn(Builder) -> Builder,
    ) -> (u16, Vec<u8>) {
        let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
        let wall = SystemTime::now();
        let first = build(Builder::new(method, Class::Request, [txid; 12])).finish();
        let challenge = s
            .handle(
                now,
                wall,
                from,
                server,
                None,
                &Message::parse(&first).unwrap(),
            )
            .unwrap();
        let challenge = Message::parse(&challenge).unwrap();
        assert_eq!(error_code(&challenge), 401);
        let nonce = challenge.text(stun::NONCE).unwrap().to_owned();
        let key = s.config.credentials.key(user, password);
        let second = build(Builder::new(
            method,
            Class::Request,
            [txid.wrapping_add(1); 12],
        ))
        .attr(stun::USERNAME, user.as_bytes())
        .attr(stun::REALM, REALM.as_bytes())
        .attr(stun::NONCE, nonce.as_bytes())
        .integrity(&key)
        .fingerprint()
        .finish();
        let response = s
            .handle(
                now,
                wall,
                from,
                server,
                None,
                &Message::parse(&second).unwrap(),
            )
            .unwrap();
        let parsed = Message::parse(&response).unwrap();
        assert!(
            parsed.check_integrity(&key),
            "authenticated responses carry integrity"
        );
        (error_code(&parsed), response)
    }

    fn error_code(m: &Message<'_>) -> u16 {
        match m.class {
            Class::Error => m
                .get(stun::ERROR_CODE)
                .map(|v| u16::from(v[2]) * 100 + u16::from(v[3]))
                .unwrap(),
            _ => 0,
        }
    }

    fn udp(b: Builder) -> Builder {
        b.attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    }

    fn client(n: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 10000 + n)
    }

    #[tokio::test]
    async fn quotas_per_user_and_in_total() {
        let mut s = server(3, 2).await;
        let now = Instant::now();
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("alice", "a"),
                stun::ALLOCATE,
                1,
                udp
            )
            .0,
            0
        );
        assert_eq!(
            request(
                &mut s,
                now,
                client(2),
                ("alice", "a"),
                stun::ALLOCATE,
                3,
                udp
            )
            .0,
            0
        );
        // A third for alice: her quota (2) is reached.
        assert_eq!(
            request(
                &mut s,
                now,
                client(3),
                ("alice", "a"),
                stun::ALLOCATE,
                5,
                udp
            )
            .0,
            486
        );
        // Bob still gets one: the total (3) is not reached yet; then it is.
        assert_eq!(
            request(&mut s, now, client(4), ("bob", "b"), stun::ALLOCATE, 7, udp).0,
            0
        );
        assert_eq!(
            request(&mut s, now, client(5), ("bob", "b"), stun::ALLOCATE, 9, udp).0,
            508
        );
        assert_eq!(s.allocations(), 3);
        assert_eq!(s.counters.turn_quota_refused.load(Ordering::Relaxed), 2);
        // A second Allocate from the same client is a mismatch, not a second allocation.
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("alice", "a"),
                stun::ALLOCATE,
                11,
                udp
            )
            .0,
            437
        );
        // Another user's credentials cannot touch alice's allocation.
        let refresh = |b: Builder| b.u32_attr(stun::LIFETIME, 0);
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("bob", "b"),
                stun::REFRESH,
                13,
                refresh
            )
            .0,
            441
        );
        // Refresh with lifetime 0 ends it and frees alice's quota.
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("alice", "a"),
                stun::REFRESH,
                15,
                refresh
            )
            .0,
            0
        );
        assert_eq!(s.allocations(), 2);
        assert_eq!(
            request(
                &mut s,
                now,
                client(3),
                ("alice", "a"),
                stun::ALLOCATE,
                17,
                udp
            )
            .0,
            0
        );
    }

    #[tokio::test]
    async fn allocations_expire_after_their_lifetime() {
        let mut s = server(10, 10).await;
        let t0 = Instant::now();
        let (code, raw) = request(
            &mut s,
            t0,
            client(1),
            ("alice", "a"),
            stun::ALLOCATE,
            1,
            udp,
        );
        assert_eq!(code, 0);
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.u32_attr(stun::LIFETIME), Ok(Some(600)));
        let relayed = m.xor_address(stun::XOR_RELAYED_ADDRESS).unwrap().unwrap();
        assert_eq!(relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!((40000..=60000).contains(&relayed.port()));
        s.expire(t0 + Duration::from_secs(599));
        assert_eq!(s.allocations(), 1);
        // A refresh at 500 s extends it by another 600 s.
        let refresh = |b: Builder| b.u32_attr(stun::LIFETIME, 600);
        let at = t0 + Duration::from_secs(500);
        assert_eq!(
            request(
                &mut s,
                at,
                client(1),
                ("alice", "a"),
                stun::REFRESH,
                3,
                refresh
            )
            .0,
            0
        );
        s.expire(t0 + Duration::from_secs(1099));
        assert_eq!(s.allocations(), 1);
        s.expire(t0 + Duration::from_secs(1100));
        assert_eq!(s.allocations(), 0);
        assert_eq!(s.counters.turn_allocations.load(Ordering::Relaxed), 0);
        // Its relay port is free again once the runtime has dropped the aborted relay task.
        let mut released = false;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if std::net::UdpSocket::bind(relayed).is_ok() {
                released = true;
                break;
            }
        }
        assert!(released, "relay port {relayed} still bound");
    }

    #[tokio::test]
    async fn bad_requests_get_their_codes() {
        let mut s = server(10, 10).await;
        let now = Instant::now();
        // No REQUESTED-TRANSPORT: 400; TCP: 442.
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("alice", "a"),
                stun::ALLOCATE,
                1,
                |b| b
            )
            .0,
            400
        );
        let tcp = |b: Builder| b.attr(stun::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        assert_eq!(
            request(
                &mut s,
                now,
                client(1),
                ("alice", "a"),
                stun::ALLOCATE,
                3,
                tcp
            )
            .0,
            442
        );
        // Wrong password: 401 again, counted.
        let (code, _) = {
            let server: SocketAddr = "127.0.0.1:3478".parse().unwrap();
            let first = udp(Builder::new(stun::ALLOCATE, Class::Request, [9; 12])).finish();
            let ch = s
                .handle(
                    now,
                    SystemTime::now(),
                    client(2),
                    server,
                    None,
                    &Message::parse(&first).unwrap(),
                )
                .unwrap();
            let nonce = Message::parse(&ch)
                .unwrap()
                .text(stun::NONCE)
                .unwrap()
                .to_owned();
            let bad = udp(Builder::new(stun::ALLOCATE, Class::Request, [10; 12]))
                .attr(stun::USERNAME, b"alice")
                .attr(stun::REALM, REALM.as_bytes())
                .attr(stun::NONCE, nonce.as_bytes())
                .integrity(&s.config.credentials.key("alice", "wrong"))
                .finish();
            let r = s
                .handle(
                    now,
                    SystemTime::now(),
                    client(2),
                    server,
                    None,
                    &Message::parse(&bad).unwrap(),
                )
                .unwrap();
            (error_code(&Message::parse(&r).unwrap()), r)
        };
        assert_eq!(code, 401);
        assert_eq!(s.counters.turn_auth_failures.load(Ordering::Relaxed), 1);
        // Permission to a loopback peer under the default policy: 403, counted.
        assert_eq!(
            request(
                &mut s,
                now,
                client(3),
                ("alice", "a"),
                stun::ALLOCATE,
                11,
                udp
            )
            .0,
            0
        );
        let peer =
            |b: Builder| b.xor_address(stun::XOR_PEER_ADDRESS, "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            request(
                &mut s,
                now,
                client(3),
                ("alice", "a"),
                stun::CREATE_PERMISSION,
                13,
                peer
            )
            .0,
            403
        );
        assert_eq!(s.counters.turn_relay_denied.load(Ordering::Relaxed), 1);
        let ok_peer =
            |b: Builder| b.xor_address(stun::XOR_PEER_ADDRESS, "198.51.100.9:9".parse().unwrap());
        assert_eq!(
            request(
                &mut s,
                now,
                client(3),
                ("alice", "a"),
                stun::CREATE_PERMISSION,
                15,
                ok_peer
            )
            .0,
            0
        );
        // An unknown comprehension-required attribute: 420 before anything else.
        let odd = Builder::new(stun::ALLOCATE, Class::Request, [20; 12])
            .attr(0x0077, b"?")
            .finish();
        let r = s
            .handle(
                now,
                SystemTime::now(),
                client(4),
                "127.0.0.1:3478".parse().unwrap(),
                None,
                &Message::parse(&odd).unwrap(),
            )
            .unwrap();
        assert_eq!(error_code(&Message::parse(&r).unwrap()), 420);
    }
}
