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
/// Receive slot size with UDP GRO on: the kernel may hand us up to 64 KiB of one flow's
/// equal-sized datagrams in one buffer (split again by [`RecvBatch::iter`]).
pub const GRO_SLOT: usize = 65_536;
/// Segments per UDP GSO send at most (the kernel's UDP_MAX_SEGMENTS).
pub const MAX_SEGMENTS: usize = 64;
/// Payload bytes per UDP GSO send at most (below the 65507-byte IPv4 UDP limit).
const GSO_MAX_BYTES: usize = 65_000;

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
    /// Longer than the slot: the tail was lost.
    pub truncated: bool,
    /// GRO: the buffer holds datagrams of this size (the last may be shorter); 0 when it holds
    /// one datagram.
    pub stride: usize,
}

// Room for one in6_pktinfo control message (the larger of the two) and one UDP_SEGMENT /
// UDP_GRO message, aligned.
const CONTROL: usize = 128;

/// Buffers for one `recvmmsg` call, reused across calls.
pub struct RecvBatch {
    slot: usize,
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
        Self::new(SLOT)
    }
}

impl RecvBatch {
    /// Buffers of `slot` bytes per datagram ([`SLOT`], or [`GRO_SLOT`] with GRO on).
    pub fn new(slot: usize) -> Self {
        Self {
            slot,
            data: vec![0; BATCH * slot],
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![[0; CONTROL]; BATCH],
            meta: Vec::with_capacity(BATCH),
        }
    }

    /// The datagrams of the last [`recv`] call (a GRO buffer split into its datagrams).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Meta)> {
        let slot = self.slot;
        self.meta.iter().enumerate().flat_map(move |(i, m)| {
            let buf = &self.data[i * slot..i * slot + m.len];
            // One datagram (possibly empty) unless GRO coalesced several.
            let stride = if m.stride == 0 || m.stride >= buf.len() {
                buf.len()
            } else {
                m.stride
            };
            let count = if stride == 0 {
                1
            } else {
                buf.len().div_ceil(stride)
            };
            (0..count).map(move |k| {
                let d = &buf[(k * stride).min(buf.len())..((k + 1) * stride).min(buf.len())];
                (d, Meta { len: d.len(), ..*m })
            })
        })
    }
}

/// Turns UDP GRO on (Linux >= 5.0): the kernel may then coalesce equal-sized datagrams of one
/// flow into one buffer (with their size in a control message). False where unsupported.
pub fn enable_gro(socket: &impl AsRawFd) -> bool {
    set_int(socket, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Whether this socket can send with UDP GSO (UDP_SEGMENT, Linux >= 4.18).
pub fn gso_supported(socket: &impl AsRawFd) -> bool {
    set_int(socket, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

fn set_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> bool {
    // SAFETY: valid fd, pointer to a c_int of the stated size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
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
    let slot = batch.slot;
    for i in 0..BATCH {
        iovs[i].iov_base = batch.data[i * slot..].as_mut_ptr().cast();
        iovs[i].iov_len = slot;
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
        // SAFETY: msg_control/msg_controllen describe the control data the kernel wrote.
        let (local, stride) = unsafe { from_control(h) };
        batch.meta.push(Meta {
            len: (hdr.msg_len as usize).min(slot),
            from,
            local,
            truncated: h.msg_flags & libc::MSG_TRUNC != 0,
            stride,
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
    send_segmented(fd, items, 1)
}

/// Like [`send`], but runs of up to `max_segments` consecutive datagrams to the same address,
/// from the same local address, all of one size (the last may be shorter) go out as one UDP GSO
/// message (`max_segments` > 1 only where [`gso_supported`]). Returns how many datagrams the
/// kernel took. A GSO message the device cannot segment fails with EIO (or EINVAL): then send
/// without GSO.
pub fn send_segmented(fd: RawFd, items: &[Outgoing<'_>], max_segments: usize) -> io::Result<usize> {
    let max_segments = max_segments.clamp(1, MAX_SEGMENTS);
    // SAFETY: as in `recv`: zeroed plain data, pointers into locals/`items` that outlive the call.
    let mut iovs: [libc::iovec; BATCH * MAX_SEGMENTS] = unsafe { zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut controls = [[0u8; CONTROL]; BATCH];
    // Datagrams in each message.
    let mut counts = [0usize; BATCH];
    let mut n = 0;
    let mut i = 0;
    let mut next_iov = 0;
    while n < BATCH && i < items.len() {
        let first = &items[i];
        let size = first.data.len();
        let mut count = 1;
        let mut total = size;
        while count < max_segments
            && size > 0
            && i + count < items.len()
            // Every segment but the last is exactly `size` long.
            && items[i + count - 1].data.len() == size
        {
            let next = &items[i + count];
            if next.to != first.to
                || next.from != first.from
                || next.data.is_empty()
                || next.data.len() > size
                || total + next.data.len() > GSO_MAX_BYTES
            {
                break;
            }
            total += next.data.len();
            count += 1;
        }
        for (k, item) in items[i..i + count].iter().enumerate() {
            iovs[next_iov + k].iov_base = item.data.as_ptr() as *mut libc::c_void;
            iovs[next_iov + k].iov_len = item.data.len();
        }
        let namelen = std_to_sockaddr(first.to, &mut names[n]);
        let h = &mut hdrs[n].msg_hdr;
        h.msg_name = (&mut names[n] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = namelen;
        h.msg_iov = &mut iovs[next_iov];
        h.msg_iovlen = count as _;
        if first.from.is_some() || count > 1 {
            h.msg_control = controls[n].as_mut_ptr().cast();
            h.msg_controllen = CONTROL as _;
            // SAFETY: the control buffer is CONTROL bytes, zeroed, room for both messages.
            unsafe {
                write_control(
                    h,
                    first.from,
                    first.to.is_ipv6(),
                    (count > 1).then_some(size),
                )
            };
        }
        counts[n] = count;
        next_iov += count;
        i += count;
        n += 1;
    }
    // SAFETY: n initialised headers.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as _, libc::MSG_DONTWAIT as _) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(counts[..sent as usize].iter().sum())
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
unsafe fn from_control(h: &libc::msghdr) -> (Option<Local>, usize) {
    let mut local = None;
    let mut stride = 0;
    // SAFETY: the CMSG_* walk stays within msg_control/msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(h);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                local = Some(Local {
                    ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))),
                    ifindex: info.ipi_ifindex as u32,
                });
            } else if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                local = Some(Local {
                    ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                    ifindex: info.ipi6_ifindex,
                });
            } else if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                stride = usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(h, cmsg);
        }
    }
    (local, stride)
}

/// # Safety
/// `h.msg_control` must point to [`CONTROL`] zeroed writable bytes, `h.msg_controllen` be
/// [`CONTROL`].
unsafe fn write_control(
    h: &mut libc::msghdr,
    from: Option<Local>,
    ipv6: bool,
    segment: Option<usize>,
) {
    // SAFETY: caller's contract; each message fits (CMSG_SPACE of both <= CONTROL).
    unsafe {
        let mut len = 0;
        let mut cmsg = libc::CMSG_FIRSTHDR(h);
        if let Some(local) = from
            && !cmsg.is_null()
        {
            len += write_pktinfo(cmsg, local, ipv6);
            if len > 0 {
                cmsg = libc::CMSG_NXTHDR(h, cmsg);
            }
        }
        if let Some(size) = segment
            && !cmsg.is_null()
        {
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as _) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, size as u16);
            len += libc::CMSG_SPACE(size_of::<u16>() as _) as usize;
        }
        if len == 0 {
            h.msg_control = std::ptr::null_mut();
        }
        h.msg_controllen = len as _;
    }
}

