//! Bad input at the shared port: a bounded flood of random and mutated datagrams. The node must
//! not crash, must keep answering STUN, must count what it dropped, and must not grow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use meshgate_tests::Node;
use nix::sys::signal::Signal;
use turn_gw::stun::{self, Builder, Class, Message};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

fn rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A Binding request answered within a bound: the node is alive and serving.
fn binding_answered(sock: &UdpSocket, server: &str) -> bool {
    let req = Builder::new(stun::BINDING, Class::Request, [0x5a; 12])
        .fingerprint()
        .finish();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..10 {
        sock.send_to(&req, server).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if let Ok(m) = Message::parse(&buf[..n])
                && m.transaction_id == [0x5a; 12]
                && m.class == Class::Success
            {
                return true;
            }
        }
    }
    false
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One hostile datagram of a kind chosen by `i`.
fn hostile(rng: &mut Rng, i: usize) -> Vec<u8> {
    let valid = Builder::new(stun::ALLOCATE, Class::Request, [1; 12])
        .attr(stun::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
        .attr(stun::USERNAME, b"alice")
        .attr(stun::REALM, b"mesh.test")
        .attr(stun::NONCE, b"00000000000000000000000000000000")
        .integrity(b"0123456789abcdef")
        .fingerprint()
        .finish();
    match i % 8 {
        // Random bytes of random length, any first byte.
        0 => (0..rng.below(1500)).map(|_| rng.next() as u8).collect(),
        // Truncated STUN.
        1 => valid[..rng.below(valid.len())].to_vec(),
        // STUN with a length field that lies.
        2 => {
            let mut m = valid.clone();
            let bogus = (rng.next() as u16) & 0xfffc;
            m[2..4].copy_from_slice(&bogus.to_be_bytes());
            m
        }
        // STUN with mutated bytes inside the attributes.
        3 => {
            let mut m = valid.clone();
            for _ in 0..4 {
                let at = 20 + rng.below(m.len() - 20);
                m[at] = rng.next() as u8;
            }
            m
        }
        // Garbage ChannelData: lengths past the end, unbound channels.
        4 => {
            let mut m = vec![0x40 | (rng.next() as u8 & 0x3f), rng.next() as u8];
            m.extend_from_slice(&(rng.next() as u16).to_be_bytes());
            m.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            m
        }
        // DTLS records with absurd lengths, handshake and otherwise.
        5 => {
            let mut m = vec![20 + rng.below(44) as u8, 0xfe, 0xfd];
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            m.extend_from_slice(&0xffffu16.to_be_bytes());
            m.extend((0..rng.below(200)).map(|_| rng.next() as u8));
            m
        }
        // A ClientHello-shaped record with a broken body.
        6 => {
            let mut m = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 60, 1];
            m.extend((0..rng.below(100)).map(|_| rng.next() as u8));
            m
        }
        // Empty and one-byte datagrams.
        _ => vec![rng.next() as u8; rng.below(2)],
    }
}

#[test]
fn flood_of_bad_datagrams_is_counted_and_survived() {
    let mut node = Node::start(
        BIN,
        "listen = \"127.0.0.1:0\"\nrole = \"gateway\"\nsignal = \"off\"\n[discovery]\nmdns = false\n\
         [turn]\nrealm = \"mesh.test\"\nusers = { alice = \"s3cret\" }\n",
    );
    let port = node.udp_port("127.0.0.1");
    let server = format!("127.0.0.1:{port}");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert!(binding_answered(&sock, &server));

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rss = Vec::new();
    let started = Instant::now();
    // Three rounds, bounded in count and time; RSS after each.
    for _round in 0..3 {
        for i in 0..40_000 {
            let d = hostile(&mut rng, i);
            let _ = sock.send_to(&d, &server);
            if i % 2000 == 0 {
                // Let the node drain now and then: we test parsing, not the kernel's queue.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert!(binding_answered(&sock, &server), "STUN stopped answering");
        rss.push(rss_kib(node.proc.pid()));
        assert!(started.elapsed() < Duration::from_secs(120));
    }
    // After the first round's warm-up, memory stays flat (allow a little allocator noise).
    assert!(
        rss[2] <= rss[0] + 4096,
        "RSS grew under the flood: {rss:?} KiB"
    );

    assert!(node.counter("drop_malformed") > 1000);
    assert!(node.counter("drop_truncated") > 100);
    assert!(node.counter("drop_empty") > 100);
    assert!(node.counter("stun_binding_responses") >= 4);

    node.proc.signal(Signal::SIGTERM);
    let status = node
        .proc
        .wait_for_exit(Duration::from_secs(10))
        .expect("stops");
    assert_eq!(status.code(), Some(0), "{}", node.proc.stderr());
}
