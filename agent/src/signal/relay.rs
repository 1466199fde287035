//! The relay candidate a gateway adds to a node's answer (`POST /v1/dial?to=`): a UDP port on
//! the gateway that carries the caller's datagrams to the node's shared port and the node's
//! back, for a caller that cannot reach the node directly (another subnet, a relay-only
//! browser). Like a TURN allocation made by the gateway on the node's behalf: it reaches only
//! the one node the gateway has a session with, takes datagrams only from the caller's
//! addresses, and ends after [`IDLE`] without traffic. End-to-end encryption is untouched: the
//! node's DTLS runs through it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// A relay with no datagram for this long ends.
pub const IDLE: Duration = Duration::from_secs(60);
/// Relays at once per gateway.
pub const MAX_RELAYS: usize = 64;

/// Why no relay was made.
#[derive(Debug)]
pub enum RelayError {
    Full,
    Bind(std::io::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayError::Full => write!(f, "{MAX_RELAYS} relays are in use"),
            RelayError::Bind(e) => write!(f, "cannot bind a relay port: {e}"),
        }
    }
}

/// Binds a port on `ip` (in `ports` if it can) that relays between `callers` and `node`, and
/// serves it in a task; returns its address.
pub async fn start(
    slots: &Arc<Semaphore>,
    ip: IpAddr,
    ports: (u16, u16),
    node: SocketAddr,
    callers: Vec<IpAddr>,
) -> Result<SocketAddr, RelayError> {
    let permit = Arc::clone(slots)
        .try_acquire_owned()
        .map_err(|_| RelayError::Full)?;
    let socket = bind_in_range(ip, ports).await.map_err(RelayError::Bind)?;
    let addr = socket.local_addr().map_err(RelayError::Bind)?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let mut caller: Option<SocketAddr> = None;
        let mut relayed: u64 = 0;
        loop {
            let (n, from) = match tokio::time::timeout(IDLE, socket.recv_from(&mut buf)).await {
                Ok(Ok(got)) => got,
                Ok(Err(_)) => continue,
                Err(_) => break,
            };
            let to = if from == node {
                match caller {
                    Some(c) => c,
                    None => continue,
                }
            } else if callers.contains(&from.ip()) {
                caller = Some(from);
                node
            } else {
                continue;
            };
            if socket.send_to(&buf[..n], to).await.is_ok() {
                relayed += 1;
            }
        }
        tracing::debug!("relay {addr} -> {node} ended after {relayed} datagrams");
        drop(permit);
    });
    Ok(addr)
}

/// A port from `ports` (a few random tries, like TURN's relay ports), else any port.
async fn bind_in_range(ip: IpAddr, (lo, hi): (u16, u16)) -> std::io::Result<UdpSocket> {
    let span = u32::from(hi.saturating_sub(lo)) + 1;
    let mut seed = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
    let mut x = u32::from_le_bytes(seed);
    if lo > 0 && hi >= lo {
        for _ in 0..16 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let port = lo + (x % span) as u16;
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(ip, port)).await {
                return Ok(s);
            }
        }
    }
    UdpSocket::bind(SocketAddr::new(ip, 0)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn carries_the_callers_datagrams_to_the_node_and_back_and_nothing_else() {
        let node = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let relay = start(
            &slots,
            "127.0.0.1".parse().unwrap(),
            (0, 0),
            node.local_addr().unwrap(),
            vec!["127.0.0.1".parse().unwrap()],
        )
        .await
        .unwrap();
        // One relay per slot.
        assert!(matches!(
            start(
                &slots,
                "127.0.0.1".parse().unwrap(),
                (0, 0),
                node.local_addr().unwrap(),
                vec![]
            )
            .await,
            Err(RelayError::Full)
        ));
        let mut buf = [0u8; 64];
        let wait = Duration::from_secs(5);
        stranger.send_to(b"not you", relay).await.unwrap();
        caller.send_to(b"hello", relay).await.unwrap();
        let (n, from) = tokio::time::timeout(wait, node.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], relay));
        node.send_to(b"back", relay).await.unwrap();
        let (n, from) = tokio::time::timeout(wait, caller.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((&buf[..n], from), (&b"back"[..], relay));
    }
}
