//! The seam between the session layer and the engines: DTLS (our `crate::dtls` around
//! rtc-dtls), one SCTP association per DTLS session (rtc-sctp) and DCEP channel setup (RFC 8832,
//! with rtc-datachannel's message codec). Above this line the session layer sees peers, channels
//! and whole messages; nothing of rtc-* leaks through, so another engine (str0m, a fixed
//! rtc-sctp, a single-stream mux over TCP) replaces this file and nothing else.
//!
//! Sans-IO like the engines: datagrams and `now` in, transmits and [`TransportEvent`]s out.
//!
//! Channels: the DTLS client opens even SCTP stream IDs and the server odd ones (RFC 8832 §6),
//! so both sides can open channels without colliding. A channel is opened with DCEP
//! DATA_CHANNEL_OPEN (reliable, ordered) and the opener may send right away (ordered delivery
//! puts the OPEN first); the other side answers DATA_CHANNEL_ACK. Closing a channel resets its
//! SCTP stream (RFC 6525), which the peer sees as [`TransportEvent::ChannelClosed`].
//!
//! rtc-sctp 0.21.1 notes: a reset stream is reported as `Event::AssociationLost` with
//! `AssociationError::Reset` and that stream's ID (not the association); an association that
//! closes with no streams open reports nothing, so we check `is_closed` after every step; new
//! incoming streams queue in `stream_queue` until `accept_stream` takes them (we always do).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc_datachannel::message::Message as Dcep;
use rtc_datachannel::message::message_channel_ack::DataChannelAck;
use rtc_datachannel::message::message_channel_open::{ChannelType, DataChannelOpen};
use rtc_sctp::{
    Association, AssociationError, AssociationHandle, ClientConfig, DatagramEvent, Endpoint,
    EndpointConfig, Event, Payload, PayloadProtocolIdentifier, ServerConfig, StreamEvent,
    TransportConfig,
};
use rtc_shared::TransportProtocol;
use rtc_shared::marshal::{Marshal, Unmarshal};
use turn_gw::Transmit;

use crate::dtls::{DtlsEvent, DtlsSessions};
use crate::identity::NodeId;

/// How long SCTP may take to come up once DTLS is.
pub const SCTP_SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// SCTP receive window (per association). The session layer drains every message into
/// per-stream buffers bounded by credit, so this never fills because of a slow consumer; it only
/// bounds what is in flight.
const SCTP_RECEIVE_BUFFER: u32 = 4 * 1024 * 1024;
/// Largest SCTP message: a frame (8-byte header + 16 KiB) with room to spare.
const SCTP_MAX_MESSAGE: u32 = 64 * 1024;

/// What the transport reports, in order.
#[derive(Debug)]
pub enum TransportEvent {
    /// DTLS and SCTP are up with `peer` (its certificate's SHA-256) at `remote`.
    Up {
        remote: SocketAddr,
        peer: NodeId,
        client: bool,
    },
    /// A session that was [`TransportEvent::Up`] ended.
    Down { remote: SocketAddr, reason: String },
    /// A session that never came up (dial or accept) failed.
    Failed {
        remote: SocketAddr,
        client: bool,
        reason: String,
    },
    /// The peer opened `channel` with DCEP.
    ChannelOpened {
        remote: SocketAddr,
        channel: u16,
        label: String,
        protocol: String,
    },
    /// One whole message on `channel`.
    Message {
        remote: SocketAddr,
        channel: u16,
        data: Bytes,
    },
    /// `channel` was closed (reset) by the peer, or by us.
    ChannelClosed { remote: SocketAddr, channel: u16 },
}

struct Link {
    peer: NodeId,
    client: bool,
    endpoint: Endpoint,
    handle: Option<AssociationHandle>,
    assoc: Option<Association>,
    connected: bool,
    /// SCTP must be up by then.
    deadline: Instant,
}

/// DTLS + SCTP + DCEP for every remote of one shared port. See the module documentation.
pub struct Transport {
    dtls: DtlsSessions,
    local: SocketAddr,
    links: HashMap<SocketAddr, Link>,
    events: VecDeque<TransportEvent>,
    /// Links written to since the last [`Transport::flush`].
    dirty: Vec<SocketAddr>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("local", &self.local)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

fn transport_config() -> TransportConfig {
    TransportConfig::default()
        .with_max_receive_buffer_size(SCTP_RECEIVE_BUFFER)
        .with_max_message_size(SCTP_MAX_MESSAGE)
}

impl Transport {
    pub fn new(dtls: DtlsSessions, local: SocketAddr) -> Self {
        Self {
            dtls,
            local,
            links: HashMap::new(),
            events: VecDeque::new(),
            dirty: Vec::new(),
        }
    }

