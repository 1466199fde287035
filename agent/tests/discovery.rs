//! Discovery (issue 5), between real `meshgate run` processes in network namespaces on one bridge
//! (`meshgate_tests::netns`): no node is given an address; they find each other over mDNS, list
//! each other in `meshgate peers`, keep sessions by role (gateways with every gateway, a node
//! with one gateway, failing over), and forward TCP to peers named by ID alone. avahi, in a host
//! of its own on the same LAN, checks what the nodes announce. mDNS never runs on this machine's
//! interfaces: every node and avahi run inside the test's namespaces.
//!
//! Needs root, iproute2, util-linux, avahi-daemon, avahi-utils and dbus (scripts/test.sh
//! installs them); run by hand as in the harness's module doc:
//! `sudo -E cargo test -p meshgate --test discovery`. On a failure each node's log tail is
//! printed; `MESHGATE_TEST_LOG=meshgate=debug,info` makes it chattier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

use meshgate_tests::netns::{Avahi, Lan};
use meshgate_tests::{Node, poll_until};
use ring::digest::{Context, SHA256};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
/// How long nodes on one LAN may take to find each other.
const DISCOVERY: Duration = Duration::from_secs(10);
/// How long a node stopped gracefully (mDNS goodbye, sessions closed) may stay in its peers'
/// tables, and how long a node may take to get a session with another gateway meanwhile.
const GRACEFUL_EXPIRY: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);
/// A node that vanishes (SIGKILL, power cut): its sessions die after 30 s of silence (PING
/// every 10 s), then an mDNS verification query drops it 10 s later; plus slack.
const HARD_EXPIRY: Duration = Duration::from_secs(55);
/// The shared UDP port every node keeps (the default): each host has its own addresses.
const PORT: u16 = 3478;
/// Bytes sent (and echoed back) through each forward.
const TRANSFER: u64 = 3 << 20;
/// Forward listeners: host i forwards 127.0.0.1:(FORWARD_BASE + j) to host j's echo service.
const FORWARD_BASE: u16 = 7000;

/// A meshgate node in host `host` of a [`Lan`]. Prints its log tail if the test fails.
struct Member {
    label: String,
    host: usize,
    id: String,
    gateway: bool,
    config: String,
    node: Option<Node>,
    /// Logs of earlier runs (before a restart).
    earlier: String,
}

impl Member {
    fn short(&self) -> &str {
        &self.id[..8]
    }

    /// SIGTERM; returns once it has exited (10 s at most, and it must exit 0).
    fn stop(&mut self) -> tempfile::TempDir {
        let node = self.node.take().expect("the node is running");
        let (dir, status, log) = node.terminate(Duration::from_secs(10));
        self.earlier.push_str(&log);
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM within 10 s ({status:?}):\n{}",
            self.label,
            tail(&log, 40)
        );
        dir
    }

    /// A power cut: SIGKILL, so no goodbye over mDNS and no session closed.
    fn kill(&mut self) -> tempfile::TempDir {
        let node = self.node.take().expect("the node is running");
        self.earlier.push_str(&node.proc.stderr());
        node.kill()
    }

    fn start(&mut self, lan: &Lan, dir: tempfile::TempDir) {
        let node = lan.start_node(self.host, BIN, dir, &self.config);
        assert_eq!(node.id(), self.id);
        self.node = Some(node);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if thread::panicking() {
            let now = self
                .node
                .as_ref()
                .map(|n| n.proc.stderr())
                .unwrap_or_default();
            eprintln!(
                "----- {} ({}, host {}) log, last lines:\n{}",
                self.label,
                self.short(),
                self.host,
                tail(&(self.earlier.clone() + &now), 60)
            );
        }
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Makes the identity of a node for host `host` (before it starts, so that configs can name
/// it). Its config: the role, `top` (top-level keys), `[discovery]` with the defaults; tests
/// append services and forwards.
fn member(label: &str, host: usize, gateway: bool, top: &str) -> (Member, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let id = Node::make_identity(BIN, dir.path());
    let role = if gateway { "gateway" } else { "node" };
    let config = format!("role = \"{role}\"\n{top}\n[discovery]\n");
    let m = Member {
        label: label.to_owned(),
        host,
        id,
        gateway,
        config,
        node: None,
        earlier: String::new(),
    };
    (m, dir)
}

fn service_echo(port: u16) -> String {
    format!("[[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{port}\"\n")
}

fn forward(listen: u16, peer: &str) -> String {
    format!(
        "[[forward]]\nlisten = \"127.0.0.1:{listen}\"\npeer = \"{peer}\"\ntarget = \"svc:echo\"\n"
    )
}

/// `meshgate peers --json` in the member's host: its peer rows.
fn peers(lan: &Lan, m: &Member) -> Result<Vec<Value>, String> {
    let (status, out, err) = lan.run(m.host, BIN, &["peers", "--json"], Duration::from_secs(10));
    if !status.success() {
        return Err(format!(
            "meshgate peers --json in {} failed ({status}): {err}",
            m.label
        ));
    }
    match serde_json::from_str::<Value>(&out) {
        Ok(Value::Array(rows)) => Ok(rows),
        _ => Err(format!(
            "meshgate peers --json in {}: not a JSON list: {out}",
            m.label
        )),
    }
}

fn row<'a>(rows: &'a [Value], id: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["id"] == id)
}

