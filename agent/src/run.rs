//! `meshgate run`: the daemon shell. Loads the identity, binds the shared port, serves until
//! SIGINT/SIGTERM, then stops cleanly. Tells systemd (sd_notify) when it is ready, pets its
//! watchdog, and re-reads its config on SIGHUP.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use turn_gw::SharedPort;

use crate::cli::LogControl;
use crate::config::{Config, LoadError, SYSTEM_CONFIG};
use crate::identity::{Identity, IdentityError};
use crate::sdnotify::{self, Notifier, NotifyError};
use crate::session::transport::Transport;
use crate::session::{Exposed, Mesh, MeshConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error(
        "cannot bind the shared UDP port {addr}: {source}{hint}",
        hint = bind_hint(source)
    )]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot start: {0}")]
    Runtime(io::Error),
    #[error("the shared UDP port {addr} failed: {source}")]
    Port { addr: SocketAddr, source: io::Error },
    #[error("systemd: {0}")]
    Notify(#[from] NotifyError),
    #[error("{0}")]
    Dtls(#[from] crate::dtls::DtlsError),
    #[error(
        "cannot listen on {addr} for a [[forward]]: {source}{hint}",
        hint = bind_hint(source)
    )]
    Forward { addr: SocketAddr, source: io::Error },
}

fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            " (another meshgate, or a STUN/TURN server such as coturn, has it; stop it or set \
             `listen` in the config)"
        }
        io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
        io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        _ => "",
    }
}

/// How long the shutdown may take before we stop waiting for the port task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `config_path` is the `--config` given (None: the system config if present, else the embedded
/// default); SIGHUP reads it again.
pub fn run(
    config: Config,
    state_dir: PathBuf,
    config_path: Option<PathBuf>,
    log: LogControl,
) -> Result<(), RunError> {
    let supervision = Supervision {
        notifier: Notifier::from_env()?,
        watchdog: sdnotify::watchdog_interval_from_env()?,
        config_path,
        log,
    };
    let (identity, created) = Identity::load_or_create(&state_dir)?;
    if created {
        tracing::info!("made a new identity in {}", identity.dir().display());
    }
    // Fail now, not at the first handshake, if rtc-dtls cannot use the key.
    identity.dtls_certificate()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meshgate")
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(serve(config, identity, supervision))
}

