//! The foundation as a user meets it: `meshgate id`, `meshgate run`, `meshgate config check`,
//! each as a real process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshgate_tests::{Proc, alive, openssl_fingerprint, run_with_timeout};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const LIMIT: Duration = Duration::from_secs(20);

fn meshgate(args: &[&str]) -> (i32, String, String) {
    let (status, out, err) =
        run_with_timeout(Command::new(BIN).args(args).env_remove("RUST_LOG"), LIMIT);
    (status.code().unwrap_or(-1), out, err)
}

fn id_json(state: &Path) -> serde_json::Value {
    let (code, out, err) = meshgate(&["id", "--json", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0, "meshgate id failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("meshgate.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn id_is_persistent_and_matches_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = id_json(&state);
    let second = id_json(&state);
    assert_eq!(first, second);

    let id = first["id"].as_str().unwrap();
    assert_eq!(id.len(), 52);
    assert_eq!(first["short_id"].as_str().unwrap(), &id[..8]);
    let ipv6: std::net::Ipv6Addr = first["ipv6"].as_str().unwrap().parse().unwrap();
    assert_eq!(ipv6.octets()[0], 0xfd);

    let openssl = openssl_fingerprint(&state.join("identity/cert.pem"));
    assert_eq!(
        first["fingerprint"].as_str().unwrap(),
        format!("sha-256 {openssl}")
    );

    // The human form says the same.
    let (code, out, _) = meshgate(&["id", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(id) && out.contains(&openssl), "{out}");
}

#[test]
fn truncated_key_is_a_named_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    id_json(&state);
    let key = state.join("identity/key.pem");
    let original = fs::read(&key).unwrap();
    fs::write(&key, &original[..original.len() / 3]).unwrap();
    let truncated = fs::read(&key).unwrap();

    for cmd in ["id", "run"] {
        let (code, _, err) = meshgate(&[cmd, "--state-dir", state.to_str().unwrap()]);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(
            err.contains(key.to_str().unwrap()),
            "{cmd} must name the file: {err}"
        );
        assert!(err.contains("move"), "{cmd} must say what to do: {err}");
        assert_eq!(fs::read(&key).unwrap(), truncated, "{cmd} touched key.pem");
    }
}

#[test]
fn wrong_curve_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    id_json(&state);
    fs::write(
        state.join("identity/key.pem"),
        include_str!("data/p384-key.pem"),
    )
    .unwrap();
    let (code, _, err) = meshgate(&["id", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("P-384") && err.contains("key.pem"), "{err}");
}

/// SIGKILL at many points of a first start: afterwards the state dir either has no identity
/// (and the next start makes one) or a complete one; a later load never yields a different ID
/// from the one that was on disk, and what loads always matches openssl's view of cert.pem.
#[test]
fn sigkill_during_first_start_never_leaves_a_torn_identity() {
    let mut seen_complete = 0;
    let mut seen_empty = 0;
    for i in 0..40u64 {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut p = Proc::spawn(BIN, ["id", "--state-dir", state.to_str().unwrap()]);
        // Spread the kills over the first start's whole life (a few ms here).
        std::thread::sleep(Duration::from_micros((i * 7919) % 12_000));
        p.signal(Signal::SIGKILL);
        p.wait_for_exit(LIMIT).expect("killed process exits");

        let identity = state.join("identity");
        let before = identity
            .exists()
            .then(|| openssl_fingerprint(&identity.join("cert.pem")));
        match &before {
            Some(_) => seen_complete += 1,
            None => seen_empty += 1,
        }
        let after = id_json(&state);
        let fingerprint = after["fingerprint"].as_str().unwrap().to_owned();
        if let Some(before) = before {
            assert_eq!(fingerprint, format!("sha-256 {before}"), "iteration {i}");
        }
        assert_eq!(
            fingerprint,
            format!(
                "sha-256 {}",
                openssl_fingerprint(&identity.join("cert.pem"))
            )
        );
        assert_eq!(id_json(&state), after, "iteration {i}");
        assert!(!state.join("identity.tmp").exists());
    }
    eprintln!("killed before publish: {seen_empty}, after: {seen_complete}");
}

#[test]
fn concurrent_first_starts_agree() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut procs: Vec<Proc> = (0..6)
        .map(|_| {
            Proc::spawn(
                BIN,
                ["id", "--json", "--state-dir", state.to_str().unwrap()],
            )
        })
        .collect();
    let outputs: Vec<String> = procs
        .iter_mut()
        .map(|p| {
            let status = p.wait_for_exit(LIMIT).expect("id finishes");
            assert!(status.success(), "{}", p.stderr());
            p.stdout()
        })
        .collect();
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{outputs:#?}");
}

#[test]
fn run_prints_identity_and_port_then_stops_cleanly() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = write_config(
            dir.path(),
            "listen = \"127.0.0.1:0\"\n[discovery]\nmdns = false\n",
        );
        let id = id_json(&state);
        let mut p = Proc::spawn(
            BIN,
            [
                "run",
                "--config",
                &config,
                "--state-dir",
                state.to_str().unwrap(),
            ],
        );
        let err = p.wait_for_stderr("started", LIMIT);
        assert!(err.contains(id["id"].as_str().unwrap()), "{err}");
        assert!(err.contains(id["ipv6"].as_str().unwrap()), "{err}");
        let port: u16 = err
            .split("udp 127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no udp port in {err}"));
        assert_ne!(port, 0);
        // The port is really bound: binding it again fails.
        assert!(UdpSocket::bind(("127.0.0.1", port)).is_err());

        p.signal(signal);
        let status = p.wait_for_exit(LIMIT).expect("stops on signal");
        assert_eq!(status.code(), Some(0), "{signal}: {}", p.stderr());
        assert!(!alive(p.pid()));
        // Nothing left behind: the port is free again, the state dir holds only the identity.
        UdpSocket::bind(("127.0.0.1", port)).expect("port released");
        let mut entries: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, ["identity", "identity.lock"]);
    }
}