/// The session state a row gives (`none`, `connecting`, `up`), or `absent` with no row.
fn session<'a>(rows: &'a [Value], id: &str) -> &'a str {
    row(rows, id).map_or("absent", |r| r["session"].as_str().unwrap_or("?"))
}

/// Whether the row says mDNS found the peer (`source` has `mdns`; a peer that dialled in before
/// its announcement was heard is listed first with `inbound` alone and no addresses).
fn discovered(rows: &[Value], id: &str) -> bool {
    row(rows, id).is_some_and(|r| {
        r["source"]
            .as_array()
            .is_some_and(|s| s.iter().any(|v| v == "mdns"))
    })
}

/// Waits until `m` lists every one of `others` as found over mDNS; returns its rows.
fn wait_discovered(lan: &Lan, m: &Member, others: &[&Member], limit: Duration) -> Vec<Value> {
    poll_until(
        &format!("{} lists {} as found over mDNS", m.label, labels(others)),
        limit,
        POLL,
        || {
            let rows = peers(lan, m)?;
            if others.iter().all(|o| discovered(&rows, &o.id)) {
                Ok(rows)
            } else {
                Err(format!("{rows:#?}"))
            }
        },
    )
}

/// Waits until `m` has a session `up` with `other`.
fn wait_session(lan: &Lan, m: &Member, other: &Member, limit: Duration) {
    poll_until(
        &format!("{} has a session up with {}", m.label, other.label),
        limit,
        POLL,
        || {
            let rows = peers(lan, m)?;
            match session(&rows, &other.id) {
                "up" => Ok(()),
                _ => Err(format!("{rows:#?}")),
            }
        },
    );
}

/// Waits until `kept` and `node` no longer list `gone` and `node` has a session up with `kept`.
fn wait_failed_over(
    lan: &Lan,
    kept: &Member,
    gone: &Member,
    node: &Member,
    limit: Duration,
    every: Duration,
) {
    poll_until(
        &format!(
            "{} and {} drop {} and {} gets a session with {}",
            kept.label, node.label, gone.label, node.label, kept.label
        ),
        limit,
        every,
        || {
            let kept_rows = peers(lan, kept)?;
            let node_rows = peers(lan, node)?;
            if row(&kept_rows, &gone.id).is_none()
                && row(&node_rows, &gone.id).is_none()
                && session(&node_rows, &kept.id) == "up"
            {
                Ok(())
            } else {
                Err(format!(
                    "{}: {kept_rows:#?}\n{}: {node_rows:#?}",
                    kept.label, node.label
                ))
            }
        },
    );
}

