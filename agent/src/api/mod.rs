//! The local API (DESIGN.md §8, §11): a small HTTP/1.1 server, one request per connection,
//! loopback only unless `api_allow_remote` (it has no authentication).
//!
//! - `GET /status`, `/peers`, `/sessions`, `/forwards`: JSON; `GET /metrics`: Prometheus text.
//! - `/proxy/<peer>/<path>`: the request, rewritten, to the peer's `[[service]]` named `http`
//!   over a stream; the answer comes back as the service sent it (see [`proxy`]).
//! - `POST /v1/connect?peer=<id or short id>&target=<svc:NAME or host:port>` with
//!   `Connection: Upgrade` and `Upgrade: meshgate-stream` (what `meshgate connect` uses): once
//!   the peer has connected the target, `101 Switching Protocols` and the connection carries the
//!   stream's bytes both ways (half-close included).
//!
//! A stream that cannot be opened is a `502` with the reason as a text body, or a `504` when
//! the peer could not be reached within [`OPEN_TIMEOUT`].

pub mod http;
pub mod metrics;
pub mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

pub use http::percent_encode;
use http::{Refusal, Request, Response};

use crate::config::{Config, Forward, PeerRef, Role};
use crate::forward::ForwardStats;
use crate::identity::NodeId;
use crate::session::Mesh;
use crate::session::tcp::TcpSide;

/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long opening a stream may wait for the peer (DESIGN.md §8: 20 s dial timeout).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// While the peer cannot be reached, a new dial this often until [`OPEN_TIMEOUT`].
const REDIAL_PAUSE: Duration = Duration::from_secs(1);
/// Connections served at once; more are answered 503. Proxied and `connect` streams count.
const MAX_CONNECTIONS: usize = 256;
pub const UPGRADE: &str = "meshgate-stream";

const BAD_GATEWAY: &str = "502 Bad Gateway";

/// The body of 404s and of `GET /`.
const ENDPOINTS: &str = "\
meshgate local API:
  GET  /status                 this node: ID, addresses, role, version, uptime
  GET  /peers                  the peer table
  GET  /sessions               sessions up now
  GET  /forwards               the [[forward]]s and their connections
  GET  /metrics                counters, Prometheus text format
  ANY  /proxy/<peer>/<path>    an HTTP request to the peer's [[service]] named http
  POST /v1/connect?peer=<peer>&target=<target>   a stream (meshgate connect)";

/// A counter set's values, as `counter_set!`'s `snapshot()` gives them.
pub type MetricSource = Arc<dyn Fn() -> metrics::Snapshot + Send + Sync>;

/// A [`MetricSource`] of a shared counter set: `source(&counters, Counters::snapshot)`.
pub fn source<T: Send + Sync + 'static>(
    set: &Arc<T>,
    snapshot: fn(&T) -> metrics::Snapshot,
) -> MetricSource {
    let set = Arc::clone(set);
    Arc::new(move || snapshot(&set))
}

/// What `/status` says about this node.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub id: NodeId,
    pub role: Role,
    pub mesh: String,
    /// The shared port's bound addresses.
    pub listen: Vec<SocketAddr>,
    pub api: SocketAddr,
    /// The names of the `[[service]]`s.
    pub services: Vec<String>,
}

impl NodeFacts {
    pub fn new(id: NodeId, config: &Config, listen: Vec<SocketAddr>, api: SocketAddr) -> Self {
        Self {
            id,
            role: config.role,
            mesh: config.mesh.clone(),
            listen,
            api,
            services: config.services.iter().map(|s| s.name.clone()).collect(),
        }
    }
}

/// Everything the API serves from.
pub struct ApiState {
    pub mesh: Arc<Mesh>,
    pub node: NodeFacts,
    pub forwards: Vec<(Forward, Arc<ForwardStats>)>,
    /// Counter sets, summed by name (several shared ports give one set each).
    pub metrics: Vec<MetricSource>,
    pub started: Instant,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("node", &self.node)
            .field("forwards", &self.forwards)
            .field("metrics", &self.metrics.len())
            .finish_non_exhaustive()
    }
}

/// `GET /status`. DESIGN.md §11 names the first nine keys.
#[derive(Debug, Serialize)]
pub struct Status {
    pub id: String,
    pub short_id: String,
    pub ipv6: String,
    pub fingerprint: String,
    pub role: String,
    pub mesh: String,
    pub listen: Vec<String>,
    pub version: &'static str,
    pub uptime_s: u64,
    pub api: String,
    pub services: Vec<String>,
    /// Rows of `/peers`, `/sessions` and `/forwards`.
    pub peers: usize,
    pub sessions: usize,
    pub forwards: usize,
}

