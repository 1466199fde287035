//! Network namespaces for multi-node tests (DESIGN.md §10): a [`Lan`] is a bridge in a namespace
//! of its own with N host namespaces plugged into it by veth pairs, real multicast between them
//! and no route to anything else, so mDNS runs between the test's own namespaces only, never on
//! the machine's interfaces.
//!
//! ```text
//!   mgt-PID-K-br   br0 (bridge, mcast_snooping 0) with ports vb0 .. vb(N-1)
//!   mgt-PID-K-hI   lo up; eth0 = the peer of vbI: multicast on, accept_dad 0,
//!                  10.77.L.(I+1)/24, fd77:L::(I+1)/64, route 224.0.0.0/4 dev eth0;
//!                  no default route
//! ```
//!
//! PID is the test process and K counts its LANs, so tests run in parallel (namespace names are
//! global; interface names are per namespace, so every host's interface is `eth0`). L is K mod
//! 250, only to tell LANs apart in logs: each LAN is isolated anyway.
//!
//! Dropping a `Lan` SIGKILLs every process inside its namespaces (by PID, from `ip netns pids`)
//! and deletes the namespaces, also when the test panics. The first `Lan` of a process deletes
//! what dead earlier runs left behind: namespaces named `mgt-PID-...` whose PID no longer runs
//! (after killing what is still inside them).
//!
//! In a host: [`Lan::command`] runs a program there (`ip netns exec` execs it, so the child's PID
//! is the program's); [`Lan::enter`] runs a closure on a thread that has joined the namespace
//! (sockets made there stay there, so test servers and clients live in the test process);
//! [`Lan::start_node`] runs `meshgate` there (each host has its own loopback, so every node keeps
//! the default API address 127.0.0.1:42000); [`Lan::avahi`] starts avahi-daemon with a system
//! D-Bus of its own, to look at the LAN with an mDNS implementation that we did not write.
//!
//! # avahi in a namespace
//!
//! avahi-daemon needs the system bus and keeps its pid file in /run/avahi-daemon, both at fixed
//! paths, so each instance gets a tmpfs on /run in a mount namespace of its own: `ip netns exec`
//! already unshares the mount namespace (and makes `/` a recursive slave, so nothing mounted
//! there reaches the host). A shell there mounts the tmpfs and execs `dbus-daemon --system`;
//! avahi-daemon (`--no-chroot --no-rlimits`, our config: own host name, `allow-interfaces=eth0`,
//! no wide-area) and avahi-browse/avahi-publish join that mount namespace with
//! `nsenter -t <dbus pid> -m -n`, which execs them: all three are children of the test process,
//! reaped and killed by PID. The mounts go away with the last process in that namespace.
//!
//! # Running these tests by hand
//!
//! They need root (namespaces, veth, mounts), iproute2 (`ip`), util-linux (`nsenter`), and for
//! avahi `avahi-daemon`, `avahi-utils` and `dbus` (scripts/test.sh installs them when run as root;
//! if `libnss-mdns` comes along, purge it: it edits /etc/nsswitch.conf). A missing one fails the
//! test, naming the package; nothing is skipped.
//!
//! ```sh
//! sudo -E cargo test -p meshgate --test netns --test discovery
//! MESHGATE_TEST_LOG=meshgate=debug,info sudo -E cargo test -p meshgate --test discovery -- --nocapture
//! ip netns list | grep '^mgt-'     # empty afterwards
//! ```
//!
//! `MESHGATE_TEST_LOG` sets `RUST_LOG` for the nodes a `Lan` starts (default `info`).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Node, Proc, alive, poll_until, require, run_with_timeout};

/// Every namespace a `Lan` makes is named `mgt-<pid>-<k>-...`.
const PREFIX: &str = "mgt-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Any single `ip` command.
const IP_LIMIT: Duration = Duration::from_secs(10);

static NEXT_LAN: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Fails the test unless it runs as root, which namespaces need.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes network namespaces: run it as root (e.g. `sudo -E cargo test ...`; \
         scripts/test.sh runs as root)"
    );
}

/// Fails the test unless `ip` and `nsenter` are there.
fn require_tools() {
    require_root();
    require("ip", "apt-get install iproute2");
    require("nsenter", "apt-get install util-linux");
}

/// A bridge and `hosts` namespaces on it; see the module doc.
#[derive(Debug)]
pub struct Lan {
    tag: String,
    net: u8,
    bridge: String,
    /// Host namespaces made so far (all of them once `new` returns).
    hosts: Vec<String>,
    /// Whether the bridge namespace exists yet (a half-made LAN is cleaned up too).
    bridge_made: bool,
}

