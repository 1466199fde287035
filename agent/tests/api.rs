//! The local API and the CLI that reads it (issue 5), between real `meshgate run` processes on
//! loopback: `/status`, `/peers`, `/sessions`, `/forwards`, `/metrics`, `/proxy`, bad requests,
//! the non-loopback bind refusal, and `meshgate status|peers|sessions`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use meshgate_tests::{
    Node, Spec, forward_toml, free_tcp_port, free_udp_port, run_with_timeout, service_toml,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

/// A node to be: its directory with an identity, and its ports.
fn spec() -> Spec {
    Spec::new(BIN)
}

/// Connects, retrying while the API is not listening yet (it binds just after the start line).
fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(tcp) => return tcp,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot connect to the API at {addr}: {e}"),
        }
    }
}

/// An HTTP answer: status code, head, body.
#[derive(Debug)]
struct Answer {
    code: u16,
    head: String,
    body: String,
}

/// Sends raw bytes as a request to `addr` and reads the answer to its end (the API closes).
fn raw(addr: &str, request: &[u8]) -> Answer {
    let mut tcp = connect(addr);
    tcp.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    // A refused request may close before all of it was read: that is fine.
    let _ = tcp.write_all(request);
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer to {request:?}: {answer:?}"));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        code,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(addr: &str, path: &str) -> Answer {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn get_json(addr: &str, path: &str) -> Value {
    let answer = get(addr, path);
    assert_eq!(answer.code, 200, "{path}: {answer:?}");
    assert!(
        answer.head.contains("Content-Type: application/json"),
        "{answer:?}"
    );
    serde_json::from_str(&answer.body).unwrap()
}

/// Polls `path` until `ok` holds (at most 20 s).
fn wait_json(addr: &str, path: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = get_json(addr, path);
        if ok(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never satisfied: {value:#}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn meshgate(args: &[&str]) -> (i32, String, String) {
    let (status, out, err) =
        run_with_timeout(Command::new(BIN).args(args), Duration::from_secs(30));
    (status.code().unwrap_or(-1), out, err)
}

/// Checks Prometheus text format 0.0.4 as the tests need it, and returns every sample
/// (`name{labels}` -> value).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut helped = Vec::new();
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(!helped.contains(&name), "HELP twice for {name}");
            helped.push(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(&name), "TYPE before HELP for {name}");
            assert!(!typed.iter().any(|(n, _)| *n == name), "TYPE twice: {name}");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter without _total: {name}"
            );
            typed.push((name, kind));
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "line {line:?}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("meshgate_"), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .unwrap_or_else(|| panic!("labels in {line:?}"));
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').unwrap();
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "{line}"
                    );
                }
            }
            assert!(
                typed.iter().any(|(n, _)| *n == name),
                "sample before its TYPE: {line}"
            );
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate sample {series}"
            );
        }
    }
    samples
}

fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let answer = get(addr, "/metrics");
    assert_eq!(answer.code, 200, "{answer:?}");
    assert!(
        answer.head.contains("text/plain; version=0.0.4"),
        "{answer:?}"
    );
    parse_metrics(&answer.body)
}

/// Echoes each connection until the client half-closes.
fn echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = conn.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

/// A tiny HTTP server: answers every request with what it got (method, target, Host, the
/// forwarding headers, the body), then closes.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let request_line = line.trim_end().to_owned();
                let mut headers = BTreeMap::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.to_ascii_lowercase(), v.trim().to_owned());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .map_or(0, |v| v.parse().unwrap());
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                let h = |k: &str| headers.get(k).cloned().unwrap_or_default();
                let reply = format!(
                    "{request_line}\nhost={}\nconnection={}\nprefix={}\nbody={}\n",
                    h("host"),
                    h("connection"),
                    h("x-forwarded-prefix"),
                    String::from_utf8_lossy(&body)
                );
                let mut conn = conn;
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{reply}",
                        reply.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

/// Waits until the log says a session with `peer` is up.
fn wait_session(node: &mut Node, peer: &str) {
    node.proc.wait_for_stderr(
        &format!("session with {}", &peer[..8]),
        Duration::from_secs(20),
    );
}

