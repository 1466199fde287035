//! The peer table (DESIGN.md §7): every node this one knows of, from the config (static peers),
//! from mDNS announcements, or because it dialled us; and the policy that decides which of them
//! this node keeps a session with.
//!
//! Sans-IO: the table is told what happened (an announcement, a withdrawal, a session up or
//! down, a failed dial) and [`PeerTable::reconcile`] answers with [`Order`]s for the engines:
//! start dialling a peer at an address, or stop.
//!
//! Policy:
//! - static peers: always (the config asked for them);
//! - a gateway: every other gateway it knows of (a full mesh, for small meshes);
//! - a node: one gateway, the one it has a session with, else the one with the fewest recent
//!   failures (lowest ID among equals); a lost session or a failed dial counts as a failure, so
//!   the next choice is another gateway: failover;
//! - any peer a stream was asked for ([`PeerTable::demand`]), for as long as it stays known.
//!
//! Nodes accept sessions from any node of their mesh whatever the policy says.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Role, StaticPeer};
use crate::identity::NodeId;

use super::views::PeerView;

/// The most peers the table holds: announcements beyond it are dropped (a LAN host flooding
/// fake announcements must not make this node dial without end, nor grow without bound).
pub const MAX_PEERS: usize = 256;
/// The most addresses kept per announced peer.
pub const MAX_ADDRS: usize = 8;

/// What an announcement did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A peer not announced before.
    New,
    /// A refresh (or a change) of an announced peer.
    Known,
    /// This node's own announcement.
    Own,
    /// The table holds [`MAX_PEERS`] peers.
    Full,
}

/// What the table wants an engine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// Keep a session with `peer`, dialling `addr` (after `delay` if no dial is pending yet).
    Want {
        engine: usize,
        peer: NodeId,
        addr: SocketAddr,
        delay: Duration,
    },
    /// Stop dialling `peer` (a session that is up stays up).
    Unwant { engine: usize, peer: NodeId },
}

/// What the table needs to know of a session held now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSession {
    pub remote: SocketAddr,
}

#[derive(Debug, Clone)]
struct Peer {
    role: Option<Role>,
    /// From the config: dialled first, never forgotten.
    static_addr: Option<SocketAddr>,
    /// Announced over mDNS now (best first); empty when not.
    announced: Vec<SocketAddr>,
    /// It dialled us.
    inbound: bool,
    last_seen: Option<Instant>,
    /// Failed dials and lost sessions since the last session came up.
    failures: u32,
    /// Which of [`Peer::addrs`] to dial next.
    cursor: usize,
    /// A dial failed: the next reconcile moves on to the next address.
    moved: bool,
    last_error: Option<String>,
    /// Somebody opened a stream to it: keep a session while it is known.
    demand: bool,
    /// The engine told to dial it, and the address.
    dial: Option<(usize, SocketAddr)>,
}

impl Peer {
    fn new() -> Self {
        Self {
            role: None,
            static_addr: None,
            announced: Vec::new(),
            inbound: false,
            last_seen: None,
            failures: 0,
            cursor: 0,
            moved: false,
            last_error: None,
            demand: false,
            dial: None,
        }
    }

    /// Where to reach it, best first: the configured address, then the announced ones.
    fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.static_addr.into_iter().chain(
            self.announced
                .iter()
                .copied()
                .filter(|a| Some(*a) != self.static_addr),
        )
    }

    fn known(&self) -> bool {
        self.static_addr.is_some() || !self.announced.is_empty()
    }
}

/// The order in which a peer's addresses are tried: routable IPv4, routable IPv6, then
/// link-local IPv4 and IPv6 (the latter need the interface, which mDNS gives).
pub fn address_rank(addr: &SocketAddr) -> u8 {
    match addr {
        SocketAddr::V4(a) if a.ip().is_link_local() => 2,
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(a) if a.ip().is_unicast_link_local() => 3,
        SocketAddr::V6(_) => 1,
    }
}

/// Backoff before dialling again a peer that failed `failures` times in a row.
fn retry_delay(failures: u32) -> Duration {
    if failures == 0 {
        Duration::ZERO
    } else {
        super::backoff(failures)
    }
}

#[derive(Debug)]
pub struct PeerTable {
    local: NodeId,
    role: Role,
    peers: BTreeMap<NodeId, Peer>,
    /// Announced peers whose session was lost: mDNS should check they are still there.
    suspects: Vec<NodeId>,
}

