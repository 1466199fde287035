//! Batched UDP I/O with the local address of every datagram (what quinn-udp does for QUIC).
//!
//! `recvmmsg` reads up to [`BATCH`] datagrams per system call and `sendmmsg` sends a batch per
//! call. IP_PKTINFO / IPV6_PKTINFO tell us which local address each datagram came to, and the
//! answer is sent *from* that address: a socket bound to 0.0.0.0 on a router with several
//! addresses would otherwise answer from whichever address the routing table picks, and the
//! client would drop the answer.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Receive slot size: a jumbo Ethernet frame. Longer datagrams arrive truncated and are
/// dropped (counted); nothing we speak sends them (DTLS/SCTP and browsers stay near 1200 B).
pub const SLOT: usize = 9216;

/// The local end of a datagram: the address it came to and the interface (for IPv6 link-local).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Local {
    pub ip: IpAddr,
    pub ifindex: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub len: usize,
    pub from: SocketAddr,
    pub local: Option<Local>,
    /// Longer than [`SLOT`]: the tail was lost.
    pub truncated: bool,
}

// Room for one in6_pktinfo control message (the larger of the two), aligned.
const CONTROL: usize = 64;

/// Buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    data: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<[u8; CONTROL]>,
    meta: Vec<Meta>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch").finish_non_exhaustive()
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            data: vec![0; BATCH * SLOT],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![[0; CONTROL]; BATCH],
            meta: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// The datagrams of the last [`recv`] call.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Meta)> {
        self.meta
            .iter()
            .enumerate()
            .map(|(i, m)| (&self.data[i * SLOT..i * SLOT + m.len], *m))
    }
}

/// Asks the kernel for each datagram's destination address.
pub fn enable_pktinfo(socket: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let one: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: valid fd, pointer to a c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking `recvmmsg`: fills `batch` and returns how many datagrams it read.
/// `WouldBlock` when there are none.
pub fn recv(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.meta.clear();
    // SAFETY: zeroed iovec/mmsghdr are valid; every pointer set below points into `batch`,
    // which outlives the call, with the lengths given.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..BATCH {
        iovs[i].iov_base = batch.data[i * SLOT..].as_mut_ptr().cast();
        iovs[i].iov_len = SLOT;
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut batch.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1 as _;
        h.msg_control = batch.controls[i].as_mut_ptr().cast();
        h.msg_controllen = CONTROL as _;
    }
    // SAFETY: hdrs holds BATCH initialised headers; the timeout pointer may be null.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            BATCH as _,
            libc::MSG_DONTWAIT as _,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for hdr in hdrs.iter().take(n as usize) {
        let h = &hdr.msg_hdr;
        // SAFETY: the kernel wrote a sockaddr of msg_namelen bytes into names[i].
        let from = unsafe { sockaddr_to_std(h.msg_name.cast(), h.msg_namelen) };
        let Some(from) = from else {
            continue;
        };
        batch.meta.push(Meta {
            len: (hdr.msg_len as usize).min(SLOT),
            from,
            // SAFETY: msg_control/msg_controllen describe the control data the kernel wrote.
            local: unsafe { local_from_control(h) },
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
        });
    }
    Ok(batch.meta.len())
}

/// A datagram to send, optionally from a given local address.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub to: SocketAddr,
    pub from: Option<Local>,
    pub data: &'a [u8],
}

