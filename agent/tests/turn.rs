//! The shared port against clients nobody here wrote: coturn's `turnutils_stunclient` and
//! `turnutils_uclient` (relaying to `turnutils_peer`), and Debian's `stun`. All on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshgate_tests::{Node, Proc, free_udp_port, require, run_with_timeout};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const COTURN: &str = "apt-get install coturn";

/// A running gateway on an ephemeral loopback port.
struct Gateway {
    node: Node,
    port: u16,
}

fn gateway(turn_section: &str) -> Gateway {
    gateway_on("127.0.0.1:0", turn_section)
}

fn gateway_on(listen: &str, turn_section: &str) -> Gateway {
    let node = Node::start(
        BIN,
        &format!(
            "listen = \"{listen}\"\nrole = \"gateway\"\nsignal = \"off\"\n\
             [discovery]\nmdns = false\n[turn]\nrealm = \"mesh.test\"\n\
             users = {{ alice = \"s3cret\" }}\nsecret = \"north\"\n{turn_section}\n"
        ),
    );
    let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip);
    let port = node.udp_port(ip);
    Gateway { node, port }
}

/// `turnutils_peer`, the echo peer that relayed data goes to.
fn echo_peer() -> (Proc, u16) {
    require("turnutils_peer", COTURN);
    let port = free_udp_port();
    let p = Proc::spawn(
        "turnutils_peer",
        ["-L", "127.0.0.1", "-p", &port.to_string()],
    );
    std::thread::sleep(Duration::from_millis(200));
    (p, port)
}

/// Runs `turnutils_uclient` against the gateway; returns (exit code, output).
fn uclient(
    gw: &Gateway,
    peer: Option<u16>,
    user: &str,
    password: &str,
    extra: &[&str],
) -> (i32, String) {
    require("turnutils_uclient", COTURN);
    let port = gw.port.to_string();
    let mut cmd = Command::new("turnutils_uclient");
    cmd.args([
        "-u", user, "-w", password, "-p", &port, "-n", "100", "-l", "500",
    ]);
    if let Some(peer) = peer {
        cmd.args(["-e", "127.0.0.1", "-r", &peer.to_string()]);
    }
    cmd.args(extra).arg("127.0.0.1");
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(90));
    (status.code().unwrap_or(-1), format!("{out}{err}"))
}

fn assert_no_loss(code: i32, out: &str, what: &str) {
    assert_eq!(code, 0, "{what}: uclient failed:\n{out}");
    assert!(
        out.contains("Total lost packets 0 (0.000000%)"),
        "{what}: loss or no summary:\n{out}"
    );
    let sent_recv = out
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs="))
        .unwrap_or_else(|| panic!("{what}: no totals:\n{out}"));
    let nums: Vec<u64> = sent_recv
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let (sent, recv) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    assert!(
        sent > 0 && sent == recv,
        "{what}: sent {sent}, received {recv}"
    );
}

#[test]
fn stun_clients_get_their_reflexive_address() {
    require("turnutils_stunclient", COTURN);
    require("stun", "apt-get install stun-client");
    let gw = gateway("");
    let (status, out, err) = run_with_timeout(
        Command::new("turnutils_stunclient").args(["-p", &gw.port.to_string(), "127.0.0.1"]),
        Duration::from_secs(20),
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}{err}");

    // Debian's `stun` speaks RFC 3489 (no magic cookie); test 1 only: its NAT verdict needs
    // RFC 5780's second address, which we do not claim.
    let (_, out, err) = run_with_timeout(
        Command::new("stun").args([&format!("127.0.0.1:{}", gw.port), "1", "-v"]),
        Duration::from_secs(20),
    );
    assert!(
        out.contains("mappedAddr=127.0.0.1:") || err.contains("mappedAddr=127.0.0.1:"),
        "{out}{err}"
    );
}

/// The Python with aioice that scripts/test.sh prepares (target/pyvenv).
fn aioice_python() -> std::path::PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import aioice"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs aioice in target/pyvenv: run scripts/test.sh, or \
         `python3 -m venv target/pyvenv && target/pyvenv/bin/pip install aioice`"
    );
    python
}

#[test]
fn aioice_learns_its_reflexive_address() {
    let python = aioice_python();
    let gw = gateway("");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/aioice_stun.py");
    let (status, out, err) = run_with_timeout(
        Command::new(python).arg(script).arg(gw.port.to_string()),
        Duration::from_secs(30),
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("srflx 127.0.0.1:"), "{out}");
}

#[test]
fn relays_for_coturn_clients_in_every_mode() {
    let gw = gateway("relay_allow = [\"127.0.0.0/8\"]");
    let (_peer, peer_port) = echo_peer();
    // ChannelData (the default; RTP/RTCP pairs with EVEN-PORT and RESERVATION-TOKEN).
    let (code, out) = uclient(&gw, Some(peer_port), "alice", "s3cret", &["-m", "4"]);
    assert_no_loss(code, &out, "channel data");
    // Send/Data indications.
    let (code, out) = uclient(&gw, Some(peer_port), "alice", "s3cret", &["-s", "-m", "2"]);
    assert_no_loss(code, &out, "send indications");
    // Client to client through two allocations of the same gateway.
    let (code, out) = uclient(&gw, None, "alice", "s3cret", &["-y", "-m", "2"]);
    assert_no_loss(code, &out, "client to client");
    // One socket per client, no RTCP.
    let (code, out) = uclient(&gw, Some(peer_port), "alice", "s3cret", &["-c", "-m", "4"]);
    assert_no_loss(code, &out, "-c");
}

