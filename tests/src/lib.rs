//! Harness for meshgate's process-level tests: child processes whose output goes to files (no
//! pipe can fill and block them), bounded waits, and cleanup by PID even when a test panics.
//!
//! Integration tests that run one `meshgate` binary live in `agent/tests/` (cargo builds the
//! binary for them: `env!("CARGO_BIN_EXE_meshgate")`); this crate is what they share.

// Test support: a panic here is a test failure with a message, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub mod netns;

/// Fails the test (never skips it) when `program` is missing, naming what to install.
pub fn require(program: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "this test needs `{program}`: install it with `{install}` (scripts/test.sh does this as root)"
    );
}

/// A child process with stdout/stderr in files under its own temp dir, SIGKILLed on drop.
#[derive(Debug)]
pub struct Proc {
    child: std::process::Child,
    pid: Pid,
    out: PathBuf,
    err: PathBuf,
    status: Option<ExitStatus>,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn_cmd(Command::new(program).args(args))
    }

    pub fn spawn_cmd(cmd: &mut Command) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        Self {
            child,
            pid,
            out,
            err,
            status: None,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn signal(&self, signal: Signal) {
        if self.status.is_none() {
            let _ = kill(self.pid, signal);
        }
    }

    /// Waits at most `limit` for the process to exit.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                return self.status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits at most `limit` for stderr to contain `needle`; returns the stderr so far.
    /// Panics, with the output, if the process exits or the time runs out first.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.stderr();
            if text.contains(needle) {
                return text;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                panic!("process exited ({status}) before printing {needle:?}; stderr:\n{text}");
            }
            if Instant::now() >= deadline {
                panic!("no {needle:?} on stderr within {limit:?}; stderr:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a command to completion within `limit`; returns (status, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut p = Proc::spawn_cmd(cmd);
    let status = p
        .wait_for_exit(limit)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {limit:?}"));
    (status, p.stdout(), p.stderr())
}

/// Whether a process with this PID still exists (and is not a zombie we reaped).
pub fn alive(pid: Pid) -> bool {
    kill(pid, None).is_ok()
}

/// The SHA-256 fingerprint openssl computes for a PEM certificate, as `AB:CD:...`.
pub fn openssl_fingerprint(cert: &Path) -> String {
    require("openssl", "apt-get install openssl");
    let (status, out, err) = run_with_timeout(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
        Duration::from_secs(10),
    );
    assert!(status.success(), "openssl failed: {err}");
    out.trim()
        .split_once('=')
        .map(|(_, fp)| fp.to_owned())
        .unwrap_or_else(|| panic!("unexpected openssl output {out:?}"))
}

/// A `meshgate run` on a config the test wrote, in a temp dir of its own (config, state dir),
/// logging at info. Killed on drop like any [`Proc`].
#[derive(Debug)]
pub struct Node {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    start_line: String,
}

impl Node {
    /// Starts `bin run` on `config` (TOML text) and waits for its start line.
    pub fn start(bin: &str, config: &str) -> Self {
        Self::start_in(bin, tempfile::tempdir().unwrap(), config)
    }

    /// Makes the identity of a node that will run in `dir` (`dir/state`) and returns its ID,
    /// so that configs naming it can be written before it starts.
    pub fn make_identity(bin: &str, dir: &Path) -> String {
        let (status, out, err) = run_with_timeout(
            Command::new(bin)
                .args(["id", "--json", "--state-dir"])
                .arg(dir.join("state")),
            Duration::from_secs(20),
        );
        assert!(status.success(), "meshgate id failed: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Like [`Node::start`], in `dir` (which may already hold `state/identity`).
    pub fn start_in(bin: &str, dir: tempfile::TempDir, config: &str) -> Self {
        Self::start_with(Command::new(bin), dir, config)
    }

    /// Like [`Node::start_in`], with `meshgate` run by `cmd`: the binary itself, or a wrapper
    /// that execs it (`ip netns exec NS BIN`, see [`netns::Lan::start_node`]). The `run`
    /// arguments are appended; `RUST_LOG` is `info` unless `cmd` sets it.
    pub fn start_with(mut cmd: Command, dir: tempfile::TempDir, config: &str) -> Self {
        let path = dir.path().join("meshgate.toml");
        fs::write(&path, config).unwrap();
        if !cmd.get_envs().any(|(key, _)| key == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut proc = Proc::spawn_cmd(
            cmd.args(["run", "--config"])
                .arg(&path)
                .arg("--state-dir")
                .arg(dir.path().join("state")),
        );
        let err = proc.wait_for_stderr("started", Duration::from_secs(20));
        let start_line = err
            .lines()
            .find(|l| l.contains("started"))
            .unwrap_or_default()
            .to_owned();
        Self {
            proc,
            dir,
            start_line,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// SIGKILLs the node and hands back its directory (config, state) for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.proc.signal(Signal::SIGKILL);
        self.proc.wait_for_exit(Duration::from_secs(10));
        self.dir
    }

    /// SIGTERMs the node (a graceful stop), waits at most `limit` for it to exit and hands back
    /// its directory (config, state) for a restart, with the exit status (None: still running
    /// at the deadline, and then SIGKILLed) and its log.
    pub fn terminate(mut self, limit: Duration) -> (tempfile::TempDir, Option<ExitStatus>, String) {
        self.proc.signal(Signal::SIGTERM);
        let status = self.proc.wait_for_exit(limit);
        if status.is_none() {
            self.proc.signal(Signal::SIGKILL);
            self.proc.wait_for_exit(Duration::from_secs(10));
        }
        let log = self.proc.stderr();
        (self.dir, status, log)
    }

    /// The node ID from the start line (`started node|gateway <id> ...`).
    pub fn id(&self) -> &str {
        self.start_line
            .split_whitespace()
            .skip_while(|w| *w != "started")
            .find(|w| {
                w.len() == 52
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            })
            .unwrap_or_else(|| panic!("no node ID in {:?}", self.start_line))
    }

    /// The UDP port the start line gives for `ip` as printed there (`127.0.0.1`, `[::1]`...).
    pub fn udp_port(&self, ip: &str) -> u16 {
        self.start_line
            .split(&format!("{ip}:"))
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no udp port for {ip} in {:?}", self.start_line))
    }

    /// One counter from the SIGUSR1 log line (0 when it is not listed, i.e. zero).
    pub fn counter(&mut self, name: &str) -> u64 {
        let before = self.proc.stderr().matches("counters:").count();
        self.proc.signal(Signal::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.proc.stderr();
            if log.matches("counters:").count() > before {
                let line = log.lines().rev().find(|l| l.contains("counters:")).unwrap();
                return line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            assert!(Instant::now() < deadline, "no counters line:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Calls `check` every `every` until it returns `Ok` or `limit` has passed; then panics with
/// `what` and the last `Err`. The one way the tests wait for something to happen.
pub fn poll_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last: {e}")
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port that was free a moment ago on 127.0.0.1 (for third-party tools that need one).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node to run on loopback: its directory and identity made, a free UDP port for its shared
/// port and a free TCP port for its local API. Its configs turn mDNS off: nodes on the host
/// must never multicast on the host's interfaces.
#[derive(Debug)]
pub struct Spec {
    pub bin: &'static str,
    pub dir: tempfile::TempDir,
    pub id: String,
    pub udp: u16,
    pub api: u16,
}

impl Spec {
    pub fn new(bin: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let id = Node::make_identity(bin, dir.path());
        Self {
            bin,
            dir,
            id,
            udp: free_udp_port(),
            api: free_tcp_port(),
        }
    }

    /// The shared port's address.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.udp)
    }

    /// The local API's address.
    pub fn api(&self) -> String {
        format!("127.0.0.1:{}", self.api)
    }

    /// Config text: `top` (top-level keys), static peers `(id, addr)`, then `tables`.
    pub fn config(&self, top: &str, peers: &[(&str, String)], tables: &str) -> String {
        let peers: Vec<String> = peers
            .iter()
            .map(|(id, addr)| format!("{{ id = \"{id}\", addr = \"{addr}\" }}"))
            .collect();
        format!(
            "listen = \"{}\"\napi = \"{}\"\n{top}\n[discovery]\nmdns = false\n\
             peers = [{}]\n{tables}\n",
            self.addr(),
            self.api(),
            peers.join(", ")
        )
    }

    pub fn start(self, config: &str) -> Node {
        Node::start_in(self.bin, self.dir, config)
    }
}

/// A `[[service]]` table: `name` is 127.0.0.1:`port`.
pub fn service_toml(name: &str, port: u16) -> String {
    format!("[[service]]\nname = \"{name}\"\ntarget = \"127.0.0.1:{port}\"\n")
}

/// A `[[forward]]` table: 127.0.0.1:`listen` to `target` on `peer`.
pub fn forward_toml(listen: u16, peer: &str, target: &str) -> String {
    format!(
        "[[forward]]\nlisten = \"127.0.0.1:{listen}\"\npeer = \"{peer}\"\ntarget = \"{target}\"\n"
    )
}
