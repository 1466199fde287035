//! DTLS on the shared port (DESIGN.md §3, §5): one rtc-dtls endpoint keyed by remote address,
//! with the node's identity certificate, driven sans-IO (datagrams and `now` in, transmits and
//! [`DtlsEvent`]s out). It both accepts (a ClientHello from anywhere) and dials (a peer whose node
//! ID we know); either way both sides present their certificate and the session is pinned to the
//! SHA-256 of the peer's (its node ID). The session layer (`crate::session`) sits on top.
//!
//! What this adds around the endpoint, because rtc-dtls 0.21 does none of it:
//! - state for a remote address is made only by a ClientHello or by our own dial (the endpoint
//!   makes a connection for any datagram from anywhere);
//! - every handshake has a deadline (a server waiting for the client's next flight never gives
//!   up on its own: rtc-dtls re-arms that timer forever, and rtc#46 reports a deadlock), a byte
//!   budget (the endpoint queues early epoch-1 records without bound and buffers up to 2 MB of
//!   fragments per connection), and the number of half-open handshakes is capped;
//! - a dial checks the server's certificate against the node ID it dials, inside the handshake
//!   (the client aborts with an alert); the server requires a client certificate and refuses
//!   its own ID and, with an `[admission] allow` list, any ID not on it;
//! - simultaneous dials between two nodes share one 4-tuple (both dial from their shared port to
//!   the other's): the node with the lower ID keeps its dial and ignores the other's ClientHello,
//!   the higher one drops its dial and answers. Deterministic, so one session results;
//! - a session's state is removed when it ends, so a peer that reconnects from the same address
//!   gets a fresh one. A ClientHello from the address of an established session means the peer
//!   restarted: the old session is closed and the handshake served. A new ClientHello (another
//!   client random) from an address with a handshake in progress restarts it.
//!
//! rtc-dtls 0.21.1 sharp edges met here (each handled below or pinned by a test):
//! - Bug: `HandshakeMessageClientHello::unmarshal` reads the session ID's length but not its
//!   bytes, so a ClientHello with a session ID (a resuming client) misparses and is never
//!   answered; the handshake just times out. Test `rtc_dtls_bug_a_client_hello_with_...`.
//! - `Endpoint::read` makes a connection for any datagram from a new address; a failed `read`
//!   leaves the dead connection in its map (the caller must `stop` it); `stop` always queues a
//!   close_notify, even for a handshake that never completed (we discard it).
//! - A datagram whose records do not frame fails `read`, and an epoch-0 record with an unknown
//!   content type draws a fatal alert (RFC 6347 §4.1.2.7: discard): we filter both first.
//! - After its HelloVerifyRequest the server waits forever (flight 2 never retransmits and its
//!   timer re-arms); other flights retransmit at a constant 1 s (no RFC 6347 §4.2.4.1 backoff)
//!   and fail after 7 retries, ~8 s.
//! - HelloVerifyRequest is stateful: the first ClientHello already costs a connection and an
//!   ECDH key pair, so the cookie does not shield us from spoofed sources. The cap bounds
//!   memory, but a spoofed flood can hold every slot; a stateless cookie in front would fix it.
//! - Before completion, early epoch-1 records are queued without bound and fragments are
//!   buffered up to 2 MB per connection: hence the byte budget.
//! - No SRTP profiles configured + a ClientHello offering use_srtp (browsers) = fatal alert.
//! - Diagnostics go through `log`, which our tracing subscriber does not collect.
//! - DTLS 1.2 only. A DTLS 1.3 ClientHello (legacy_version 1.2, supported_versions, key_share)
//!   gets a DTLS 1.2 ServerHello: unknown extensions are skipped (test
//!   `a_dtls13_client_hello_is_answered_with_dtls12`); a client that also offers 1.2 falls back.

use portable_atomic::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc_dtls::cipher_suite::CipherSuiteId;
use rtc_dtls::config::{
    ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, VerifyPeerCertificateFn,
};
use rtc_dtls::crypto::Certificate;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use turn_gw::Transmit;

use crate::identity::NodeId;
use turn_gw::counters::bump;

/// How long a handshake may take from its first ClientHello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; a ClientHello beyond this is dropped and counted.
pub const MAX_HALF_OPEN: usize = 256;
/// Bytes a remote may send before its handshake completes. A real one is a few KiB (ClientHello
/// twice, a certificate, key exchange, Finished); the budget bounds what a half-open handshake
/// can make the engine buffer.
pub const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;
/// Events kept when nobody takes them (unit tests that only look at counters).
const MAX_EVENTS: usize = 4096;

/// DTLS record header: type(1) version(2) epoch(2) sequence(6) length(2).
const RECORD_HEADER: usize = 13;
/// Handshake header: type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3).
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;

/// Limits of the engine; [`Default`] gives the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DtlsConfig {
    pub handshake_timeout: Duration,
    pub max_half_open: usize,
    pub max_handshake_bytes: usize,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_half_open: MAX_HALF_OPEN,
            max_handshake_bytes: MAX_HANDSHAKE_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DtlsError {
    #[error(
        "DTLS: rtc-dtls cannot serve with the node certificate ({0}); the identity should be an \
         ECDSA P-256 key and certificate: move the identity directory away to make a new one"
    )]
    Config(String),
}

