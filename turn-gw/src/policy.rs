//! Relay policy: which peers a TURN allocation may reach (DESIGN.md §4).
//!
//! A TURN server on a router is otherwise an open door into the LAN and into the router itself,
//! so by default relaying never reaches loopback, link-local, multicast, broadcast, unspecified
//! addresses or the gateway's own addresses (but its shared port, where a relayed browser meets
//! the gateway itself). `relay_allow` prefixes are exceptions to all of it.

use std::net::IpAddr;

use crate::cidr::{Cidr, canonical};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Loopback,
    LinkLocal,
    Multicast,
    Unspecified,
    Broadcast,
    OwnAddress,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Loopback => "loopback",
            Denied::LinkLocal => "link-local",
            Denied::Multicast => "multicast",
            Denied::Unspecified => "unspecified",
            Denied::Broadcast => "broadcast",
            Denied::OwnAddress => "the gateway's own address",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RelayPolicy {
    pub allow: Vec<Cidr>,
    /// The gateway's own addresses (its interfaces').
    pub own: Vec<IpAddr>,
    /// The shared port: the one port of the gateway's own addresses that relaying may reach
    /// (a browser whose only candidate is a relay on this gateway reaches the gateway's own
    /// ICE-lite and DTLS through it). Every other port of the gateway stays closed; the port is
    /// checked per datagram by [`RelayPolicy::check_send`], since permissions are per IP.
    pub own_port: Option<u16>,
}

impl RelayPolicy {
    pub fn check(&self, peer: IpAddr) -> Result<(), Denied> {
        let ip = canonical(peer);
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let denied = match ip {
            IpAddr::V4(v4) => {
                if v4.is_loopback() {
                    Some(Denied::Loopback)
                } else if v4.is_link_local() {
                    Some(Denied::LinkLocal)
                } else if v4.is_multicast() {
                    Some(Denied::Multicast)
                } else if v4.is_unspecified() {
                    Some(Denied::Unspecified)
                } else if v4.is_broadcast() {
                    Some(Denied::Broadcast)
                } else {
                    None
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_loopback() {
                    Some(Denied::Loopback)
                } else if v6.is_unicast_link_local() {
                    Some(Denied::LinkLocal)
                } else if v6.is_multicast() {
                    Some(Denied::Multicast)
                } else if v6.is_unspecified() {
                    Some(Denied::Unspecified)
                } else {
                    None
                }
            }
        };
        if let Some(d) = denied {
            return Err(d);
        }
        if self.own_port.is_none() && self.is_own(ip) {
            return Err(Denied::OwnAddress);
        }
        Ok(())
    }

    fn is_own(&self, ip: IpAddr) -> bool {
        self.own.iter().any(|&own| canonical(own) == ip)
    }

    /// Whether relayed data may go to `peer`: [`RelayPolicy::check`] allowed its IP, and on the
    /// gateway's own addresses only the shared port is reachable.
    pub fn check_send(&self, peer: std::net::SocketAddr) -> Result<(), Denied> {
        let ip = canonical(peer.ip());
        if self.allow.iter().any(|c| c.contains(ip)) || !self.is_own(ip) {
            return Ok(());
        }
        match self.own_port {
            Some(port) if port == peer.port() => Ok(()),
            _ => Err(Denied::OwnAddress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_denies_what_a_router_must_protect() {
        let p = RelayPolicy {
            allow: vec![],
            own: vec![ip("192.168.1.1")],
            own_port: None,
        };
        for (addr, why) in [
            ("127.0.0.1", Denied::Loopback),
            ("127.8.9.10", Denied::Loopback),
            ("::1", Denied::Loopback),
            ("::ffff:127.0.0.1", Denied::Loopback),
            ("169.254.1.1", Denied::LinkLocal),
            ("fe80::1", Denied::LinkLocal),
            ("224.0.0.251", Denied::Multicast),
            ("ff02::fb", Denied::Multicast),
            ("0.0.0.0", Denied::Unspecified),
            ("::", Denied::Unspecified),
            ("255.255.255.255", Denied::Broadcast),
            ("192.168.1.1", Denied::OwnAddress),
            ("::ffff:192.168.1.1", Denied::OwnAddress),
        ] {
            assert_eq!(p.check(ip(addr)), Err(why), "{addr}");
        }
        for addr in ["192.168.1.20", "10.0.0.1", "fd00::1", "2001:db8::1"] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allow_list_opens_exceptions() {
        let p = RelayPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            own: vec![ip("127.0.0.1")],
            own_port: None,
        };
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("::ffff:127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("::1")), Err(Denied::Loopback));
    }

    #[test]
    fn the_gateway_itself_is_reachable_on_its_shared_port_only() {
        let p = RelayPolicy {
            allow: vec![],
            own: vec![ip("192.168.1.1")],
            own_port: Some(3478),
        };
        let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert_eq!(p.check(ip("192.168.1.1")), Ok(()));
        assert_eq!(p.check_send(at("192.168.1.1:3478")), Ok(()));
        assert_eq!(p.check_send(at("[::ffff:192.168.1.1]:3478")), Ok(()));
        for other in ["192.168.1.1:53", "192.168.1.1:3479", "192.168.1.1:22"] {
            assert_eq!(p.check_send(at(other)), Err(Denied::OwnAddress), "{other}");
        }
        assert_eq!(p.check_send(at("192.168.1.20:53")), Ok(()));
        assert_eq!(p.check(ip("127.0.0.1")), Err(Denied::Loopback));
    }
}