    pub fn dtls_counters(&self) -> Arc<crate::dtls::DtlsCounters> {
        self.dtls.counters()
    }

    pub fn poll_event(&mut self) -> Option<TransportEvent> {
        self.events.pop_front()
    }

    /// Whether a handshake or session with `remote` exists.
    pub fn is_active(&self, remote: SocketAddr) -> bool {
        self.dtls.is_active(remote) || self.links.contains_key(&remote)
    }

    /// Dials `expect` at `remote`; the outcome is an [`TransportEvent::Up`] or
    /// [`TransportEvent::Failed`] for `remote`.
    pub fn dial(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expect: NodeId,
        out: &mut Vec<Transmit>,
    ) -> bool {
        let started = self.dtls.connect(now, remote, expect, out);
        self.dtls_events(now, out);
        started
    }

    /// Feeds one datagram and runs the association it is for: its answers are in `out` and its
    /// events ready on return.
    pub fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Transmit>,
    ) {
        self.datagram_deferred(now, from, datagram, out);
        self.flush(now, out);
    }

    /// Like [`Transport::datagram`], but SCTP's answers (SACKs, data its window now lets out)
    /// and events wait for the next [`Transport::flush`]. The socket loop feeds a whole
    /// `recvmmsg` batch this way and flushes once: one SACK per batch instead of one per second
    /// packet (rtc-sctp acknowledges every other packet when polled after each).
    pub fn datagram_deferred(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Transmit>,
    ) {
        self.dtls.datagram(now, from, datagram, out);
        self.dtls_events(now, out);
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let links = self.links.values().flat_map(|l| {
            let setup = (!l.connected).then_some(l.deadline);
            [setup, l.assoc.as_ref().and_then(Association::poll_timeout)]
        });
        links.chain([self.dtls.poll_timeout()]).flatten().min()
    }