#[test]
fn status_matches_meshgate_id_and_the_cli_prints_it() {
    let a = spec();
    let api = a.api();
    let config = a.config("", &[], "");
    let node = a.start(&config);
    let (code, id_json, err) = meshgate(&[
        "id",
        "--json",
        "--state-dir",
        node.state_dir().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let id: Value = serde_json::from_str(&id_json).unwrap();
    let status = get_json(&api, "/status");
    for key in ["id", "short_id", "ipv6", "fingerprint"] {
        assert_eq!(status[key], id[key], "{key}");
    }
    assert_eq!(status["role"], "node");
    assert_eq!(status["mesh"], "meshgate");
    assert_eq!(
        status["listen"],
        serde_json::json!([format!("127.0.0.1:{}", node.udp_port("127.0.0.1"))])
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_s"].as_u64().unwrap() < 60, "{status}");
    assert_eq!(status["api"], api.as_str());

    // The CLI: raw JSON, and key: value lines in the DESIGN order.
    let (code, out, err) = meshgate(&["status", "--json", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["id"], id["id"]);
    let config_path = node.dir.path().join("meshgate.toml");
    let (code, out, err) = meshgate(&["status", "--config", config_path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("id:") && lines[0].ends_with(id["id"].as_str().unwrap()),
        "{out}"
    );
    assert!(lines[1].starts_with("short_id:"), "{out}");
    let column = lines[0].len() - id["id"].as_str().unwrap().len();
    for line in &lines {
        let (key, _) = line.split_once(':').unwrap();
        assert!(line[key.len() + 1..column].trim().is_empty(), "{out}");
    }
    assert!(out.contains("role:"), "{out}");
    assert!(out.contains("uptime_s:"), "{out}");
}

#[test]
fn peers_sessions_forwards_and_metrics_follow_a_session_and_a_connection() {
    let echo_port = echo();
    let (a, b) = (spec(), spec());
    let fa = free_tcp_port();
    let config_a = a.config(
        "",
        &[(&b.id, b.addr())],
        &forward_toml(fa, &b.id[..8], "svc:echo"),
    );
    let config_b = b.config("", &[(&a.id, a.addr())], &service_toml("echo", echo_port));
    let (a_id, b_id, a_api, b_api) = (a.id.clone(), b.id.clone(), a.api(), b.api());
    let mut node_a = a.start(&config_a);
    let node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);
    let before = metrics(&a_api);

    let peers = wait_json(&a_api, "/peers", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == b_id.as_str() && p["session"] == "up")
    });
    let peer = peers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == b_id.as_str())
        .unwrap();
    for key in ["id", "role", "addrs", "last_seen_s", "session"] {
        assert!(peer.get(key).is_some(), "no {key} in {peer}");
    }
    assert!(
        peer["addrs"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!(
                "127.0.0.1:{}",
                node_b.udp_port("127.0.0.1")
            ))),
        "{peer}"
    );
    let sessions = wait_json(&b_api, "/sessions", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|s| s["peer"] == a_id.as_str())
    });
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");

    // The CLI's tables.
    let (code, out, err) = meshgate(&["peers", "--api", &a_api]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for column in ["SHORT ID", "ROLE", "SESSION", "LAST SEEN", "ADDRS"] {
        assert!(header.contains(column), "{out}");
    }
    let row = lines.find(|l| l.starts_with(&b_id[..8])).unwrap();
    let session = header.find("SESSION").unwrap();
    assert!(row[session..].starts_with("up "), "{out}");
    let (code, out, err) = meshgate(&["peers", "--json", "--api", &a_api]);
    assert_eq!(code, 0, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert!(
        printed
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == b_id.as_str()),
        "{out}"
    );
    let (code, out, err) = meshgate(&["sessions", "--api", &b_api]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("SHORT ID"), "{out}");
    assert!(out.contains(&a_id[..8]), "{out}");

    // /forwards counts a connection while it is carried and after.
    let forwards = get_json(&a_api, "/forwards");
    let row = &forwards[0];
    assert_eq!(row["listen"], format!("127.0.0.1:{fa}").as_str());
    assert_eq!(row["peer"], &b_id[..8]);
    assert_eq!(row["target"], "svc:echo");
    assert_eq!(row["accepted"], 0);
    let mut conn = TcpStream::connect(("127.0.0.1", fa)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    let forwards = get_json(&a_api, "/forwards");
    assert_eq!(forwards[0]["accepted"], 1, "{forwards}");
    assert_eq!(forwards[0]["active"], 1, "{forwards}");
    conn.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    wait_json(&a_api, "/forwards", |v| v[0]["active"] == 0);

    // /metrics: well-formed, and the traffic moved the counters.
    let after = metrics(&a_api);
    let value = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    for series in [
        "meshgate_streams_opened_total",
        "meshgate_stream_bytes_sent_total",
        "meshgate_datagrams_received_total{class=\"dtls\"}",
    ] {
        assert!(
            value(&after, series) > value(&before, series),
            "{series} did not move: {after:?}"
        );
    }
    let listen = format!("listen=\"127.0.0.1:{fa}\"");
    assert_eq!(
        value(
            &after,
            &format!("meshgate_forward_accepted_total{{{listen}}}")
        ),
        1.0
    );
    assert_eq!(value(&after, "meshgate_sessions"), 1.0);
    assert_eq!(value(&after, "meshgate_peers{session=\"up\"}"), 1.0);
    assert!(after.contains_key("meshgate_datagrams_dropped_total{reason=\"rtp\"}"));
    assert!(after.contains_key("meshgate_dtls_handshakes_completed_total"));
}

#[test]
fn proxy_carries_get_and_post_to_the_peers_http_service_and_says_why_not() {
    let http_port = http_server();
    let (a, b) = (spec(), spec());
    let config_a = a.config("", &[(&b.id, b.addr())], "");
    let config_b = b.config("", &[(&a.id, a.addr())], &service_toml("http", http_port));
    let (a_id, b_id, a_api, b_api) = (a.id.clone(), b.id.clone(), a.api(), b.api());
    let mut node_a = a.start(&config_a);
    let _node_b = b.start(&config_b);
    wait_session(&mut node_a, &b_id);

    let answer = get(
        &a_api,
        &format!("/proxy/{}/some/page?x=1&y=%20", &b_id[..8]),
    );
    assert_eq!(answer.code, 200, "{answer:?}");
    let lines: Vec<&str> = answer.body.lines().collect();
    assert_eq!(lines[0], "GET /some/page?x=1&y=%20 HTTP/1.1", "{answer:?}");
    assert_eq!(lines[1], format!("host={}", &b_id[..8]));
    assert_eq!(lines[2], "connection=close");
    assert_eq!(lines[3], format!("prefix=/proxy/{}", &b_id[..8]));

    // A POST whose body is partly in the head's packet and partly after a pause.
    let mut tcp = connect(&a_api);
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = "x".repeat(20_000) + "end";
    let head = format!(
        "POST /proxy/{b_id}/form HTTP/1.1\r\nHost: {a_api}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(format!("{head}{}", &body[..100]).as_bytes())
        .unwrap();
    thread::sleep(Duration::from_millis(200));
    tcp.write_all(&body.as_bytes()[100..]).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("POST /form HTTP/1.1\n"), "{answer}");
    assert!(
        answer.contains(&format!("body={body}\n")),
        "{}",
        answer.len()
    );

    // `/proxy/<peer>` redirects to `/proxy/<peer>/`.
    let answer = get(&a_api, &format!("/proxy/{}", &b_id[..8]));
    assert_eq!(answer.code, 308, "{answer:?}");
    assert!(
        answer
            .head
            .contains(&format!("Location: /proxy/{}/\r", &b_id[..8]))
    );

    // A has no http service: 502, saying so.
    let answer = get(&b_api, &format!("/proxy/{a_id}/"));
    assert_eq!(answer.code, 502, "{answer:?}");
    assert!(answer.body.contains("http"), "{answer:?}");
    assert!(answer.body.contains("refused"), "{answer:?}");
    // A peer nobody knows: 502 at once.
    let answer = get(&a_api, "/proxy/abcdefgh/");
    assert_eq!(answer.code, 502, "{answer:?}");
    assert!(answer.body.contains("abcdefgh"), "{answer:?}");
}

#[test]
fn proxy_answers_504_for_a_peer_that_does_not_answer() {
    // A static peer whose address nothing answers on.
    let ghost = spec();
    let a = spec();
    let config_a = a.config(
        "",
        &[(&ghost.id, format!("127.0.0.1:{}", free_udp_port()))],
        "",
    );
    let a_api = a.api();
    let _node_a = a.start(&config_a);
    let start = Instant::now();
    let answer = get(&a_api, &format!("/proxy/{}/", ghost.id));
    let took = start.elapsed();
    assert_eq!(answer.code, 504, "{answer:?}");
    assert!(answer.body.contains("did not answer"), "{answer:?}");
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(30),
        "{took:?}"
    );
    // The node still serves.
    assert_eq!(get(&a_api, "/status").code, 200);
}

