//! Sessions and TCP forwarding between real `meshgate run` processes on loopback (issue 4):
//! bulk transfers checked with SHA-256 at both ends, many concurrent connections, a stalled
//! consumer next to a busy one, half-close, refusals on both the dial and the accept path, and a
//! peer killed mid-transfer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use meshgate_tests::{Node, Spec, forward_toml, free_tcp_port, run_with_timeout, service_toml};
use ring::digest::{Context, SHA256};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const GIB: u64 = 1 << 30;

/// Bytes each way in the bulk test: 1 GiB, or `MESHGATE_TEST_BULK_MIB` MiB (cross/test.sh sets
/// it under qemu-user, where 2 GiB through two emulated nodes takes many minutes).
fn bulk() -> u64 {
    std::env::var("MESHGATE_TEST_BULK_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(GIB, |mib| mib << 20)
}

/// A node to be: its directory with an identity, and its ports.
fn spec() -> Spec {
    Spec::new(BIN)
}

/// Deterministic bytes (xorshift64*), so that senders need not keep what they sent.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TCP server on 127.0.0.1 whose connections each get a thread running `handle`.
fn server(handle: impl Fn(TcpStream) + Send + Sync + Clone + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let handle = handle.clone();
            thread::spawn(move || handle(conn));
        }
    });
    port
}

/// Reads each connection to its end and reports (bytes, SHA-256).
fn sink() -> (u16, mpsc::Receiver<(u64, String)>) {
    let (tx, rx) = mpsc::channel();
    let port = server(move |mut conn| {
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    ctx.update(&buf[..n]);
                    total += n as u64;
                }
                Err(_) => return,
            }
        }
        let _ = tx.send((total, hex(ctx.finish().as_ref())));
    });
    (port, rx)
}

/// Echoes each connection, and half-closes when the client does.
fn echo() -> u16 {
    server(|mut conn| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// Reads to the end, then answers the SHA-256 of what came (a request/response over
/// half-close, like `nc -N`).
fn hash_reply() -> u16 {
    server(|mut conn| {
        let mut ctx = Context::new(&SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => ctx.update(&buf[..n]),
                Err(_) => return,
            }
        }
        let _ = conn.write_all(format!("{}\n", hex(ctx.finish().as_ref())).as_bytes());
    })
}

/// Accepts and never reads.
fn stall() -> u16 {
    server(|conn| {
        thread::sleep(Duration::from_secs(600));
        drop(conn);
    })
}

/// Connects, retrying while the forward's listener is not up yet.
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {e}"),
        }
    }
}

/// Sends `len` pattern bytes, half-closes; returns the SHA-256 sent.
fn send(conn: &mut TcpStream, seed: u64, len: u64) -> String {
    let mut pattern = Pattern(seed | 1);
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap();
        pattern.fill(&mut buf[..n]);
        ctx.update(&buf[..n]);
        conn.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    conn.shutdown(Shutdown::Write).unwrap();
    hex(ctx.finish().as_ref())
}

/// Waits until the log says a session with `peer_short` is up.
fn wait_session(node: &mut Node, peer: &str) {
    node.proc.wait_for_stderr(
        &format!("session with {}", &peer[..8]),
        Duration::from_secs(20),
    );
}

#[test]
fn two_nodes_carry_a_gib_each_way_intact() {
    let (sink_port, results) = sink();
    let (a, b) = (spec(), spec());
    let (fa, fb) = (free_tcp_port(), free_tcp_port());
    let config_a = a.config(
        "",
        &[(&b.id, b.addr())],
        &(service_toml("sink", sink_port) + &forward_toml(fa, &b.id, "svc:sink")),
    );
    let config_b = b.config(
        "",
        &[(&a.id, a.addr())],
        &(service_toml("sink", sink_port) + &forward_toml(fb, &a.id, "svc:sink")),
    );
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    let mut node_a = a.start(&config_a);
    let mut node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);
    wait_session(&mut node_b, &a_id);

    let size = bulk();
    let start = Instant::now();
    let senders: Vec<_> = [(fa, 1u64), (fb, 2u64)]
        .into_iter()
        .map(|(port, seed)| {
            thread::spawn(move || {
                let mut conn = connect(port);
                let sent = send(&mut conn, seed, size);
                // The far end closes once the sink has read everything.
                let mut rest = Vec::new();
                let _ = conn.read_to_end(&mut rest);
                sent
            })
        })
        .collect();
    let mut sent: Vec<String> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let mut got: Vec<(u64, String)> = (0..2)
        .map(|_| results.recv_timeout(Duration::from_secs(300)).unwrap())
        .collect();
    let elapsed = start.elapsed();
    sent.sort();
    got.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [size, size]);
    assert_eq!(got.into_iter().map(|g| g.1).collect::<Vec<_>>(), sent);
    eprintln!("{} MiB each way in {elapsed:?}", size >> 20);
    assert!(node_a.counter("stream_bytes_sent") >= size);
    assert!(node_b.counter("stream_bytes_received") >= size);
}

