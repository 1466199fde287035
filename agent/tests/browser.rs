//! Browsers and aiortc dialling a gateway over HTTP signaling (`POST /v1/dial`, DESIGN.md §8 and
//! §11): headless Chromium (Debian's) runs the gateway's own page (`agent/static/index.html`) and
//! echoes bytes through a `[[service]]` with a SHA-256 check in the page; aiortc does the same
//! without a browser; bad tokens, bad SDP, unknown `to` and floods get their status codes.
//!
//! Every test is a LAN of network namespaces (`meshgate_tests::netns`): the gateway in host 0
//! (`signal = "0.0.0.0:8080"`, the shared UDP port 3478), the browser or aiortc in host 1. A
//! namespace without a default route gives Chromium no host candidate at all, so host 1 gets
//! `default dev eth0` (it leads only onto the test's own bridge), and the driver passes
//! `--disable-features=WebRtcHideLocalIpsWithMdns` so the candidates are raw IPs.
//!
//! The page is served from `http://10.77.L.1:8080/`: not a secure context, so `crypto.subtle`
//! does not exist there and the page signs its dial token with its plain-JS P-256 and hashes with
//! its plain-JS SHA-256; the relay-only test runs the driver with `--secure-origin`
//! (`--unsafely-treat-insecure-origin-as-secure`) so the WebCrypto path meets the gateway too.
//!
//! Needs root, iproute2, chromium, nodejs (scripts/test.sh installs them), playwright-core in
//! target/npm and aiortc in target/pyvenv (scripts/test.sh installs both):
//! `sudo -E cargo test -p meshgate --test browser`. A missing one fails the test, naming it.
//! Drivers: `agent/tests/browser/chromium.cjs` and `aiortc_dial.py` (each prints one JSON line;
//! each has its own overall timeout under the one here).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use meshgate_tests::netns::Lan;
use meshgate_tests::{Node, poll_until, require, run_with_timeout};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
/// The gateway's signaling listener (`signal`) and shared UDP port (`listen`, the default).
const SIGNAL: u16 = 8080;
const UDP: u16 = 3478;
/// The drivers' own overall bound (`--timeout-s`), and ours around it.
const DRIVER_S: u64 = 120;
const DRIVER_LIMIT: Duration = Duration::from_secs(DRIVER_S + 30);
const POLL: Duration = Duration::from_millis(250);
/// The playwright-core release scripts/test.sh installs into target/npm.
const PLAYWRIGHT_CORE: &str = "1.65.1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn driver(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser")
        .join(name)
}

/// target/npm/node_modules with playwright-core, after checking chromium and node are there.
fn node_modules() -> PathBuf {
    require("chromium", "apt-get install chromium");
    require("node", "apt-get install nodejs");
    let modules = repo().join("target/npm/node_modules");
    assert!(
        modules.join("playwright-core/package.json").is_file(),
        "this test needs playwright-core in target/npm: run scripts/test.sh, or \
         `npm install --prefix target/npm playwright-core@{PLAYWRIGHT_CORE}` (apt-get install npm)"
    );
    modules
}