#[test]
fn run_on_a_busy_port_names_it() {
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("listen = \"{addr}\"\n"));
    let state = dir.path().join("state");
    let (code, _, err) = meshgate(&[
        "run",
        "--config",
        &config,
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&addr.to_string()), "must name the port: {err}");
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for (text, key) in [
        ("[turn]\nrelay_ports = \"9-1\"\n", "turn.relay_ports"),
        ("lisen = \"0.0.0.0:1\"\n", "lisen"),
        ("role = \"boss\"\n", "role"),
    ] {
        let config = write_config(dir.path(), text);
        for args in [
            vec!["config", "check", &config],
            vec![
                "run",
                "--config",
                &config,
                "--state-dir",
                state.to_str().unwrap(),
            ],
        ] {
            let (code, _, err) = meshgate(&args);
            assert_eq!(code, 2, "{args:?}: {err}");
            assert!(err.contains(key), "{args:?} must name {key}: {err}");
            assert!(err.contains(&config), "{args:?} must name the file: {err}");
        }
    }
    // A run with a bad config made no identity.
    assert!(!state.exists());

    let good = write_config(
        dir.path(),
        "role = \"gateway\"\n[turn]\nusers = { alice = \"s3cret\" }\n",
    );
    let (code, out, err) = meshgate(&["config", "check", &good]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");

    // The embedded default is itself a valid config file.
    let (code, default, _) = meshgate(&["config", "default"]);
    assert_eq!(code, 0);
    let path = write_config(dir.path(), &default);
    assert_eq!(meshgate(&["config", "check", &path]).0, 0);
}

#[test]
fn usage_errors_exit_2_and_api_commands_do_not_pretend() {
    assert_eq!(meshgate(&["frobnicate"]).0, 2);
    assert_eq!(meshgate(&["connect", "not-an-id", "svc:ssh"]).0, 2);
    // Nothing listens on this port: the commands say so instead of inventing an answer.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    for cmd in ["status", "peers"] {
        let (code, out, err) = meshgate(&[cmd, "--api", &addr]);
        assert_eq!(code, 1, "{cmd}");
        assert!(out.is_empty());
        assert!(err.contains("no running node"), "{err}");
    }
}