#[test]
fn three_nodes_carry_200_concurrent_connections_of_random_sizes_intact() {
    let echo_port = echo();
    let (a, b, c) = (spec(), spec(), spec());
    let (ab, ac, bc) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let config_a = a.config(
        "",
        &[(&b.id, b.addr()), (&c.id, c.addr())],
        &(forward_toml(ab, &b.id, "svc:echo") + &forward_toml(ac, &c.id[..8], "svc:echo")),
    );
    let config_b = b.config(
        "",
        &[(&a.id, a.addr()), (&c.id, c.addr())],
        &(service_toml("echo", echo_port) + &forward_toml(bc, &c.id, "svc:echo")),
    );
    let config_c = c.config(
        "",
        &[(&a.id, a.addr()), (&b.id, b.addr())],
        &service_toml("echo", echo_port),
    );
    let (b_id, c_id) = (b.id.clone(), c.id.clone());
    let mut node_a = a.start(&config_a);
    let mut node_b = b.start(&config_b);
    let _node_c = c.start(&config_c);
    wait_session(&mut node_a, &b_id);
    wait_session(&mut node_a, &c_id);
    wait_session(&mut node_b, &c_id);

    let ports = [ab, ac, bc];
    let workers: Vec<_> = (0..200u64)
        .map(|i| {
            let port = ports[usize::try_from(i % 3).unwrap()];
            thread::spawn(move || {
                // Sizes from 0 to ~2 MiB, spread over orders of magnitude.
                let mut p = Pattern(i * 7919 + 13);
                let mut r = [0u8; 8];
                p.fill(&mut r);
                let len = u64::from_le_bytes(r) % (1 << (i % 22));
                let mut conn = connect(port);
                conn.set_read_timeout(Some(Duration::from_secs(120)))
                    .unwrap();
                let mut reader = conn.try_clone().unwrap();
                let receiver = thread::spawn(move || {
                    let mut ctx = Context::new(&SHA256);
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        match reader.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                ctx.update(&buf[..n]);
                                total += n as u64;
                            }
                            Err(e) => panic!("connection {i}: read failed after {total}: {e}"),
                        }
                    }
                    (total, hex(ctx.finish().as_ref()))
                });
                let sent = send(&mut conn, i + 1, len);
                let (total, got) = receiver.join().unwrap();
                assert_eq!(total, len, "connection {i}: length");
                assert_eq!(got, sent, "connection {i}: content");
            })
        })
        .collect();
    let mut failed = 0;
    for w in workers {
        if w.join().is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "{failed} of 200 connections failed");
    assert!(node_a.counter("streams_opened") >= 134);
}

