//! mDNS/DNS-SD discovery (DESIGN.md §7), with mdns-sd.
//!
//! Announces `_meshgate._udp.local.`: instance name = the node ID, port = the shared UDP port,
//! TXT `id`, `v=1`, `role=gw|node`, `net=<mesh>`, and the addresses of the interfaces it serves
//! (mdns-sd sends each interface its own addresses). Only the families of the bound shared
//! ports are announced, or the one address bound when `listen` names one.
//!
//! Browses continuously and feeds the [`Mesh`]'s peer table: announcements of this mesh are
//! peers; other meshes, our own announcements and malformed ones are counted and ignored. A
//! peer leaves the table when it says goodbye (a stopping node unregisters), when its records
//! expire (mdns-sd asks again at 80% of their TTL, and drops them at 100%: 120 s for the
//! address and SRV records), or, sooner, when its session was lost and an RFC 6762 §10.4
//! verification query gets no answer within 10 s.
//!
//! mdns-sd runs its own thread; ours reads its events and owns the registration.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::thread::JoinHandle;
use std::time::Duration;

use mdns_sd::{IfKind, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::config::Role;
use crate::identity::NodeId;
use crate::session::{Announced, Mesh};
use turn_gw::counters::bump;

pub const SERVICE_TYPE: &str = "_meshgate._udp.local.";
/// The TXT `v` this node speaks.
pub const VERSION: &str = "1";
/// How often the event loop looks at its stop flag and at peers to verify.
const TICK: Duration = Duration::from_millis(250);
/// How long a stop waits for the goodbye to go out, and for mdns-sd's thread.
const STOP_WAIT: Duration = Duration::from_secs(1);
/// Other meshes remembered to log each once.
const OTHER_MESH_LOG_MAX: usize = 256;

turn_gw::counter_set! {
    /// mDNS discovery.
    pub struct DiscoveryCounters {
        announcements => "mdns_announcements", "announcements of peers of this mesh (new or refreshed)";
        withdrawals => "mdns_withdrawals", "peers whose announcement was withdrawn (goodbye) or expired";
        other_mesh => "mdns_other_mesh", "announcements of another mesh (ignored)";
        invalid => "mdns_invalid", "announcements ignored as malformed (instance name, id, version, role, no address)";
        table_full => "mdns_table_full", "announcements of new peers dropped: the peer table is full";
        verifications => "mdns_verifications", "peers asked again over mDNS after their session was lost";
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("mDNS: cannot start: {0}")]
    Start(mdns_sd::Error),
    #[error("mDNS: cannot announce this node: {0}")]
    Register(mdns_sd::Error),
    #[error("mDNS: cannot browse: {0}")]
    Browse(mdns_sd::Error),
    #[error("mDNS: {0}")]
    Thread(std::io::Error),
}

/// What this node announces.
#[derive(Debug, Clone)]
pub struct Announce {
    pub id: NodeId,
    pub role: Role,
    pub mesh: String,
    /// The shared ports, as bound.
    pub ports: Vec<SocketAddr>,
    /// `[discovery] interfaces`; empty: every multicast-capable one.
    pub interfaces: Vec<String>,
}

/// The TXT `role` value.
fn role_txt(role: Role) -> &'static str {
    match role {
        Role::Gateway => "gw",
        Role::Node => "node",
    }
}

/// A peer of this mesh, as announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub role: Role,
    pub addrs: Vec<SocketAddr>,
}

/// Why an announcement is not a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    Own,
    OtherMesh(NodeId, String),
    Invalid(String),
}

/// The node ID in an instance's full name (`<id>._meshgate._udp.local.`).
fn instance_id(fullname: &str) -> Result<NodeId, String> {
    let instance = fullname
        .strip_suffix(SERVICE_TYPE)
        .and_then(|s| s.strip_suffix('.'))
        .ok_or_else(|| format!("{fullname:?} is not a {SERVICE_TYPE} instance"))?;
    instance
        .parse::<NodeId>()
        .map_err(|e| format!("instance name {instance:?} is not a node ID: {e}"))
}

