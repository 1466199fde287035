//! What the agent plugs into the shared port: the TURN server's configuration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use turn_gw::{Credentials, RelayPolicy, TurnConfig};

use crate::config::Config;

/// The TURN server's configuration for a port bound at `listen`.
pub fn turn_config(config: &Config, listen: SocketAddr) -> TurnConfig {
    let turn = &config.turn;
    TurnConfig {
        credentials: Credentials {
            realm: turn.realm.clone(),
            users: turn
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secret: turn.secret.clone(),
            clock_skew: Duration::from_secs(config.clock_skew_s),
        },
        policy: RelayPolicy {
            allow: turn.relay_allow.clone(),
            own: own_addresses(),
            own_port: Some(listen.port()),
        },
        relay_ip: listen.ip(),
        relay_ports: turn.relay_ports.clone(),
        max_allocations: turn.max_allocations as usize,
        max_allocations_per_user: turn.max_allocations_per_user as usize,
    }
}

/// Every address of every interface of this host: a TURN peer may never be the gateway itself
/// unless `relay_allow` says so.
pub fn own_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_include_loopback() {
        assert!(own_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