async fn serve(
    mut config: Config,
    identity: Identity,
    supervision: Supervision,
) -> Result<(), RunError> {
    let started = std::time::Instant::now();
    // Handlers first: a signal that arrives while we bind must not kill us half-started.
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Runtime)?;
    let mut sigusr1 = signal(SignalKind::user_defined1()).map_err(RunError::Runtime)?;

    // One socket and one task per listen address; each answers from the address it was asked on.
    let mut ports = Vec::new();
    for &addr in &config.listen {
        match SharedPort::bind(addr) {
            Ok(port) => ports.push(port),
            Err(e) if config.listen_default && addr.is_ipv6() => {
                tracing::warn!("no IPv6 on this host ({e}): serving udp on IPv4 only");
            }
            Err(source) => return Err(RunError::Bind { addr, source }),
        }
    }
    let locals: Vec<SocketAddr> = ports.iter().map(SharedPort::local_addr).collect();
    let udp = locals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let certificate = identity.dtls_certificate()?;
    let ice = turn_gw::IceLite::default();
    let mesh = Mesh::new(MeshConfig {
        local_id: identity.id(),
        mesh: config.mesh.clone(),
        role: config.role,
        exposed: Exposed::new(&config.services),
        static_peers: config.discovery.peers.clone(),
        ice: ice.clone(),
    });
    // Offers: answered over HTTP (gateways, `signal`) and relayed by gateways (every node).
    let signaling = Arc::new(crate::signal::Signaling::new(
        identity.id(),
        config.mesh.clone(),
        config.role,
        ice.clone(),
        locals.clone(),
        config.admission.allow.clone(),
        config.clock_skew_s,
        (
            *config.turn.relay_ports.start(),
            *config.turn.relay_ports.end(),
        ),
        Arc::clone(&mesh),
    ));
    mesh.set_dialer(signaling.clone());
    let mut counters = Vec::new();
    let mut dtls_counters = Vec::new();
    for port in &mut ports {
        let local = port.local_addr();
        if config.turn.enabled {
            port.enable_turn(crate::gateway::turn_config(&config, local));
        }
        port.enable_ice(ice.clone());
        let dtls = crate::dtls::DtlsSessions::new(
            certificate.clone(),
            local,
            identity.id(),
            crate::dtls::Admission {
                allow: config.admission.allow.clone(),
            },
            crate::dtls::DtlsConfig::default(),
        )?;
        dtls_counters.push(dtls.counters());
        let engine = mesh.add_engine(Transport::new(dtls, local), local);
        port.set_sessions(Box::new(engine));
        counters.push(port.counters());
        let buffers = port.buffers();
        if buffers.recv < turn_gw::SOCKET_BUFFER {
            tracing::warn!(
                "udp {local}: receive buffer is {} bytes, less than the {} asked for: raise \
                 net.core.rmem_max, or expect loss under load",
                buffers.recv,
                turn_gw::SOCKET_BUFFER
            );
        }
    }
    if config.turn.enabled {
        tracing::info!(
            "TURN on udp {udp}: realm {:?}, {} static user(s), REST secret {}, relay ports {:?}",
            config.turn.realm,
            config.turn.users.len(),
            if config.turn.secret.is_some() {
                "set"
            } else {
                "off"
            },
            config.turn.relay_ports
        );
    }
    let session_counters = mesh.counters();
    mesh.start();
    let id = identity.id();
    tracing::info!(
        "started {role} {id} (short {short}), mesh ipv6 {ipv6}, udp {udp}, mesh {mesh:?}",
        role = config.role,
        short = id.short(),
        ipv6 = id.ipv6(),
        mesh = config.mesh,
    );

    // TCP: the forwards' listeners (a busy port is an error, named) and the local API (a busy
    // one is a warning: another meshgate on this host has it, and forwarding works without it).
    let forwards = crate::forward::bind(&config.forwards)
        .await
        .map_err(|(addr, source)| RunError::Forward { addr, source })?;
    let mut tcp_tasks = tokio::task::JoinSet::new();
    let mut forward_stats = Vec::new();
    for (forward, listener) in forwards {
        tracing::info!(
            "forward {} -> {} on peer {}",
            forward.listen,
            forward.target,
            forward.peer
        );
        let stats = Arc::new(crate::forward::ForwardStats::default());
        forward_stats.push((forward.clone(), Arc::clone(&stats)));
        tcp_tasks.spawn(crate::forward::serve(
            forward,
            listener,
            Arc::clone(&mesh),
            stats,
        ));
    }

    // mDNS: without it (no multicast here, or a broken interface) static peers still work.
    let discovery = if config.discovery.mdns {
        let announce = crate::discovery::Announce {
            id,
            role: config.role,
            mesh: config.mesh.clone(),
            ports: locals.clone(),
            interfaces: config.discovery.interfaces.clone(),
        };
        match crate::discovery::Discovery::start(&announce, Arc::clone(&mesh)) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("{e}; discovery is off (static peers still work)");
                None
            }
        }
    } else {
        tracing::info!("mDNS is off ([discovery] mdns = false)");
        None
    };
    let discovery_counters = discovery
        .as_ref()
        .map(crate::discovery::Discovery::counters);
    if let Some(api) = config.api {
        match tokio::net::TcpListener::bind(api).await {
            Ok(listener) => {
                tracing::info!("local API on http://{api}");
                if !api.ip().is_loopback() {
                    tracing::warn!(
                        "local API on {api}, beyond loopback (api_allow_remote = true): anyone \
                         who reaches it can read the node's state and use its streams"
                    );
                }
                let mut metrics: Vec<crate::api::MetricSource> = Vec::new();
                metrics.extend(
                    counters
                        .iter()
                        .map(|c| crate::api::source(c, turn_gw::Counters::snapshot)),
                );
                metrics.extend(
                    dtls_counters
                        .iter()
                        .map(|c| crate::api::source(c, crate::dtls::DtlsCounters::snapshot)),
                );
                metrics.push(crate::api::source(
                    &session_counters,
                    crate::session::SessionCounters::snapshot,
                ));
                metrics.push(crate::api::source(
                    &signaling.counters,
                    crate::signal::SignalCounters::snapshot,
                ));
                metrics.extend(
                    discovery_counters.iter().map(|c| {
                        crate::api::source(c, crate::discovery::DiscoveryCounters::snapshot)
                    }),
                );
                let state = crate::api::ApiState {
                    mesh: Arc::clone(&mesh),
                    node: crate::api::NodeFacts::new(id, &config, locals.clone(), api),
                    forwards: forward_stats,
                    metrics,
                    started,
                };
                tcp_tasks.spawn(crate::api::serve(listener, Arc::new(state)));
            }
            Err(e) => tracing::warn!(
                "local API: cannot listen on {api}: {e}; `meshgate connect`, `status` and `peers` \
                 will not reach this node (set `api` in the config)"
            ),
        }
    } else {
        tracing::info!("local API off (api = \"off\")");
    }

    if let Some(addr) = config.signal {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!("signaling and the browser page on http://{addr}");
                tcp_tasks.spawn(crate::signal::serve(listener, Arc::clone(&signaling)));
            }
            Err(e) => tracing::warn!(
                "signaling: cannot listen on {addr}: {e}; browsers cannot dial this node (set \
                 `signal` in the config, or `signal = \"off\"`)"
            ),
        }
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut tasks = tokio::task::JoinSet::new();
    for port in ports {
        let local = port.local_addr();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let result = port
                .run(async move {
                    let _ = stop.changed().await;
                })
                .await;
            (local, result)
        });
    }
    let mut watchdog = supervision.watchdog.map(tokio::time::interval);
    supervision.ready(&format!(
        "serving udp {udp} as {} {}",
        config.role,
        id.short()
    ));

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => supervision.reload(&mut config),
            _ = sigusr1.recv() => log_counters(
                &counters,
                &dtls_counters,
                &session_counters,
                &signaling.counters,
                discovery_counters.as_deref(),
            ),
            _ = sdnotify::watchdog_tick(&mut watchdog) => supervision.notify("WATCHDOG=1"),
            Some(ended) = tasks.join_next() => {
                let (addr, err) = match ended {
                    Ok((addr, Ok(()))) => (addr, io::Error::other("stopped unexpectedly")),
                    Ok((addr, Err(e))) => (addr, e),
                    Err(join) => (locals[0], io::Error::other(join.to_string())),
                };
                return Err(RunError::Port { addr, source: err });
            }
        }
    }
    supervision.notify("STOPPING=1");
    // Goodbye over mDNS first, then the sessions close as the ports stop.
    if let Some(discovery) = discovery {
        tokio::task::block_in_place(|| discovery.stop());
    }
    let _ = stop_tx.send(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok((_, Ok(()))) => {}
                Ok((addr, Err(source))) => return Err(RunError::Port { addr, source }),
                Err(join) => tracing::warn!("shared port task ended badly: {join}"),
            }
        }
        Ok(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => tracing::warn!("shared port did not stop within {SHUTDOWN_GRACE:?}"),
    }
    tcp_tasks.abort_all();
    log_counters(
        &counters,
        &dtls_counters,
        &session_counters,
        &signaling.counters,
        discovery_counters.as_deref(),
    );
    tracing::info!("stopped");
    Ok(())
}