/// Checks one resolved announcement: `txt` looks up a TXT key; `addrs` are the addresses with
/// the interface index each was seen on (the scope of an IPv6 link-local one).
pub fn parse(
    local: NodeId,
    mesh: &str,
    fullname: &str,
    port: u16,
    addrs: &[(IpAddr, u32)],
    txt: impl Fn(&str) -> Option<String>,
) -> Result<Peer, Ignored> {
    let id = instance_id(fullname).map_err(Ignored::Invalid)?;
    if id == local {
        return Err(Ignored::Own);
    }
    match txt("id") {
        Some(t) if t == id.to_string() => {}
        other => {
            return Err(Ignored::Invalid(format!(
                "TXT id {other:?} differs from the instance name {id}"
            )));
        }
    }
    match txt("v").as_deref() {
        Some(VERSION) => {}
        other => {
            return Err(Ignored::Invalid(format!(
                "TXT v {other:?} is not {VERSION}"
            )));
        }
    }
    let net = txt("net").unwrap_or_default();
    if net != mesh {
        return Err(Ignored::OtherMesh(id, net));
    }
    let role = match txt("role").as_deref() {
        Some("gw") => Role::Gateway,
        Some("node") => Role::Node,
        other => {
            return Err(Ignored::Invalid(format!(
                "TXT role {other:?} is not gw or node"
            )));
        }
    };
    if port == 0 {
        return Err(Ignored::Invalid("port 0".to_owned()));
    }
    let mut out: Vec<SocketAddr> = addrs
        .iter()
        .filter(|(ip, _)| !ip.is_unspecified() && !ip.is_multicast())
        .map(|&(ip, scope)| match ip {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                SocketAddr::V6(SocketAddrV6::new(v6, port, 0, scope))
            }
            ip => SocketAddr::new(ip, port),
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Ignored::Invalid("no address".to_owned()));
    }
    Ok(Peer {
        id,
        role,
        addrs: out,
    })
}

fn scoped(ip: &ScopedIp) -> (IpAddr, u32) {
    match ip {
        ScopedIp::V6(v6) => (IpAddr::V6(*v6.addr()), v6.scope_id().index),
        other => (other.to_ip_addr(), 0),
    }
}