impl PeerTable {
    pub fn new(local: NodeId, role: Role, static_peers: &[StaticPeer]) -> Self {
        let mut peers = BTreeMap::new();
        for p in static_peers {
            if p.id == local {
                tracing::warn!(
                    "[discovery] peers lists this node itself ({}): ignored",
                    p.addr
                );
                continue;
            }
            peers.entry(p.id).or_insert_with(Peer::new).static_addr = Some(p.addr);
        }
        Self {
            local,
            role,
            peers,
            suspects: Vec::new(),
        }
    }

    /// An mDNS announcement of `id` (of this mesh): its role and addresses.
    pub fn announced(
        &mut self,
        now: Instant,
        id: NodeId,
        role: Role,
        mut addrs: Vec<SocketAddr>,
    ) -> Announced {
        if id == self.local {
            return Announced::Own;
        }
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&id) {
            return Announced::Full;
        }
        addrs.sort_by_key(|a| (address_rank(a), *a));
        addrs.dedup();
        addrs.truncate(MAX_ADDRS);
        let peer = self.peers.entry(id).or_insert_with(Peer::new);
        let fresh = peer.announced.is_empty();
        if peer.announced != addrs {
            peer.cursor = 0;
        }
        peer.announced = addrs;
        peer.role = Some(role);
        peer.last_seen = Some(now);
        if fresh {
            Announced::New
        } else {
            Announced::Known
        }
    }

    /// `id` said goodbye over mDNS, or its records expired. True if it was announced.
    pub fn withdrawn(&mut self, id: NodeId) -> bool {
        match self.peers.get_mut(&id) {
            Some(peer) if !peer.announced.is_empty() => {
                peer.announced.clear();
                peer.cursor = 0;
                true
            }
            _ => false,
        }
    }

    /// The peer's hello said its role.
    pub fn learned_role(&mut self, id: NodeId, role: Role) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.role = Some(role);
        }
    }

    pub fn session_up(&mut self, now: Instant, id: NodeId, inbound: bool) {
        let peer = self.peers.entry(id).or_insert_with(Peer::new);
        peer.inbound |= inbound;
        peer.failures = 0;
        peer.last_error = None;
        peer.last_seen = Some(now);
    }

    pub fn session_down(&mut self, now: Instant, id: NodeId, reason: &str) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.failures += 1;
            peer.last_seen = Some(now);
            peer.last_error = Some(format!("session lost: {reason}"));
            if !peer.announced.is_empty() && !self.suspects.contains(&id) {
                self.suspects.push(id);
            }
        }
    }

    /// A dial of `id` at `addr` failed: the next dial tries its next address.
    pub fn dial_failed(&mut self, id: NodeId, addr: SocketAddr, reason: &str) {
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.failures += 1;
            peer.last_error = Some(format!("{addr}: {reason}"));
            if peer.dial.is_some_and(|(_, a)| a == addr) {
                peer.cursor += 1;
                peer.moved = true;
            }
        }
    }

    /// A stream was asked for `id`: keep a session with it while it is known. False if no
    /// address of it is known.
    pub fn demand(&mut self, id: NodeId) -> bool {
        match self.peers.get_mut(&id) {
            Some(peer) if peer.known() => {
                peer.demand = true;
                true
            }
            _ => false,
        }
    }

    /// The engine told to dial `id`, if any.
    pub fn dialling(&self, id: NodeId) -> Option<usize> {
        self.peers.get(&id).and_then(|p| p.dial).map(|(e, _)| e)
    }

    pub fn take_suspects(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.suspects)
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    pub fn role(&self, id: NodeId) -> Option<Role> {
        self.peers.get(&id).and_then(|p| p.role)
    }

    /// The peers this node wants a session with now.
    fn wanted(&self, sessions: &HashMap<NodeId, HeldSession>) -> Vec<NodeId> {
        let mut wanted: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.static_addr.is_some() || (p.demand && p.known()))
            .map(|(id, _)| *id)
            .collect();
        let gateways = self
            .peers
            .iter()
            .filter(|(_, p)| p.role == Some(Role::Gateway) && p.known());
        match self.role {
            Role::Gateway => wanted.extend(gateways.map(|(id, _)| *id)),
            Role::Node => {
                let mut gateways: Vec<(&NodeId, &Peer)> = gateways.collect();
                let held: Vec<NodeId> = gateways
                    .iter()
                    .filter(|(id, _)| sessions.contains_key(id))
                    .map(|(id, _)| **id)
                    .collect();
                if held.is_empty() {
                    gateways.sort_by_key(|(id, p)| (p.failures, **id));
                    wanted.extend(gateways.first().map(|(id, _)| **id));
                } else {
                    wanted.extend(held);
                }
            }
        }
        wanted.sort();
        wanted.dedup();
        wanted
    }

    /// Brings the engines' dials in line with the policy; forgets peers nothing keeps any
    /// more (not configured, not announced, no session). `engines` are the local addresses of
    /// the shared ports, by engine index.
    pub fn reconcile(
        &mut self,
        engines: &[SocketAddr],
        sessions: &HashMap<NodeId, HeldSession>,
    ) -> Vec<Order> {
        let wanted = self.wanted(sessions);
        let mut orders = Vec::new();
        for (id, peer) in &mut self.peers {
            // A peer keeps the address it is dialled at (a handshake may be under way, or
            // its session up) while that address is still announced and nothing failed there.
            let keep = peer
                .dial
                .filter(|(_, addr)| !peer.moved && peer.addrs().any(|a| a == *addr));
            peer.moved = false;
            let target = if wanted.binary_search(id).is_err() {
                None
            } else if keep.is_some() {
                keep
            } else {
                pick(peer, engines)
            };
            if peer.dial == target {
                continue;
            }
            if let Some((engine, _)) = peer.dial
                && target.is_none_or(|(e, _)| e != engine)
            {
                orders.push(Order::Unwant { engine, peer: *id });
            }
            if let Some((engine, addr)) = target {
                orders.push(Order::Want {
                    engine,
                    peer: *id,
                    addr,
                    delay: retry_delay(peer.failures),
                });
            }
            peer.dial = target;
        }
        self.peers
            .retain(|id, p| p.known() || p.dial.is_some() || sessions.contains_key(id));
        for p in self.peers.values_mut() {
            if !p.known() {
                p.demand = false;
            }
        }
        orders
    }

    /// The table as the local API shows it.
    pub fn views(&self, now: Instant, sessions: &HashMap<NodeId, HeldSession>) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|(id, p)| {
                let held = sessions.get(id);
                let mut source = Vec::new();
                if p.static_addr.is_some() {
                    source.push("static");
                }
                if !p.announced.is_empty() {
                    source.push("mdns");
                }
                if p.inbound {
                    source.push("inbound");
                }
                PeerView {
                    id: id.to_string(),
                    short_id: id.short(),
                    ipv6: id.ipv6().to_string(),
                    role: p.role.map(role_name),
                    addrs: p.addrs().map(|a| a.to_string()).collect(),
                    last_seen_s: if held.is_some() {
                        Some(0)
                    } else {
                        p.last_seen
                            .map(|t| now.saturating_duration_since(t).as_secs())
                    },
                    session: match (held, p.dial) {
                        (Some(_), _) => "up",
                        (None, Some(_)) => "connecting",
                        (None, None) => "none",
                    },
                    source,
                    remote: held.map(|h| h.remote.to_string()),
                    error: if held.is_some() {
                        None
                    } else {
                        p.last_error.clone()
                    },
                }
            })
            .collect()
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Gateway => "gateway",
        Role::Node => "node",
    }
}

