//! The signaling listener (config `signal`, DESIGN.md §8, §11): `POST /v1/dial[?to=]` answers a
//! WebRTC offer in one round trip, `GET /` serves the browser page, `GET /v1/info` says who this
//! gateway is. And, on every node, the answering of offers a gateway relays ([`Dialer`]).
//!
//! A dial: rate limit (per source address) -> bearer token ([`jwt`], aud = this node) -> the
//! offer ([`sdp`]) -> the token's `sub` must be the offer's fingerprint -> admission -> fresh
//! ICE credentials registered with the shared ports' ICE-lite -> the answer, whose candidates
//! are the shared port on the address the caller reached us on. No trickle, no state kept but
//! the ICE entry: the DTLS handshake that follows proves the certificate, and the ICE-lite
//! binding makes the session from that address present exactly the offer's fingerprint.
//!
//! With `?to=<node id>` the gateway hands the offer to that node over their session (stream
//! target [`DIAL_TARGET`]); the node answers with its own credentials and host candidates, and
//! the gateway adds a relay candidate on itself ([`relay`]) before returning it.
//!
//! Every answer carries `Access-Control-Allow-Origin: *` (a page from another origin on the LAN
//! may call us; the token, not the origin, is the authentication) and `Date`, so a caller can
//! learn this node's clock, which on a router without a battery may be far off.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use turn_gw::IceLite;

use super::{jwt, relay, sdp};
use crate::api::http::{self, Request, Response};
use crate::config::Role;
use crate::identity::NodeId;
use crate::session::{DIAL_MESSAGE_MAX, DIAL_TARGET, Dialer, Mesh};
use turn_gw::counters::bump;