    pub fn timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        self.dtls.timeout(now, out);
        self.dtls_events(now, out);
        let mut due = Vec::new();
        let mut expired = Vec::new();
        for (remote, link) in &self.links {
            if !link.connected && link.deadline <= now {
                expired.push(*remote);
            } else if link
                .assoc
                .as_ref()
                .and_then(Association::poll_timeout)
                .is_some_and(|t| t <= now)
            {
                due.push(*remote);
            }
        }
        for remote in expired {
            self.fail(now, remote, "SCTP did not come up in time".to_owned(), out);
        }
        for remote in due {
            if let Some(assoc) = self.links.get_mut(&remote).and_then(|l| l.assoc.as_mut()) {
                assoc.handle_timeout(now);
            }
            self.pump(now, remote, out);
        }
    }

    /// Opens `channel` (must have this side's parity: see [`Transport::channel_parity`]) with
    /// DCEP. Messages may be sent on it at once.
    pub fn open_channel(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        channel: u16,
        label: &str,
        protocol: &str,
    ) -> Result<(), String> {
        let assoc = self.assoc(remote)?;
        let open = Dcep::DataChannelOpen(DataChannelOpen {
            channel_type: ChannelType::Reliable,
            priority: 0,
            reliability_parameter: 0,
            label: label.as_bytes().to_vec(),
            protocol: protocol.as_bytes().to_vec(),
        })
        .marshal()
        .map_err(|e| e.to_string())?
        .freeze();
        let mut stream = assoc
            .open_stream(channel, PayloadProtocolIdentifier::Binary)
            .map_err(|e| format!("cannot open SCTP stream {channel}: {e}"))?;
        stream
            .write_chunk_with_ppi(now, &open, PayloadProtocolIdentifier::Dcep)
            .map_err(|e| e.to_string())?;
        self.mark(remote);
        Ok(())
    }

    /// Which stream IDs this side opens on the session with `remote`: 0 (even) when we are
    /// the DTLS client, 1 (odd) when the server.
    pub fn channel_parity(&self, remote: SocketAddr) -> Option<u16> {
        self.links.get(&remote).map(|l| u16::from(!l.client))
    }

    /// Whether `channel` exists (open, not yet reset) on the session with `remote`.
    pub fn channel_exists(&mut self, remote: SocketAddr, channel: u16) -> bool {
        self.assoc(remote)
            .is_ok_and(|assoc| assoc.stream(channel).is_ok())
    }

    /// Sends one whole message on `channel`.
    pub fn send(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        channel: u16,
        message: &Bytes,
    ) -> Result<(), String> {
        let assoc = self.assoc(remote)?;
        let mut stream = assoc.stream(channel).map_err(|e| e.to_string())?;
        stream
            .write_chunk_with_ppi(now, message, PayloadProtocolIdentifier::Binary)
            .map_err(|e| e.to_string())?;
        self.mark(remote);
        Ok(())
    }

    /// Closes `channel` (resets its SCTP stream once queued data is out). No event.
    pub fn close_channel(&mut self, now: Instant, remote: SocketAddr, channel: u16) {
        if let Ok(assoc) = self.assoc(remote)
            && let Ok(mut stream) = assoc.stream(channel)
        {
            let _ = stream.close(now);
            self.mark(remote);
        }
    }

    /// Ends the session with `remote` (SCTP abort, DTLS close_notify). No event.
    pub fn close(&mut self, now: Instant, remote: SocketAddr, out: &mut Vec<Transmit>) {
        if let Some(assoc) = self.links.get_mut(&remote).and_then(|l| l.assoc.as_mut()) {
            let _ = assoc.abort();
        }
        self.pump(now, remote, out);
        self.links.remove(&remote);
        self.dtls.close(now, remote, out);
        self.dtls_events(now, out);
    }

    /// Sends what writes and deferred datagrams since the last flush queued.
    pub fn flush(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let dirty = std::mem::take(&mut self.dirty);
        for remote in &dirty {
            self.pump(now, *remote, out);
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn mark(&mut self, remote: SocketAddr) {
        if !self.dirty.contains(&remote) {
            self.dirty.push(remote);
        }
    }

    fn assoc(&mut self, remote: SocketAddr) -> Result<&mut Association, String> {
        self.links
            .get_mut(&remote)
            .filter(|l| l.connected)
            .and_then(|l| l.assoc.as_mut())
            .ok_or_else(|| format!("no session with {remote}"))
    }

    fn dtls_events(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        while let Some(event) = self.dtls.poll_event() {
            match event {
                DtlsEvent::Up {
                    remote,
                    peer,
                    client,
                } => self.dtls_up(now, remote, peer, client, out),
                DtlsEvent::Data { remote, data } => self.sctp_input(now, remote, data),
                DtlsEvent::Closed { remote, reason } => {
                    if let Some(link) = self.links.remove(&remote) {
                        self.events.push_back(if link.connected {
                            TransportEvent::Down { remote, reason }
                        } else {
                            TransportEvent::Failed {
                                remote,
                                client: link.client,
                                reason,
                            }
                        });
                    }
                }
                DtlsEvent::Failed {
                    remote,
                    client,
                    reason,
                } => self.events.push_back(TransportEvent::Failed {
                    remote,
                    client,
                    reason,
                }),
            }
        }
    }

    fn dtls_up(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        peer: NodeId,
        client: bool,
        out: &mut Vec<Transmit>,
    ) {
        let server = Some(Arc::new(ServerConfig::new(transport_config())));
        let mut endpoint = Endpoint::new(
            self.local,
            TransportProtocol::UDP,
            Arc::new(EndpointConfig::default()),
            server,
        );
        let mut link = Link {
            peer,
            client,
            endpoint: Endpoint::new(
                self.local,
                TransportProtocol::UDP,
                Arc::new(EndpointConfig::default()),
                None,
            ),
            handle: None,
            assoc: None,
            connected: false,
            deadline: now + SCTP_SETUP_TIMEOUT,
        };
        // The DTLS client starts SCTP (RFC 8841 lets both; one INIT avoids the collision).
        if client {
            match endpoint.connect(now, ClientConfig::new(transport_config()), remote) {
                Ok((handle, assoc)) => {
                    link.handle = Some(handle);
                    link.assoc = Some(assoc);
                }
                Err(e) => {
                    self.dtls.close(now, remote, out);
                    self.events.push_back(TransportEvent::Failed {
                        remote,
                        client,
                        reason: format!("SCTP: {e}"),
                    });
                    return;
                }
            }
        }
        link.endpoint = endpoint;
        self.links.insert(remote, link);
        self.pump(now, remote, out);
    }

    /// Feeds one SCTP packet to `remote`'s association; the next [`Transport::flush`] runs it.
    fn sctp_input(&mut self, now: Instant, remote: SocketAddr, data: BytesMut) {
        let Some(link) = self.links.get_mut(&remote) else {
            return;
        };
        if let Some((handle, event)) = link.endpoint.handle(now, remote, None, data.freeze()) {
            match event {
                DatagramEvent::NewAssociation(assoc) if link.assoc.is_none() => {
                    link.handle = Some(handle);
                    link.assoc = Some(assoc);
                }
                DatagramEvent::AssociationEvent(event) => {
                    if let Some(assoc) = link.assoc.as_mut() {
                        assoc.handle_event(event);
                    }
                }
                _ => {}
            }
        }
        self.mark(remote);
    }

    /// Runs `remote`'s association: endpoint events, application events, transmits (through
    /// DTLS), and notices its end.
    fn pump(&mut self, now: Instant, remote: SocketAddr, out: &mut Vec<Transmit>) {
        let Some(link) = self.links.get_mut(&remote) else {
            return;
        };
        let Some(assoc) = link.assoc.as_mut() else {
            return;
        };
        while let Some(event) = assoc.poll_endpoint_event() {
            if let Some(handle) = link.handle {
                link.endpoint.handle_event(handle, event);
            }
        }
        let mut readable = Vec::new();
        let mut failed = None;
        while let Some(event) = assoc.poll() {
            match event {
                Event::Connected if !link.connected => {
                    link.connected = true;
                    self.events.push_back(TransportEvent::Up {
                        remote,
                        peer: link.peer,
                        client: link.client,
                    });
                }
                Event::Stream(StreamEvent::Opened { .. }) => {
                    while assoc.accept_stream().is_some() {}
                }
                Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                Event::AssociationLost {
                    reason: AssociationError::Reset,
                    id,
                } if !assoc.is_closed() => {
                    self.events.push_back(TransportEvent::ChannelClosed {
                        remote,
                        channel: id,
                    });
                }
                Event::HandshakeFailed { reason } => {
                    tracing::debug!("SCTP handshake with {remote} failed: {reason}");
                    failed = Some(reason.to_string());
                }
                _ => {}
            }
        }
        for id in readable {
            read_stream(assoc, now, remote, id, &mut self.events);
        }
        // The DATA_CHANNEL_ACKs read_stream wrote, and everything else queued.
        let mut packets = Vec::new();
        while let Some(transmit) = assoc.poll_transmit(now) {
            if let Payload::RawEncode(contents) = transmit.message {
                packets.extend(contents);
            }
        }
        // A server association sits in Closed until the COOKIE ECHO arrives: only an
        // association that was up can close.
        let connected = link.connected;
        let closed = connected && assoc.is_closed();
        for packet in packets {
            if let Err(e) = self.dtls.write(now, remote, &packet, out) {
                tracing::debug!("DTLS write to {remote} failed: {e}");
                break;
            }
        }
        if let Some(reason) = failed
            && !connected
        {
            self.fail(now, remote, format!("SCTP handshake failed: {reason}"), out);
            return;
        }
        if closed {
            let reason = "the SCTP association closed".to_owned();
            self.links.remove(&remote);
            self.dtls.close(now, remote, out);
            self.events
                .push_back(TransportEvent::Down { remote, reason });
        }
    }

    fn fail(&mut self, now: Instant, remote: SocketAddr, reason: String, out: &mut Vec<Transmit>) {
        if let Some(link) = self.links.remove(&remote) {
            self.dtls.close(now, remote, out);
            self.events.push_back(TransportEvent::Failed {
                remote,
                client: link.client,
                reason,
            });
        }
    }
}

/// Reads every whole message of stream `id`: DCEP is answered here, the rest is reported.
fn read_stream(
    assoc: &mut Association,
    now: Instant,
    remote: SocketAddr,
    id: u16,
    events: &mut VecDeque<TransportEvent>,
) {
    loop {
        let Ok(mut stream) = assoc.stream(id) else {
            return;
        };
        let chunks = match stream.read_sctp() {
            Ok(Some(chunks)) => chunks,
            Ok(None) | Err(_) => return,
        };
        // One copy into an exactly-sized buffer (no zeroing first).
        let Ok(buf) = chunks.to_payload(usize::MAX) else {
            continue;
        };
        match chunks.ppi {
            PayloadProtocolIdentifier::Dcep => {
                let mut body = buf.freeze();
                match Dcep::unmarshal(&mut body) {
                    Ok(Dcep::DataChannelOpen(open)) => {
                        if let Ok(ack) = Dcep::DataChannelAck(DataChannelAck {}).marshal() {
                            let _ = stream.write_chunk_with_ppi(
                                now,
                                &ack.freeze(),
                                PayloadProtocolIdentifier::Dcep,
                            );
                        }
                        events.push_back(TransportEvent::ChannelOpened {
                            remote,
                            channel: id,
                            label: String::from_utf8_lossy(&open.label).into_owned(),
                            protocol: String::from_utf8_lossy(&open.protocol).into_owned(),
                        });
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!("DCEP from {remote} on {id}: {e}"),
                }
            }
            PayloadProtocolIdentifier::Binary | PayloadProtocolIdentifier::String => {
                events.push_back(TransportEvent::Message {
                    remote,
                    channel: id,
                    data: buf.freeze(),
                });
            }
            PayloadProtocolIdentifier::BinaryEmpty | PayloadProtocolIdentifier::StringEmpty => {
                events.push_back(TransportEvent::Message {
                    remote,
                    channel: id,
                    data: Bytes::new(),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtls::{Admission, DtlsConfig};
    use rtc_dtls::crypto::Certificate;
    use rtc_dtls::crypto_provider::providers::RingCrypto;

    fn node(port: u16) -> (Transport, NodeId, SocketAddr) {
        let cert =
            Certificate::generate_self_signed(vec!["meshgate".to_owned()], &RingCrypto).unwrap();
        let id = NodeId::of_certificate(cert.certificate[0].as_ref());
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dtls =
            DtlsSessions::new(cert, addr, id, Admission::default(), DtlsConfig::default()).unwrap();
        (Transport::new(dtls, addr), id, addr)
    }

    /// Two transports joined in memory, with a virtual clock.
    struct Pair {
        a: Transport,
        b: Transport,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
        now: Instant,
        a_events: Vec<TransportEvent>,
        b_events: Vec<TransportEvent>,
    }

    impl Pair {
        fn new() -> (Self, NodeId, NodeId) {
            let (a, a_id, a_addr) = node(1000);
            let (b, b_id, b_addr) = node(2000);
            let pair = Self {
                a,
                b,
                a_addr,
                b_addr,
                now: Instant::now(),
                a_events: Vec::new(),
                b_events: Vec::new(),
            };
            (pair, a_id, b_id)
        }

        /// Moves datagrams both ways until quiet, firing due timers; bounded.
        fn run(&mut self, out_a: Vec<Transmit>) {
            let mut to_b = out_a;
            let mut to_a: Vec<Transmit> = Vec::new();
            for _ in 0..10_000 {
                let mut next_a = Vec::new();
                let mut next_b = Vec::new();
                self.a.flush(self.now, &mut next_b);
                self.b.flush(self.now, &mut next_a);
                for t in to_b.drain(..) {
                    assert_eq!(t.to, self.b_addr);
                    self.b.datagram(self.now, self.a_addr, &t.data, &mut next_a);
                }
                for t in to_a.drain(..) {
                    assert_eq!(t.to, self.a_addr);
                    self.a.datagram(self.now, self.b_addr, &t.data, &mut next_b);
                }
                while let Some(e) = self.a.poll_event() {
                    self.a_events.push(e);
                }
                while let Some(e) = self.b.poll_event() {
                    self.b_events.push(e);
                }
                if next_a.is_empty() && next_b.is_empty() {
                    return;
                }
                to_a = next_a;
                to_b = next_b;
            }
            panic!("still moving after 10000 rounds");
        }
    }

    #[test]
    fn dial_open_channel_exchange_messages_close() {
        let (mut p, a_id, b_id) = Pair::new();
        let mut out = Vec::new();
        assert!(p.a.dial(p.now, p.b_addr, b_id, &mut out));
        p.run(out);
        assert!(matches!(
            p.a_events.as_slice(),
            [TransportEvent::Up { peer, client: true, .. }] if *peer == b_id
        ));
        assert!(matches!(
            p.b_events.as_slice(),
            [TransportEvent::Up { peer, client: false, .. }] if *peer == a_id
        ));
        p.a_events.clear();
        p.b_events.clear();
        assert_eq!(p.a.channel_parity(p.b_addr), Some(0));
        assert_eq!(p.b.channel_parity(p.a_addr), Some(1));

        // A channel with DCEP, then whole messages both ways.
        p.a.open_channel(p.now, p.b_addr, 2, "tcp", "meshgate/1")
            .unwrap();
        let big = Bytes::from(vec![9u8; 16_392]);
        p.a.send(p.now, p.b_addr, 2, &Bytes::from_static(b"first"))
            .unwrap();
        p.a.send(p.now, p.b_addr, 2, &big).unwrap();
        p.run(Vec::new());
        match p.b_events.as_slice() {
            [
                TransportEvent::ChannelOpened {
                    channel: 2,
                    label,
                    protocol,
                    ..
                },
                TransportEvent::Message { data: first, .. },
                TransportEvent::Message { data: second, .. },
            ] => {
                assert_eq!((label.as_str(), protocol.as_str()), ("tcp", "meshgate/1"));
                assert_eq!(&first[..], b"first");
                assert_eq!(second, &big);
            }
            other => panic!("{other:?}"),
        }
        p.b_events.clear();
        p.b.send(p.now, p.a_addr, 2, &Bytes::from_static(b"reply"))
            .unwrap();
        p.run(Vec::new());
        assert!(matches!(
            p.a_events.as_slice(),
            [TransportEvent::Message { channel: 2, data, .. }] if &data[..] == b"reply"
        ));
        p.a_events.clear();

        // Closing the channel resets it at the peer; closing the session ends it there.
        p.a.close_channel(p.now, p.b_addr, 2);
        p.run(Vec::new());
        assert!(
            p.b_events
                .iter()
                .any(|e| matches!(e, TransportEvent::ChannelClosed { channel: 2, .. })),
            "{:?}",
            p.b_events
        );
        let mut out = Vec::new();
        p.a.close(p.now, p.b_addr, &mut out);
        p.run(out);
        assert!(
            p.b_events
                .iter()
                .any(|e| matches!(e, TransportEvent::Down { .. })),
            "{:?}",
            p.b_events
        );
        assert!(!p.a.is_active(p.b_addr));
        assert!(!p.b.is_active(p.a_addr));
    }

    #[test]
    fn a_dial_to_the_wrong_node_fails_on_both_sides() {
        let (mut p, _, _) = Pair::new();
        let (_, other, _) = node(3000);
        let mut out = Vec::new();
        assert!(p.a.dial(p.now, p.b_addr, other, &mut out));
        p.run(out);
        assert!(
            matches!(
                p.a_events.as_slice(),
                [TransportEvent::Failed { client: true, reason, .. }] if reason.contains("that we dialled")
            ),
            "{:?}",
            p.a_events
        );
        assert!(
            !p.b_events
                .iter()
                .any(|e| matches!(e, TransportEvent::Up { .. })),
            "{:?}",
            p.b_events
        );
    }

    #[test]
    fn simultaneous_dials_make_one_session() {
        let (mut p, a_id, b_id) = Pair::new();
        let mut to_b = Vec::new();
        let mut to_a = Vec::new();
        assert!(p.a.dial(p.now, p.b_addr, b_id, &mut to_b));
        assert!(p.b.dial(p.now, p.a_addr, a_id, &mut to_a));
        // Cross the ClientHellos, then run.
        for t in to_a {
            p.a.datagram(p.now, p.b_addr, &t.data, &mut to_b);
        }
        p.run(to_b);
        let ups = |events: &[TransportEvent]| {
            events
                .iter()
                .filter_map(|e| match e {
                    TransportEvent::Up { client, .. } => Some(*client),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let (a_up, b_up) = (ups(&p.a_events), ups(&p.b_events));
        assert_eq!(a_up.len(), 1, "{:?}", p.a_events);
        assert_eq!(b_up.len(), 1, "{:?}", p.b_events);
        // The lower ID dialled.
        assert_eq!(a_up[0], a_id < b_id);
        assert_eq!(b_up[0], b_id < a_id);
    }
}
