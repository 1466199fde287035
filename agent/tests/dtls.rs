//! DTLS on the shared port against a client nobody here wrote: `openssl s_client -dtls1_2`
//! completes handshakes with `meshgate run` while coturn's `turnutils_uclient` relays through the
//! same port, sees the node's certificate, and is named in the log when it shows its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meshgate::identity::NodeId;
use meshgate_tests::{Node, Proc, free_udp_port, openssl_fingerprint, require, run_with_timeout};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const COTURN: &str = "apt-get install coturn";

/// A running gateway with TURN on, on an ephemeral loopback port.
struct Gateway {
    node: Node,
    port: u16,
}

fn gateway() -> Gateway {
    let node = Node::start(
        BIN,
        "listen = \"127.0.0.1:0\"\nrole = \"gateway\"\nsignal = \"off\"\n\
         [discovery]\nmdns = false\n[turn]\nusers = { alice = \"s3cret\" }\n\
         relay_allow = [\"127.0.0.0/8\"]\n",
    );
    let port = node.udp_port("127.0.0.1");
    Gateway { node, port }
}

impl Gateway {
    fn cert(&self) -> std::path::PathBuf {
        self.node.state_dir().join("identity/cert.pem")
    }

    /// One of the shared port's counters, read through the SIGUSR1 log line.
    fn counter(&mut self, name: &str) -> u64 {
        self.node.counter(name)
    }
}

/// Runs `openssl s_client -dtls1_2` against the gateway with `extra` arguments (stdin empty).
fn run_s_client(gw: &Gateway, extra: &[&str]) -> (std::process::ExitStatus, String, String) {
    require("openssl", "apt-get install openssl");
    let connect = format!("127.0.0.1:{}", gw.port);
    run_with_timeout(
        Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect", &connect])
            .args(extra),
        Duration::from_secs(20),
    )
}

/// `openssl s_client -dtls1_2` against the gateway with `extra` arguments; panics unless the
/// handshake completed. Returns its stdout (which carries the server certificate in PEM).
fn s_client(gw: &Gateway, extra: &[&str]) -> String {
    let (status, out, err) = run_s_client(gw, extra);
    assert!(
        status.success() && out.contains("Protocol  : DTLSv1.2"),
        "s_client {extra:?} did not complete ({status}):\n{out}{err}"
    );
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256"),
        "unexpected cipher:\n{out}"
    );
    out
}

/// `openssl s_client -dtls1_2` with `extra` arguments; panics if the handshake completed.
fn s_client_refused(gw: &Gateway, extra: &[&str]) {
    let (status, out, err) = run_s_client(gw, extra);
    assert!(
        !status.success() || !out.contains("Protocol  : DTLSv1.2"),
        "s_client {extra:?} completed a handshake that should be refused:\n{out}{err}"
    );
}

/// The SHA-256 fingerprint of the first certificate in `pem_text` (s_client's output).
fn fingerprint_of(pem_text: &str, dir: &Path) -> String {
    let file = dir.join("seen.pem");
    std::fs::write(&file, pem_text).unwrap();
    openssl_fingerprint(&file)
}

