//! turn-gw: one UDP port for STUN, TURN and DTLS (DESIGN.md §4).
//!
//! One task per bound socket reads every ready datagram, classifies it by its first byte
//! ([`demux::classify`], RFC 7983/9443) inline, feeds the STUN responder, the TURN server or the
//! plugged-in [`Sessions`] engine, and then drains every pending transmit before it sleeps
//! again. This crate knows nothing of the agent: DTLS goes to whatever implements [`Sessions`].

pub mod auth;
pub mod binding;
pub mod cidr;
pub mod counters;
pub mod demux;
pub mod ice;
pub mod peers;
pub mod policy;
pub mod socket;
pub mod stun;
pub mod turn;
pub mod udp;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

pub use auth::Credentials;
pub use cidr::{Cidr, ParseCidrError};
pub use counters::Counters;
pub use demux::{Drop, Kind, classify};
pub use ice::IceLite;
pub use policy::RelayPolicy;
pub use socket::{BufferSizes, SOCKET_BUFFER};
pub use turn::{TurnConfig, TurnServer};

/// Largest UDP payload we read: anything longer is truncated by the kernel and then dropped
/// by the parsers as malformed.
pub const MAX_DATAGRAM: usize = 65_535;
/// Datagrams read per wake-up before timers and transmits get their turn.
const BATCH: usize = 256;

/// A datagram to send from the shared port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// The DTLS side of the shared port, called in the socket's own task for every DTLS datagram
/// (first byte 20-63) and at the deadlines it asks for. Time is always an argument.
pub trait Sessions: Send {
    fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Transmit>,
    );
    /// The next instant [`Sessions::timeout`] must be called, if any.
    fn poll_timeout(&mut self) -> Option<Instant>;
    fn timeout(&mut self, now: Instant, out: &mut Vec<Transmit>);
    /// Called after each batch of datagrams (one `recvmmsg`) was fed to
    /// [`Sessions::datagram`]: the engine may defer per-datagram work (acknowledgements,
    /// transmits) to here, so that a batch draws one answer instead of one per datagram.
    fn flush(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let _ = (now, out);
    }
    /// Ready when the engine has work from outside the socket (an application wrote, a TCP
    /// connection was accepted): the loop then calls [`Sessions::wake`]. The engine registers
    /// `cx`'s waker with whatever it waits on, like any `poll` function.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }
    /// Does the work [`Sessions::poll_wake`] announced.
    fn wake(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let _ = (now, out);
    }

    /// The port is stopping: say goodbye to every peer (the transmits are sent before
    /// [`SharedPort::run`] returns), so that they need not wait for a timeout to notice.
    fn shutdown(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let _ = (now, out);
    }
}

/// One bound shared port, its handlers and its counters.
pub struct SharedPort {
    socket: Arc<tokio::net::UdpSocket>,
    local_addr: SocketAddr,
    buffers: BufferSizes,
    counters: Arc<Counters>,
    turn: Option<TurnServer>,
    sessions: Option<Box<dyn Sessions>>,
    ice: Option<IceLite>,
    /// UDP GRO is on: reads take [`udp::GRO_SLOT`]-byte buffers.
    gro: bool,
    /// Send runs of equal-sized datagrams with UDP GSO (off after the first EIO).
    gso: bool,
    /// The local address each DTLS peer last wrote to: transmits the sessions make outside a
    /// datagram's handling (timers, wake-ups, batch flushes) leave from it, so that a peer of a
    /// multi-homed host bound to the unspecified address hears us from the address it talks to.
    peer_locals: HashMap<SocketAddr, udp::Local>,
}

/// The most entries of [`SharedPort::peer_locals`]; when full it is cleared and learnt again.
const PEER_LOCALS_MAX: usize = 4096;

/// Extends `srcs` to `out`'s length with each new transmit's remembered local address.
fn stamp(
    peer_locals: &HashMap<SocketAddr, udp::Local>,
    out: &[Transmit],
    srcs: &mut Vec<Option<udp::Local>>,
) {
    let known = srcs.len().min(out.len());
    srcs.truncate(known);
    srcs.extend(out[known..].iter().map(|t| peer_locals.get(&t.to).copied()));
}

impl std::fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPort")
            .field("local_addr", &self.local_addr)
            .field("turn", &self.turn)
            .field("sessions", &self.sessions.is_some())
            .finish_non_exhaustive()
    }
}