/// The Python with aiortc that scripts/test.sh prepares (target/pyvenv).
fn aiortc_python() -> PathBuf {
    let python = repo().join("target/pyvenv/bin/python");
    let ok = python.exists()
        && Command::new(&python)
            .args(["-c", "import aiortc, cryptography"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "this test needs aiortc in target/pyvenv: run scripts/test.sh, or \
         `python3 -m venv target/pyvenv && target/pyvenv/bin/pip install aiortc`"
    );
    python
}

/// A meshgate node in a host of the LAN; its log tail is printed if the test fails.
struct Member {
    label: &'static str,
    node: Node,
}

impl Member {
    fn id(&self) -> String {
        self.node.id().to_owned()
    }

    fn log(&self) -> String {
        tail(&self.node.proc.stderr(), 60)
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- {} log, last lines:\n{}", self.label, self.log());
        }
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Config text: `top` (top-level keys), `[discovery]` with mDNS off and `peers`, then `tables`.
fn config(top: &str, peers: &str, tables: &str) -> String {
    format!("{top}\n[discovery]\nmdns = false\npeers = [{peers}]\n{tables}\n")
}

fn echo_service(port: u16) -> String {
    format!("[[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{port}\"\n")
}

/// Starts a gateway in host `host` with `tables` (services, `[turn]`) and waits until its
/// signaling listener answers `GET /v1/info` with its ID (from host `client`).
fn gateway(lan: &Lan, host: usize, client: usize, tables: &str) -> Member {
    gateway_in(lan, host, client, tempfile::tempdir().unwrap(), tables)
}

fn gateway_in(
    lan: &Lan,
    host: usize,
    client: usize,
    dir: tempfile::TempDir,
    tables: &str,
) -> Member {
    let top = format!("role = \"gateway\"\nsignal = \"0.0.0.0:{SIGNAL}\"");
    let gw = Member {
        label: "gateway",
        node: lan.start_node(host, BIN, dir, &config(&top, "", tables)),
    };
    let addr = SocketAddr::from((lan.ipv4(host), SIGNAL));
    let info: Value = poll_until(
        "the gateway's signaling listener answers GET /v1/info",
        Duration::from_secs(10),
        POLL,
        || match lan.http_get(client, addr, "/v1/info") {
            Ok((200, body)) => serde_json::from_str(&body).map_err(|e| format!("{e}: {body}")),
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(e),
        },
    );
    assert_eq!(info["id"], gw.id(), "/v1/info: {info}");
    assert_eq!(info["short_id"], &gw.id()[..8], "/v1/info: {info}");
    assert_eq!(info["role"], "gateway", "/v1/info: {info}");
    assert_eq!(info["mesh"], "meshgate", "/v1/info: {info}");
    gw
}

/// Gives host `i` a default route onto the LAN: Chromium gathers no host candidate without one.
fn default_route(lan: &Lan, i: usize) {
    let (status, _, err) = run_with_timeout(
        Command::new("ip").args(["-n", lan.ns(i), "route", "add", "default", "dev", "eth0"]),
        Duration::from_secs(10),
    );
    assert!(
        status.success(),
        "ip route add default in {}: {err}",
        lan.ns(i)
    );
}

fn url(lan: &Lan, gateway_host: usize) -> String {
    format!("http://{}:{SIGNAL}/", lan.ipv4(gateway_host))
}

/// The last stdout line as JSON (the drivers print exactly one).
fn result_line(status: ExitStatus, out: &str, err: &str) -> Value {
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "driver ({status}) printed no JSON line ({e}):\n{out}\nstderr:\n{}",
            tail(err, 60)
        )
    })
}

/// Runs the Chromium driver in host `host`: (exit status, its JSON line, its stderr).
fn chromium(lan: &Lan, host: usize, args: &[&str]) -> (ExitStatus, Value, String) {
    let modules = node_modules();
    let (status, out, err) = run_with_timeout(
        lan.command(host, "node")
            .arg(driver("chromium.cjs"))
            .args(args)
            .args(["--timeout-s", &DRIVER_S.to_string()])
            .env("NODE_PATH", modules),
        DRIVER_LIMIT,
    );
    let v = result_line(status, &out, &err);
    (status, v, err)
}

/// Runs the aiortc driver in host `host`: (exit status, its JSON line, its stderr).
fn aiortc(lan: &Lan, host: usize, args: &[&str]) -> (ExitStatus, Value, String) {
    let python = aiortc_python();
    let (status, out, err) = run_with_timeout(
        lan.command(host, python)
            .arg(driver("aiortc_dial.py"))
            .args(args)
            .args(["--timeout-s", &DRIVER_S.to_string()]),
        DRIVER_LIMIT,
    );
    let v = result_line(status, &out, &err);
    (status, v, err)
}

/// An echo result: exit 0, ok, all bytes back, equal SHA-256s.
fn assert_echoed(what: &str, status: ExitStatus, v: &Value, err: &str, bytes: u64) {
    assert!(
        status.success() && v["ok"] == true,
        "{what} failed ({status}): {v}\nstderr:\n{}",
        tail(err, 40)
    );
    assert_eq!(v["bytes"], bytes, "{what}: {v}");
    assert_eq!(v["received"], bytes, "{what}: {v}");
    assert!(
        v["sha_sent"].as_str().is_some_and(|s| s.len() == 64) && v["sha_sent"] == v["sha_received"],
        "{what}: {v}"
    );
}