turn_gw::counter_set! {
    /// Monotonic counters (and gauges, `dtls_half_open` and `dtls_sessions`) of the DTLS engine.
    pub struct DtlsCounters {
        started => "dtls_handshakes_started", "DTLS handshakes begun (a ClientHello, or our dial)";
        dials => "dtls_dials", "DTLS handshakes we began as the client";
        completed => "dtls_handshakes_completed", "DTLS handshakes completed";
        failed => "dtls_handshakes_failed", "DTLS handshakes that failed (alert, bad message, peer closed, byte budget spent, certificate refused)";
        timed_out => "dtls_handshakes_timed_out", "DTLS handshakes abandoned at their deadline or when retransmissions ran out";
        restarted => "dtls_handshakes_restarted", "DTLS handshakes replaced by a new ClientHello from the same address";
        refused => "dtls_handshakes_refused", "ClientHellos dropped because the half-open handshake cap was reached";
        refused_cert => "dtls_refused_certificate", "DTLS handshakes refused for the peer's certificate (not the node dialled, our own, or not on the allow list)";
        simultaneous => "dtls_simultaneous_dials", "ClientHellos that met our own dial to the same address (resolved by node ID)";
        closed => "dtls_sessions_closed", "established DTLS sessions that ended";
        drop_no_session => "dtls_drop_no_session", "DTLS datagrams dropped: no session for their address and not a ClientHello";
        drop_malformed => "dtls_drop_malformed", "DTLS datagrams dropped: records that do not frame or have an unknown content type";
        half_open => "dtls_half_open", "DTLS handshakes in progress now (a gauge)";
        sessions => "dtls_sessions", "DTLS sessions established now (a gauge)";
    }
}

/// What the engine reports, in order.
#[derive(Debug)]
pub enum DtlsEvent {
    /// A handshake completed; `peer` is the node ID the certificate proves, and `client` says
    /// whether we dialled.
    Up {
        remote: SocketAddr,
        peer: NodeId,
        client: bool,
    },
    /// Application data (SCTP packets) from an established session.
    Data { remote: SocketAddr, data: BytesMut },
    /// An established session ended.
    Closed { remote: SocketAddr, reason: String },
    /// A handshake with `remote` failed or timed out (ours, or theirs).
    Failed {
        remote: SocketAddr,
        client: bool,
        reason: String,
    },
}

/// What we keep per remote address besides the endpoint's connection.
#[derive(Debug)]
struct HalfOpen {
    deadline: Instant,
    /// From the first ClientHello; a different one means a new client on this address.
    client_random: Option<[u8; 32]>,
    bytes: usize,
    /// We are the client, dialling this node ID.
    dialing: Option<NodeId>,
}

/// Why a handshake is abandoned.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    Failed,
    TimedOut,
    Restarted,
}

/// Who may complete a handshake with us as the server (the acceptor's admission, applied to
/// the ID the client's certificate proves).
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Empty: any node (the mesh check follows in the session layer).
    pub allow: Vec<NodeId>,
}

/// The DTLS side of the shared port. See the module documentation.
pub struct DtlsSessions {
    endpoint: Endpoint,
    local_id: NodeId,
    certificate: Certificate,
    half_open: HashMap<SocketAddr, HalfOpen>,
    established: HashSet<SocketAddr>,
    config: DtlsConfig,
    counters: Arc<DtlsCounters>,
    events: VecDeque<DtlsEvent>,
}