/// One row of `GET /forwards`.
#[derive(Debug, Serialize)]
pub struct ForwardView {
    pub listen: String,
    /// As the config names it (full or short ID).
    pub peer: String,
    pub target: String,
    /// Connections carried now.
    pub active: u64,
    pub accepted: u64,
    /// Refused at once: the peer is unknown or has no address.
    pub refused: u64,
    /// Ended in a reset: refused by the peer, session lost, TCP error.
    pub reset: u64,
    pub last_error: Option<String>,
    /// Seconds since `last_error`.
    pub last_error_s: Option<u64>,
}

impl ApiState {
    fn status(&self) -> Status {
        let id = self.node.id;
        Status {
            id: id.to_string(),
            short_id: id.short(),
            ipv6: id.ipv6().to_string(),
            fingerprint: id.fingerprint(),
            role: self.node.role.to_string(),
            mesh: self.node.mesh.clone(),
            listen: self.node.listen.iter().map(ToString::to_string).collect(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: self.started.elapsed().as_secs(),
            api: self.node.api.to_string(),
            services: self.node.services.clone(),
            peers: self.mesh.peer_views().len(),
            sessions: self.mesh.session_views().len(),
            forwards: self.forwards.len(),
        }
    }

    fn forwards(&self) -> Vec<ForwardView> {
        use portable_atomic::Ordering::Relaxed;
        self.forwards
            .iter()
            .map(|(forward, stats)| {
                let c = &stats.counters;
                let last = stats.last_error();
                ForwardView {
                    listen: forward.listen.to_string(),
                    peer: forward.peer.to_string(),
                    target: forward.target.to_string(),
                    active: c.active.load(Relaxed),
                    accepted: c.accepted.load(Relaxed),
                    refused: c.refused.load(Relaxed),
                    reset: c.reset.load(Relaxed),
                    last_error_s: last.as_ref().map(|(ago, _)| ago.as_secs()),
                    last_error: last.map(|(_, why)| why),
                }
            })
            .collect()
    }

    fn metrics(&self) -> String {
        use metrics::{Kind, Sample};
        let mut samples = metrics::from_snapshots(self.metrics.iter().map(|source| source()));
        let peers = self.mesh.peer_views();
        for state in ["up", "connecting", "none"] {
            let n = peers.iter().filter(|p| p.session == state).count();
            samples.push(
                Sample::new(
                    "peers",
                    "peers in the peer table, by session state (a gauge)",
                    Kind::Gauge,
                    n as u64,
                )
                .label("session", state),
            );
        }
        for (forward, stats) in &self.forwards {
            for (name, help, value) in stats.counters.snapshot() {
                let kind = metrics::Kind::of_help(help);
                samples.push(
                    Sample::new(name, help, kind, value)
                        .label("listen", forward.listen.to_string()),
                );
            }
        }
        samples.push(Sample::new(
            "uptime_seconds",
            "seconds since the node started (a gauge)",
            Kind::Gauge,
            self.started.elapsed().as_secs(),
        ));
        samples.push(
            Sample::new(
                "build_info",
                "the version and role of this node (a gauge)",
                Kind::Gauge,
                1,
            )
            .label("version", env!("CARGO_PKG_VERSION"))
            .label("role", self.node.role.to_string()),
        );
        metrics::render(samples)
    }
}

pub async fn serve(listener: TcpListener, state: Arc<ApiState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("local API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tokio::spawn(async move {
                let busy = Response::text(
                    "503 Service Unavailable",
                    &format!("{MAX_CONNECTIONS} local API connections are open; try again"),
                );
                let _ = tokio::time::timeout(HEAD_TIMEOUT, busy.send(&mut tcp, false)).await;
            });
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            if let Err(e) = handle(tcp, &state).await {
                tracing::debug!("local API: {e}");
            }
            drop(slot);
        });
    }
}

async fn handle(mut tcp: TcpStream, state: &ApiState) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, http::read_head(&mut tcp)).await {
        Ok(head) => head?,
        Err(_) => {
            let why = format!("no complete request head within {HEAD_TIMEOUT:?}");
            return Response::text("408 Request Timeout", &why)
                .send(&mut tcp, false)
                .await;
        }
    };
    let parsed = head.and_then(|(head, rest)| Ok((http::parse(&head)?, rest)));
    let (request, rest) = match parsed {
        Ok(parsed) => parsed,
        Err(refusal) => return Response::from(refusal).send(&mut tcp, false).await,
    };
    if request.path == "/proxy" || request.path.starts_with("/proxy/") {
        return proxy::serve(tcp, state, &request, rest).await;
    }
    if request.path == "/v1/connect" {
        return connect(tcp, state, &request, &rest).await;
    }
    let head_only = request.method == "HEAD";
    // A client that does not read its answer must not hold a connection slot for ever.
    let response = route(state, &request);
    match tokio::time::timeout(HEAD_TIMEOUT, response.send(&mut tcp, head_only)).await {
        Ok(sent) => sent,
        Err(_) => Err(std::io::Error::other("the client did not read its answer")),
    }
}