#[test]
fn rest_credentials_and_refusals() {
    let gw = gateway("relay_allow = [\"127.0.0.0/8\"]");
    let (_peer, peer_port) = echo_peer();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rest = |user: &str| turn_gw::auth::rest_password("north", user);

    let valid = format!("{}:bob", now + 3600);
    let (code, out) = uclient(&gw, Some(peer_port), &valid, &rest(&valid), &["-m", "1"]);
    assert_no_loss(code, &out, "REST credentials");

    // Expired an hour ago: beyond the default 300 s clock skew.
    let expired = format!("{}:bob", now - 3600);
    let (code, out) = uclient(
        &gw,
        Some(peer_port),
        &expired,
        &rest(&expired),
        &["-m", "1"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");

    let (code, out) = uclient(&gw, Some(peer_port), "alice", "wrong", &["-m", "1"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Cannot complete Allocation"), "{out}");
}

#[test]
fn default_policy_refuses_loopback_peers() {
    let gw = gateway("");
    let (_peer, peer_port) = echo_peer();
    let (code, out) = uclient(&gw, Some(peer_port), "alice", "s3cret", &["-m", "1"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("403"), "{out}");
    drop(gw.node);
}

/// A gateway bound to 0.0.0.0 answers from the address each request came to (IP_PKTINFO):
/// clients whose sockets are connected to that address drop anything else.
#[test]
fn wildcard_port_answers_from_the_address_asked() {
    let gw = gateway_on("0.0.0.0:0", "relay_allow = [\"127.0.0.0/8\"]");
    for dst in ["127.0.0.1", "127.0.0.2", "127.3.4.5"] {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect((dst, gw.port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let req = turn_gw::stun::Builder::new(
            turn_gw::stun::BINDING,
            turn_gw::stun::Class::Request,
            [7; 12],
        )
        .finish();
        let mut buf = [0u8; 512];
        let mut answered = false;
        for _ in 0..6 {
            sock.send(&req).unwrap();
            if let Ok(n) = sock.recv(&mut buf) {
                let m = turn_gw::stun::Message::parse(&buf[..n]).unwrap();
                let mapped = m.xor_address(turn_gw::stun::XOR_MAPPED_ADDRESS).unwrap();
                assert_eq!(mapped, Some(sock.local_addr().unwrap()));
                answered = true;
                break;
            }
        }
        assert!(
            answered,
            "no answer from {dst}:{} (wrong source address?)",
            gw.port
        );
    }
    // TURN through the second address: responses, ChannelData and relayed data all come back
    // from 127.0.0.2.
    let (_peer, peer_port) = echo_peer();
    require("turnutils_uclient", COTURN);
    let (status, out, err) = run_with_timeout(
        Command::new("turnutils_uclient").args([
            "-u",
            "alice",
            "-w",
            "s3cret",
            "-p",
            &gw.port.to_string(),
            "-n",
            "100",
            "-l",
            "500",
            "-m",
            "2",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "127.0.0.2",
        ]),
        Duration::from_secs(90),
    );
    assert_no_loss(
        status.code().unwrap_or(-1),
        &format!("{out}{err}"),
        "via 127.0.0.2",
    );
}

/// `listen` as a list: an IPv4 and an IPv6 socket side by side, each answering STUN.
#[test]
fn ipv4_and_ipv6_side_by_side() {
    let node = Node::start(
        BIN,
        "listen = [\"127.0.0.1:0\", \"[::1]:0\"]\n[discovery]\nmdns = false\n",
    );
    for (bind, server) in [
        (
            "127.0.0.1:0",
            format!("127.0.0.1:{}", node.udp_port("127.0.0.1")),
        ),
        ("[::1]:0", format!("[::1]:{}", node.udp_port("[::1]"))),
    ] {
        let sock = UdpSocket::bind(bind).unwrap();
        sock.connect(&server).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let req = turn_gw::stun::Builder::new(
            turn_gw::stun::BINDING,
            turn_gw::stun::Class::Request,
            [9; 12],
        )
        .finish();
        let mut buf = [0u8; 512];
        let answered = (0..6).any(|_| {
            sock.send(&req).unwrap();
            sock.recv(&mut buf).is_ok_and(|n| {
                turn_gw::stun::Message::parse(&buf[..n]).ok().and_then(|m| {
                    m.xor_address(turn_gw::stun::XOR_MAPPED_ADDRESS)
                        .ok()
                        .flatten()
                }) == Some(sock.local_addr().unwrap())
            })
        });
        assert!(answered, "no STUN answer on {server}");
    }
}
