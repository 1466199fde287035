//! Binding the shared UDP port.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket buffer size asked for on the shared port. The 208 KiB default overflowed on
/// loopback here (kernel RcvbufErrors) and threw SCTP into loss recovery: a 5x slowdown.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Effective kernel buffer sizes after binding (the kernel doubles what it is asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    pub recv: usize,
    pub send: usize,
}

/// Binds a UDP socket for the shared port with large buffers, non-blocking.
///
/// An IPv6 address binds IPv6 only (`IPV6_V6ONLY`), so that `0.0.0.0:p` and `[::]:p` can be
/// bound side by side and a reply always leaves from the family its request came in on.
pub fn bind_udp(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, BufferSizes)> {
    bind_udp_with(addr, SOCKET_BUFFER)
}

/// [`bind_udp`] with a chosen buffer size.
pub fn bind_udp_with(
    addr: SocketAddr,
    buffer: usize,
) -> io::Result<(std::net::UdpSocket, BufferSizes)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    set_buffers(&socket, buffer);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let sizes = BufferSizes {
        recv: socket.recv_buffer_size()?,
        send: socket.send_buffer_size()?,
    };
    Ok((socket.into(), sizes))
}

/// SO_RCVBUFFORCE/SO_SNDBUFFORCE pass `net.core.rmem_max` when we hold CAP_NET_ADMIN; without
/// it the plain options are capped at rmem_max/wmem_max, which is the best we can do.
fn set_buffers(socket: &Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
    }
    if setsockopt(socket, sockopt::SndBufForce, &bytes).is_err() {
        let _ = socket.set_send_buffer_size(bytes);
    }
}