impl Lan {
    /// Makes the LAN: the bridge namespace and `hosts` host namespaces, hosts numbered from 0.
    pub fn new(hosts: usize) -> Self {
        require_tools();
        assert!((1..=250).contains(&hosts), "a Lan has 1 to 250 hosts");
        SWEEP.call_once(sweep_dead_runs);
        let k = NEXT_LAN.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{PREFIX}{}-{k}", std::process::id());
        let mut lan = Lan {
            bridge: format!("{tag}-br"),
            tag,
            net: u8::try_from(k % 250).unwrap(),
            hosts: Vec::new(),
            bridge_made: false,
        };
        let br = lan.bridge.clone();
        ip(&["netns", "add", &br]);
        lan.bridge_made = true;
        ip(&[
            "-n",
            &br,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = format!("{}-h{i}", lan.tag);
            let port = format!("vb{i}");
            ip(&["netns", "add", &ns]);
            lan.hosts.push(ns.clone());
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ]);
            ip(&["-n", &br, "link", "set", &port, "master", "br0", "up"]);
            // No duplicate address detection: addresses (link-local included) are usable at
            // once instead of after ~1-2 s of "tentative". Before the link goes up, so the
            // link-local address is made without it too.
            lan.enter(i, || {
                fs::write("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0")
                    .expect("cannot set accept_dad on eth0 in the namespace")
            });
            let (v4, v6) = (lan.ipv4(i), lan.ipv6(i));
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "set", "eth0", "multicast", "on"]);
            ip(&["-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            // Without a default route, IPv4 multicast needs a route of its own.
            ip(&["-n", &ns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        }
        lan
    }

    /// How many hosts the LAN has.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The name of host `i`'s namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// Host `i`'s IPv4 address on the LAN: 10.77.L.(i+1).
    pub fn ipv4(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.net, u8::try_from(i + 1).unwrap())
    }

    /// Host `i`'s IPv6 address on the LAN: fd77:L::(i+1).
    pub fn ipv6(&self, i: usize) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfd77,
            self.net.into(),
            0,
            0,
            0,
            0,
            0,
            u16::try_from(i + 1).unwrap(),
        )
    }

    /// A command that runs `program` in host `i` (`ip netns exec`, which execs it).
    pub fn command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i]]).arg(program);
        cmd
    }

    /// Runs `program args` in host `i` to completion within `limit`: (status, stdout, stderr).
    pub fn run(
        &self,
        i: usize,
        program: &str,
        args: &[&str],
        limit: Duration,
    ) -> (ExitStatus, String, String) {
        run_with_timeout(self.command(i, program).args(args), limit)
    }

    /// Runs `f` on a thread that has joined host `i`'s network namespace. Sockets it makes
    /// belong to that namespace for their whole life, whichever thread uses them later.
    pub fn enter<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new(NETNS_DIR).join(&self.hosts[i]);
        std::thread::scope(|s| {
            s.spawn(|| {
                join_netns(&path);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Starts `bin run` in host `i` on `config`, in `dir` (see [`Node::start_in`]).
    pub fn start_node(&self, i: usize, bin: &str, dir: tempfile::TempDir, config: &str) -> Node {
        let mut cmd = self.command(i, bin);
        if let Ok(filter) = std::env::var("MESHGATE_TEST_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        Node::start_with(cmd, dir, config)
    }

    /// `GET path` on `addr` (an HTTP/1.1 server on host `i`, e.g. the local API at
    /// 127.0.0.1:42000): (status code, body). Err when nothing answers properly within 5 s.
    pub fn http_get(
        &self,
        i: usize,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(u16, String), String> {
        self.enter(i, || http_get(addr, path))
    }

    /// A TCP echo server on host `i`'s loopback (each connection echoed until the client
    /// half-closes, then half-closed), serving until the test process ends; returns its port.
    pub fn echo_server(&self, i: usize) -> u16 {
        let listener = self.enter(i, || TcpListener::bind("127.0.0.1:0").unwrap());
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        if conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                });
            }
        });
        port
    }

    /// Connects to 127.0.0.1:`port` in host `i`, retrying for 10 s while nothing listens yet.
    pub fn connect(&self, i: usize, port: u16) -> TcpStream {
        self.enter(i, || {
            poll_until(
                &format!("connect to 127.0.0.1:{port} in {}", self.hosts[i]),
                Duration::from_secs(10),
                Duration::from_millis(50),
                || TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string()),
            )
        })
    }

    /// Starts avahi-daemon (with a system D-Bus of its own) in host `i`, and waits until it has
    /// started (10 s at most).
    pub fn avahi(&self, i: usize) -> Avahi {
        Avahi::start(self, i)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let all: Vec<String> = self
            .hosts
            .iter()
            .cloned()
            .chain(self.bridge_made.then(|| self.bridge.clone()))
            .collect();
        for ns in &all {
            kill_inside(ns);
        }
        for ns in &all {
            if let Err(e) = try_run(Command::new("ip").args(["netns", "delete", ns]), IP_LIMIT) {
                eprintln!("netns: cannot delete namespace {ns}: {e}");
            }
        }
    }
}

