//! `meshgate run` under a stand-in for systemd: the test owns the NOTIFY_SOCKET and checks
//! READY=1, WATCHDOG=1, STOPPING=1, and SIGHUP reloads (RELOADING=1, then READY=1 again).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsString;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use meshgate_tests::Proc;
use nix::sys::signal::Signal;

/// Bounds every wait; generous because the same test runs under qemu-user for aarch64.
const LIMIT: Duration = Duration::from_secs(30);

/// Our stand-in for systemd's end of NOTIFY_SOCKET, and the node it supervises.
struct Supervised {
    node: Proc,
    notify: UnixDatagram,
    dir: tempfile::TempDir,
    /// Every datagram received so far, for failure messages.
    seen: Vec<String>,
}

const BASE_CONFIG: &str = "listen = \"127.0.0.1:0\"\nlog = \"info\"\n[discovery]\nmdns = false\n";

impl Supervised {
    fn start(config: &str) -> Self {
        Self::start_on(config, None)
    }

    /// `abstract_name`: listen on `@name` instead of a socket file.
    fn start_on(config: &str, abstract_name: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("meshgate.toml"), config).unwrap();
        let (notify, notify_env): (UnixDatagram, OsString) = match abstract_name {
            Some(name) => (
                UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap(),
                format!("@{name}").into(),
            ),
            None => {
                let path = dir.path().join("notify");
                (UnixDatagram::bind(&path).unwrap(), path.into())
            }
        };
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut cmd = meshgate();
        cmd.arg("run")
            .arg("--config")
            .arg(dir.path().join("meshgate.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .env("NOTIFY_SOCKET", notify_env)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM");
        Self {
            node: Proc::spawn_cmd(&mut cmd),
            notify,
            dir,
            seen: Vec::new(),
        }
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("meshgate.toml")
    }

    /// Waits for a datagram that has `line` as one of its lines; returns the whole datagram.
    fn expect(&mut self, line: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        let mut buf = vec![0u8; 4096];
        while Instant::now() < deadline {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.seen.push(msg.clone());
                    if msg.lines().any(|l| l == line) {
                        return msg;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        panic!(
            "no {line:?} on NOTIFY_SOCKET within {LIMIT:?}; got {:?}; stderr:\n{}",
            self.seen,
            self.node.stderr()
        );
    }

    /// SIGTERM, then STOPPING=1 and exit status 0.
    fn stop(mut self) {
        self.node.signal(Signal::SIGTERM);
        self.expect("STOPPING=1");
        let status = self.node.wait_for_exit(LIMIT);
        assert!(
            status.is_some_and(|s| s.success()),
            "meshgate did not exit 0 on SIGTERM ({status:?}); stderr:\n{}",
            self.node.stderr()
        );
    }
}

fn meshgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
}

fn write(path: &Path, text: &str) {
    // Write then rename, so the node never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn ready_after_bind_then_watchdog_then_stopping() {
    let mut s = Supervised::start(BASE_CONFIG);
    let ready = s.expect("READY=1");
    assert!(
        ready.contains("STATUS=serving udp 127.0.0.1:"),
        "READY=1 should carry a STATUS with the bound port: {ready:?}"
    );
    // READY=1 means bound: the log says where, and the port is not 0.
    let stderr = s.node.wait_for_stderr("started", LIMIT);
    assert!(!stderr.contains("udp 127.0.0.1:0,"), "{stderr}");
    // WATCHDOG_USEC=200000: a ping every 100 ms; see two.
    s.expect("WATCHDOG=1");
    s.expect("WATCHDOG=1");
    s.stop();
}

#[test]
fn abstract_notify_socket() {
    let name = format!("meshgate-test-notify-{}", std::process::id());
    let mut s = Supervised::start_on(BASE_CONFIG, Some(&name));
    s.expect("READY=1");
    s.stop();
}

#[test]
fn sighup_applies_log_and_names_keys_that_need_a_restart() {
    let mut s = Supervised::start(BASE_CONFIG);
    s.expect("READY=1");
    write(
        &s.config_path(),
        "listen = \"127.0.0.1:1\"\nlog = \"debug\"\n[discovery]\nmdns = false\n",
    );
    s.node.signal(Signal::SIGHUP);
    s.expect("RELOADING=1");
    s.expect("READY=1");
    // A debug line after the reload: only visible if the new filter is in force.
    let stderr = s.node.wait_for_stderr("log filter is now \"debug\"", LIMIT);
    let stderr = if stderr.contains("need a restart") {
        stderr
    } else {
        s.node.wait_for_stderr("need a restart", LIMIT)
    };
    let restart = stderr
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap_or_default();
    assert!(restart.contains(": listen changed"), "{restart}");
    assert!(
        stderr.contains("applied log"),
        "log should be applied live:\n{stderr}"
    );
    s.stop();
}

#[test]
fn sighup_with_a_broken_config_keeps_the_node_running() {
    let mut s = Supervised::start(BASE_CONFIG);
    s.expect("READY=1");
    write(&s.config_path(), "listen = [\n");
    s.node.signal(Signal::SIGHUP);
    s.expect("RELOADING=1");
    s.expect("READY=1");
    let stderr = s.node.wait_for_stderr("keeping the running config", LIMIT);
    assert!(
        stderr.lines().any(|l| l.contains("ERROR")
            && l.contains("meshgate.toml")
            && l.contains("keeping the running config")),
        "the error should name the file:\n{stderr}"
    );
    // Still alive and still petting the watchdog.
    s.expect("WATCHDOG=1");
    assert!(meshgate_tests::alive(s.node.pid()));
    // A good config again is picked up.
    write(&s.config_path(), BASE_CONFIG);
    s.node.signal(Signal::SIGHUP);
    s.node.wait_for_stderr("no changes", LIMIT);
    s.stop();
}