/// The page, served at `/`.
const PAGE: &str = include_str!("../../static/index.html");
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Head and body must arrive within this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A relayed dial (open the stream, the node's answer) must finish within this.
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Offers larger than this are refused (413); real ones are 1-4 KiB.
const MAX_BODY: usize = 64 * 1024;
/// Rate limit per source address: a bucket of [`BURST`] requests refilled at one per second.
const BURST: f64 = 5.0;
const PER_SECOND: f64 = 1.0;
/// Source addresses the limiter remembers; beyond that, full buckets are forgotten first.
const LIMITER_MAX: usize = 4096;
/// Host candidates a node offers at most.
const MAX_HOST_CANDIDATES: usize = 8;

turn_gw::counter_set! {
    /// Signaling counters.
    pub struct SignalCounters {
        requests => "signal_requests", "HTTP requests to the signaling listener";
        answered => "signal_dials_answered", "offers answered (200), here or relayed";
        relayed => "signal_dials_relayed", "offers relayed to a node (?to=) and answered";
        bad_request => "signal_refused_bad_request", "dials refused: malformed offer, token or request (400, 411, 413)";
        unauthorized => "signal_refused_unauthorized", "dials refused: no, bad or expired token, or sub not the offer's fingerprint (401)";
        forbidden => "signal_refused_admission", "dials refused by admission (403)";
        not_found => "signal_refused_unknown_target", "dials to a node this gateway has no session with (404)";
        rate_limited => "signal_refused_rate_limited", "requests refused by the per-source rate limit (429)";
        failed => "signal_failed", "dials that failed here or at the node (502, 503, 504)";
    }
}

/// A token bucket per source address.
#[derive(Debug, Default)]
struct Limiter {
    buckets: std::collections::HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.buckets.len() >= LIMITER_MAX && !self.buckets.contains_key(&ip) {
            // Forget the sources whose bucket has refilled: they lose nothing.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * PER_SECOND < BURST
            });
            if self.buckets.len() >= LIMITER_MAX {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((BURST, now));
        *tokens =
            (*tokens + now.saturating_duration_since(*at).as_secs_f64() * PER_SECOND).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What a refused dial answers: status, reason.
type Refused = (&'static str, String);

/// The node's signaling: shared by its HTTP listener (gateways) and the relayed dials it
/// answers (every node).
pub struct Signaling {
    pub id: NodeId,
    pub mesh_name: String,
    pub role: Role,
    pub ice: IceLite,
    /// The shared ports' bound addresses.
    pub ports: Vec<SocketAddr>,
    /// `[admission] allow` (empty: anyone).
    pub allow: Vec<NodeId>,
    pub clock_skew_s: u64,
    pub relay_ports: (u16, u16),
    pub mesh: Arc<Mesh>,
    pub counters: Arc<SignalCounters>,
    limiter: Mutex<Limiter>,
    relays: Arc<Semaphore>,
}

impl std::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signaling")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// ICE ufrag/pwd characters (RFC 8839 ice-char).
fn ice_string(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = vec![0u8; len];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    bytes
        .iter()
        .map(|b| char::from(CHARS[usize::from(b % 64)]))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 9110 §5.6.7 IMF-fixdate.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

impl Signaling {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        mesh_name: String,
        role: Role,
        ice: IceLite,
        ports: Vec<SocketAddr>,
        allow: Vec<NodeId>,
        clock_skew_s: u64,
        relay_ports: (u16, u16),
        mesh: Arc<Mesh>,
    ) -> Self {
        Self {
            id,
            mesh_name,
            role,
            ice,
            ports,
            allow,
            clock_skew_s,
            relay_ports,
            mesh,
            counters: Arc::new(SignalCounters::default()),
            limiter: Mutex::new(Limiter::default()),
            relays: Arc::new(Semaphore::new(relay::MAX_RELAYS)),
        }
    }

    fn admitted(&self, peer: &NodeId) -> Result<(), Refused> {
        if *peer == self.id {
            return Err(("403 Forbidden", "that is this node's own ID".to_owned()));
        }
        if !self.allow.is_empty() && !self.allow.contains(peer) {
            return Err((
                "403 Forbidden",
                format!("node {peer} is not on this node's [admission] allow list"),
            ));
        }
        Ok(())
    }

    /// The shared port address to offer for `ip`: that address if a port is bound to it or to
    /// its family's unspecified address.
    fn candidate_for(&self, ip: IpAddr) -> Option<SocketAddr> {
        self.ports
            .iter()
            .find(|p| p.ip() == ip || (p.ip().is_unspecified() && p.is_ipv4() == ip.is_ipv4()))
            .map(|p| SocketAddr::new(ip, p.port()))
    }

    /// Registers fresh ICE credentials for `offer` and builds our answer with `hosts` as host
    /// candidates (and `relays`).
    fn answer(
        &self,
        offer: &sdp::Offer,
        hosts: &[SocketAddr],
        relays: &[sdp::Candidate],
    ) -> Result<String, Refused> {
        if hosts.is_empty() && relays.is_empty() {
            return Err((
                "503 Service Unavailable",
                "no shared port address to offer".to_owned(),
            ));
        }
        let ufrag = ice_string(8);
        let pwd = ice_string(24);
        self.ice
            .expect(
                Instant::now(),
                &ufrag,
                &pwd,
                &offer.ice_ufrag,
                *offer.fingerprint.as_bytes(),
            )
            .map_err(|e| ("503 Service Unavailable", e.to_string()))?;
        let mut candidates: Vec<sdp::Candidate> = hosts
            .iter()
            .map(|&addr| sdp::Candidate { addr, relay: None })
            .collect();
        candidates.extend_from_slice(relays);
        let mut session = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut session);
        Ok(sdp::answer(&sdp::Answer {
            ufrag: &ufrag,
            pwd: &pwd,
            fingerprint: self.id,
            mid: offer.mid.as_deref(),
            bundle: offer.bundle,
            session_id: u64::from_le_bytes(session) >> 1,
            max_message_size: crate::frame::MAX_PAYLOAD as u32 + crate::frame::HEADER_LEN as u32,
            candidates: &candidates,
        }))
    }

    /// A whole `POST /v1/dial`: `peer` is the caller's address, `local` the one it reached.
    async fn dial(
        &self,
        request: &Request,
        body: &[u8],
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<String, Refused> {
        let token = request
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or((
                "401 Unauthorized",
                "no `Authorization: Bearer <token>` header (an ES256 JWT signed by the caller, \
                 DESIGN.md §11)"
                    .to_owned(),
            ))?;
        let claims = jwt::verify(token.trim(), &self.id, unix_now(), self.clock_skew_s).map_err(
            |e| match e {
                jwt::JwtError::Malformed(why) => {
                    ("400 Bad Request", format!("malformed token: {why}"))
                }
                jwt::JwtError::Rejected(why) => {
                    ("401 Unauthorized", format!("token refused: {why}"))
                }
            },
        )?;
        let text = std::str::from_utf8(body)
            .map_err(|_| ("400 Bad Request", "the offer is not UTF-8".to_owned()))?;
        let offer = sdp::parse_offer(text)
            .map_err(|why| ("400 Bad Request", format!("malformed offer: {why}")))?;
        if claims.sub != offer.fingerprint {
            return Err((
                "401 Unauthorized",
                format!(
                    "the token's sub {} is not the offer's DTLS fingerprint {}",
                    claims.sub, offer.fingerprint
                ),
            ));
        }
        self.admitted(&claims.sub)?;
        let to = query_param(&request.query, "to")
            .map(|v| {
                v.parse::<NodeId>()
                    .map_err(|e| ("400 Bad Request", format!("`to` is not a node ID: {e}")))
            })
            .transpose()?;
        match to {
            Some(to) if to != self.id => {
                self.relay_dial(to, &claims.sub, text, &offer, peer, local)
                    .await
            }
            _ => {
                let host = self
                    .candidate_for(local.ip())
                    .into_iter()
                    .collect::<Vec<_>>();
                self.answer(&offer, &host, &[])
            }
        }
    }

    /// Hands the offer to node `to` and returns its answer with a relay candidate added.
    async fn relay_dial(
        &self,
        to: NodeId,
        caller: &NodeId,
        offer_text: &str,
        offer: &sdp::Offer,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<String, Refused> {
        let Some(node_addr) = self.mesh.session_remote(to) else {
            return Err((
                "404 Not Found",
                format!("node {to} has no session with this gateway"),
            ));
        };
        let request = format!("sub {caller}\ncaller {}\n\n{offer_text}", peer.ip());
        let exchange = async {
            let mut side = self.mesh.open(to, DIAL_TARGET)?;
            side.opened().await?;
            side.send_message(request.as_bytes())?;
            side.read_message(DIAL_MESSAGE_MAX).await
        };
        let reply = match tokio::time::timeout(RELAY_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(why)) => {
                return Err(("502 Bad Gateway", format!("node {}: {why}", to.short())));
            }
            Err(_) => {
                return Err((
                    "504 Gateway Timeout",
                    format!(
                        "node {} did not answer within {RELAY_TIMEOUT:?}",
                        to.short()
                    ),
                ));
            }
        };
        let reply = String::from_utf8(reply).map_err(|_| {
            (
                "502 Bad Gateway",
                "the node's answer is not UTF-8".to_owned(),
            )
        })?;
        let (status, body) = reply.split_once("\n\n").unwrap_or((reply.as_str(), ""));
        let status = match status.trim() {
            "200" => None,
            "400" => Some("400 Bad Request"),
            "403" => Some("403 Forbidden"),
            _ => Some("502 Bad Gateway"),
        };
        if let Some(status) = status {
            return Err((status, format!("node {}: {body}", to.short())));
        }
        // The relay candidate: a port here that carries the caller's datagrams to the node.
        let mut callers: Vec<IpAddr> = vec![peer.ip()];
        callers.extend(offer.candidates.iter().map(SocketAddr::ip));
        callers.sort();
        callers.dedup();
        let answer = match relay::start(
            &self.relays,
            local.ip(),
            self.relay_ports,
            node_addr,
            callers,
        )
        .await
        {
            Ok(relayed) => add_relay_candidate(body, relayed),
            Err(e) => {
                tracing::info!("relayed dial to {}: no relay candidate: {e}", to.short());
                body.to_owned()
            }
        };
        bump(&self.counters.relayed);
        Ok(answer)
    }
}

/// `answer` with a relay candidate at `relayed` (RFC 8445 type preference 0), before
/// `a=end-of-candidates`.
fn add_relay_candidate(answer: &str, relayed: SocketAddr) -> String {
    let priority = (65_535u32 << 8) | 255;
    let (ip, port) = (relayed.ip(), relayed.port());
    let line =
        format!("a=candidate:gw 1 udp {priority} {ip} {port} typ relay raddr {ip} rport {port}");
    match answer.find("a=end-of-candidates") {
        Some(at) => format!("{}{line}\r\n{}", &answer[..at], &answer[at..]),
        None => format!("{answer}{line}\r\n"),
    }
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| http::percent_decode(v))
}

impl Dialer for Signaling {
    fn relayed(&self, gateway: NodeId, request: &[u8]) -> Vec<u8> {
        let reply = |status: &str, body: &str| format!("{status}\n\n{body}").into_bytes();
        let Ok(text) = std::str::from_utf8(request) else {
            return reply("400", "the request is not UTF-8");
        };
        let Some((head, offer_text)) = text.split_once("\n\n") else {
            return reply("400", "no blank line after the request head");
        };
        let mut caller = None;
        let mut caller_ip = None;
        for line in head.lines() {
            if let Some(id) = line.strip_prefix("sub ") {
                caller = id.trim().parse::<NodeId>().ok();
            } else if let Some(ip) = line.strip_prefix("caller ") {
                caller_ip = ip.trim().parse::<IpAddr>().ok();
            }
        }
        let Some(caller) = caller else {
            return reply("400", "the request names no caller (`sub <node id>`)");
        };
        let offer = match sdp::parse_offer(offer_text) {
            Ok(offer) => offer,
            Err(why) => return reply("400", &format!("malformed offer: {why}")),
        };
        if offer.fingerprint != caller {
            return reply("400", "the offer's fingerprint is not the caller's ID");
        }
        if let Err((_, why)) = self.admitted(&caller) {
            bump(&self.counters.forbidden);
            return reply("403", &why);
        }
        let hosts: Vec<SocketAddr> = best_host(
            crate::gateway::own_addresses()
                .into_iter()
                .filter(|ip| usable_host(*ip))
                .filter_map(|ip| self.candidate_for(ip)),
            caller_ip,
        )
        .into_iter()
        .collect();
        match self.answer(&offer, &hosts, &[]) {
            Ok(answer) => {
                bump(&self.counters.answered);
                tracing::info!(
                    "answered an offer from {} relayed by gateway {}",
                    caller.short(),
                    gateway.short()
                );
                reply("200", &answer)
            }
            Err((_, why)) => reply("503", &why),
        }
    }
}

/// The one host candidate a node offers: of the caller's family and sharing the longest prefix
/// with it (the caller's own subnet, when the node is on it), else the first.
///
/// One, not one per interface: a controlling agent may move a connection to a pair it likes
/// better (Chromium prefers IPv6) after DTLS started on the first, and our DTLS sessions are
/// keyed by the remote address, so the moved traffic would land on no session (ICE-lite does
/// not follow such switches yet). The gateway's relay candidate, lower in priority, is the
/// fallback.
fn best_host(
    hosts: impl Iterator<Item = SocketAddr>,
    caller: Option<IpAddr>,
) -> Option<SocketAddr> {
    let common = |a: IpAddr, b: IpAddr| -> u32 {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
            _ => 0,
        }
    };
    let mut hosts: Vec<SocketAddr> = hosts.take(MAX_HOST_CANDIDATES * 4).collect();
    match caller {
        Some(ip) => {
            hosts.sort_by_key(|h| {
                (
                    std::cmp::Reverse(h.is_ipv4() == ip.is_ipv4()),
                    std::cmp::Reverse(common(h.ip(), ip)),
                )
            });
        }
        None => hosts.sort_by_key(|h| !h.is_ipv4()),
    }
    hosts.first().copied()
}

/// An interface address worth offering as a host candidate.
fn usable_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified())
                && v6.to_ipv4_mapped().is_none()
        }
    }
}