/// avahi-daemon in a host of a [`Lan`], with its own system D-Bus; see the module doc.
#[derive(Debug)]
pub struct Avahi {
    daemon: Proc,
    bus: Proc,
    _dir: tempfile::TempDir,
}

/// One resolved service as `avahi-browse -r -p` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsService {
    pub interface: String,
    /// `IPv4` or `IPv6`: the protocol avahi heard the service over (the address may be of
    /// either family: avahi resolves it separately).
    pub protocol: String,
    pub name: String,
    pub service_type: String,
    pub domain: String,
    pub host: String,
    /// As avahi prints it (`10.77.0.2`, `fd77::2`, `fe80::...`).
    pub address: String,
    pub port: u16,
    /// TXT strings, `key=value` each.
    pub txt: Vec<String>,
}

impl MdnsService {
    /// The value of TXT key `key`, if present.
    pub fn txt(&self, key: &str) -> Option<&str> {
        self.txt
            .iter()
            .find_map(|kv| kv.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

impl Avahi {
    fn start(lan: &Lan, i: usize) -> Self {
        require("avahi-daemon", "apt-get install avahi-daemon");
        require("avahi-browse", "apt-get install avahi-utils");
        require("avahi-publish", "apt-get install avahi-utils");
        require("dbus-daemon", "apt-get install dbus");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("avahi-daemon.conf");
        fs::write(
            &conf,
            format!(
                "[server]\nhost-name={}-h{i}\nuse-ipv4=yes\nuse-ipv6=yes\n\
                 allow-interfaces=eth0\nratelimit-interval-usec=1000000\nratelimit-burst=1000\n\
                 [wide-area]\nenable-wide-area=no\n\
                 [publish]\npublish-hinfo=no\npublish-workstation=no\n",
                lan.tag
            ),
        )
        .unwrap();
        let mut bus = Proc::spawn_cmd(lan.command(i, "sh").args([
            "-c",
            "set -e; mount -t tmpfs -o mode=0755 tmpfs /run; mkdir /run/dbus /run/avahi-daemon; \
             exec dbus-daemon --system --nofork --nopidfile",
        ]));
        let socket = PathBuf::from(format!(
            "/proc/{}/root/run/dbus/system_bus_socket",
            bus.pid()
        ));
        poll_until(
            "dbus-daemon in the namespace makes its socket",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                if let Some(status) = bus.wait_for_exit(Duration::ZERO) {
                    panic!("dbus-daemon exited ({status}): {}", bus.stderr());
                }
                if socket.exists() {
                    Ok(())
                } else {
                    Err(format!("no {}", socket.display()))
                }
            },
        );
        let mut daemon = Proc::spawn_cmd(
            nsenter(bus.pid(), "avahi-daemon")
                .arg("-f")
                .arg(&conf)
                .args(["--no-chroot", "--no-rlimits"]),
        );
        daemon.wait_for_stderr("Server startup complete", Duration::from_secs(10));
        Self {
            daemon,
            bus,
            _dir: dir,
        }
    }

    /// One `avahi-browse -r -t -p -k TYPE` (it returns once avahi has what it knows by now, a
    /// second or two): every resolved service, per interface and protocol.
    pub fn browse(&self, service_type: &str) -> Vec<MdnsService> {
        let (status, out, err) = run_with_timeout(
            nsenter(self.bus.pid(), "avahi-browse").args(["-r", "-t", "-p", "-k", service_type]),
            Duration::from_secs(20),
        );
        assert!(status.success(), "avahi-browse failed ({status}): {err}");
        out.lines().filter_map(parse_browse_line).collect()
    }

    /// Publishes a service (`avahi-publish -s`) until the returned process is dropped; returns
    /// once avahi says it is established (10 s at most).
    pub fn publish(&self, name: &str, service_type: &str, port: u16, txt: &[&str]) -> Proc {
        let mut p = Proc::spawn_cmd(
            nsenter(self.bus.pid(), "avahi-publish")
                .args(["-s", name, service_type, &port.to_string()])
                .args(txt),
        );
        poll_until(
            "avahi-publish establishes its service",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                let said = p.stdout() + &p.stderr();
                if said.contains("Established under name") {
                    return Ok(());
                }
                if let Some(status) = p.wait_for_exit(Duration::ZERO) {
                    panic!("avahi-publish exited ({status}): {said}");
                }
                Err(said)
            },
        );
        p
    }

    /// avahi-daemon's log so far.
    pub fn log(&self) -> String {
        self.daemon.stderr()
    }
}

/// `nsenter -t PID -m -n program`: `program` in that process's mount and network namespaces.
fn nsenter(pid: Pid, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", &pid.to_string(), "-m", "-n", program]);
    cmd
}

/// Parses a resolved line of `avahi-browse -p -r`:
/// `=;eth0;IPv4;NAME;_type._udp;local;HOST.local;ADDRESS;PORT;"k=v" "k=v"`.
fn parse_browse_line(line: &str) -> Option<MdnsService> {
    let f: Vec<&str> = line.splitn(10, ';').collect();
    if f.len() != 10 || f[0] != "=" {
        return None;
    }
    Some(MdnsService {
        interface: f[1].to_owned(),
        protocol: f[2].to_owned(),
        name: unescape(f[3]),
        service_type: unescape(f[4]),
        domain: unescape(f[5]),
        host: unescape(f[6]),
        address: f[7].to_owned(),
        port: f[8].parse().ok()?,
        txt: parse_txt(f[9]),
    })
}

/// avahi's label escapes: `\DDD` (a decimal byte) and `\c`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decimal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u8>().ok());
        match (b[i], decimal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (b'\\', None) if i + 1 < b.len() => {
                out.push(b[i + 1]);
                i += 2;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `"a=1" "b=2"` -> `["a=1", "b=2"]` (backslash escapes inside the quotes).
fn parse_txt(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut item = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => item.extend(chars.next()),
                c => item.push(c),
            }
        }
        out.push(item);
    }
    out
}