#[test]
fn chromium_round_trips_10_mb_through_a_service_on_the_gateway() {
    let lan = Lan::new(2);
    let echo = lan.echo_server(0);
    let gw = gateway(&lan, 0, 1, &echo_service(echo));
    default_route(&lan, 1);
    let bytes: u64 = 10 * 1000 * 1000;
    let (status, v, err) = chromium(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--bytes",
            &bytes.to_string(),
            "--target",
            "svc:echo",
        ],
    );
    assert_echoed("chromium echo through the gateway", status, &v, &err, bytes);
    assert_eq!(v["session"]["gateway"], gw.id(), "{v}");
    // Straight to the gateway's shared port, DTLS 1.2 (the gateway's engine speaks no 1.3),
    // the gateway the DTLS server (a=setup:passive).
    let dtls = &v["dtls"];
    assert_eq!(dtls["remote"]["address"], lan.ipv4(0).to_string(), "{v}");
    assert_eq!(dtls["remote"]["port"], UDP, "{v}");
    assert_eq!(dtls["local"]["type"], "host", "{v}");
    assert_eq!(dtls["role"], "client", "{v}");
    assert_eq!(dtls["tls_version"], "FEFD", "{v}");
    assert!(
        v["session"]["hello"]
            .as_str()
            .is_some_and(|h| h.starts_with("meshgate/1 ") && h.contains("mesh=meshgate")),
        "{v}"
    );
    // This browser's node ID is the SHA-256 of its certificate: 52 base32 characters.
    let id = v["identity"]["id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 52, "{v}");
    assert_eq!(v["identity"]["signing"], "js", "{v}");
}

#[test]
fn chromium_relay_only_reaches_the_gateway_through_its_own_turn() {
    let lan = Lan::new(2);
    let echo = lan.echo_server(0);
    let gw = gateway(
        &lan,
        0,
        1,
        &format!(
            "{}[turn]\nusers = {{ alice = \"s3cret\" }}\n",
            echo_service(echo)
        ),
    );
    default_route(&lan, 1);
    let turn = format!("turn:{}:{UDP}?transport=udp", lan.ipv4(0));
    let bytes: u64 = 1 << 20;
    let (status, v, err) = chromium(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--bytes",
            &bytes.to_string(),
            "--turn",
            &turn,
            "--turn-user",
            "alice",
            "--turn-pass",
            "s3cret",
            "--relay-only",
            "--secure-origin",
        ],
    );
    assert_echoed("chromium relay-only echo", status, &v, &err, bytes);
    assert_eq!(v["session"]["gateway"], gw.id(), "{v}");
    // The selected pair starts at a relayed address on the gateway (its TURN server) and ends
    // at the gateway's shared port.
    assert_eq!(v["dtls"]["local"]["type"], "relay", "{v}");
    assert_eq!(
        v["dtls"]["local"]["address"],
        lan.ipv4(0).to_string(),
        "{v}"
    );
    assert_eq!(v["dtls"]["remote"]["port"], UDP, "{v}");
    assert_eq!(v["identity"]["signing"], "webcrypto", "{v}");
}

#[test]
fn aiortc_dials_through_v1_dial() {
    let lan = Lan::new(2);
    let echo = lan.echo_server(0);
    let gw = gateway(&lan, 0, 1, &echo_service(echo));
    let bytes: u64 = 5 * 1000 * 1000;
    let (status, v, err) = aiortc(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--bytes",
            &bytes.to_string(),
            "--target",
            "svc:echo",
        ],
    );
    assert_echoed("aiortc echo through the gateway", status, &v, &err, bytes);
    assert_eq!(v["peer"], gw.id(), "{v}");
    // A target the gateway does not serve is refused with a reason, not an open proxy.
    let (status, v, _) = aiortc(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--bytes",
            "1000",
            "--target",
            "svc:nosuch",
        ],
    );
    assert!(!status.success(), "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("OPEN_ERR")),
        "{v}"
    );
}