#[test]
fn bad_requests_get_4xx_and_the_node_keeps_serving() {
    let a = spec();
    let api = a.api();
    let config = a.config("", &[], "");
    let _node = a.start(&config);
    // A client that sends nothing gets 408 after the head timeout; meanwhile others are served.
    let slow = {
        let api = api.clone();
        thread::spawn(move || {
            let start = Instant::now();
            let mut tcp = connect(&api);
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            tcp.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
            let mut answer = String::new();
            let _ = tcp.read_to_string(&mut answer);
            (start.elapsed(), answer)
        })
    };
    let cases: &[(&[u8], u16)] = &[
        (b"hello\r\n\r\n", 400),
        (b"GET /status\r\n\r\n", 400),
        (b"GET /status HTTP/1.1 extra\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET http://example.com/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /status HTTP/1.1\r\nbroken header\r\n\r\n", 400),
        (b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (b"GET /status/../peers HTTP/1.1\r\n\r\n", 404),
        (b"DELETE /peers HTTP/1.1\r\n\r\n", 405),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            405,
        ),
        (b"GET /v1/connect HTTP/1.1\r\n\r\n", 405),
        (b"POST /v1/connect HTTP/1.1\r\n\r\n", 426),
        (b"GET /proxy/ HTTP/1.1\r\n\r\n", 404),
        (b"GET /proxy/not-a-peer/x HTTP/1.1\r\n\r\n", 502),
    ];
    for (request, code) in cases {
        let answer = raw(&api, request);
        assert_eq!(answer.code, *code, "{request:?}: {answer:?}");
        assert!(!answer.body.is_empty(), "{request:?}: no reason given");
    }
    let answer = raw(&api, b"GET /nope HTTP/1.1\r\n\r\n");
    for endpoint in [
        "/status",
        "/peers",
        "/sessions",
        "/forwards",
        "/metrics",
        "/proxy/",
    ] {
        assert!(answer.body.contains(endpoint), "{answer:?}");
    }
    let answer = raw(&api, b"PUT /status HTTP/1.1\r\n\r\n");
    assert!(answer.head.contains("Allow: GET, HEAD"), "{answer:?}");
    // HEAD: the head only.
    let answer = raw(&api, b"HEAD /status HTTP/1.1\r\n\r\n");
    assert_eq!(answer.code, 200);
    assert!(answer.body.is_empty(), "{answer:?}");
    // A head over 8 KiB, sent without end: 431 without waiting for the rest.
    let mut huge = b"GET /status HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    assert_eq!(raw(&api, &huge).code, 431);
    // Clients that vanish mid-head.
    for _ in 0..20 {
        let mut tcp = connect(&api);
        let _ = tcp.write_all(b"GET /sta");
    }
    let (took, answer) = slow.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took >= Duration::from_secs(9), "{took:?}");
    assert_eq!(get(&api, "/status").code, 200);
}

