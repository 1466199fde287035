//! turn-gw: one UDP port for STUN, TURN and DTLS (DESIGN.md §4).
//!
//! Every datagram is classified by its first byte ([`demux::classify`], RFC 7983/9443) in the
//! task that read it. This crate knows nothing of the agent: the agent plugs its engines in.
//!
//! Status: the port, the demux and its counters exist; no kind has a handler yet, so every
//! classified datagram is dropped and counted as `drop_unhandled`. The STUN/TURN server and the
//! DTLS hand-off come with issue 3.

pub mod cidr;
pub mod counters;
pub mod demux;
pub mod socket;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

pub use cidr::{Cidr, ParseCidrError};
pub use counters::Counters;
pub use demux::{Drop, Kind, classify};
pub use socket::{BufferSizes, SOCKET_BUFFER};

/// Largest UDP payload we read: anything longer is truncated by the kernel and then dropped
/// by the parsers as malformed.
pub const MAX_DATAGRAM: usize = 65_535;

/// One bound shared port and its counters.
#[derive(Debug)]
pub struct SharedPort {
    socket: tokio::net::UdpSocket,
    local_addr: SocketAddr,
    buffers: BufferSizes,
    counters: Arc<Counters>,
}

impl SharedPort {
    /// Binds `addr`. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let (socket, buffers) = socket::bind_udp(addr)?;
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            socket,
            local_addr,
            buffers,
            counters: Arc::new(Counters::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn buffers(&self) -> BufferSizes {
        self.buffers
    }

    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Reads and classifies datagrams until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                received = self.socket.recv_from(&mut buf) => {
                    let (len, from) = match received {
                        Ok(r) => r,
                        // ICMP port unreachable from an earlier send surfaces here on Linux;
                        // it says nothing about this socket.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                        Err(e) => return Err(e),
                    };
                    self.on_datagram(&buf[..len], from);
                }
            }
        }
    }

    fn on_datagram(&self, datagram: &[u8], from: SocketAddr) {
        Counters::add(&self.counters.rx_bytes, datagram.len() as u64);
        let class = classify(datagram);
        self.counters.count(class);
        if let Ok(kind) = class {
            tracing::trace!(?kind, %from, len = datagram.len(), "no handler for this kind yet");
            Counters::add(&self.counters.drop_unhandled, 1);
        }
    }
}