fn cors(mut response: Response) -> Response {
    response.headers.extend([
        ("Access-Control-Allow-Origin", "*".to_owned()),
        ("Date", http_date(unix_now())),
    ]);
    response
}

fn refused(counters: &SignalCounters, (status, why): Refused) -> Response {
    let code = status.get(..3).unwrap_or("");
    let counter = match code {
        "400" | "411" | "413" => &counters.bad_request,
        "401" => &counters.unauthorized,
        "403" => &counters.forbidden,
        "404" => &counters.not_found,
        "429" => &counters.rate_limited,
        _ => &counters.failed,
    };
    bump(counter);
    Response::text(status, &why)
}

pub async fn serve(listener: TcpListener, state: Arc<Signaling>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("signaling: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Beyond the slots the connection is just closed: a flood gets nothing to read.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            bump(&state.counters.rate_limited);
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let response = handle(tcp, peer, &state).await;
            if let Err(e) = response {
                tracing::debug!("signaling: {peer}: {e}");
            }
            drop(slot);
        });
    }
}

async fn handle(mut tcp: TcpStream, peer: SocketAddr, state: &Signaling) -> std::io::Result<()> {
    bump(&state.counters.requests);
    let local = tcp.local_addr()?;
    let head = match tokio::time::timeout(READ_TIMEOUT, http::read_head(&mut tcp)).await {
        Ok(head) => head?,
        Err(_) => {
            let why = format!("no complete request head within {READ_TIMEOUT:?}");
            return send(&mut tcp, Response::text("408 Request Timeout", &why)).await;
        }
    };
    let parsed = head.and_then(|(head, rest)| Ok((http::parse(&head)?, rest)));
    let (request, rest) = match parsed {
        Ok(parsed) => parsed,
        Err(refusal) => return send(&mut tcp, Response::from(refusal)).await,
    };
    let response = match (request.method.as_str(), request.path.as_str()) {
        ("OPTIONS", _) => {
            let mut r = Response::text("204 No Content", "");
            r.body.clear();
            r.headers.extend([
                (
                    "Access-Control-Allow-Methods",
                    "GET, POST, OPTIONS".to_owned(),
                ),
                (
                    "Access-Control-Allow-Headers",
                    "authorization, content-type".to_owned(),
                ),
                ("Access-Control-Max-Age", "600".to_owned()),
            ]);
            r
        }
        ("GET" | "HEAD", "/" | "/index.html") => Response {
            content_type: "text/html; charset=utf-8",
            ..Response::ok("text/html", PAGE.to_owned())
        },
        ("GET" | "HEAD", "/v1/info") => Response::json(&serde_json::json!({
            "id": state.id.to_string(),
            "short_id": state.id.short(),
            "mesh": state.mesh_name,
            "role": state.role.to_string(),
        })),
        ("POST", "/v1/dial") => {
            if state
                .limiter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .allow(Instant::now(), peer.ip())
            {
                match read_body(&mut tcp, &request, rest).await? {
                    Ok(body) => match state.dial(&request, &body, peer, local).await {
                        Ok(answer) => {
                            bump(&state.counters.answered);
                            tracing::debug!("signaling: answered an offer from {peer}");
                            Response::ok("application/sdp", answer)
                        }
                        Err(refusal) => {
                            tracing::info!("signaling: dial from {peer} refused: {}", refusal.1);
                            refused(&state.counters, refusal)
                        }
                    },
                    Err(refusal) => refused(&state.counters, refusal),
                }
            } else {
                let mut r = refused(
                    &state.counters,
                    (
                        "429 Too Many Requests",
                        format!(
                            "rate limit: {PER_SECOND} dial/s per source address, bursts of \
                             {BURST}"
                        ),
                    ),
                );
                r.headers.push(("Retry-After", "1".to_owned()));
                r
            }
        }
        (_, "/" | "/index.html" | "/v1/info") => Response {
            allow: Some("GET, HEAD, OPTIONS"),
            ..Response::text("405 Method Not Allowed", "use GET")
        },
        (_, "/v1/dial") => Response {
            allow: Some("POST, OPTIONS"),
            ..Response::text("405 Method Not Allowed", "use POST with an SDP offer")
        },
        _ => Response::text(
            "404 Not Found",
            "this is meshgate's signaling: GET / (the page), GET /v1/info, POST /v1/dial",
        ),
    };
    let head_only = request.method == "HEAD";
    match tokio::time::timeout(READ_TIMEOUT, cors(response).send(&mut tcp, head_only)).await {
        Ok(sent) => sent,
        Err(_) => Ok(()),
    }
}