/// Writes one pktinfo control message at `cmsg`; returns its CMSG_SPACE (0: family mismatch,
/// nothing written: the kernel chooses).
///
/// # Safety
/// `cmsg` must point to a zeroed control buffer with room for one in6_pktinfo message.
unsafe fn write_pktinfo(cmsg: *mut libc::cmsghdr, local: Local, ipv6: bool) -> usize {
    // SAFETY: caller's contract.
    unsafe {
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
                libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as _) as usize
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
                libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as _) as usize
            }
            // Family mismatch: let the kernel choose.
            _ => 0,
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

    /// Runs of equal-sized datagrams leave as one GSO message and, with GRO on, may arrive as
    /// one buffer; either way the receiver sees the same datagrams in the same order.
    #[test]
    fn gso_runs_arrive_as_the_datagrams_they_were() {
        for gro in [false, true] {
            let (server, _) = pair("127.0.0.1:0", "127.0.0.1:0");
            assert!(gso_supported(&server), "UDP GSO (Linux >= 4.18)");
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client.set_nonblocking(true).unwrap();
            if gro {
                assert!(enable_gro(&client), "UDP GRO (Linux >= 5.0)");
            }
            let to = client.local_addr().unwrap();
            // Runs: 20 x 1200 with a shorter tail, 5 x 300, then one of 1200.
            let mut want: Vec<Vec<u8>> = Vec::new();
            for i in 0..20u8 {
                want.push(vec![i; 1200]);
            }
            want.push(vec![20; 500]);
            for i in 21..26u8 {
                want.push(vec![i; 300]);
            }
            want.push(vec![26; 1200]);
            let items: Vec<Outgoing> = want
                .iter()
                .map(|d| Outgoing {
                    to,
                    from: None,
                    data: d,
                })
                .collect();
            let mut sent = 0;
            while sent < items.len() {
                sent += send_segmented(server.as_raw_fd(), &items[sent..], MAX_SEGMENTS).unwrap();
            }
            let mut batch = RecvBatch::new(if gro { GRO_SLOT } else { SLOT });
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut buffers = 0;
            for _ in 0..200 {
                match recv(client.as_raw_fd(), &mut batch) {
                    Ok(n) => {
                        buffers += n;
                        got.extend(batch.iter().map(|(d, _)| d.to_vec()));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if got.len() >= want.len() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, want, "gro={gro}");
            // On loopback a GSO message reaches a GRO socket whole.
            assert_eq!(buffers < want.len(), gro, "{buffers} buffers, gro={gro}");
        }
    }
}