#[test]
fn chromium_reaches_a_node_behind_the_gateway_by_its_id() {
    let lan = Lan::new(3);
    let gw_dir = tempfile::tempdir().unwrap();
    let gw_id = Node::make_identity(BIN, gw_dir.path());
    let echo = lan.echo_server(2);
    let node = Member {
        label: "node",
        node: lan.start_node(
            2,
            BIN,
            tempfile::tempdir().unwrap(),
            &config(
                "role = \"node\"",
                &format!("{{ id = \"{gw_id}\", addr = \"{}:{UDP}\" }}", lan.ipv4(0)),
                &echo_service(echo),
            ),
        ),
    };
    let mut gw = gateway_in(&lan, 0, 1, gw_dir, "");
    assert_eq!(gw.id(), gw_id);
    poll_until(
        "the node has a session up with the gateway",
        Duration::from_secs(20),
        POLL,
        || {
            let (status, out, err) = lan.run(2, BIN, &["peers", "--json"], Duration::from_secs(10));
            if !status.success() {
                return Err(format!("meshgate peers --json: {err}"));
            }
            let rows: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
            let up = rows.as_array().is_some_and(|rows| {
                rows.iter()
                    .any(|r| r["id"] == gw_id.as_str() && r["session"] == "up")
            });
            if up { Ok(()) } else { Err(out) }
        },
    );
    default_route(&lan, 1);
    let bytes: u64 = 3 * 1000 * 1000;
    let node_id = node.id();
    let (status, v, err) = chromium(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--to",
            &node_id,
            "--bytes",
            &bytes.to_string(),
            "--target",
            "svc:echo",
        ],
    );
    assert_echoed(
        "chromium echo to the node by its ID",
        status,
        &v,
        &err,
        bytes,
    );
    // The page pins the answer's fingerprint to the ID it asked for: end to end with the node.
    assert_eq!(v["session"]["peer"], node_id, "{v}");
    assert_eq!(v["session"]["gateway"], gw_id, "{v}");
    assert_eq!(v["dtls"]["remote"]["type"], "host", "{v}");

    // Now the browser cannot reach the node (its packets to the node go to a neighbour that does
    // not exist, so they vanish, as across a router without a route): the relay candidate the
    // gateway added to the node's answer carries the session, still end to end with the node.
    // (A blackhole route would not do: the send errors make Chromium give up the whole local
    // port, relay pairs included.)
    let v4 = lan.ipv4(1).octets();
    let v6 = lan.ipv6(1).segments();
    let nowhere4 = format!("{}.{}.{}.99", v4[0], v4[1], v4[2]);
    let nowhere6 = std::net::Ipv6Addr::new(v6[0], v6[1], 0, 0, 0, 0, 0, 0x99).to_string();
    for (family, prefix, via) in [
        ("-4", format!("{}/32", lan.ipv4(2)), nowhere4),
        ("-6", format!("{}/128", lan.ipv6(2)), nowhere6),
    ] {
        let (status, _, err) = run_with_timeout(
            Command::new("ip").args([
                "-n",
                lan.ns(1),
                family,
                "route",
                "add",
                &prefix,
                "via",
                &via,
            ]),
            Duration::from_secs(10),
        );
        assert!(status.success(), "ip route add {prefix} via {via}: {err}");
    }
    let (status, v, err) = chromium(
        &lan,
        1,
        &[
            "--url",
            &url(&lan, 0),
            "--to",
            &node_id,
            "--bytes",
            "1000000",
            "--target",
            "svc:echo",
        ],
    );
    assert_echoed(
        "chromium echo to an unreachable node through the gateway's relay",
        status,
        &v,
        &err,
        1_000_000,
    );
    assert_eq!(v["session"]["peer"], node_id, "{v}");
    assert_eq!(v["dtls"]["remote"]["type"], "relay", "{v}");
    assert_eq!(
        v["dtls"]["remote"]["address"],
        lan.ipv4(0).to_string(),
        "{v}"
    );
    assert!(
        gw.node.counter("signal_dials_relayed") >= 2,
        "the gateway relayed both dials"
    );
}

/// One HTTP/1.1 request from host `from` to `addr`: (status code, body). The body is read to
/// the connection's close; chunked framing, if any, stays in it (reasons are matched by words).
fn request(lan: &Lan, from: usize, addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let (code, _, body) = request_with_head(lan, from, addr, head, body);
    (code, body)
}

/// [`request`], with the answer's head too.
fn request_with_head(
    lan: &Lan,
    from: usize,
    addr: SocketAddr,
    head: &str,
    body: &[u8],
) -> (u16, String, String) {
    lan.enter(from, || {
        let limit = Duration::from_secs(10);
        let mut tcp = TcpStream::connect_timeout(&addr, limit)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(limit)).unwrap();
        tcp.set_write_timeout(Some(limit)).unwrap();
        let mut req = format!(
            "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        // A refused request may be answered and closed before all of it was read.
        let _ = tcp.write_all(&req);
        let mut raw = Vec::new();
        let _ = tcp.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP answer from {addr}: {text:?}"));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        (code, head.to_owned(), body.to_owned())
    })
}