fn labels(ms: &[&Member]) -> String {
    ms.iter()
        .map(|m| m.label.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `TRANSFER` deterministic bytes through the forward at 127.0.0.1:`port` in host
/// `host` to an echo service and checks what comes back, length and SHA-256.
fn echo_through(lan: &Lan, host: usize, port: u16, seed: u64) -> Result<(), String> {
    let mut conn = lan.connect(host, port);
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = conn.try_clone().unwrap();
    let receiver = thread::spawn(move || {
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok((total, hex(ctx.finish().as_ref()))),
                Ok(n) => {
                    ctx.update(&buf[..n]);
                    total += n as u64;
                }
                Err(e) => return Err(format!("read failed after {total} bytes: {e}")),
            }
        }
    });
    // xorshift64*: bytes nobody needs to keep.
    let mut x = seed | 1;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = TRANSFER;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap();
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        ctx.update(&buf[..n]);
        conn.write_all(&buf[..n])
            .map_err(|e| format!("write failed with {left} bytes to go: {e}"))?;
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let sent = hex(ctx.finish().as_ref());
    let (total, got) = receiver.join().unwrap()?;
    if total != TRANSFER || got != sent {
        return Err(format!(
            "{total} bytes came back (of {TRANSFER}), SHA-256 {got} (sent {sent})"
        ));
    }
    Ok(())
}

/// Every `(from, to)` pair's forward, in parallel: each moves `TRANSFER` bytes each way.
fn forward_between(lan: &Lan, members: &[&Member], pairs: &[(usize, usize)]) {
    let failures: Vec<String> = thread::scope(|s| {
        let runs: Vec<_> = pairs
            .iter()
            .map(|&(from, to)| {
                let (a, b) = (members[from], members[to]);
                let port = FORWARD_BASE + u16::try_from(b.host).unwrap();
                let seed = u64::try_from(from * 10 + to).unwrap() + 1;
                s.spawn(move || {
                    echo_through(lan, a.host, port, seed)
                        .map_err(|e| format!("{} -> {}: {e}", a.label, b.label))
                })
            })
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().unwrap().err())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "forwards failed:\n{}",
        failures.join("\n")
    );
}

/// The resolved `_meshgate._udp` services avahi sees, once every ID in `ids` is among them.
fn avahi_sees(avahi: &Avahi, ids: &[&str]) -> Vec<meshgate_tests::netns::MdnsService> {
    poll_until(
        "avahi-browse resolves every node",
        DISCOVERY,
        Duration::from_millis(100),
        || {
            let found = avahi.browse("_meshgate._udp");
            if ids.iter().all(|id| found.iter().any(|s| s.name == *id)) {
                Ok(found)
            } else {
                Err(format!("{found:#?}"))
            }
        },
    )
}

/// Checks one node's announcements as avahi resolved them.
fn check_announced(
    lan: &Lan,
    services: &[meshgate_tests::netns::MdnsService],
    m: &Member,
    mesh: &str,
) {
    let mine: Vec<_> = services.iter().filter(|s| s.name == m.id).collect();
    assert!(!mine.is_empty(), "avahi does not see {}", m.label);
    let (v4, v6) = (lan.ipv4(m.host).to_string(), lan.ipv6(m.host).to_string());
    for s in mine {
        assert_eq!(
            s.txt("id"),
            Some(m.id.as_str()),
            "{}: TXT id: {s:?}",
            m.label
        );
        assert_eq!(s.port, PORT, "{}: port: {s:?}", m.label);
        assert_eq!(s.txt("v"), Some("1"), "{}: TXT v: {s:?}", m.label);
        assert_eq!(s.txt("net"), Some(mesh), "{}: TXT net: {s:?}", m.label);
        let role = if m.gateway { "gw" } else { "node" };
        assert_eq!(s.txt("role"), Some(role), "{}: TXT role: {s:?}", m.label);
        assert_eq!(s.interface, "eth0");
        assert!(
            s.address == v4 || s.address == v6 || s.address.starts_with("fe80:"),
            "{}: address {} is none of the host's ({v4}, {v6}, link-local): {s:?}",
            m.label,
            s.address
        );
    }
}