/// VmHWM of a process, in KiB.
fn peak_rss_kib(pid: nix::unistd::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_consumer_that_stops_reading_does_not_stall_another_stream() {
    let (sink_port, results) = sink();
    let stall_port = stall();
    let (a, b) = (spec(), spec());
    let (f_stall, f_sink) = (free_tcp_port(), free_tcp_port());
    let config_a = a.config(
        "",
        &[(&b.id, b.addr())],
        &(forward_toml(f_stall, &b.id, "svc:stall") + &forward_toml(f_sink, &b.id, "svc:sink")),
    );
    let config_b = b.config(
        "",
        &[],
        &(service_toml("stall", stall_port) + &service_toml("sink", sink_port)),
    );
    let b_id = b.id.clone();
    let mut node_a = a.start(&config_a);
    let node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);

    // Fill the stalled stream until writes block for 2 s.
    let mut stalled = connect(f_stall);
    stalled
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let mut pushed = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stalled.write(&chunk) {
            Ok(n) => pushed += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the stalled stream failed: {e}"),
        }
        assert!(Instant::now() < deadline, "the stalled stream never filled");
    }
    // What it took is the credit window plus the kernel's socket buffers on both sides.
    assert!(
        pushed < 48 << 20,
        "the stalled stream took {pushed} bytes: credit is not limiting it"
    );

    // The other stream on the same session moves 64 MiB meanwhile.
    let start = Instant::now();
    let mut busy = connect(f_sink);
    let sent = send(&mut busy, 99, 64 << 20);
    let (len, got) = results.recv_timeout(Duration::from_secs(60)).unwrap();
    let took = start.elapsed();
    assert_eq!((len, got), (64 << 20, sent));
    assert!(took < Duration::from_secs(45), "64 MiB took {took:?}");
    // Nothing of the stalled stream piled up in either node.
    for pid in [node_a.proc.pid(), node_b.proc.pid()] {
        let kib = peak_rss_kib(pid);
        assert!(kib < 96 * 1024, "peak RSS {kib} KiB");
    }
    // The stalled stream is still there, still stalled, not reset.
    stalled
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match stalled.write(&chunk) {
        Ok(_) => {}
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
    eprintln!("stalled stream took {pushed} bytes; 64 MiB beside it in {took:?}");
}

#[test]
fn half_close_request_reply_works_through_a_forward_and_meshgate_connect() {
    let port = hash_reply();
    let (a, b) = (spec(), spec());
    let f = free_tcp_port();
    let config_a = a.config(
        "",
        &[(&b.id, b.addr())],
        &forward_toml(f, &b.id, "svc:hash"),
    );
    let config_b = b.config("", &[], &service_toml("hash", port));
    let (b_id, a_api) = (b.id.clone(), a.api);
    let mut node_a = a.start(&config_a);
    let _node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);

    let mut conn = connect(f);
    let sent = send(&mut conn, 5, 3 << 20);
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(reply.trim(), sent);

    // meshgate connect: stdin to the stream, its end a half-close, the reply on stdout.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    let body = vec![42u8; 1 << 20];
    std::fs::write(&input, &body).unwrap();
    let expect = hex(ring::digest::digest(&SHA256, &body).as_ref());
    // (The harness gives children a null stdin: redirect in a shell.)
    let script = format!(
        "exec \"$0\" connect --api 127.0.0.1:{a_api} {} svc:hash < \"$1\"",
        &b_id[..8]
    );
    let (status, out, err) = run_with_timeout(
        Command::new("sh").args(["-c", &script, BIN]).arg(&input),
        Duration::from_secs(30),
    );
    assert!(status.success(), "meshgate connect failed: {err}");
    assert_eq!(out.trim(), expect);
}

#[test]
fn a_target_the_peer_does_not_expose_gets_open_err_with_the_reason() {
    let port = echo();
    let (a, b) = (spec(), spec());
    let config_a = a.config("", &[(&b.id, b.addr())], "");
    let config_b = b.config("", &[], &service_toml("echo", port));
    let (b_id, a_api) = (b.id.clone(), a.api);
    let mut node_a = a.start(&config_a);
    let mut node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);
    let api = format!("127.0.0.1:{a_api}");
    let connect = |target: &str| {
        run_with_timeout(
            Command::new(BIN).args(["connect", "--api", &api, &b_id, target]),
            Duration::from_secs(30),
        )
    };
    let (status, _, err) = connect("svc:nope");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("no service named \"nope\"") && err.contains("echo"),
        "{err}"
    );
    let (status, _, err) = connect("127.0.0.1:1");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not exposed by this node"), "{err}");
    // The exposed target itself works, by service name and by its host:port.
    for target in ["svc:echo".to_owned(), format!("127.0.0.1:{port}")] {
        let (status, _, err) = connect(&target);
        assert!(status.success(), "{target}: {err}");
    }
    assert!(node_b.counter("streams_refused") >= 2);
}