fn route(state: &ApiState, request: &Request) -> Response {
    let path = request.path.as_str();
    if !matches!(
        path,
        "/" | "/status" | "/peers" | "/sessions" | "/forwards" | "/metrics"
    ) {
        let path: String = path.chars().take(200).collect();
        return Response::text(
            "404 Not Found",
            &format!("no endpoint {path}\n\n{ENDPOINTS}"),
        );
    }
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        let why = format!("{path} answers GET (and HEAD) only");
        return Response {
            allow: Some("GET, HEAD"),
            ..Response::text("405 Method Not Allowed", &why)
        };
    }
    match path {
        "/status" => Response::json(&state.status()),
        "/peers" => Response::json(&state.mesh.peer_views()),
        "/sessions" => Response::json(&state.mesh.session_views()),
        "/forwards" => Response::json(&state.forwards()),
        "/metrics" => Response::ok(http::PROMETHEUS, state.metrics()),
        _ => Response::text("200 OK", ENDPOINTS),
    }
}

/// Opens a stream to `target` on `peer`. While no session with the peer is up, a failed open
/// (the dial failed) is retried until [`OPEN_TIMEOUT`]: 504. A refusal with a session up (the
/// peer said no) is final: 502, like a peer that is unknown.
async fn open_stream(mesh: &Mesh, peer: &str, target: &str) -> Result<(NodeId, TcpSide), Refusal> {
    let bad = |why: String| Refusal::new(BAD_GATEWAY, why);
    let id = peer
        .parse::<PeerRef>()
        .and_then(|p| mesh.resolve_peer(&p))
        .map_err(bad)?;
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    let full = id.to_string();
    let mut last = None;
    loop {
        let mut side = mesh.open(id, target).map_err(bad)?;
        match tokio::time::timeout_at(deadline, side.opened()).await {
            Ok(Ok(())) => return Ok((id, side)),
            Ok(Err(why)) if mesh.session_views().iter().any(|s| s.peer == full) => {
                return Err(bad(format!("peer {} refused: {why}", id.short())));
            }
            Ok(Err(why)) => last = Some(why),
            Err(_) => break,
        }
        // A new stream makes the mesh redial at once: pause, so that a dial failing fast does
        // not spin.
        let next = tokio::time::Instant::now() + REDIAL_PAUSE;
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    Err(Refusal::new(
        "504 Gateway Timeout",
        format!(
            "peer {} did not answer within {OPEN_TIMEOUT:?}{}",
            id.short(),
            last.map(|why| format!(" ({why})")).unwrap_or_default()
        ),
    ))
}

/// `POST /v1/connect`.
async fn connect(
    mut tcp: TcpStream,
    state: &ApiState,
    request: &Request,
    rest: &[u8],
) -> std::io::Result<()> {
    if request.method != "POST" {
        let refusal = Response {
            allow: Some("POST"),
            ..Response::text("405 Method Not Allowed", "use POST")
        };
        return refusal.send(&mut tcp, false).await;
    }
    if !rest.is_empty() {
        let why = "data after the request head before the upgrade";
        return Response::text("400 Bad Request", why)
            .send(&mut tcp, false)
            .await;
    }
    let upgrade = request
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE));
    if !upgrade {
        let why = format!("ask for `Upgrade: {UPGRADE}`");
        return Response::text("426 Upgrade Required", &why)
            .send(&mut tcp, false)
            .await;
    }
    let mut peer = None;
    let mut target = None;
    for pair in request.query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "peer" => peer = http::percent_decode(v),
            "target" => target = http::percent_decode(v),
            _ => {}
        }
    }
    let (Some(peer), Some(target)) = (peer, target) else {
        return Response::text("400 Bad Request", "give peer= and target=")
            .send(&mut tcp, false)
            .await;
    };
    let (id, side) = match open_stream(&state.mesh, &peer, &target).await {
        Ok(opened) => opened,
        Err(refusal) => return Response::from(refusal).send(&mut tcp, false).await,
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {UPGRADE}\r\nConnection: Upgrade\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let end = side.pump(tcp).await;
    tracing::debug!("connect to {target} on {}: {end:?}", id.short());
    Ok(())
}