impl fmt::Debug for DtlsSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsSessions")
            .field("half_open", &self.half_open.len())
            .field("established", &self.established.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn builder(certificate: Certificate) -> ConfigBuilder {
    ConfigBuilder::default()
        .with_crypto_provider(Arc::new(RingProvider::new()))
        .with_certificates(vec![certificate])
        // DESIGN.md §5: ECDHE-ECDSA with AES-GCM; rtc-dtls has the 128-bit one.
        .with_cipher_suites(vec![CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256])
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        // The pin is the certificate's SHA-256 (the node ID), never a CA chain: the callbacks
        // below check it, and skipping the chain also avoids the throwaway rcgen root the
        // builder would otherwise make.
        .with_insecure_skip_verify(true)
}

impl DtlsSessions {
    /// An engine presenting `certificate` (the node identity, whose ID is `local_id`) on the
    /// port bound at `local`.
    pub fn new(
        certificate: Certificate,
        local: SocketAddr,
        local_id: NodeId,
        admission: Admission,
        config: DtlsConfig,
    ) -> Result<Self, DtlsError> {
        let counters = Arc::new(DtlsCounters::default());
        let refused = Arc::clone(&counters);
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            let id = peer_id(certs)?;
            let why = if id == local_id {
                Some("it is this node's own certificate")
            } else if !admission.allow.is_empty() && !admission.allow.contains(&id) {
                Some("it is not on the [admission] allow list")
            } else {
                None
            };
            match why {
                Some(why) => {
                    bump(&refused.refused_cert);
                    tracing::warn!("DTLS: refused node {id}: {why}");
                    Err(rtc_shared::error::Error::OtherDtlsErr(format!(
                        "node {id} refused: {why}"
                    )))
                }
                None => Ok(()),
            }
        });
        let server = builder(certificate.clone())
            // Mutual authentication: a client without a certificate has no node ID.
            // RequireAnyClientCert checks its CertificateVerify; the ID is its SHA-256.
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_verify_peer_certificate(Some(verify))
            // Browsers offer use_srtp even for data channels only; with no profiles configured
            // rtc-dtls answers such a ClientHello with a fatal alert. We never use SRTP keys.
            .with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ])
            .build(false, None)
            .map_err(|e| DtlsError::Config(e.to_string()))?;
        // The client side must build too: fail at start, not at the first dial.
        builder(certificate.clone())
            .build(true, None)
            .map_err(|e| DtlsError::Config(e.to_string()))?;
        Ok(Self {
            endpoint: Endpoint::new(local, TransportProtocol::UDP, Some(Arc::new(server))),
            local_id,
            certificate,
            half_open: HashMap::new(),
            established: HashSet::new(),
            config,
            counters,
            events: VecDeque::new(),
        })
    }

    pub fn counters(&self) -> Arc<DtlsCounters> {
        Arc::clone(&self.counters)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// Handshakes in progress.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Whether a handshake with `remote` is in progress or a session is up.
    pub fn is_active(&self, remote: SocketAddr) -> bool {
        self.half_open.contains_key(&remote) || self.established.contains(&remote)
    }

    /// Dials `expect` at `remote`. The handshake fails unless `remote` proves `expect`.
    /// False if a handshake or session with `remote` exists already, or the half-open cap is
    /// reached (then a [`DtlsEvent::Failed`] says so).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        expect: NodeId,
        out: &mut Vec<Transmit>,
    ) -> bool {
        if self.is_active(remote) {
            return false;
        }
        let refused = Arc::clone(&self.counters);
        let verify: VerifyPeerCertificateFn = Arc::new(move |certs, _| {
            let id = peer_id(certs)?;
            if id == expect {
                Ok(())
            } else {
                bump(&refused.refused_cert);
                Err(rtc_shared::error::Error::OtherDtlsErr(format!(
                    "the peer presented node {id}, not {expect} that we dialled"
                )))
            }
        });
        let config = match builder(self.certificate.clone())
            .with_verify_peer_certificate(Some(verify))
            .build(true, Some(remote))
        {
            Ok(config) => Arc::new(config),
            Err(e) => {
                self.push_event(DtlsEvent::Failed {
                    remote,
                    client: true,
                    reason: e.to_string(),
                });
                return false;
            }
        };
        if !self.begin(now, remote, Some(expect)) {
            self.push_event(DtlsEvent::Failed {
                remote,
                client: true,
                reason: "too many handshakes in progress".to_owned(),
            });
            return false;
        }
        bump(&self.counters.dials);
        let result = self.endpoint.connect(now, remote, config, None);
        self.drain(out);
        if let Err(e) = result {
            self.abandon(now, remote, Abandon::Failed, &e, out);
            return false;
        }
        true
    }

    /// Sends application data (an SCTP packet) on the session with `remote`.
    pub fn write(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), String> {
        if !self.established.contains(&remote) {
            return Err(format!("no DTLS session with {remote}"));
        }
        let result = self.endpoint.write(now, remote, data);
        self.drain(out);
        result.map_err(|e| e.to_string())
    }

    /// Ends the session or handshake with `remote`: a session gets a close_notify. No event.
    pub fn close(&mut self, now: Instant, remote: SocketAddr, out: &mut Vec<Transmit>) {
        if self.established.remove(&remote) {
            self.drain(out);
            let _ = self.endpoint.stop(now, remote);
            self.drain(out);
            bump(&self.counters.closed);
            self.set_gauge();
        } else if self.half_open.contains_key(&remote) {
            self.abandon_quietly(now, remote, out);
        }
    }

    fn push_event(&mut self, event: DtlsEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn set_gauge(&self) {
        self.counters
            .half_open
            .store(self.half_open.len() as u64, Ordering::Relaxed);
        self.counters
            .sessions
            .store(self.established.len() as u64, Ordering::Relaxed);
    }

    fn drain(&mut self, out: &mut Vec<Transmit>) {
        while let Some(t) = self.endpoint.poll_transmit() {
            out.push(Transmit {
                to: t.transport.peer_addr,
                // Takes the buffer over (no copy: rtc-dtls builds each datagram afresh).
                data: Vec::from(t.message),
            });
        }
    }

    fn begin(&mut self, now: Instant, from: SocketAddr, dialing: Option<NodeId>) -> bool {
        if self.half_open.len() >= self.config.max_half_open {
            bump(&self.counters.refused);
            tracing::debug!(
                "DTLS: handshake with {from} refused: {} handshakes in progress",
                self.half_open.len()
            );
            return false;
        }
        self.half_open.insert(
            from,
            HalfOpen {
                deadline: now + self.config.handshake_timeout,
                client_random: None,
                bytes: 0,
                dialing,
            },
        );
        bump(&self.counters.started);
        self.set_gauge();
        true
    }

    /// Removes a handshake without a trace on the wire or in the events (a simultaneous dial
    /// that yields, or the caller's own close).
    fn abandon_quietly(&mut self, now: Instant, remote: SocketAddr, out: &mut Vec<Transmit>) {
        self.drain(out);
        let _ = self.endpoint.stop(now, remote);
        while self.endpoint.poll_transmit().is_some() {}
        if self.half_open.remove(&remote).is_some() {
            self.set_gauge();
        }
    }

    /// Ends `remote`'s handshake without completing it. Whatever rtc-dtls queued before (a
    /// fatal alert) goes out; the close_notify `Endpoint::stop` queues does not: there is no
    /// session to close.
    fn abandon(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        why: Abandon,
        detail: &dyn fmt::Display,
        out: &mut Vec<Transmit>,
    ) {
        self.drain(out);
        let _ = self.endpoint.stop(now, remote);
        while self.endpoint.poll_transmit().is_some() {}
        let Some(state) = self.half_open.remove(&remote) else {
            return;
        };
        let counter = match why {
            Abandon::Failed => &self.counters.failed,
            Abandon::TimedOut => &self.counters.timed_out,
            Abandon::Restarted => &self.counters.restarted,
        };
        bump(counter);
        self.set_gauge();
        tracing::debug!("DTLS handshake with {remote} {why:?}: {detail}");
        if !matches!(why, Abandon::Restarted) {
            self.push_event(DtlsEvent::Failed {
                remote,
                client: state.dialing.is_some(),
                reason: match why {
                    Abandon::TimedOut => format!("DTLS handshake timed out ({detail})"),
                    _ => format!("DTLS handshake failed: {detail}"),
                },
            });
        }
    }

    /// An established session ended for `reason` (already told to the peer, or not tellable).
    fn lost(&mut self, now: Instant, remote: SocketAddr, reason: String, out: &mut Vec<Transmit>) {
        self.drain(out);
        let _ = self.endpoint.stop(now, remote);
        while self.endpoint.poll_transmit().is_some() {}
        if self.established.remove(&remote) {
            bump(&self.counters.closed);
            self.set_gauge();
            self.push_event(DtlsEvent::Closed { remote, reason });
        }
    }

    fn complete(&mut self, now: Instant, remote: SocketAddr, out: &mut Vec<Transmit>) {
        let peer = self
            .endpoint
            .get_connection_state(remote)
            .and_then(|state| state.peer_certificates.first())
            .map(|der| NodeId::of_certificate(der));
        self.drain(out);
        let Some(peer) = peer else {
            self.abandon(now, remote, Abandon::Failed, &"no peer certificate", out);
            return;
        };
        let Some(state) = self.half_open.remove(&remote) else {
            return;
        };
        let client = state.dialing.is_some();
        self.established.insert(remote);
        bump(&self.counters.completed);
        self.set_gauge();
        tracing::info!(
            "DTLS with {remote} up, peer {} ({})",
            peer.short(),
            if client { "we dialled" } else { "it dialled" }
        );
        tracing::debug!("DTLS peer {remote} is node {peer}");
        self.push_event(DtlsEvent::Up {
            remote,
            peer,
            client,
        });
    }

    /// Feeds one datagram (first byte 20-63) from `from`.
    pub fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Transmit>,
    ) {
        if !well_framed(datagram) {
            bump(&self.counters.drop_malformed);
            return;
        }
        let hello = client_hello(datagram);
        let random = hello.and_then(|h| h.random);
        if self.established.contains(&from) {
            if random.is_none() {
                self.read(now, from, datagram, out);
                return;
            }
            // A fresh ClientHello where a session is up: the peer restarted on the same port.
            self.lost(
                now,
                from,
                "the peer started a new handshake (it restarted)".to_owned(),
                out,
            );
        }
        if let (Some(state), Some(random)) = (self.half_open.get(&from), random) {
            if let Some(expect) = state.dialing {
                // Both dial at once over one 4-tuple: the lower node ID keeps its dial.
                bump(&self.counters.simultaneous);
                if self.local_id < expect {
                    return;
                }
                tracing::debug!("DTLS: {from} dials us while we dial it; answering theirs");
                self.abandon_quietly(now, from, out);
            } else if state.client_random.is_some_and(|r| r != random) {
                self.abandon(now, from, Abandon::Restarted, &"a new ClientHello", out);
            }
        }
        if !self.half_open.contains_key(&from) {
            if hello.is_none() {
                bump(&self.counters.drop_no_session);
                return;
            }
            if !self.begin(now, from, None) {
                return;
            }
        }
        let budget = self.config.max_handshake_bytes;
        let Some(state) = self.half_open.get_mut(&from) else {
            return;
        };
        if state.client_random.is_none() && state.dialing.is_none() {
            state.client_random = random;
        }
        state.bytes = state.bytes.saturating_add(datagram.len());
        if state.bytes > budget {
            let detail = format!("sent more than {budget} bytes without completing");
            self.abandon(now, from, Abandon::Failed, &detail, out);
            return;
        }
        self.read(now, from, datagram, out);
    }

    fn read(&mut self, now: Instant, from: SocketAddr, datagram: &[u8], out: &mut Vec<Transmit>) {
        let result = self
            .endpoint
            .read(now, from, None, BytesMut::from(datagram));
        self.drain(out);
        let events = match result {
            Ok(events) => events,
            Err(e) => {
                if self.established.contains(&from) {
                    self.lost(now, from, format!("DTLS error: {e}"), out);
                } else {
                    self.abandon(now, from, Abandon::Failed, &e, out);
                }
                return;
            }
        };
        for event in events {
            match event {
                EndpointEvent::HandshakeComplete => self.complete(now, from, out),
                EndpointEvent::ApplicationData(data) if self.established.contains(&from) => {
                    self.push_event(DtlsEvent::Data { remote: from, data });
                }
                EndpointEvent::PeerClosed => {
                    if self.established.contains(&from) {
                        self.lost(now, from, "closed by the peer".to_owned(), out);
                    } else {
                        self.abandon(now, from, Abandon::Failed, &"closed by the peer", out);
                    }
                }
                _ => {}
            }
        }
    }

    /// The next instant [`Self::timeout`] must be called, if any.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.half_open
            .iter()
            .flat_map(|(remote, h)| [Some(h.deadline), self.endpoint.poll_timeout(remote)])
            .flatten()
            .min()
    }

    pub fn timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        let mut expired = Vec::new();
        let mut due = Vec::new();
        for (remote, h) in &self.half_open {
            if h.deadline <= now {
                expired.push(*remote);
            } else if self.endpoint.poll_timeout(remote).is_some_and(|t| t <= now) {
                due.push(*remote);
            }
        }
        let limit = self.config.handshake_timeout;
        for remote in expired {
            let detail = format!("not complete after {limit:?}");
            self.abandon(now, remote, Abandon::TimedOut, &detail, out);
        }
        for remote in due {
            let result = self.endpoint.handle_timeout(remote, now);
            self.drain(out);
            if let Err(e) = result {
                // The retransmission budget is spent: the peer stopped answering.
                self.abandon(now, remote, Abandon::TimedOut, &e, out);
            } else if self
                .endpoint
                .poll_timeout(&remote)
                .is_some_and(|t| t <= now)
            {
                // The timer did not move: calling again would spin the socket loop.
                let detail = "rtc-dtls left its retransmit timer in the past";
                self.abandon(now, remote, Abandon::Failed, &detail, out);
            }
        }
    }
}