/// A P-256 key and self-signed certificate made by openssl; returns (cert, key).
fn openssl_client_cert(dir: &Path) -> (String, String) {
    let key = dir.join("k.pem");
    let cert = dir.join("c.pem");
    let (status, _, err) = run_with_timeout(
        Command::new("openssl")
            .args([
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
            ])
            .arg(&key),
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    let (status, _, err) = run_with_timeout(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-x509",
                "-subj",
                "/CN=client",
                "-days",
                "2",
                "-key",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

#[test]
fn openssl_completes_dtls_handshakes_while_turn_relays() {
    require("turnutils_peer", COTURN);
    require("turnutils_uclient", COTURN);
    let mut gw = gateway();
    let work = tempfile::tempdir().unwrap();

    // TURN traffic first: an echo peer and two uclient sessions relaying to it.
    let peer_port = free_udp_port();
    let _peer = Proc::spawn(
        "turnutils_peer",
        ["-L", "127.0.0.1", "-p", &peer_port.to_string()],
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut uclient = Proc::spawn(
        "turnutils_uclient",
        [
            "-u",
            "alice",
            "-w",
            "s3cret",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-p",
            &gw.port.to_string(),
            "-n",
            "500",
            "-l",
            "200",
            "-m",
            "2",
            "127.0.0.1",
        ],
    );
    // uclient starts its sessions after a random 1-6 s delay.
    let deadline = Instant::now() + Duration::from_secs(30);
    let relayed_before = loop {
        let n = gw.counter("turn_to_peer_datagrams");
        if n > 0 {
            break n;
        }
        assert!(
            uclient.wait_for_exit(Duration::ZERO).is_none(),
            "uclient ended before relaying:\n{}{}",
            uclient.stdout(),
            uclient.stderr()
        );
        assert!(Instant::now() < deadline, "no TURN traffic within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    };

    // 1. Without a client certificate: refused (every session is mutually authenticated).
    let failed_before = gw.counter("dtls_handshakes_failed");
    s_client_refused(&gw, &[]);
    assert!(gw.counter("dtls_handshakes_failed") > failed_before);

    // 2. With a client certificate: completes, shows the node's certificate, and the log names
    // the client's node ID.
    let (cert, key) = openssl_client_cert(work.path());
    let client_id = NodeId::from_fingerprint_hex(&openssl_fingerprint(Path::new(&cert))).unwrap();
    let out = s_client(&gw, &["-cert", &cert, "-key", &key]);
    let seen = fingerprint_of(&out, work.path());
    assert_eq!(seen, openssl_fingerprint(&gw.cert()));
    let (status, id_json, err) = run_with_timeout(
        Command::new(BIN)
            .args(["id", "--json", "--state-dir"])
            .arg(gw.node.state_dir()),
        Duration::from_secs(10),
    );
    assert!(status.success(), "{err}");
    assert!(id_json.contains(&format!("sha-256 {seen}")), "{id_json}");
    gw.node.proc.wait_for_stderr(
        &format!("up, peer {} (it dialled)", client_id.short()),
        Duration::from_secs(5),
    );

    // 3. Twice from the same source port: the second gets a fresh session.
    let sport = free_udp_port();
    let bind = format!("127.0.0.1:{sport}");
    for _ in 0..2 {
        s_client(&gw, &["-bind", &bind, "-cert", &cert, "-key", &key]);
    }
    let from_sport = format!("DTLS with 127.0.0.1:{sport} up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.node.proc.stderr().matches(&from_sport).count() < 2 {
        assert!(Instant::now() < deadline, "{}", gw.node.proc.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }

    // The handshakes happened while TURN relayed, and relaying lost nothing.
    let relayed_after = gw.counter("turn_to_peer_datagrams");
    assert!(
        relayed_after > relayed_before,
        "no TURN traffic during the handshakes ({relayed_before} -> {relayed_after})"
    );
    let status = uclient
        .wait_for_exit(Duration::from_secs(90))
        .expect("uclient did not finish within 90 s");
    let report = format!("{}{}", uclient.stdout(), uclient.stderr());
    assert!(status.success(), "uclient failed:\n{report}");
    assert!(
        report.contains("Total lost packets 0 (0.000000%)"),
        "TURN lost packets:\n{report}"
    );

    gw.node.proc.signal(Signal::SIGTERM);
    let status = gw
        .node
        .proc
        .wait_for_exit(Duration::from_secs(10))
        .expect("stops");
    assert_eq!(status.code(), Some(0), "{}", gw.node.proc.stderr());
}

/// A client that sends a ClientHello and vanishes leaves nothing in the way: a new client on
/// the same source port completes at once (its ClientHello restarts the dead handshake), and a
/// datagram that is not a ClientHello, from an address with no session, gets no answer.
#[test]
fn a_client_that_vanishes_mid_handshake_does_not_block_its_address() {
    require("openssl", "apt-get install openssl");
    let gw = gateway();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sport = sock.local_addr().unwrap().port();
    let server = format!("127.0.0.1:{}", gw.port);
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // Not a ClientHello (application data, epoch 1): no answer.
    let mut junk = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4];
    junk.extend_from_slice(b"junk");
    sock.send_to(&junk, &server).unwrap();
    let mut buf = [0u8; 2048];
    assert!(sock.recv_from(&mut buf).is_err(), "junk was answered");

    // A real ClientHello: the first datagram openssl sends, captured on a socket of ours.
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let capture_addr = capture.local_addr().unwrap().to_string();
    let mut openssl = Proc::spawn(
        "openssl",
        ["s_client", "-dtls1_2", "-connect", &capture_addr],
    );
    let (n, _) = capture
        .recv_from(&mut buf)
        .expect("openssl sent no ClientHello");
    let hello = buf[..n].to_vec();
    openssl.signal(Signal::SIGKILL);
    let _ = openssl.wait_for_exit(Duration::from_secs(5));
    assert_eq!((hello[0], hello[13]), (22, 1), "not a ClientHello");

    sock.send_to(&hello, &server).unwrap();
    let (n, _) = sock.recv_from(&mut buf).expect("no HelloVerifyRequest");
    assert_eq!(
        (buf[0], buf[13]),
        (22, 3),
        "not a HelloVerifyRequest: {:?}",
        &buf[..n]
    );
    drop(sock); // the client vanishes mid-handshake

    // Well inside the 10 s handshake timeout: the new ClientHello, not the timeout, clears the
    // dead handshake.
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_client_cert(work.path());
    let started = Instant::now();
    s_client(
        &gw,
        &[
            "-bind",
            &format!("127.0.0.1:{sport}"),
            "-cert",
            &cert,
            "-key",
            &key,
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: the dead handshake was in the way",
        started.elapsed()
    );
}