#[test]
fn a_non_loopback_api_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let port = free_tcp_port();
    let remote = write(
        "remote.toml",
        &format!("listen = \"127.0.0.1:0\"\napi = \"0.0.0.0:{port}\"\n[discovery]\nmdns = false\n"),
    );
    let (code, _, err) = meshgate(&["config", "check", &remote]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("api_allow_remote"), "{err}");
    assert!(err.contains(&format!("0.0.0.0:{port}")), "{err}");
    let state = dir.path().join("state");
    let (code, _, err) = meshgate(&[
        "run",
        "--config",
        &remote,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("api_allow_remote"), "{err}");
    // Forced: the config is valid (not run here: tests bind loopback only).
    let forced = write(
        "forced.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\napi = \"0.0.0.0:{port}\"\napi_allow_remote = true\n\
             [discovery]\nmdns = false\n"
        ),
    );
    let (code, out, err) = meshgate(&["config", "check", &forced]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn the_cli_says_when_no_node_answers_or_the_api_is_off() {
    let a = spec();
    let api = a.api();
    // Nothing listens yet.
    for cmd in ["status", "peers", "sessions"] {
        let (code, out, err) = meshgate(&[cmd, "--api", &api]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("no running node") && err.contains("api"),
            "{err}"
        );
    }
    // A node with its API off: it runs, and the CLI says the config turns the API off.
    let config = a
        .config("", &[], "")
        .replace(&format!("api = \"{api}\""), "api = \"off\"");
    let mut node = a.start(&config);
    node.proc
        .wait_for_stderr("local API off", Duration::from_secs(10));
    let path = node.dir.path().join("meshgate.toml");
    let (code, _, err) = meshgate(&["status", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("off"), "{err}");
}
