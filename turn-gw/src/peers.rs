//! An allocation's permissions and channel bindings (RFC 8656 §9, §12). Pure: time is an
//! argument. Shared between the socket loop (client -> peer) and the allocation's relay task
//! (peer -> client) behind a mutex that each datagram holds for a lookup or two.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// RFC 8656 §9: permissions last 300 s; §12: channel bindings 600 s.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Channel numbers: RFC 5766's 0x4000-0x7FFF, which RFC 8656 narrowed to 0x4FFF; see
/// `demux::Kind::ChannelData` for why we keep the wide range.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7FFF;
/// Bounds per allocation, so one client cannot grow our memory without limit.
pub const MAX_PERMISSIONS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The number is outside 0x4000-0x7FFF.
    BadNumber,
    /// The number is bound to another peer, or the peer to another number (§12.2).
    Conflict,
    TooMany,
}

#[derive(Debug, Default)]
pub struct PeerTable {
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    by_peer: HashMap<SocketAddr, u16>,
}

impl PeerTable {
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&exp| exp > now)
    }

    /// Installs or refreshes a permission; false when the table is full.
    pub fn permit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.permissions.len() >= MAX_PERMISSIONS && !self.permissions.contains_key(&ip) {
            self.expire(now);
            if self.permissions.len() >= MAX_PERMISSIONS {
                return false;
            }
        }
        self.permissions.insert(ip, now + PERMISSION_LIFETIME);
        true
    }

    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|(_, exp)| *exp > now)
            .map(|&(peer, _)| peer)
    }

    pub fn channel_of(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.by_peer.get(&peer)?;
        self.channel_peer(number, now).map(|_| number)
    }

    /// Binds or refreshes `number` to `peer`, which also installs a permission (§12.2).
    pub fn bind(&mut self, number: u16, peer: SocketAddr, now: Instant) -> Result<(), BindError> {
        if !CHANNELS.contains(&number) {
            return Err(BindError::BadNumber);
        }
        match (self.channels.get(&number), self.by_peer.get(&peer)) {
            (Some(&(bound, _)), _) if bound != peer => return Err(BindError::Conflict),
            (_, Some(&n)) if n != number => return Err(BindError::Conflict),
            _ => {}
        }
        if !self.permit(peer.ip(), now) {
            return Err(BindError::TooMany);
        }
        self.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        self.by_peer.insert(peer, number);
        Ok(())
    }

    /// Drops expired permissions and channels. A channel stays reserved for 5 minutes after
    /// it expires (§12), which we get by expiring it only then.
    pub fn expire(&mut self, now: Instant) {
        self.permissions.retain(|_, exp| *exp > now);
        let grace = Duration::from_secs(300);
        let by_peer = &mut self.by_peer;
        self.channels.retain(|_, (peer, exp)| {
            let keep = *exp + grace > now;
            if !keep {
                by_peer.remove(peer);
            }
            keep
        });
    }

    pub fn len(&self) -> (usize, usize) {
        (self.permissions.len(), self.channels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn permissions_expire() {
        let t0 = Instant::now();
        let mut p = PeerTable::default();
        let ip = addr("10.0.0.1:1").ip();
        assert!(!p.permitted(ip, t0));
        assert!(p.permit(ip, t0));
        assert!(p.permitted(ip, t0 + Duration::from_secs(299)));
        assert!(!p.permitted(ip, t0 + Duration::from_secs(300)));
        p.expire(t0 + Duration::from_secs(301));
        assert_eq!(p.len(), (0, 0));
    }

    #[test]
    fn channel_rules() {
        let t0 = Instant::now();
        let mut p = PeerTable::default();
        let a = addr("10.0.0.1:1000");
        let b = addr("10.0.0.2:1000");
        assert_eq!(p.bind(0x3FFF, a, t0), Err(BindError::BadNumber));
        assert_eq!(p.bind(0x8000, a, t0), Err(BindError::BadNumber));
        assert_eq!(p.bind(0x4000, a, t0), Ok(()));
        assert!(p.permitted(a.ip(), t0));
        assert_eq!(p.bind(0x4000, a, t0), Ok(()), "refresh");
        assert_eq!(p.bind(0x4000, b, t0), Err(BindError::Conflict));
        assert_eq!(p.bind(0x4001, a, t0), Err(BindError::Conflict));
        assert_eq!(p.channel_peer(0x4000, t0), Some(a));
        assert_eq!(p.channel_of(a, t0), Some(0x4000));
        let later = t0 + CHANNEL_LIFETIME;
        assert_eq!(p.channel_peer(0x4000, later), None);
        // Still reserved for the grace period, then free.
        p.expire(later);
        assert_eq!(p.bind(0x4000, b, later), Err(BindError::Conflict));
        p.expire(later + Duration::from_secs(301));
        assert_eq!(p.bind(0x4000, b, later + Duration::from_secs(301)), Ok(()));
    }

    #[test]
    fn permission_table_is_bounded() {
        let t0 = Instant::now();
        let mut p = PeerTable::default();
        for i in 0..MAX_PERMISSIONS as u32 {
            assert!(p.permit(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), t0));
        }
        assert!(!p.permit("11.0.0.1".parse().unwrap(), t0));
        assert!(p.permit("11.0.0.1".parse().unwrap(), t0 + PERMISSION_LIFETIME));
    }
}
