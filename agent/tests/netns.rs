//! The namespace harness itself (`meshgate_tests::netns`), checked with things that do not need
//! discovery: two nodes with static peers carry TCP between two namespaces over IPv4 and IPv6,
//! and avahi in one namespace sees what avahi-publish announces from another. A failure here is
//! the setup, not meshgate's discovery. Needs root; see the harness's module doc.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use meshgate_tests::netns::Lan;
use meshgate_tests::{Node, poll_until};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const SECS10: Duration = Duration::from_secs(10);

#[test]
fn the_lan_is_isolated_and_addressed_as_documented() {
    let lan = Lan::new(2);
    let (status, out, err) = lan.run(0, "ip", &["-o", "addr", "show", "dev", "eth0"], SECS10);
    assert!(status.success(), "{err}");
    assert!(out.contains(&format!("inet {}/24", lan.ipv4(0))), "{out}");
    assert!(out.contains(&format!("inet6 {}/64", lan.ipv6(0))), "{out}");
    assert!(!out.contains("tentative"), "DAD is on: {out}");
    let (_, routes, _) = lan.run(0, "ip", &["route", "show"], SECS10);
    assert!(!routes.contains("default"), "a default route: {routes}");
    assert!(routes.contains("224.0.0.0/4 dev eth0"), "{routes}");
    let (_, links, _) = lan.run(0, "ip", &["-o", "link", "show"], SECS10);
    assert_eq!(links.lines().count(), 2, "lo and eth0 only: {links}");
    let (_, dad, _) = lan.run(
        0,
        "cat",
        &["/proc/sys/net/ipv6/conf/eth0/accept_dad"],
        SECS10,
    );
    assert_eq!(dad.trim(), "0");
    // Both families reach the other host; nothing else is reachable.
    lan.enter(0, || {
        let b4 = TcpStream::connect_timeout(&(lan.ipv4(1), 9).into(), Duration::from_secs(5));
        // Nothing listens on port 9 there: refused (RST), not unreachable.
        assert_eq!(
            b4.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        let b6 = TcpStream::connect_timeout(&(lan.ipv6(1), 9).into(), Duration::from_secs(5));
        assert_eq!(
            b6.unwrap_err().kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        let out = TcpStream::connect_timeout(&([192, 0, 2, 1], 9).into(), Duration::from_secs(5));
        assert_eq!(
            out.unwrap_err().raw_os_error(),
            Some(nix::libc::ENETUNREACH),
            "the namespace has a route out"
        );
    });
    let ns = lan.ns(0).to_owned();
    drop(lan);
    assert!(
        !std::path::Path::new("/run/netns").join(&ns).exists(),
        "{ns} is still there after drop"
    );
}

#[test]
fn static_peers_carry_tcp_between_namespaces_over_both_families() {
    let lan = Lan::new(3);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ids: Vec<String> = dirs
        .iter()
        .map(|d| Node::make_identity(BIN, d.path()))
        .collect();
    let echo = lan.echo_server(1);
    // Host 0 reaches host 1 over IPv4 and host 2 (which listens on IPv6 only) over IPv6.
    let config0 = format!(
        "[discovery]\nmdns = false\npeers = [{{ id = \"{}\", addr = \"{}:3478\" }}, \
         {{ id = \"{}\", addr = \"[{}]:3478\" }}]\n\
         [[forward]]\nlisten = \"127.0.0.1:7001\"\npeer = \"{}\"\ntarget = \"svc:echo\"\n\
         [[forward]]\nlisten = \"127.0.0.1:7002\"\npeer = \"{}\"\ntarget = \"svc:echo\"\n",
        ids[1],
        lan.ipv4(1),
        ids[2],
        lan.ipv6(2),
        ids[1],
        ids[2]
    );
    let config1 = format!(
        "[discovery]\nmdns = false\n[[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{echo}\"\n"
    );
    let echo2 = lan.echo_server(2);
    let config2 = format!(
        "listen = [\"[::]:3478\"]\n[discovery]\nmdns = false\n\
         [[service]]\nname = \"echo\"\ntarget = \"127.0.0.1:{echo2}\"\n"
    );
    let mut dirs = dirs.into_iter();
    let mut n0 = lan.start_node(0, BIN, dirs.next().unwrap(), &config0);
    let _n1 = lan.start_node(1, BIN, dirs.next().unwrap(), &config1);
    let _n2 = lan.start_node(2, BIN, dirs.next().unwrap(), &config2);
    n0.proc.wait_for_stderr(
        &format!("session with {} at {}:3478 up", &ids[1][..8], lan.ipv4(1)),
        SECS10,
    );
    n0.proc.wait_for_stderr(
        &format!("session with {} at [{}]:3478 up", &ids[2][..8], lan.ipv6(2)),
        SECS10,
    );
    for port in [7001u16, 7002] {
        let mut conn = lan.connect(0, port);
        conn.set_read_timeout(Some(SECS10)).unwrap();
        let msg = format!("hello through {port}");
        conn.write_all(msg.as_bytes()).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut back = String::new();
        conn.read_to_string(&mut back).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn avahi_in_one_namespace_sees_a_service_published_from_another() {
    let lan = Lan::new(2);
    let (a, b) = (lan.avahi(0), lan.avahi(1));
    let _published = b.publish("harness-check", "_meshgate._udp", 3478, &["id=abc", "v=1"]);
    let seen = poll_until(
        "avahi-browse in host 0 resolves the service published in host 1 over both families",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || {
            let found = a.browse("_meshgate._udp");
            let ours: Vec<_> = found.iter().filter(|s| s.name == "harness-check").collect();
            if ours.iter().any(|s| s.protocol == "IPv4")
                && ours.iter().any(|s| s.protocol == "IPv6")
            {
                Ok(found)
            } else {
                Err(format!("{found:?}"))
            }
        },
    );
    for s in seen.iter().filter(|s| s.name == "harness-check") {
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.port, 3478);
        assert_eq!(s.txt("id"), Some("abc"));
        // avahi resolves the address of either family over either protocol.
        assert!(
            [lan.ipv4(1).to_string(), lan.ipv6(1).to_string()].contains(&s.address),
            "{s:?}"
        );
    }
}
