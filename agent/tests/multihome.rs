//! A node with two addresses on one interface, bound to the unspecified address (a router with
//! a secondary address, the common case): a peer that talks to the secondary address must hear
//! every answer from it, including what the node sends outside a datagram's handling (DTLS
//! answers and SCTP acknowledgements go out at the end of a receive batch, PINGs on a timer).
//! Needs root and iproute2 (network namespaces; see `meshgate_tests::netns`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use meshgate_tests::netns::Lan;
use meshgate_tests::{Node, poll_until};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const SECS10: Duration = Duration::from_secs(10);

#[test]
fn a_peer_of_a_secondary_address_hears_every_answer_from_it() {
    let lan = Lan::new(2);
    let primary = lan.ipv4(0);
    let [a, b, c, _] = primary.octets();
    let secondary = Ipv4Addr::new(a, b, c, 200);
    let (status, _, err) = lan.run(
        0,
        "ip",
        &["addr", "add", &format!("{secondary}/24"), "dev", "eth0"],
        SECS10,
    );
    assert!(status.success(), "{err}");

    // Host 0: an echo service.
    let listener = lan.enter(0, || TcpListener::bind("127.0.0.1:0").unwrap());
    let echo = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });

    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| Node::make_identity(BIN, d.path()))
        .collect();
    let config0 = format!(
        "listen = \"0.0.0.0:3478\"\n[discovery]\nmdns = false\n\
         [[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{echo}\"\n"
    );
    let config1 = format!(
        "listen = \"0.0.0.0:3478\"\n[discovery]\nmdns = false\n\
         peers = [{{ id = \"{}\", addr = \"{secondary}:3478\" }}]\n\
         [[forward]]\nlisten = \"127.0.0.1:7001\"\npeer = \"{}\"\ntarget = \"svc:echo\"\n",
        ids[0], ids[0]
    );
    let mut dirs = dirs.into_iter();
    let _n0 = lan.start_node(0, BIN, dirs.next().unwrap(), &config0);
    let mut n1 = lan.start_node(1, BIN, dirs.next().unwrap(), &config1);
    n1.proc.wait_for_stderr(
        &format!("session with {} at {secondary}:3478 up", &ids[0][..8]),
        SECS10,
    );

    // 8 MiB each way: thousands of SACKs, sent at batch ends.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut conn = lan.enter(1, || {
        poll_until(
            "the forward listens",
            SECS10,
            Duration::from_millis(50),
            || TcpStream::connect("127.0.0.1:7001").map_err(|e| e.to_string()),
        )
    });
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent = data.clone();
    let send = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    conn.read_to_end(&mut back).unwrap();
    send.join().unwrap();
    assert!(back == data, "the echo differs ({} bytes back)", back.len());
    // Answers from the primary address would belong to no session: the session would fail
    // (before the fix, its handshake never completed).
    assert!(
        !n1.proc.stderr().contains("down"),
        "the session went down: {}",
        n1.proc.stderr()
    );
}