/// SIGUSR1 and shutdown: every nonzero counter of the shared ports and DTLS, summed over the
/// listen addresses, on one line.
fn log_counters(
    counters: &[Arc<turn_gw::Counters>],
    dtls: &[Arc<crate::dtls::DtlsCounters>],
    sessions: &crate::session::SessionCounters,
    signal: &crate::signal::SignalCounters,
    discovery: Option<&crate::discovery::DiscoveryCounters>,
) {
    let snapshots = counters
        .iter()
        .map(|c| c.snapshot())
        .chain(dtls.iter().map(|d| d.snapshot()))
        .chain([sessions.snapshot(), signal.snapshot()])
        .chain(discovery.map(|d| d.snapshot()));
    let line: Vec<String> = sum_by_name(snapshots)
        .into_iter()
        .filter(|&(_, v)| v != 0)
        .map(|(name, v)| format!("{name}={v}"))
        .collect();
    tracing::info!("counters: {}", line.join(" "));
}

/// Sums counter snapshots by name, keeping first-seen order.
fn sum_by_name<'a>(
    snapshots: impl Iterator<Item = Vec<(&'a str, &'a str, u64)>>,
) -> Vec<(&'a str, u64)> {
    let mut out: Vec<(&str, u64)> = Vec::new();
    for (name, _, value) in snapshots.flatten() {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += value,
            None => out.push((name, value)),
        }
    }
    out
}