/// Moves the calling thread into the network namespace at `path`.
fn join_netns(path: &Path) {
    let file = fs::File::open(path)
        .unwrap_or_else(|e| panic!("cannot open namespace {}: {e}", path.display()));
    // SAFETY: setns(2) on a file descriptor we own; it changes this thread's namespace only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns({}): {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// A minimal HTTP/1.1 GET (Content-Length or chunked body, or up to close).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let limit = Duration::from_secs(5);
    let mut tcp =
        TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| format!("bad chunk in {body:?}"))?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or_else(|| format!("short chunk in {rest:?}"))?;
        out.push_str(chunk);
        body = rest.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

/// Runs `ip args` within [`IP_LIMIT`], panicking with its stderr on failure.
fn ip(args: &[&str]) {
    if let Err(e) = try_run(Command::new("ip").args(args), IP_LIMIT) {
        panic!("ip {}: {e}", args.join(" "));
    }
}

/// Runs `cmd` within `limit` without panicking (usable in `Drop`): its stdout, or what failed.
fn try_run(cmd: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + limit;
    // `ip` prints little: the pipes cannot fill before it exits.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {limit:?}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// SIGKILLs every process in namespace `ns` (by PID, from `ip netns pids`) and waits (5 s at
/// most) until none is left.
fn kill_inside(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = match try_run(Command::new("ip").args(["netns", "pids", ns]), IP_LIMIT)
        {
            Ok(out) => out
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect(),
            Err(e) => {
                eprintln!("netns: cannot list the processes in {ns}: {e}");
                return;
            }
        };
        if pids.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!("netns: processes {pids:?} still in {ns} after SIGKILL");
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes namespaces that earlier test runs left when they died (killed before `Drop` ran):
/// `mgt-PID-...` whose PID is gone, or is this process (which has made none yet).
fn sweep_dead_runs() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let dead = pid == me || i32::try_from(pid).map_or(true, |pid| !alive(Pid::from_raw(pid)));
        if dead {
            eprintln!("netns: deleting {name}, left by a test run that died");
            kill_inside(&name);
            if let Err(e) = try_run(
                Command::new("ip").args(["netns", "delete", &name]),
                IP_LIMIT,
            ) {
                eprintln!("netns: cannot delete {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browse_lines_parse() {
        let s = parse_browse_line(
            "=;eth0;IPv6;abc\\032d;_meshgate._udp;local;h.local;fd77::2;3478;\"v=1\" \"id=x;y\"",
        )
        .unwrap();
        assert_eq!(s.name, "abc d");
        assert_eq!(s.protocol, "IPv6");
        assert_eq!(s.address, "fd77::2");
        assert_eq!(s.port, 3478);
        assert_eq!(s.txt("id"), Some("x;y"));
        assert_eq!(s.txt("v"), Some("1"));
        assert_eq!(s.txt("i"), None);
        assert!(parse_browse_line("+;eth0;IPv4;abc;_meshgate._udp;local").is_none());
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            "abcde"
        );
    }
}