impl SharedPort {
    /// Binds `addr`. Must be called inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let (socket, buffers) = socket::bind_udp(addr)?;
        udp::enable_pktinfo(&socket, addr.is_ipv6())?;
        let gro = udp::enable_gro(&socket);
        let gso = udp::gso_supported(&socket);
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let local_addr = socket.local_addr()?;
        Ok(Self {
            gro,
            gso,
            peer_locals: HashMap::new(),
            socket: Arc::new(socket),
            local_addr,
            buffers,
            counters: Arc::new(Counters::default()),
            turn: None,
            sessions: None,
            ice: None,
        })
    }

    /// Serves TURN on this port.
    pub fn enable_turn(&mut self, config: TurnConfig) {
        self.turn = Some(TurnServer::new(
            config,
            Arc::clone(&self.socket),
            Arc::clone(&self.counters),
        ));
    }

    /// Answers ICE connectivity checks (Binding requests with USERNAME) for the credentials
    /// registered in `ice`.
    pub fn enable_ice(&mut self, ice: IceLite) {
        self.ice = Some(ice);
    }

    /// Hands DTLS datagrams to `sessions`.
    pub fn set_sessions(&mut self, sessions: Box<dyn Sessions>) {
        self.sessions = Some(sessions);
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

    /// Serves until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let mut rx = udp::RecvBatch::new(if self.gro { udp::GRO_SLOT } else { udp::SLOT });
        // Transmits, and for each the local address it must leave from (the one its request
        // came to; `None` lets the kernel choose).
        let mut out = Vec::new();
        let mut srcs: Vec<Option<udp::Local>> = Vec::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let deadline = self.sessions.as_mut().and_then(|s| s.poll_timeout());
            let session_timer = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let sessions = &mut self.sessions;
            let app = std::future::poll_fn(|cx| match sessions {
                Some(s) => s.poll_wake(cx),
                None => Poll::Pending,
            });
            tokio::select! {
                () = &mut shutdown => {
                    if let Some(s) = &mut self.sessions {
                        s.shutdown(Instant::now(), &mut out);
                        stamp(&self.peer_locals, &out, &mut srcs);
                        flush(&self.socket, &self.counters, &mut out, &mut srcs, &mut self.gso)
                            .await;
                    }
                    return Ok(());
                }
                () = app => {
                    if let Some(s) = &mut self.sessions {
                        s.wake(Instant::now(), &mut out);
                    }
                }
                ready = self.socket.readable() => {
                    ready?;
                    self.drain(&mut rx, &mut out, &mut srcs)?;
                }
                _ = sweep.tick() => {
                    if let Some(turn) = &mut self.turn {
                        turn.expire(Instant::now());
                    }
                }
                () = session_timer => {
                    if let Some(s) = &mut self.sessions {
                        s.timeout(Instant::now(), &mut out);
                    }
                }
            }
            stamp(&self.peer_locals, &out, &mut srcs);
            flush(
                &self.socket,
                &self.counters,
                &mut out,
                &mut srcs,
                &mut self.gso,
            )
            .await;
        }
    }

    /// Reads every ready datagram (up to [`BATCH`], `recvmmsg` by `recvmmsg`) and handles each
    /// inline.
    fn drain(
        &mut self,
        rx: &mut udp::RecvBatch,
        out: &mut Vec<Transmit>,
        srcs: &mut Vec<Option<udp::Local>>,
    ) -> io::Result<()> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let fd = self.socket.as_raw_fd();
        for _ in 0..BATCH / udp::BATCH {
            match self
                .socket
                .try_io(tokio::io::Interest::READABLE, || udp::recv(fd, rx))
            {
                Ok(_) => {
                    for (datagram, meta) in rx.iter() {
                        if meta.truncated {
                            Counters::add(&self.counters.drop_oversize, 1);
                            continue;
                        }
                        self.on_datagram(now, wall, datagram, meta.from, meta.local, out);
                        srcs.resize(out.len(), meta.local);
                    }
                    if let Some(s) = &mut self.sessions {
                        s.flush(now, out);
                        stamp(&self.peer_locals, out, srcs);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier sends surface here on Linux; they say nothing about
                // this socket.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_datagram(
        &mut self,
        now: Instant,
        wall: SystemTime,
        datagram: &[u8],
        from: SocketAddr,
        local: Option<udp::Local>,
        out: &mut Vec<Transmit>,
    ) {
        Counters::add(&self.counters.rx_bytes, datagram.len() as u64);
        let class = classify(datagram);
        self.counters.count(class);
        match class {
            Ok(Kind::Stun) => self.on_stun(now, wall, datagram, from, local, out),
            Ok(Kind::ChannelData) => match &self.turn {
                Some(turn) => turn.channel_data(now, from, datagram),
                None => Counters::add(&self.counters.drop_unhandled, 1),
            },
            Ok(Kind::Dtls) => match &mut self.sessions {
                Some(s) => {
                    if let Some(local) = local
                        && self.peer_locals.get(&from) != Some(&local)
                    {
                        if self.peer_locals.len() >= PEER_LOCALS_MAX {
                            self.peer_locals.clear();
                        }
                        self.peer_locals.insert(from, local);
                    }
                    s.datagram(now, from, datagram, out);
                }
                None => Counters::add(&self.counters.drop_unhandled, 1),
            },
            Err(_) => {}
        }
    }

    fn on_stun(
        &mut self,
        now: Instant,
        wall: SystemTime,
        datagram: &[u8],
        from: SocketAddr,
        local: Option<udp::Local>,
        out: &mut Vec<Transmit>,
    ) {
        let msg = match stun::Message::parse(datagram) {
            Ok(msg) => msg,
            Err(stun::StunError::Classic) => {
                match binding::respond_classic(datagram, from) {
                    Some(data) => {
                        Counters::add(&self.counters.stun_binding, 1);
                        out.push(Transmit { to: from, data });
                    }
                    None => Counters::add(&self.counters.drop_malformed, 1),
                }
                return;
            }
            Err(_) => {
                Counters::add(&self.counters.drop_malformed, 1);
                return;
            }
        };
        let reply = match (msg.method, msg.class) {
            (stun::BINDING, stun::Class::Request) if !msg.contains(stun::USERNAME) => {
                Counters::add(&self.counters.stun_binding, 1);
                Some(binding::respond(&msg, from))
            }
            // An ICE connectivity check.
            (stun::BINDING, stun::Class::Request) => match &self.ice {
                Some(ice) => match ice.check(now, &msg, from) {
                    ice::Check::Answer(data) => {
                        Counters::add(&self.counters.ice_checks, 1);
                        Some(data)
                    }
                    ice::Check::Refuse(data) => {
                        Counters::add(&self.counters.ice_refused, 1);
                        Some(data)
                    }
                },
                None => {
                    Counters::add(&self.counters.drop_unhandled, 1);
                    None
                }
            },
            (stun::BINDING, _) => None,
            _ => match &mut self.turn {
                Some(turn) => {
                    let server = SocketAddr::new(
                        local.map_or(self.local_addr.ip(), |l| l.ip),
                        self.local_addr.port(),
                    );
                    turn.handle(now, wall, from, server, local, &msg)
                }
                None if msg.class == stun::Class::Request => {
                    Counters::add(&self.counters.stun_refused, 1);
                    Some(
                        stun::Builder::response(&msg, stun::Class::Error)
                            .error(400, "Bad Request: TURN is not enabled on this node")
                            .fingerprint()
                            .finish(),
                    )
                }
                None => None,
            },
        };
        if let Some(data) = reply {
            out.push(Transmit { to: from, data });
        }
    }
}

/// Sends every pending transmit, `sendmmsg` by `sendmmsg`, each from its local address; a full
/// send buffer is waited on, not dropped.
async fn flush(
    socket: &tokio::net::UdpSocket,
    counters: &Counters,
    out: &mut Vec<Transmit>,
    srcs: &mut Vec<Option<udp::Local>>,
    gso: &mut bool,
) {
    let fd = socket.as_raw_fd();
    let mut done = 0;
    while done < out.len() {
        let segments = if *gso { udp::MAX_SEGMENTS } else { 1 };
        let batch: Vec<udp::Outgoing<'_>> = out[done..]
            .iter()
            .zip(&srcs[done..])
            .take(udp::BATCH * segments)
            .map(|(t, &from)| udp::Outgoing {
                to: t.to,
                from,
                data: &t.data,
            })
            .collect();
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            udp::send_segmented(fd, &batch, segments)
        }) {
            Ok(sent) => {
                for t in &batch[..sent.min(batch.len())] {
                    Counters::add(&counters.tx_datagrams, 1);
                    Counters::add(&counters.tx_bytes, t.data.len() as u64);
                }
                done += sent.max(1);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            // The device cannot segment (no checksum offload) or refuses the segment size:
            // send one datagram per message from now on.
            Err(e) if *gso && matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                tracing::debug!("UDP GSO send failed ({e}): GSO off for this socket");
                *gso = false;
            }
            Err(e) => {
                // sendmmsg reports the first datagram's error (e.g. no route): skip that one.
                Counters::add(&counters.tx_errors, 1);
                tracing::trace!(to = %batch[0].to, "send failed: {e}");
                done += 1;
            }
        }
    }
    out.clear();
    srcs.clear();
}