/// What ties the daemon to its service manager: sd_notify, the watchdog, SIGHUP reloads.
#[derive(Debug)]
struct Supervision {
    notifier: Option<Notifier>,
    /// How often to send WATCHDOG=1 (half of $WATCHDOG_USEC).
    watchdog: Option<Duration>,
    config_path: Option<PathBuf>,
    log: LogControl,
}

/// Top-level config keys that SIGHUP applies without a restart; every other change is reported.
const LIVE_KEYS: &[&str] = &["log"];

impl Supervision {
    fn notify(&self, message: &str) {
        sdnotify::notify(self.notifier.as_ref(), message);
    }

    fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// SIGHUP: read the config again, apply what can change live, and name the changes that need
    /// a restart. A config that does not load is logged and the running one kept.
    fn reload(&self, running: &mut Config) {
        self.notify("RELOADING=1");
        match self.load() {
            Err(e) => tracing::error!("SIGHUP: {e}; keeping the running config"),
            Ok((new, source)) => {
                let changed = changed_keys(running, &new);
                let (live, restart): (Vec<_>, Vec<_>) =
                    changed.iter().partition(|k| LIVE_KEYS.contains(k));
                if live.contains(&&"log") {
                    match self.log.set(&new.log) {
                        Ok(true) => tracing::debug!("log filter is now {:?}", new.log),
                        Ok(false) => {
                            tracing::info!("log: RUST_LOG is set and wins over the config")
                        }
                        Err(e) => tracing::error!("SIGHUP: {e}"),
                    }
                    running.log = new.log.clone();
                }
                if changed.is_empty() {
                    tracing::info!("SIGHUP: reloaded {source}: no changes");
                } else if !live.is_empty() {
                    tracing::info!("SIGHUP: reloaded {source}: applied {}", join(&live));
                }
                if !restart.is_empty() {
                    tracing::warn!(
                        "SIGHUP: {source}: {} changed and need a restart to take effect (still \
                         running with the old values)",
                        join(&restart)
                    );
                }
            }
        }
        self.ready("serving; config reloaded");
    }

    fn load(&self) -> Result<(Config, String), LoadError> {
        let path = match &self.config_path {
            Some(path) => path.as_path(),
            None if Path::new(SYSTEM_CONFIG).exists() => Path::new(SYSTEM_CONFIG),
            None => return Ok((Config::embedded_default(), "the embedded default".into())),
        };
        Ok((Config::load(path)?, path.display().to_string()))
    }
}

fn join(keys: &[&&str]) -> String {
    keys.iter().map(|k| **k).collect::<Vec<_>>().join(", ")
}

/// The top-level keys whose values differ. Destructured in full so that a new config field
/// cannot be forgotten here.
fn changed_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    let Config {
        state_dir,
        mesh,
        role,
        listen,
        listen_default: _,
        api,
        api_allow_remote,
        signal,
        log,
        clock_skew_s,
        admission,
        turn,
        discovery,
        services,
        forwards,
    } = old;
    [
        ("state_dir", *state_dir != new.state_dir),
        ("mesh", *mesh != new.mesh),
        ("role", *role != new.role),
        ("listen", *listen != new.listen),
        ("api", *api != new.api),
        (
            "api_allow_remote",
            *api_allow_remote != new.api_allow_remote,
        ),
        ("signal", *signal != new.signal),
        ("log", *log != new.log),
        ("clock_skew", *clock_skew_s != new.clock_skew_s),
        ("admission", *admission != new.admission),
        ("turn", *turn != new.turn),
        ("discovery", *discovery != new.discovery),
        ("service", *services != new.services),
        ("forward", *forwards != new.forwards),
    ]
    .into_iter()
    .filter_map(|(key, differs)| differs.then_some(key))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_top_level_keys() {
        let old = Config::parse("listen = \"127.0.0.1:1\"").unwrap();
        let new = Config::parse("listen = \"127.0.0.1:2\"\nlog = \"debug\"\n[turn]\nrealm = \"x\"")
            .unwrap();
        assert_eq!(changed_keys(&old, &new), ["listen", "log", "turn"]);
        assert!(changed_keys(&old, &old).is_empty());
    }
}