#[test]
fn a_dialled_node_with_another_certificate_is_refused() {
    // A believes the node at B's address is C; B is not C.
    let (a, b, c) = (spec(), spec(), spec());
    let config_a = a.config("", &[(&c.id, b.addr())], "");
    let config_b = b.config("", &[], "");
    let mut node_a = a.start(&config_a);
    let _node_b = b.start(&config_b);
    node_a
        .proc
        .wait_for_stderr("that we dialled", Duration::from_secs(20));
    assert!(node_a.counter("dtls_refused_certificate") >= 1);
    assert_eq!(node_a.counter("sessions_established"), 0);
}

#[test]
fn an_accepted_node_whose_certificate_does_not_match_the_config_is_refused() {
    // B's config says A's address is C's; A dials B with the right ID for B. B dials A too
    // (expecting C): with A < B, A keeps its dial, and with C < B, B yields to it and answers
    // as the server, which is the accept path under test.
    let mut specs = vec![spec(), spec(), spec()];
    specs.sort_by(|x, y| x.id.cmp(&y.id));
    let (b, c, a) = (
        specs.pop().unwrap(),
        specs.pop().unwrap(),
        specs.pop().unwrap(),
    );
    let node_a_id = a.id.clone();
    let b_id = b.id.clone();
    let config_a = a.config("", &[(&b.id, b.addr())], "");
    let config_b = b.config("", &[(&c.id, a.addr())], "");
    // B first: its dial to A is in flight (or backing off) when A's ClientHello comes.
    let mut node_b = b.start(&config_b);
    std::thread::sleep(Duration::from_millis(300));
    let node_a = a.start(&config_a);
    let log = node_b
        .proc
        .wait_for_stderr("[discovery] peers says", Duration::from_secs(40));
    assert!(
        log.contains(&format!("it presented node {}", node_a_id)),
        "{log}"
    );
    assert!(node_b.counter("sessions_refused") >= 1);
    // A completed its side (DTLS, maybe SCTP) before B refused: it sees the end at once, as a
    // session that went down or a dial closed by the peer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = node_a.proc.stderr();
        if log.contains(&format!("{} at", &b_id[..8]))
            && (log.contains(" down: ") || log.contains("closed by the peer"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "A never saw the refusal:\n{log}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_of_another_mesh_is_refused() {
    let (a, b) = (spec(), spec());
    let config_a = a.config("mesh = \"alpha\"", &[(&b.id, b.addr())], "");
    let config_b = b.config("mesh = \"beta\"", &[], "");
    let mut node_a = a.start(&config_a);
    let mut node_b = b.start(&config_b);
    node_b
        .proc
        .wait_for_stderr("is in mesh \"alpha\"", Duration::from_secs(20));
    node_a
        .proc
        .wait_for_stderr("refused this node", Duration::from_secs(20));
}

#[test]
fn a_node_off_the_allow_list_is_refused() {
    let (a, b, c) = (spec(), spec(), spec());
    let config_a = a.config("", &[(&b.id, b.addr())], "");
    let allow = format!("[admission]\nallow = [\"{}\"]\n", c.id);
    let config_b = b.config("", &[], &allow);
    let mut node_a = a.start(&config_a);
    let mut node_b = b.start(&config_b);
    node_b
        .proc
        .wait_for_stderr("not on the [admission] allow list", Duration::from_secs(20));
    node_a
        .proc
        .wait_for_stderr("cannot reach peer", Duration::from_secs(20));
    assert_eq!(node_b.counter("sessions_established"), 0);
}

#[test]
fn a_peer_killed_mid_transfer_closes_the_streams_and_a_restart_recovers() {
    let (sink_port, results) = sink();
    let (a, b) = (spec(), spec());
    let f = free_tcp_port();
    let config_a = a.config(
        "",
        &[(&b.id, b.addr())],
        &forward_toml(f, &b.id, "svc:sink"),
    );
    let config_b = b.config("", &[(&a.id, a.addr())], &service_toml("sink", sink_port));
    let b_id = b.id.clone();
    let mut node_a = a.start(&config_a);
    let node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);

    let (tx, rx) = mpsc::channel();
    let mut conn = connect(f);
    thread::spawn(move || {
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0u64;
        let outcome = loop {
            match conn.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(e) => break format!("write failed after {sent} bytes: {e}"),
            }
            if sent > 64 * GIB {
                break "never failed".to_owned();
            }
        };
        let _ = tx.send((Instant::now(), outcome));
    });
    thread::sleep(Duration::from_secs(1));
    let killed = Instant::now();
    let dir_b = node_b.kill();
    let (ended, outcome) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the forwarded connection still hangs 60 s after its peer died");
    let after = ended.saturating_duration_since(killed);
    eprintln!("connection ended {after:?} after the kill: {outcome}");
    assert!(outcome.starts_with("write failed"), "{outcome}");
    assert!(after < Duration::from_secs(45), "took {after:?}");
    node_a
        .proc
        .wait_for_stderr("down: nothing heard", Duration::from_secs(5));
    let _ = results.try_iter().count();

    // B comes back on the same port with the same identity; A is not restarted.
    let _node_b = Node::start_in(BIN, dir_b, &config_b);
    let mut conn = connect(f);
    let sent = send(&mut conn, 3, 8 << 20);
    let (len, got) = results.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!((len, got), (8 << 20, sent));
}