#[test]
fn bad_tokens_sdp_and_floods_get_their_status_codes() {
    let lan = Lan::new(2);
    let mut gw = gateway(&lan, 0, 1, "");
    let url = url(&lan, 0);
    // Each case through the aiortc driver: a real offer, a token made as the browser makes it
    // but wrong in one way. The limit is 1 request/s per source (burst 5), and each case is a
    // GET /v1/info and a POST: a 429 is waited out and tried again.
    let post = |case: &str, extra: &[&str]| -> (u64, String) {
        poll_until(
            &format!("an answer other than 429 to --jwt-case {case}"),
            Duration::from_secs(30),
            Duration::from_millis(1500),
            || {
                let mut args = vec!["--url", url.as_str(), "--jwt-case", case];
                args.extend_from_slice(extra);
                let (status, v, err) = aiortc(&lan, 1, &args);
                assert!(
                    status.success(),
                    "--jwt-case {case}: {v}\n{}",
                    tail(&err, 30)
                );
                let code = v["status"].as_u64().unwrap_or(0);
                let body = v["body"].as_str().unwrap_or_default().to_owned();
                if code == 429 {
                    Err(format!("429: {body}"))
                } else {
                    Ok((code, body))
                }
            },
        )
    };
    for (case, word) in [
        ("expired", "expired"),
        ("bad-signature", "signature"),
        ("wrong-sub", "sub"),
        ("wrong-aud", "aud"),
        ("long-lived", "exp"),
    ] {
        let (code, body) = post(case, &[]);
        assert_eq!(code, 401, "--jwt-case {case}: {body}");
        assert!(
            body.to_lowercase().contains(word),
            "--jwt-case {case}: the 401's reason {body:?} does not say {word:?}"
        );
    }
    let (code, body) = post("missing", &[]);
    assert!(
        matches!(code, 400 | 401) && !body.trim().is_empty(),
        "no Authorization: {code} {body:?}"
    );
    let (code, body) = post("garbage-sdp", &[]);
    assert_eq!(code, 400, "a body that is not SDP: {body}");
    assert!(!body.trim().is_empty(), "a 400 without a reason");
    // A well-formed request for a node the gateway does not know.
    let unknown = format!("{}a", "q".repeat(51));
    let (code, body) = post("valid", &["--to", &unknown]);
    assert_eq!(code, 404, "to={unknown}: {body}");
    // A token that is not a JWT at all, with an offer-like body: 400, malformed.
    let addr = SocketAddr::from((lan.ipv4(0), SIGNAL));
    std::thread::sleep(Duration::from_secs(6)); // the burst refills
    let (code, body) = request(
        &lan,
        1,
        addr,
        "POST /v1/dial HTTP/1.1\r\nContent-Type: application/sdp\r\nAuthorization: Bearer not-a-jwt",
        b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    );
    assert!(
        matches!(code, 400 | 401) && !body.trim().is_empty(),
        "a token that is not a JWT: {code} {body:?}"
    );

    // A flood: 20 POSTs at once from one source; past the burst they are refused with 429.
    let codes: Vec<u16> = (0..20)
        .map(|_| {
            request(
                &lan,
                1,
                addr,
                "POST /v1/dial HTTP/1.1\r\nContent-Type: application/sdp",
                b"x",
            )
            .0
        })
        .collect();
    let limited = codes.iter().filter(|&&c| c == 429).count();
    assert!(limited >= 10, "20 rapid POSTs: {codes:?}");
    assert!(
        codes.iter().all(|c| matches!(c, 400 | 401 | 429)),
        "20 rapid POSTs: {codes:?}"
    );

    // CORS: a page from another origin may ask (preflight), and every answer says so; and the
    // gateway's clock is in Date.
    let (code, head, _) = request_with_head(
        &lan,
        1,
        addr,
        "OPTIONS /v1/dial HTTP/1.1\r\nOrigin: http://10.99.0.1:8000\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization, content-type",
        b"",
    );
    assert_eq!(code, 204, "{head}");
    let head = head.to_ascii_lowercase();
    for want in [
        "access-control-allow-origin: *",
        "access-control-allow-methods: get, post, options",
        "access-control-allow-headers: authorization, content-type",
        "date: ",
    ] {
        assert!(
            head.contains(want),
            "preflight answer lacks {want:?}: {head}"
        );
    }

    // The gateway is still there, and still serves.
    assert!(
        gw.node.proc.wait_for_exit(Duration::ZERO).is_none(),
        "the gateway exited:\n{}",
        gw.log()
    );
    let id = gw.id();
    poll_until(
        "GET /v1/info after the flood",
        Duration::from_secs(10),
        POLL,
        || match lan.http_get(1, addr, "/v1/info") {
            Ok((200, body)) if body.contains(&id) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (code, metrics) = lan
        .http_get(0, "127.0.0.1:42000".parse().unwrap(), "/metrics")
        .unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(metrics.contains("meshgate_"), "{metrics}");
    for family in [
        "meshgate_signal_refused_rate_limited_total",
        "meshgate_signal_refused_unauthorized_total",
        "meshgate_signal_refused_bad_request_total",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(family))
            .unwrap_or_else(|| panic!("no {family} in /metrics"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
}
