//! IP prefixes, for the relay policy's allow-list (`[turn] relay_allow`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `fd00::/8`. A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseCidrError {
    #[error("{0:?} is not an IP address (expected e.g. 10.0.0.0/8 or fd00::/8)")]
    Address(String),
    #[error("prefix length {0:?} is not a number from 0 to {1}")]
    Prefix(String, u8),
    #[error("{0} has bits set past its /{1} prefix (did you mean {2}?)")]
    HostBits(IpAddr, u8, Cidr),
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        (prefix <= max_prefix(addr)).then_some(Self { addr, prefix })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this prefix. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
    /// matched as the IPv4 address it carries, so a v6 socket cannot be used to sidestep a v4 rule.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_bits(
                u128::from(u32::from(net)),
                u128::from(u32::from(ip)),
                32,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_bits(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }

    fn truncated(addr: IpAddr, prefix: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let keep = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((u32::from(a) & keep).into())
            }
            IpAddr::V6(a) => {
                let keep = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((u128::from(a) & keep).into())
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses are the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask_bits(net: u128, ip: u128, width: u32, prefix: u8) -> bool {
    let prefix = u32::from(prefix);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (net >> shift) == (ip >> shift)
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| ParseCidrError::Address(addr_text.to_owned()))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| ParseCidrError::Prefix(p.to_owned(), max))?,
        };
        let net = Self::truncated(addr, prefix);
        if net != addr {
            return Err(ParseCidrError::HostBits(
                addr,
                prefix,
                Self { addr: net, prefix },
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_contains() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("127.0.0.1")));
        assert!(c.contains(ip("127.255.255.255")));
        assert!(c.contains(ip("::ffff:127.0.0.1")));
        assert!(!c.contains(ip("128.0.0.1")));
        assert!(!c.contains(ip("::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let host: Cidr = "::1".parse().unwrap();
        assert_eq!(host.prefix(), 128);
        assert!(host.contains(ip("::1")));
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix(), 32);
    }

    #[test]
    fn parse_errors_say_why() {
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(ParseCidrError::Prefix(..))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(ParseCidrError::Address(..))
        ));
        assert!(matches!(
            "fd00::/x".parse::<Cidr>(),
            Err(ParseCidrError::Prefix(..))
        ));
        let err = "10.1.0.0/8".parse::<Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.1.0.0 has bits set past its /8 prefix (did you mean 10.0.0.0/8?)"
        );
    }
}