/// Discovery while it runs; [`Discovery::stop`] says goodbye.
pub struct Discovery {
    daemon: ServiceDaemon,
    fullname: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<DiscoveryCounters>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts announcing and browsing.
    pub fn start(announce: &Announce, mesh: Arc<Mesh>) -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(DiscoveryError::Start)?;
        let result = Self::configure(&daemon, announce, mesh);
        if result.is_err() {
            let _ = daemon.shutdown();
        }
        result.map(|(fullname, stop, thread, counters)| Self {
            daemon,
            fullname,
            stop,
            thread: Some(thread),
            counters,
        })
    }

    #[allow(clippy::type_complexity)]
    fn configure(
        daemon: &ServiceDaemon,
        announce: &Announce,
        mesh: Arc<Mesh>,
    ) -> Result<
        (
            String,
            Arc<AtomicBool>,
            JoinHandle<()>,
            Arc<DiscoveryCounters>,
        ),
        DiscoveryError,
    > {
        if !announce.interfaces.is_empty() {
            daemon
                .disable_interface(vec![IfKind::All, IfKind::LoopbackV4, IfKind::LoopbackV6])
                .map_err(DiscoveryError::Start)?;
            let names: Vec<IfKind> = announce
                .interfaces
                .iter()
                .map(|n| IfKind::Name(n.clone()))
                .collect();
            daemon
                .enable_interface(names)
                .map_err(DiscoveryError::Start)?;
            for name in &announce.interfaces {
                if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
                    tracing::warn!(
                        "[discovery] interfaces: this host has no interface {name:?} (now)"
                    );
                }
            }
        }
        let v4 = announce.ports.iter().any(SocketAddr::is_ipv4);
        let v6 = announce.ports.iter().any(SocketAddr::is_ipv6);
        if !v4 {
            daemon
                .disable_interface(vec![IfKind::IPv4, IfKind::LoopbackV4])
                .map_err(DiscoveryError::Start)?;
        }
        if !v6 {
            daemon
                .disable_interface(vec![IfKind::IPv6, IfKind::LoopbackV6])
                .map_err(DiscoveryError::Start)?;
        }
        let port = announce.ports.first().map_or(0, SocketAddr::port);
        if announce.ports.iter().any(|p| p.port() != port) {
            tracing::warn!(
                "mDNS announces one port ({port}); the shared ports differ: {:?}",
                announce.ports
            );
        }
        let id = announce.id.to_string();
        let txt = [
            ("id", id.as_str()),
            ("v", VERSION),
            ("role", role_txt(announce.role)),
            ("net", announce.mesh.as_str()),
        ];
        let host = format!("mg-{}.local.", announce.id.short());
        // Bound to the unspecified address: the addresses of each interface served, as they
        // come and go; bound to one address: that one.
        let fixed: Vec<IpAddr> = announce
            .ports
            .iter()
            .map(SocketAddr::ip)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let auto = announce.ports.iter().any(|p| p.ip().is_unspecified());
        let mut info = ServiceInfo::new(SERVICE_TYPE, &id, &host, &fixed[..], port, &txt[..])
            .map_err(DiscoveryError::Register)?;
        if auto {
            info = info.enable_addr_auto();
        }
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(DiscoveryError::Register)?;
        let events = daemon
            .browse(SERVICE_TYPE)
            .map_err(DiscoveryError::Browse)?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(DiscoveryCounters::default());
        let worker = Worker {
            daemon: daemon.clone(),
            mesh,
            local: announce.id,
            mesh_name: announce.mesh.clone(),
            counters: Arc::clone(&counters),
            other_meshes: HashSet::new(),
        };
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("meshgate-mdns".into())
            .spawn(move || worker.run(&events, &flag))
            .map_err(DiscoveryError::Thread)?;
        tracing::info!(
            "mDNS: announcing {SERVICE_TYPE} port {port} on {}",
            if announce.interfaces.is_empty() {
                "every multicast-capable interface".to_owned()
            } else {
                announce.interfaces.join(", ")
            }
        );
        Ok((fullname, stop, thread, counters))
    }

    pub fn counters(&self) -> Arc<DiscoveryCounters> {
        Arc::clone(&self.counters)
    }

    /// Says goodbye (the announcement is withdrawn, so peers drop this node at once) and stops.
    pub fn stop(mut self) {
        self.stop.store(true, StdOrdering::Relaxed);
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(STOP_WAIT);
        }
        if let Ok(done) = self.daemon.shutdown() {
            let _ = done.recv_timeout(STOP_WAIT);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Worker {
    daemon: ServiceDaemon,
    mesh: Arc<Mesh>,
    local: NodeId,
    mesh_name: String,
    counters: Arc<DiscoveryCounters>,
    other_meshes: HashSet<NodeId>,
}

impl Worker {
    fn run(mut self, events: &mdns_sd::Receiver<ServiceEvent>, stop: &AtomicBool) {
        while !stop.load(StdOrdering::Relaxed) {
            match events.recv_timeout(TICK) {
                Ok(ServiceEvent::ServiceResolved(service)) => {
                    let addrs: Vec<(IpAddr, u32)> =
                        service.get_addresses().iter().map(scoped).collect();
                    let txt = |key: &str| service.get_property_val_str(key).map(str::to_owned);
                    match parse(
                        self.local,
                        &self.mesh_name,
                        service.get_fullname(),
                        service.get_port(),
                        &addrs,
                        txt,
                    ) {
                        Ok(peer) => match self.mesh.announced(peer.id, peer.role, peer.addrs) {
                            Announced::Full => bump(&self.counters.table_full),
                            _ => bump(&self.counters.announcements),
                        },
                        Err(ignored) => self.ignore(ignored),
                    }
                }
                Ok(ServiceEvent::ServiceRemoved(_, fullname)) => {
                    if let Ok(id) = instance_id(&fullname)
                        && id != self.local
                    {
                        bump(&self.counters.withdrawals);
                        self.mesh.withdrawn(id);
                    }
                }
                Ok(_) => {}
                Err(mdns_sd::RecvTimeoutError::Timeout) => {}
                Err(mdns_sd::RecvTimeoutError::Disconnected) => {
                    if !stop.load(StdOrdering::Relaxed) {
                        tracing::warn!("mDNS: the browser stopped; discovery is off");
                    }
                    return;
                }
            }
            for id in self.mesh.take_suspects() {
                bump(&self.counters.verifications);
                let fullname = format!("{id}.{SERVICE_TYPE}");
                if let Err(e) = self
                    .daemon
                    .verify(fullname, mdns_sd::VERIFY_TIMEOUT_DEFAULT)
                {
                    tracing::debug!("mDNS: cannot verify {}: {e}", id.short());
                }
            }
        }
    }

    fn ignore(&mut self, ignored: Ignored) {
        match ignored {
            Ignored::Own => {}
            Ignored::OtherMesh(id, net) => {
                bump(&self.counters.other_mesh);
                if self.other_meshes.len() < OTHER_MESH_LOG_MAX && self.other_meshes.insert(id) {
                    tracing::info!(
                        "mDNS: node {} is in mesh {net:?}, not {:?}: ignored",
                        id.short(),
                        self.mesh_name
                    );
                }
            }
            Ignored::Invalid(why) => {
                bump(&self.counters.invalid);
                tracing::debug!("mDNS: ignored an announcement: {why}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId::of_certificate(&[n])
    }

    fn txt_of<'a>(pairs: &'a [(&'a str, String)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        }
    }

    fn good(peer: NodeId) -> Vec<(&'static str, String)> {
        vec![
            ("id", peer.to_string()),
            ("v", "1".to_owned()),
            ("role", "gw".to_owned()),
            ("net", "meshgate".to_owned()),
        ]
    }

    #[test]
    fn parses_a_peer_and_scopes_link_local_addresses() {
        let (me, peer) = (id(1), id(2));
        let fullname = format!("{peer}.{SERVICE_TYPE}");
        let addrs = [
            ("10.77.0.2".parse().unwrap(), 2),
            ("fe80::2".parse().unwrap(), 7),
            ("fd77::2".parse().unwrap(), 7),
        ];
        let txt = good(peer);
        let got = parse(me, "meshgate", &fullname, 3478, &addrs, txt_of(&txt)).unwrap();
        assert_eq!(got.id, peer);
        assert_eq!(got.role, Role::Gateway);
        let want: Vec<SocketAddr> = vec![
            "10.77.0.2:3478".parse().unwrap(),
            "[fd77::2]:3478".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::2".parse().unwrap(), 3478, 0, 7)),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(got.addrs, want);
    }

    #[test]
    fn ignores_own_other_meshes_and_malformed_announcements() {
        let (me, peer) = (id(1), id(2));
        let addrs = [("10.77.0.2".parse().unwrap(), 2)];
        let name = format!("{peer}.{SERVICE_TYPE}");
        let txt = good(peer);
        let check = |fullname: &str, txt: &[(&str, String)], port: u16| {
            parse(me, "meshgate", fullname, port, &addrs, txt_of(txt))
        };
        assert_eq!(
            check(&format!("{me}.{SERVICE_TYPE}"), &good(me), 3478),
            Err(Ignored::Own)
        );
        let mut other = txt.clone();
        other[3].1 = "other".to_owned();
        assert_eq!(
            check(&name, &other, 3478),
            Err(Ignored::OtherMesh(peer, "other".to_owned()))
        );
        let invalid = |r: Result<Peer, Ignored>| matches!(r, Err(Ignored::Invalid(_)));
        assert!(invalid(check("printer._meshgate._udp.local.", &txt, 3478)));
        assert!(invalid(check("x._other._udp.local.", &txt, 3478)));
        let mut wrong_id = txt.clone();
        wrong_id[0].1 = id(3).to_string();
        assert!(invalid(check(&name, &wrong_id, 3478)));
        let mut v2 = txt.clone();
        v2[1].1 = "2".to_owned();
        assert!(invalid(check(&name, &v2, 3478)));
        let mut role = txt.clone();
        role[2].1 = "king".to_owned();
        assert!(invalid(check(&name, &role, 3478)));
        assert!(invalid(check(&name, &txt[1..], 3478)));
        assert!(invalid(check(&name, &txt, 0)));
        assert!(invalid(parse(
            me,
            "meshgate",
            &name,
            3478,
            &[("224.0.0.251".parse().unwrap(), 0)],
            txt_of(&txt)
        )));
    }
}