/// The engine and address to dial `peer` at: its addresses in order, starting at its cursor,
/// the first one whose family some engine serves (the first engine of that family).
fn pick(peer: &Peer, engines: &[SocketAddr]) -> Option<(usize, SocketAddr)> {
    let addrs: Vec<SocketAddr> = peer.addrs().collect();
    if addrs.is_empty() {
        return None;
    }
    (0..addrs.len())
        .map(|i| addrs[(peer.cursor + i) % addrs.len()])
        .find_map(|addr| {
            engines
                .iter()
                .position(|e| e.is_ipv4() == addr.is_ipv4())
                .map(|engine| (engine, addr))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::of_certificate(&[n])
    }

    fn sorted_ids(n: usize) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = (0..n as u8).map(id).collect();
        ids.sort();
        ids
    }

    const V4: &str = "0.0.0.0:3478";
    const V6: &str = "[::]:3478";

    fn engines() -> Vec<SocketAddr> {
        vec![V4.parse().unwrap(), V6.parse().unwrap()]
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn wants(orders: &[Order]) -> Vec<(NodeId, SocketAddr)> {
        orders
            .iter()
            .filter_map(|o| match o {
                Order::Want { peer, addr, .. } => Some((*peer, *addr)),
                Order::Unwant { .. } => None,
            })
            .collect()
    }

    #[test]
    fn gateways_want_every_gateway_and_no_node() {
        let ids = sorted_ids(4);
        let now = Instant::now();
        let mut table = PeerTable::new(ids[0], Role::Gateway, &[]);
        table.announced(now, ids[1], Role::Gateway, vec![addr("10.0.0.2:3478")]);
        table.announced(now, ids[2], Role::Gateway, vec![addr("10.0.0.3:3478")]);
        table.announced(now, ids[3], Role::Node, vec![addr("10.0.0.4:3478")]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(
            wants(&orders),
            [
                (ids[1], addr("10.0.0.2:3478")),
                (ids[2], addr("10.0.0.3:3478"))
            ]
        );
        // Nothing changed: nothing to do.
        assert!(table.reconcile(&engines(), &HashMap::new()).is_empty());
    }

    #[test]
    fn a_node_keeps_one_gateway_and_fails_over() {
        let ids = sorted_ids(3);
        let (me, g1, g2) = (ids[2], ids[0], ids[1]);
        let now = Instant::now();
        let mut table = PeerTable::new(me, Role::Node, &[]);
        table.announced(now, g1, Role::Gateway, vec![addr("10.0.0.1:3478")]);
        table.announced(now, g2, Role::Gateway, vec![addr("10.0.0.2:3478")]);
        let mut sessions = HashMap::new();
        let orders = table.reconcile(&engines(), &sessions);
        assert_eq!(wants(&orders), [(g1, addr("10.0.0.1:3478"))]);

        // Up with g1, then lost: the node turns to g2 and stops dialling g1.
        table.session_up(now, g1, false);
        sessions.insert(
            g1,
            HeldSession {
                remote: addr("10.0.0.1:3478"),
            },
        );
        assert!(table.reconcile(&engines(), &sessions).is_empty());
        sessions.clear();
        table.session_down(now, g1, "gone");
        let orders = table.reconcile(&engines(), &sessions);
        assert_eq!(wants(&orders), [(g2, addr("10.0.0.2:3478"))]);
        assert!(orders.contains(&Order::Unwant {
            engine: 0,
            peer: g1
        }));
        assert_eq!(table.take_suspects(), [g1]);

        // g1 said goodbye and g2 came up: g1 is forgotten; g2 is kept.
        assert!(table.withdrawn(g1));
        table.session_up(now, g2, false);
        sessions.insert(
            g2,
            HeldSession {
                remote: addr("10.0.0.2:3478"),
            },
        );
        assert!(table.reconcile(&engines(), &sessions).is_empty());
        assert_eq!(table.ids().collect::<Vec<_>>(), [g2]);

        // A gateway that fails to answer makes way for the next, and back.
        let mut table = PeerTable::new(me, Role::Node, &[]);
        table.announced(now, g1, Role::Gateway, vec![addr("10.0.0.1:3478")]);
        table.announced(now, g2, Role::Gateway, vec![addr("10.0.0.2:3478")]);
        table.reconcile(&engines(), &HashMap::new());
        table.dial_failed(g1, addr("10.0.0.1:3478"), "timeout");
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(g2, addr("10.0.0.2:3478"))]);
        table.dial_failed(g2, addr("10.0.0.2:3478"), "timeout");
        let orders = table.reconcile(&engines(), &HashMap::new());
        match orders.iter().find(|o| matches!(o, Order::Want { .. })) {
            Some(Order::Want { peer, delay, .. }) => {
                assert_eq!(*peer, g1);
                assert!(*delay > Duration::ZERO, "a second round waits");
            }
            other => panic!("expected a dial of g1, got {other:?}"),
        }
    }

    #[test]
    fn addresses_rotate_on_failure_and_follow_the_engines() {
        let ids = sorted_ids(2);
        let now = Instant::now();
        let mut table = PeerTable::new(ids[0], Role::Gateway, &[]);
        let v6 = addr("[fd77::2]:3478");
        let v4 = addr("10.0.0.2:3478");
        let ll = addr("[fe80::2%3]:3478");
        table.announced(now, ids[1], Role::Gateway, vec![ll, v6, v4]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], v4)]);
        table.dial_failed(ids[1], v4, "timeout");
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(
            orders,
            [
                Order::Unwant {
                    engine: 0,
                    peer: ids[1]
                },
                Order::Want {
                    engine: 1,
                    peer: ids[1],
                    addr: v6,
                    delay: retry_delay(1)
                }
            ]
        );
        table.dial_failed(ids[1], v6, "timeout");
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], ll)]);

        // More addresses announced later: the dial in progress keeps its address.
        let mut table = PeerTable::new(ids[0], Role::Gateway, &[]);
        table.announced(now, ids[1], Role::Gateway, vec![v6]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], v6)]);
        table.announced(now, ids[1], Role::Gateway, vec![v4, v6]);
        assert!(table.reconcile(&engines(), &HashMap::new()).is_empty());
        // ... until it is withdrawn.
        table.announced(now, ids[1], Role::Gateway, vec![v4]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], v4)]);

        // An IPv6-only node never dials IPv4 addresses.
        let mut table = PeerTable::new(ids[0], Role::Gateway, &[]);
        table.announced(now, ids[1], Role::Gateway, vec![v4, v6]);
        let orders = table.reconcile(&[addr(V6)], &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], v6)]);
    }

    #[test]
    fn static_demand_and_inbound_peers() {
        let ids = sorted_ids(4);
        let now = Instant::now();
        let statik = StaticPeer {
            id: ids[1],
            addr: addr("192.0.2.1:3478"),
        };
        let myself = StaticPeer {
            id: ids[0],
            addr: addr("192.0.2.9:3478"),
        };
        let mut table = PeerTable::new(ids[0], Role::Node, &[statik, myself]);
        // A node dials its static peers whatever their role, and announced nodes only on
        // demand.
        table.announced(now, ids[2], Role::Node, vec![addr("10.0.0.3:3478")]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[1], addr("192.0.2.1:3478"))]);
        assert!(table.demand(ids[2]));
        assert!(!table.demand(ids[3]), "unknown peers cannot be demanded");
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(wants(&orders), [(ids[2], addr("10.0.0.3:3478"))]);
        assert_eq!(table.dialling(ids[2]), Some(0));

        // Withdrawn: no longer dialled, and forgotten.
        table.withdrawn(ids[2]);
        let orders = table.reconcile(&engines(), &HashMap::new());
        assert_eq!(
            orders,
            [Order::Unwant {
                engine: 0,
                peer: ids[2]
            }]
        );
        assert!(!table.ids().any(|i| i == ids[2]));

        // A peer that dialled us is listed while its session is up, then forgotten.
        table.session_up(now, ids[3], true);
        let mut sessions = HashMap::new();
        sessions.insert(
            ids[3],
            HeldSession {
                remote: addr("10.0.0.4:5000"),
            },
        );
        assert!(table.reconcile(&engines(), &sessions).is_empty());
        let views = table.views(now, &sessions);
        let row = views.iter().find(|v| v.id == ids[3].to_string()).unwrap();
        assert_eq!(row.session, "up");
        assert_eq!(row.source, ["inbound"]);
        table.session_down(now, ids[3], "closed");
        table.reconcile(&engines(), &HashMap::new());
        assert!(!table.ids().any(|i| i == ids[3]));
        // The static peer stays, whatever happens.
        table.withdrawn(ids[1]);
        table.reconcile(&engines(), &HashMap::new());
        assert!(table.ids().any(|i| i == ids[1]));
        // Its own announcements are ignored.
        assert_eq!(
            table.announced(now, ids[0], Role::Node, vec![addr("10.0.0.1:3478")]),
            Announced::Own
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut table = PeerTable::new(id(0), Role::Gateway, &[]);
        let many: Vec<SocketAddr> = (1..=20u16)
            .map(|p| SocketAddr::from(([10, 0, 0, 1], p)))
            .collect();
        for n in 1..=255u8 {
            assert_eq!(
                table.announced(now, id(n), Role::Gateway, many.clone()),
                Announced::New
            );
        }
        assert_eq!(table.ids().count(), 255);
        let two = |n: u8| NodeId::of_certificate(&[n, n]);
        assert_eq!(
            table.announced(now, two(1), Role::Gateway, many.clone()),
            Announced::New
        );
        assert_eq!(
            table.announced(now, two(2), Role::Gateway, many.clone()),
            Announced::Full
        );
        // A known peer is still refreshed, and keeps at most MAX_ADDRS addresses.
        assert_eq!(
            table.announced(now, id(1), Role::Gateway, many),
            Announced::Known
        );
        let views = table.views(now, &HashMap::new());
        assert!(views.iter().all(|v| v.addrs.len() <= MAX_ADDRS));
        // Gateways dial them all, but the orders are bounded by the table.
        assert_eq!(
            wants(&table.reconcile(&engines(), &HashMap::new())).len(),
            256
        );
    }
}