/// A private sshd on 127.0.0.1 (temp host key, key auth only, as the invoking user); returns
/// (the process, its port, the client key path, the work dir).
fn private_sshd() -> (
    meshgate_tests::Proc,
    u16,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    meshgate_tests::require("sshd", "apt-get install openssh-server");
    meshgate_tests::require("ssh", "apt-get install openssh-client");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, comment) in [("host_key", "test-host"), ("client_key", "test-client")] {
        let (status, _, err) = run_with_timeout(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(d.join(name)),
            Duration::from_secs(20),
        );
        assert!(status.success(), "ssh-keygen: {err}");
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
    // sshd (as root) wants its privilege separation directory, which the Debian service makes.
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_tcp_port();
    let config = format!(
        "ListenAddress 127.0.0.1:{port}\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\n\
         AuthenticationMethods publickey\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
         StrictModes no\nLogLevel ERROR\n",
        d.join("host_key").display(),
        d.join("authorized_keys").display()
    );
    std::fs::write(d.join("sshd_config"), config).unwrap();
    let sshd = meshgate_tests::Proc::spawn_cmd(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd did not listen: {}",
            sshd.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let key = d.join("client_key");
    (sshd, port, key, dir)
}

#[test]
fn ssh_runs_through_a_forward_and_through_meshgate_connect_as_proxy_command() {
    let (_sshd, ssh_port, key, _keys) = private_sshd();
    let (a, b) = (spec(), spec());
    let f = free_tcp_port();
    let config_a = a.config("", &[(&b.id, b.addr())], &forward_toml(f, &b.id, "svc:ssh"));
    let config_b = b.config("", &[], &service_toml("ssh", ssh_port));
    let (b_id, a_api) = (b.id.clone(), a.api);
    let mut node_a = a.start(&config_a);
    let _node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let login = format!("{}@127.0.0.1", user.trim());
    let ssh = |extra: &[String]| {
        run_with_timeout(
            Command::new("ssh")
                .args(["-F", "/dev/null", "-i"])
                .arg(&key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "LogLevel=ERROR",
                ])
                .args(extra)
                .args([login.as_str(), "echo", "through-the-mesh"]),
            Duration::from_secs(60),
        )
    };
    let (status, out, err) = ssh(&["-p".to_owned(), f.to_string()]);
    assert!(status.success(), "ssh through the forward: {err}");
    assert_eq!(out.trim(), "through-the-mesh");
    let proxy = format!(
        "ProxyCommand={BIN} connect --api 127.0.0.1:{a_api} {} svc:ssh",
        &b_id[..8]
    );
    let (status, out, err) = ssh(&["-o".to_owned(), proxy]);
    assert!(
        status.success(),
        "ssh with meshgate connect as ProxyCommand: {err}"
    );
    assert_eq!(out.trim(), "through-the-mesh");
}