async fn send(tcp: &mut TcpStream, response: Response) -> std::io::Result<()> {
    match tokio::time::timeout(READ_TIMEOUT, cors(response).send(tcp, false)).await {
        Ok(sent) => sent,
        Err(_) => Ok(()),
    }
}

/// The request body (`Content-Length` of it, at most [`MAX_BODY`]), `rest` being what came
/// with the head.
async fn read_body(
    tcp: &mut TcpStream,
    request: &Request,
    mut rest: Vec<u8>,
) -> std::io::Result<Result<Vec<u8>, Refused>> {
    let Some(len) = request.header("content-length") else {
        return Ok(Err((
            "411 Length Required",
            "a dial needs Content-Length (the offer)".to_owned(),
        )));
    };
    let Ok(len) = len.trim().parse::<usize>() else {
        return Ok(Err((
            "400 Bad Request",
            format!("Content-Length {len:?} is not a number"),
        )));
    };
    if len > MAX_BODY {
        return Ok(Err((
            "413 Content Too Large",
            format!("an offer is at most {} KiB", MAX_BODY / 1024),
        )));
    }
    if rest.len() > len {
        rest.truncate(len);
    }
    let mut body = rest;
    let need = len - body.len();
    let mut more = vec![0u8; need];
    match tokio::time::timeout(READ_TIMEOUT, tcp.read_exact(&mut more)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Err((
                "400 Bad Request",
                "the body ended before Content-Length".to_owned(),
            )));
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Ok(Err((
                "408 Request Timeout",
                format!("no complete body within {READ_TIMEOUT:?}"),
            )));
        }
    }
    body.extend_from_slice(&more);
    Ok(Ok(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(http_date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_one_per_second() {
        let mut l = Limiter::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.allow(t0, ip));
        }
        assert!(!l.allow(t0, ip));
        assert!(l.allow(t0, "10.0.0.2".parse().unwrap()));
        assert!(l.allow(t0 + Duration::from_millis(1000), ip));
        assert!(!l.allow(t0 + Duration::from_millis(1100), ip));
    }

    #[test]
    fn the_limiter_is_bounded() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..LIMITER_MAX as u32 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            assert!(l.allow(t0, ip));
        }
        // Full of recent sources: a new one is refused, not remembered.
        assert!(!l.allow(t0, "192.0.2.1".parse().unwrap()));
        assert_eq!(l.buckets.len(), LIMITER_MAX);
        // Later their buckets are full again and they are forgotten.
        assert!(l.allow(t0 + Duration::from_secs(10), "192.0.2.1".parse().unwrap()));
        assert_eq!(l.buckets.len(), 1);
    }

    #[test]
    fn a_node_offers_the_host_address_nearest_the_caller() {
        let hosts = [
            "192.168.1.5:3478",
            "[fd77::3]:3478",
            "10.77.0.3:3478",
            "10.1.0.3:3478",
        ]
        .map(|h| h.parse::<SocketAddr>().unwrap());
        let best = |caller: Option<&str>| {
            best_host(hosts.iter().copied(), caller.map(|c| c.parse().unwrap()))
                .unwrap()
                .to_string()
        };
        assert_eq!(best(Some("10.77.0.2")), "10.77.0.3:3478");
        assert_eq!(best(Some("192.168.1.77")), "192.168.1.5:3478");
        assert_eq!(best(Some("fd77::2")), "[fd77::3]:3478");
        assert_eq!(best(None), "192.168.1.5:3478");
        assert_eq!(best_host(std::iter::empty(), None), None);
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("to=abc&x=1", "to").as_deref(), Some("abc"));
        assert_eq!(query_param("x=1", "to"), None);
        assert_eq!(query_param("", "to"), None);
    }
}