/// One non-blocking `sendmmsg` of up to [`BATCH`] datagrams; returns how many the kernel took.
pub fn send(fd: RawFd, items: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = items.len().min(BATCH);
    // SAFETY: as in `recv`: zeroed plain data, pointers into locals/`items` that outlive the call.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut controls = [[0u8; CONTROL]; BATCH];
    for (i, item) in items.iter().take(n).enumerate() {
        iovs[i].iov_base = item.data.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = item.data.len();
        let namelen = std_to_sockaddr(item.to, &mut names[i]);
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = namelen;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1 as _;
        if let Some(local) = item.from {
            h.msg_control = controls[i].as_mut_ptr().cast();
            h.msg_controllen = CONTROL as _;
            // SAFETY: the control buffer is CONTROL bytes, enough for one pktinfo message.
            unsafe { write_pktinfo(h, local, item.to.is_ipv6()) };
        }
    }
    // SAFETY: n initialised headers.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// # Safety
/// `name` must point to a sockaddr of `len` bytes written by the kernel.
unsafe fn sockaddr_to_std(name: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: caller's contract; we read the family first, then the matching struct.
    unsafe {
        match i32::from((*name).sa_family) {
            libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
                let a = &*(name as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
                let a = &*(name as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

fn std_to_sockaddr(addr: SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let s = unsafe { &mut *(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s =
                unsafe { &mut *(out as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            s.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// # Safety
/// `h` must describe control data written by the kernel for a `recvmmsg` call.
unsafe fn local_from_control(h: &libc::msghdr) -> Option<Local> {
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(h);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                return Some(Local {
                    ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                    ifindex: info.ipi_ifindex as u32,
                });
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                return Some(Local {
                    ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            }
            cmsg = libc::CMSG_NXTHDR(h, cmsg);
        }
        None
    }
}

/// # Safety
/// `h.msg_control` must point to at least [`CONTROL`] writable bytes.
unsafe fn write_pktinfo(h: &mut libc::msghdr, local: Local, ipv6: bool) {
    // SAFETY: caller's contract; one cmsg of CMSG_SPACE(pktinfo) <= CONTROL bytes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(h);
        if cmsg.is_null() {
            return;
        }
        match (local.ip, ipv6) {
            (IpAddr::V4(ip), false) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as _) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
                h.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _) as _;
            }
            (IpAddr::V6(ip), true) => {
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as _) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: local.ifindex,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in6_pktinfo, info);
                h.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as _) as _;
            }
            // Family mismatch: let the kernel choose.
            _ => {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair(bind: &str, peer: &str) -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind(bind).unwrap();
        server.set_nonblocking(true).unwrap();
        let client = UdpSocket::bind(peer).unwrap();
        (server, client)
    }

    /// A wildcard socket learns which address each datagram came to, and answers from it.
    #[test]
    fn replies_leave_from_the_address_the_request_came_to() {
        let (server, _) = pair("0.0.0.0:0", "127.0.0.1:0");
        enable_pktinfo(&server, false).unwrap();
        let port = server.local_addr().unwrap().port();
        let mut batch = RecvBatch::default();
        // Two loopback addresses: 127.0.0.1 and 127.0.0.2 both reach the wildcard socket.
        for dst in ["127.0.0.1", "127.0.0.2"] {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            client.send_to(b"ping", (dst, port)).unwrap();
            let mut n = 0;
            for _ in 0..200 {
                match recv(server.as_raw_fd(), &mut batch) {
                    Ok(k) => {
                        n = k;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(n, 1);
            let (data, meta) = batch.iter().next().unwrap();
            assert_eq!(data, b"ping");
            assert_eq!(meta.from, client.local_addr().unwrap());
            let local = meta.local.expect("pktinfo");
            assert_eq!(local.ip.to_string(), dst);
            let sent = send(
                server.as_raw_fd(),
                &[Outgoing {
                    to: meta.from,
                    from: Some(local),
                    data: b"pong",
                }],
            )
            .unwrap();
            assert_eq!(sent, 1);
            let mut buf = [0u8; 16];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong");
            assert_eq!(
                from.to_string(),
                format!("{dst}:{port}"),
                "answer from the right address"
            );
        }
    }

    #[test]
    fn batches_and_ipv6() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            panic!(
                "IPv6 loopback is needed for this test (sysctl net.ipv6.conf.lo.disable_ipv6=0)"
            );
        };
        server.set_nonblocking(true).unwrap();
        enable_pktinfo(&server, true).unwrap();
        let client = UdpSocket::bind("[::1]:0").unwrap();
        for i in 0..40u8 {
            client
                .send_to(&[i; 100], server.local_addr().unwrap())
                .unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut batch = RecvBatch::default();
        let mut got = Vec::new();
        while let Ok(n) = recv(server.as_raw_fd(), &mut batch) {
            assert!(n <= BATCH);
            for (d, m) in batch.iter() {
                assert_eq!(m.local.unwrap().ip, "::1".parse::<IpAddr>().unwrap());
                got.push(d[0]);
            }
        }
        assert_eq!(got, (0..40).collect::<Vec<u8>>());
        let out: Vec<Outgoing> = (0..40u8)
            .map(|_| Outgoing {
                to: client.local_addr().unwrap(),
                from: None,
                data: b"x",
            })
            .collect();
        assert_eq!(send(server.as_raw_fd(), &out).unwrap(), BATCH);
    }
}