/// Checks the row `rows` gives for `other`: its role, and an address of its host.
fn check_row(lan: &Lan, rows: &[Value], m: &Member, other: &Member) {
    let r = row(rows, &other.id).unwrap();
    let role = if other.gateway { "gateway" } else { "node" };
    assert_eq!(r["role"], role, "{} sees {} as: {r}", m.label, other.label);
    assert_eq!(r["short_id"], other.short(), "{r}");
    let addrs: Vec<&str> = r["addrs"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (v4, v6) = (
        lan.ipv4(other.host).to_string(),
        lan.ipv6(other.host).to_string(),
    );
    assert!(
        addrs.iter().any(|a| a.contains(&v4) || a.contains(&v6)),
        "{} has no address of {}'s host ({v4}, {v6}) for it: {r}",
        m.label,
        other.label
    );
    assert!(r["last_seen_s"].is_u64(), "last_seen_s: {r}");
}

#[test]
fn three_nodes_find_each_other_over_mdns_and_forward_between_every_pair() {
    // Hosts 0 and 1: gateways; 2: a node; 3: avahi, looking.
    let lan = Lan::new(4);
    let avahi = lan.avahi(3);
    let mut members = Vec::new();
    let mut dirs = Vec::new();
    for (host, label, gateway) in [(0, "gw0", true), (1, "gw1", true), (2, "node2", false)] {
        let (m, dir) = member(label, host, gateway, "");
        members.push(m);
        dirs.push(dir);
    }
    // Each node exposes an echo service and forwards to each other node's, by ID only.
    let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    for m in &mut members {
        m.config += &service_echo(lan.echo_server(m.host));
        for (j, id) in ids.iter().enumerate() {
            if j != m.host {
                m.config += &forward(FORWARD_BASE + u16::try_from(j).unwrap(), id);
            }
        }
    }
    for (m, dir) in members.iter_mut().zip(dirs) {
        m.start(&lan, dir);
    }
    let started = Instant::now();
    let all: Vec<&Member> = members.iter().collect();
    for m in &all {
        let others: Vec<&Member> = all.iter().copied().filter(|o| o.id != m.id).collect();
        let rows = wait_discovered(
            &lan,
            m,
            &others,
            DISCOVERY.saturating_sub(started.elapsed()),
        );
        for o in &others {
            check_row(&lan, &rows, m, o);
        }
    }
    eprintln!(
        "all three list each other {:?} after the last start",
        started.elapsed()
    );

    // Sessions by role: the gateways with each other, the node with a gateway.
    let (gw0, gw1, node) = (all[0], all[1], all[2]);
    wait_session(&lan, gw0, gw1, DISCOVERY);
    wait_session(&lan, gw1, gw0, DISCOVERY);
    poll_until(
        "node2 has a session up with a gateway",
        DISCOVERY,
        POLL,
        || {
            let rows = peers(&lan, node)?;
            if [gw0, gw1].iter().any(|g| session(&rows, &g.id) == "up") {
                Ok(())
            } else {
                Err(format!("{rows:#?}"))
            }
        },
    );

    // The human list names them by short ID.
    for m in &all {
        let (status, out, err) = lan.run(m.host, BIN, &["peers"], Duration::from_secs(10));
        assert!(status.success(), "meshgate peers in {}: {err}", m.label);
        for o in all.iter().filter(|o| o.id != m.id) {
            assert!(
                out.contains(o.short()),
                "{}'s `meshgate peers` lacks {}:\n{out}",
                m.label,
                o.short()
            );
        }
    }

    // Every node forwards to every other node, named by ID with no address configured.
    let pairs: Vec<(usize, usize)> = (0..3)
        .flat_map(|a| (0..3).filter(move |&b| b != a).map(move |b| (a, b)))
        .collect();
    forward_between(&lan, &all, &pairs);

    // What they announce, as avahi sees it.
    let services = avahi_sees(&avahi, &ids.iter().map(String::as_str).collect::<Vec<_>>());
    for m in &all {
        check_announced(&lan, &services, m, "meshgate");
    }
}

#[test]
fn nodes_listening_on_ipv6_only_keep_their_sessions_over_ipv6() {
    let lan = Lan::new(2);
    let top = "listen = [\"[::]:3478\"]";
    let (mut gw, gw_dir) = member("gw0", 0, true, top);
    let (mut node, node_dir) = member("node1", 1, false, top);
    gw.config += &(service_echo(lan.echo_server(0)) + &forward(FORWARD_BASE + 1, &node.id));
    node.config += &(service_echo(lan.echo_server(1)) + &forward(FORWARD_BASE, &gw.id));
    gw.start(&lan, gw_dir);
    node.start(&lan, node_dir);
    wait_discovered(&lan, &gw, &[&node], DISCOVERY);
    wait_discovered(&lan, &node, &[&gw], DISCOVERY);
    wait_session(&lan, &node, &gw, DISCOVERY);
    wait_session(&lan, &gw, &node, DISCOVERY);
    for (m, other) in [(&gw, &node), (&node, &gw)] {
        let rows = peers(&lan, m).unwrap();
        let r = row(&rows, &other.id).unwrap();
        let remote: SocketAddr = r["remote"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{}: no remote address for {}: {r}", m.label, other.label));
        assert!(
            remote.is_ipv6(),
            "{}'s session with {} is over {remote}: {r}",
            m.label,
            other.label
        );
        assert_eq!(remote.port(), PORT);
        // It only announces what it serves: no IPv4 address.
        let v4 = lan.ipv4(other.host).to_string();
        assert!(
            !r["addrs"].to_string().contains(&v4),
            "{} announced IPv4 while serving IPv6 only: {r}",
            other.label
        );
    }
    forward_between(&lan, &[&gw, &node], &[(0, 1), (1, 0)]);
}

#[test]
fn a_node_of_another_mesh_is_announced_but_never_listed_or_dialled() {
    // Hosts 0 and 1: the mesh (a gateway and a node); 2: a gateway of mesh "other"; 3: avahi.
    let lan = Lan::new(4);
    let avahi = lan.avahi(3);
    let (mut gw, gw_dir) = member("gw0", 0, true, "");
    let (mut node, node_dir) = member("node1", 1, false, "");
    let (mut other, other_dir) = member("other2", 2, true, "mesh = \"other\"");
    other.start(&lan, other_dir);
    let other_started = Instant::now();
    gw.start(&lan, gw_dir);
    node.start(&lan, node_dir);

    // The mesh works (so it does hear announcements), and avahi sees all three.
    wait_discovered(&lan, &gw, &[&node], DISCOVERY);
    wait_session(&lan, &node, &gw, DISCOVERY);
    let services = avahi_sees(&avahi, &[&gw.id, &node.id, &other.id]);
    check_announced(&lan, &services, &other, "other");
    check_announced(&lan, &services, &gw, "meshgate");

    // For 12 s after the other gateway started, nobody lists it or dials it, and it has no
    // session with anyone. Absence over a time window is the point here, so the loop runs
    // the window out.
    let window = Duration::from_secs(12);
    let mut samples = 0;
    while other_started.elapsed() < window || samples < 5 {
        for m in [&gw, &node] {
            let rows = peers(&lan, m).unwrap();
            assert!(
                row(&rows, &other.id).is_none(),
                "{} lists the other mesh's gateway: {rows:#?}",
                m.label
            );
        }
        let rows = peers(&lan, &other).unwrap();
        assert!(
            rows.iter().all(|r| r["session"] == "none")
                && [&gw, &node].iter().all(|m| row(&rows, &m.id).is_none()),
            "the other mesh's gateway lists or has sessions with this mesh: {rows:#?}"
        );
        let (status, body) = lan
            .http_get(other.host, "127.0.0.1:42000".parse().unwrap(), "/sessions")
            .unwrap();
        assert_eq!(status, 200, "GET /sessions: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).ok(),
            Some(Value::Array(vec![])),
            "the other mesh's gateway has sessions: {body}"
        );
        samples += 1;
        thread::sleep(Duration::from_millis(500));
    }
    for m in [&gw, &node] {
        assert!(
            !m.node
                .as_ref()
                .unwrap()
                .proc
                .stderr()
                .contains(&format!("session with {}", other.short())),
            "{} logged a session with the other mesh's gateway",
            m.label
        );
    }
}

#[test]
fn a_node_fails_over_to_the_other_gateway_and_a_restarted_gateway_comes_back() {
    let lan = Lan::new(3);
    let (mut gw0, d0) = member("gw0", 0, true, "");
    let (mut gw1, d1) = member("gw1", 1, true, "");
    let (mut node, d2) = member("node2", 2, false, "");
    gw0.start(&lan, d0);
    gw1.start(&lan, d1);
    node.start(&lan, d2);
    wait_session(&lan, &gw0, &gw1, DISCOVERY);
    wait_session(&lan, &gw1, &gw0, DISCOVERY);
    let first = poll_until(
        "node2 has a session up with a gateway",
        DISCOVERY,
        POLL,
        || {
            let rows = peers(&lan, &node)?;
            if session(&rows, &gw0.id) == "up" {
                Ok(0)
            } else if session(&rows, &gw1.id) == "up" {
                Ok(1)
            } else {
                Err(format!("{rows:#?}"))
            }
        },
    );
    let mut gws = [gw0, gw1];
    let [a, b] = &mut gws;
    let (gone, kept) = if first == 0 { (a, b) } else { (b, a) };

    // Graceful stop: goodbye over mDNS, sessions closed.
    let stopped = Instant::now();
    let dir = gone.stop();
    wait_failed_over(&lan, kept, gone, &node, GRACEFUL_EXPIRY, POLL);
    eprintln!("failover done {:?} after SIGTERM", stopped.elapsed());

    // Back, with the same state dir (same ID): it is listed again and the gateways reconnect.
    gone.start(&lan, dir);
    let restarted = Instant::now();
    wait_discovered(&lan, kept, &[&*gone], DISCOVERY);
    wait_discovered(&lan, &node, &[&*gone], DISCOVERY);
    wait_discovered(&lan, gone, &[&*kept, &node], DISCOVERY);
    wait_session(&lan, kept, gone, DISCOVERY);
    wait_session(&lan, gone, kept, DISCOVERY);
    eprintln!(
        "{} back with sessions {:?} after its restart",
        gone.label,
        restarted.elapsed()
    );
    // The node stays with the gateway it failed over to.
    assert_eq!(session(&peers(&lan, &node).unwrap(), &kept.id), "up");
}

#[test]
fn a_gateway_that_vanishes_is_dropped_within_the_expiry_bound_and_the_node_fails_over() {
    let lan = Lan::new(3);
    let (gw0, d0) = member("gw0", 0, true, "");
    let (gw1, d1) = member("gw1", 1, true, "");
    let (mut node, d2) = member("node2", 2, false, "");
    let mut gws = [gw0, gw1];
    for (gw, dir) in gws.iter_mut().zip([d0, d1]) {
        gw.start(&lan, dir);
    }
    node.start(&lan, d2);
    let first = poll_until(
        "node2 has a session up with a gateway",
        DISCOVERY,
        POLL,
        || {
            let rows = peers(&lan, &node)?;
            gws.iter()
                .position(|g| session(&rows, &g.id) == "up")
                .ok_or_else(|| format!("{rows:#?}"))
        },
    );
    let [a, b] = &mut gws;
    let (gone, kept) = if first == 0 { (a, b) } else { (b, a) };
    wait_session(&lan, kept, gone, DISCOVERY);

    let killed = Instant::now();
    let _dir = gone.kill();
    wait_failed_over(&lan, kept, gone, &node, HARD_EXPIRY, Duration::from_secs(1));
    let took = killed.elapsed();
    eprintln!(
        "{} dropped and failover done {took:?} after SIGKILL",
        gone.label
    );
    // Not before the session could be declared dead: it was the silence that did it.
    assert!(took >= Duration::from_secs(15), "{took:?}");
}