/// The node ID of the first certificate a peer presented.
fn peer_id(certs: &[Vec<u8>]) -> Result<NodeId, rtc_shared::error::Error> {
    certs
        .first()
        .map(|der| NodeId::of_certificate(der))
        .ok_or_else(|| rtc_shared::error::Error::OtherDtlsErr("no certificate".to_owned()))
}

/// Whether `datagram` is a sequence of whole DTLSPlaintext/DTLSCiphertext records with the four
/// content types DTLS 1.2 knows (RFC 6347 §4.1). rtc-dtls fails the whole connection on a
/// datagram that does not frame; RFC 6347 §4.1.2.7 says to discard it, which this lets us do.
pub fn well_framed(datagram: &[u8]) -> bool {
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER) else {
            return false;
        };
        if !(20..=23).contains(&header[0]) {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        // rtc-dtls also refuses an empty record.
        if len == 0 {
            return false;
        }
        match rest.get(RECORD_HEADER + len..) {
            Some(tail) => rest = tail,
            None => return false,
        }
    }
    !datagram.is_empty()
}

/// A ClientHello seen in the first record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// The client random, when this fragment starts the message.
    pub random: Option<[u8; 32]>,
}

/// The ClientHello (epoch-0 handshake record, handshake type 1) that starts `datagram`, if any.
pub fn client_hello(datagram: &[u8]) -> Option<ClientHello> {
    let header = datagram.get(..RECORD_HEADER + HANDSHAKE_HEADER)?;
    let epoch = u16::from_be_bytes([header[3], header[4]]);
    if header[0] != CONTENT_HANDSHAKE || epoch != 0 || header[13] != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let fragment_offset = u32::from_be_bytes([0, header[19], header[20], header[21]]);
    let record_len = usize::from(u16::from_be_bytes([header[11], header[12]]));
    // The body starts with client_version(2) then random(32).
    let random_at = RECORD_HEADER + HANDSHAKE_HEADER + 2;
    let random = (fragment_offset == 0 && record_len >= HANDSHAKE_HEADER + 2 + 32)
        .then(|| datagram.get(random_at..random_at + 32))
        .flatten()
        .and_then(|r| <[u8; 32]>::try_from(r).ok());
    Some(ClientHello { random })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_dtls::config::HandshakeConfig;
    use rtc_dtls::crypto_provider::providers::RingCrypto;

    const SERVER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 3478);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn certificate() -> Certificate {
        Certificate::generate_self_signed(vec!["meshgate".to_owned()], &RingCrypto).unwrap()
    }

    fn server(config: DtlsConfig) -> DtlsSessions {
        server_with(config, Admission::default())
    }

    fn server_with(config: DtlsConfig, admission: Admission) -> DtlsSessions {
        let cert = certificate();
        let id = NodeId::of_certificate(cert.certificate[0].as_ref());
        DtlsSessions::new(cert, SERVER, id, admission, config).unwrap()
    }

    /// The next session that came up, skipping other events.
    fn poll_up(s: &mut DtlsSessions) -> Option<(SocketAddr, NodeId)> {
        while let Some(event) = s.poll_event() {
            if let DtlsEvent::Up { remote, peer, .. } = event {
                return Some((remote, peer));
            }
        }
        None
    }

    fn client_config(cert: Option<Certificate>, srtp: bool) -> Arc<HandshakeConfig> {
        let mut builder = ConfigBuilder::default()
            .with_crypto_provider(Arc::new(RingProvider::new()))
            .with_insecure_skip_verify(true);
        if let Some(cert) = cert {
            builder = builder.with_certificates(vec![cert]);
        }
        if srtp {
            builder = builder.with_srtp_protection_profiles(vec![
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
            ]);
        }
        Arc::new(builder.build(true, Some(SERVER)).unwrap())
    }

    fn snapshot(s: &DtlsSessions) -> HashMap<&'static str, u64> {
        s.counters()
            .snapshot()
            .into_iter()
            .map(|(name, _, v)| (name, v))
            .collect()
    }

    /// One rtc-dtls client endpoint and the engine under test, joined in memory with a virtual
    /// clock (quinn-proto's `Pair`).
    struct Pair {
        server: DtlsSessions,
        client: Endpoint,
        client_addr: SocketAddr,
        now: Instant,
        client_complete: bool,
        client_closed: bool,
        /// Datagrams from the client that were not delivered (`drop_to_server`).
        dropped: usize,
        drop_to_server: bool,
    }

    impl Pair {
        fn new(server: DtlsSessions) -> Self {
            Self {
                server,
                client: Endpoint::new(addr(5000), TransportProtocol::UDP, None),
                client_addr: addr(5000),
                now: Instant::now(),
                client_complete: false,
                client_closed: false,
                dropped: 0,
                drop_to_server: false,
            }
        }

        /// A new client (new endpoint: new randoms, no state) on `client_addr`.
        fn connect(&mut self, config: Arc<HandshakeConfig>) {
            self.client = Endpoint::new(self.client_addr, TransportProtocol::UDP, None);
            self.client_complete = false;
            self.client_closed = false;
            self.client.connect(self.now, SERVER, config, None).unwrap();
        }

        /// Moves every queued datagram once each way; whether anything moved.
        fn step(&mut self) -> bool {
            let mut moved = false;
            let mut out = Vec::new();
            while let Some(t) = self.client.poll_transmit() {
                moved = true;
                if self.drop_to_server {
                    self.dropped += 1;
                } else {
                    self.server
                        .datagram(self.now, self.client_addr, &t.message, &mut out);
                }
            }
            for t in out {
                moved = true;
                assert_eq!(t.to, self.client_addr);
                // After close_notify the client has no connection and refuses more: fine.
                if let Ok(events) =
                    self.client
                        .read(self.now, SERVER, None, BytesMut::from(&t.data[..]))
                {
                    for event in events {
                        match event {
                            EndpointEvent::HandshakeComplete => self.client_complete = true,
                            EndpointEvent::PeerClosed => self.client_closed = true,
                            _ => {}
                        }
                    }
                }
            }
            moved
        }

        /// Runs until nothing moves, without advancing time; fails on livelock.
        fn drive(&mut self) {
            for _ in 0..64 {
                if !self.step() {
                    return;
                }
            }
            panic!("livelock: datagrams still moving after 64 rounds");
        }

        /// Advances the clock to the next timer of either side and fires it; false if none.
        fn advance(&mut self) -> bool {
            let next = [
                self.server.poll_timeout(),
                self.client.poll_timeout(&SERVER),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else {
                return false;
            };
            assert!(next >= self.now, "a timer in the past");
            self.now = next;
            let mut out = Vec::new();
            self.server.timeout(self.now, &mut out);
            for t in out {
                let _ = self
                    .client
                    .read(self.now, SERVER, None, BytesMut::from(&t.data[..]));
            }
            let _ = self.client.handle_timeout(SERVER, self.now);
            true
        }
    }

    #[test]
    fn handshake_completes_and_the_server_learns_the_client_node_id() {
        let client_cert = certificate();
        let client_id = NodeId::of_certificate(client_cert.certificate[0].as_ref());
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(Some(client_cert), false));
        pair.drive();
        assert!(pair.client_complete, "the client did not complete");
        assert!(!pair.client_closed, "the session must stay up");
        assert_eq!(
            poll_up(&mut pair.server),
            Some((pair.client_addr, client_id))
        );
        assert_eq!(pair.server.half_open(), 0);
        assert!(pair.server.is_active(pair.client_addr));
        assert_eq!(pair.server.poll_timeout(), None);
        let c = snapshot(&pair.server);
        assert_eq!(c["dtls_handshakes_started"], 1);
        assert_eq!(c["dtls_handshakes_completed"], 1);
        assert_eq!(c["dtls_handshakes_failed"], 0);
        assert_eq!(c["dtls_half_open"], 0);
        assert_eq!(c["dtls_sessions"], 1);
    }

    #[test]
    fn a_client_without_a_certificate_is_refused() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(None, false));
        pair.drive();
        assert!(!pair.client_complete);
        assert_eq!(poll_up(&mut pair.server), None);
        assert_eq!(snapshot(&pair.server)["dtls_handshakes_failed"], 1);
        assert!(!pair.server.is_active(pair.client_addr));
    }

    #[test]
    fn a_client_not_on_the_allow_list_is_refused_and_one_on_it_admitted() {
        let listed = certificate();
        let listed_id = NodeId::of_certificate(listed.certificate[0].as_ref());
        let admission = Admission {
            allow: vec![listed_id],
        };
        let mut pair = Pair::new(server_with(DtlsConfig::default(), admission));
        pair.connect(client_config(Some(certificate()), false));
        pair.drive();
        assert!(!pair.client_complete);
        assert_eq!(poll_up(&mut pair.server), None);
        assert_eq!(snapshot(&pair.server)["dtls_refused_certificate"], 1);

        pair.connect(client_config(Some(listed), false));
        pair.drive();
        assert!(pair.client_complete);
        assert_eq!(
            poll_up(&mut pair.server),
            Some((pair.client_addr, listed_id))
        );
    }

    #[test]
    fn a_client_hello_on_an_established_session_is_a_restart() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(Some(certificate()), false));
        pair.drive();
        assert!(poll_up(&mut pair.server).is_some());
        // Same address, new client: the old session ends and the new one comes up.
        pair.connect(client_config(Some(certificate()), false));
        pair.drive();
        assert!(pair.client_complete);
        let mut closed = false;
        let mut up = false;
        while let Some(event) = pair.server.poll_event() {
            match event {
                DtlsEvent::Closed { .. } => closed = true,
                DtlsEvent::Up { .. } => up = true,
                _ => {}
            }
        }
        assert!(closed && up);
        assert_eq!(snapshot(&pair.server)["dtls_sessions"], 1);
    }

    #[test]
    fn a_browser_like_client_offering_use_srtp_completes() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(Some(certificate()), true));
        pair.drive();
        assert!(pair.client_complete);
        assert_eq!(snapshot(&pair.server)["dtls_handshakes_completed"], 1);
    }

    /// A plaintext record of `content_type` with `body`, epoch 0.
    fn record(content_type: u8, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&seq.to_be_bytes()[2..]);
        r.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    /// A handshake message (unfragmented) of `typ`.
    fn handshake(typ: u8, message_seq: u16, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut h = vec![typ, len[1], len[2], len[3]];
        h.extend_from_slice(&message_seq.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, len[1], len[2], len[3]]);
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn only_a_client_hello_makes_state() {
        let mut s = server(DtlsConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        let not_hellos = [
            record(23, 1, 1, b"application data"),
            record(21, 0, 1, &[2, 40]),
            record(20, 0, 1, &[1]),
            record(22, 0, 1, &handshake(2, 0, &[0; 40])), // ServerHello
            record(22, 0, 1, &handshake(11, 1, &[0; 10])), // Certificate
            record(22, 0, 1, &handshake(16, 2, &[0; 33])), // ClientKeyExchange
            record(22, 1, 1, &handshake(1, 0, &[0; 40])), // a "ClientHello" in epoch 1
        ];
        for d in &not_hellos {
            s.datagram(now, addr(6000), d, &mut out);
        }
        let malformed: [&[u8]; 5] = [
            &[22],
            &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1],
            &record(22, 0, 0, &[])[..],
            &record(63, 0, 0, &[1, 2, 3])[..],
            &[record(22, 0, 0, &handshake(1, 0, &[0; 40])), vec![22, 0]].concat()[..],
        ];
        for d in malformed {
            s.datagram(now, addr(6001), d, &mut out);
        }
        assert!(out.is_empty(), "answered something: {out:?}");
        assert_eq!(s.half_open(), 0);
        assert_eq!(s.poll_timeout(), None);
        let c = snapshot(&s);
        assert_eq!(c["dtls_drop_no_session"], not_hellos.len() as u64);
        assert_eq!(c["dtls_drop_malformed"], 5);
        assert_eq!(c["dtls_handshakes_started"], 0);
    }

    #[test]
    fn client_hello_is_recognised_with_its_random() {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[9; 32]);
        body.extend_from_slice(&[0, 0]);
        let d = record(22, 0, 0, &handshake(1, 0, &body));
        assert!(well_framed(&d));
        assert_eq!(
            client_hello(&d),
            Some(ClientHello {
                random: Some([9; 32])
            })
        );
        // A later fragment: still a ClientHello, but its random is elsewhere.
        let mut frag = d.clone();
        frag[RECORD_HEADER + 8] = 1;
        assert_eq!(client_hello(&frag), Some(ClientHello { random: None }));
        assert_eq!(client_hello(&d[..RECORD_HEADER + 11]), None);
        assert_eq!(
            client_hello(&record(22, 0, 0, &handshake(3, 0, &body))),
            None
        );
    }

    #[test]
    fn a_handshake_that_stalls_after_hello_verify_request_times_out_and_is_removed() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        let start = pair.now;
        pair.connect(client_config(None, false));
        pair.step(); // ClientHello in, HelloVerifyRequest out
        pair.drop_to_server = true; // and the client is never heard again
        assert_eq!(pair.server.half_open(), 1);
        let mut rounds = 0;
        while pair.server.half_open() > 0 {
            pair.step();
            assert!(pair.advance(), "no timer while a handshake is open");
            rounds += 1;
            assert!(rounds < 100, "the handshake never timed out");
        }
        assert_eq!(pair.now - start, HANDSHAKE_TIMEOUT);
        assert_eq!(pair.server.poll_timeout(), None);
        let c = snapshot(&pair.server);
        assert_eq!(c["dtls_handshakes_timed_out"], 1);
        assert_eq!(c["dtls_half_open"], 0);
    }

    #[test]
    fn a_handshake_that_stalls_after_server_hello_times_out_and_is_removed() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(None, false));
        pair.step(); // ClientHello -> HelloVerifyRequest
        pair.step(); // ClientHello with cookie -> ServerHello .. ServerHelloDone
        pair.drop_to_server = true;
        let mut rounds = 0;
        let mut server_sent = 0;
        while pair.server.half_open() > 0 {
            let mut out = Vec::new();
            pair.server.timeout(pair.now, &mut out);
            server_sent += out.len();
            pair.now = pair.server.poll_timeout().unwrap_or(pair.now);
            rounds += 1;
            assert!(rounds < 100, "the handshake never ended");
        }
        assert!(server_sent > 0, "the server never retransmitted its flight");
        let c = snapshot(&pair.server);
        assert_eq!(c["dtls_handshakes_timed_out"], 1, "{c:?}");
        assert_eq!(pair.server.poll_timeout(), None);
    }

    #[test]
    fn a_reconnect_from_the_same_address_gets_a_fresh_session() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        for round in 1..=3 {
            pair.connect(client_config(Some(certificate()), false));
            pair.drive();
            assert!(pair.client_complete, "round {round} did not complete");
            assert!(poll_up(&mut pair.server).is_some());
            assert_eq!(snapshot(&pair.server)["dtls_handshakes_completed"], round);
        }
        assert_eq!(pair.server.half_open(), 0);
    }

    #[test]
    fn a_new_client_hello_replaces_a_dead_handshake_on_the_same_address() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(Some(certificate()), false));
        pair.step();
        pair.step(); // the server now waits for flight 5 that never comes
        assert_eq!(pair.server.half_open(), 1);
        // The client restarts on the same port, long before the deadline.
        pair.connect(client_config(Some(certificate()), false));
        pair.drive();
        assert!(pair.client_complete);
        let c = snapshot(&pair.server);
        assert_eq!(c["dtls_handshakes_restarted"], 1);
        assert_eq!(c["dtls_handshakes_completed"], 1);
        assert_eq!(pair.server.half_open(), 0);
    }

    #[test]
    fn half_open_handshakes_are_capped() {
        let config = DtlsConfig {
            max_half_open: 4,
            ..DtlsConfig::default()
        };
        let mut s = server(config);
        let now = Instant::now();
        let mut hellos = Vec::new();
        for port in 0..6 {
            let mut c = Endpoint::new(addr(7000 + port), TransportProtocol::UDP, None);
            c.connect(now, SERVER, client_config(None, false), None)
                .unwrap();
            hellos.push(c.poll_transmit().unwrap().message);
        }
        let mut answered = 0;
        for (port, hello) in (0..).zip(&hellos) {
            let mut out = Vec::new();
            s.datagram(now, addr(7000 + port), hello, &mut out);
            answered += usize::from(!out.is_empty());
        }
        assert_eq!(answered, 4);
        assert_eq!(s.half_open(), 4);
        let c = snapshot(&s);
        assert_eq!(c["dtls_handshakes_refused"], 2);
        assert_eq!(c["dtls_half_open"], 4);
        // Room again once they time out.
        let mut out = Vec::new();
        s.timeout(now + HANDSHAKE_TIMEOUT, &mut out);
        assert_eq!(s.half_open(), 0);
        s.datagram(now + HANDSHAKE_TIMEOUT, addr(7005), &hellos[5], &mut out);
        assert_eq!(s.half_open(), 1);
    }

    #[test]
    fn a_half_open_handshake_that_sends_too_much_is_dropped() {
        let mut pair = Pair::new(server(DtlsConfig::default()));
        pair.connect(client_config(None, false));
        pair.step();
        // Early epoch-1 records: rtc-dtls would queue every one of them.
        let junk = record(23, 1, 5, &[0; 1000]);
        let mut out = Vec::new();
        for _ in 0..(MAX_HANDSHAKE_BYTES / junk.len() + 2) {
            pair.server
                .datagram(pair.now, pair.client_addr, &junk, &mut out);
        }
        assert_eq!(pair.server.half_open(), 0);
        assert_eq!(snapshot(&pair.server)["dtls_handshakes_failed"], 1);
    }

    /// A ClientHello as a DTLS 1.3 client (Chromium) sends it: legacy_version 1.2,
    /// supported_versions {1.3, 1.2}, a key_share, a TLS 1.3 suite next to a 1.2 one.
    fn dtls13_client_hello(message_seq: u16, cookie: &[u8], session_id: &[u8]) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7; 32]);
        body.push(u8::try_from(session_id.len()).unwrap());
        body.extend_from_slice(session_id);
        body.push(u8::try_from(cookie.len()).unwrap());
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b]); // TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES128-GCM
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext = Vec::new();
        ext.extend_from_slice(&[0x00, 0x0a, 0, 6, 0, 4, 0x00, 0x1d, 0x00, 0x17]); // groups
        ext.extend_from_slice(&[0x00, 0x0b, 0, 2, 1, 0]); // point formats
        ext.extend_from_slice(&[0x00, 0x0d, 0, 4, 0, 2, 0x04, 0x03]); // ecdsa_secp256r1_sha256
        ext.extend_from_slice(&[0x00, 0x17, 0, 0]); // extended_master_secret
        ext.extend_from_slice(&[0x00, 0x2b, 0, 5, 4, 0xfe, 0xfc, 0xfe, 0xfd]); // supported_versions
        ext.extend_from_slice(&[0x00, 0x33, 0, 38, 0, 36, 0x00, 0x1d, 0, 32]); // key_share x25519
        ext.extend_from_slice(&[0x55; 32]);
        ext.extend_from_slice(&[0x00, 0x2d, 0, 2, 1, 1]); // psk_key_exchange_modes
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
        record(
            22,
            0,
            u64::from(message_seq),
            &handshake(1, message_seq, &body),
        )
    }

    #[test]
    fn a_dtls13_client_hello_is_answered_with_dtls12() {
        let mut s = server(DtlsConfig::default());
        let now = Instant::now();
        let from = addr(8000);
        let mut out = Vec::new();
        s.datagram(now, from, &dtls13_client_hello(0, &[], &[]), &mut out);
        let hvr = &out.first().expect("no HelloVerifyRequest").data;
        assert_eq!(hvr[RECORD_HEADER], 3, "not a HelloVerifyRequest");
        let at = RECORD_HEADER + HANDSHAKE_HEADER + 2;
        let cookie = hvr[at + 1..at + 1 + usize::from(hvr[at])].to_vec();
        out.clear();
        s.datagram(now, from, &dtls13_client_hello(1, &cookie, &[]), &mut out);
        let hello = &out.first().expect("no ServerHello").data;
        assert_eq!(hello[RECORD_HEADER], 2, "not a ServerHello");
        let body = RECORD_HEADER + HANDSHAKE_HEADER;
        assert_eq!(
            hello[body..body + 2],
            [0xfe, 0xfd],
            "server_version is not DTLS 1.2"
        );
        assert_eq!(
            hello[body + 35..body + 37],
            [0xc0, 0x2b],
            "not ECDHE-ECDSA-AES128-GCM"
        );
        assert_eq!(s.half_open(), 1);
    }

    /// rtc-dtls 0.21.1 bug: `HandshakeMessageClientHello::unmarshal` reads the session ID's
    /// length and not its bytes, so a ClientHello with a session ID (a client resuming, e.g.
    /// `openssl s_client -reconnect`) misparses and is never answered. The engine stays safe:
    /// the handshake just times out. If this starts failing, rtc-dtls fixed it.
    #[test]
    fn rtc_dtls_bug_a_client_hello_with_a_session_id_is_not_answered() {
        let mut s = server(DtlsConfig::default());
        let now = Instant::now();
        let mut out = Vec::new();
        s.datagram(
            now,
            addr(8001),
            &dtls13_client_hello(0, &[], &[0xab; 32]),
            &mut out,
        );
        assert!(
            out.is_empty(),
            "rtc-dtls now parses session IDs: update the note"
        );
        assert_eq!(s.half_open(), 1);
        s.timeout(now + HANDSHAKE_TIMEOUT, &mut out);
        assert_eq!(s.half_open(), 0);
    }

    proptest::proptest! {
        #[test]
        fn random_datagrams_never_panic_and_state_stays_bounded(
            datagrams in proptest::collection::vec(
                (0u16..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                1..40,
            ),
            hello_first in proptest::prelude::any::<bool>(),
        ) {
            let config = DtlsConfig { max_half_open: 2, ..DtlsConfig::default() };
            let mut s = server(config);
            let now = Instant::now();
            let mut out = Vec::new();
            if hello_first {
                s.datagram(now, addr(9000), &dtls13_client_hello(0, &[], &[]), &mut out);
            }
            for (i, (port, mut d)) in datagrams.into_iter().enumerate() {
                // Make many of them look like DTLS records so they reach rtc-dtls.
                if d.len() > RECORD_HEADER && i % 2 == 0 {
                    d[0] = 20 + d[0] % 4;
                    let len = u16::try_from(d.len() - RECORD_HEADER).unwrap().to_be_bytes();
                    d[11] = len[0];
                    d[12] = len[1];
                }
                s.datagram(now, addr(9000 + port), &d, &mut out);
                proptest::prop_assert!(s.half_open() <= 2);
            }
            s.timeout(now + HANDSHAKE_TIMEOUT, &mut out);
            proptest::prop_assert_eq!(s.half_open(), 0);
        }
    }
}
