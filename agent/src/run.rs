//! `meshgate run`: the daemon shell. Loads the identity, binds the shared port, serves until
//! SIGINT/SIGTERM, then stops cleanly.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use turn_gw::SharedPort;

use crate::config::Config;
use crate::identity::{Identity, IdentityError};

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

pub fn run(config: Config, state_dir: PathBuf) -> Result<(), RunError> {
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
    runtime.block_on(serve(config, identity))
}

async fn serve(config: Config, identity: Identity) -> Result<(), RunError> {
    // Handlers first: a signal that arrives while we bind must not kill us half-started.
    let mut sigterm = signal(SignalKind::terminate()).map_err(RunError::Runtime)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(RunError::Runtime)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(RunError::Runtime)?;

    let port = SharedPort::bind(config.listen).map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?;
    let local = port.local_addr();
    let buffers = port.buffers();
    let id = identity.id();
    tracing::info!(
        "started {role} {id} (short {short}), mesh ipv6 {ipv6}, udp {local}, mesh {mesh:?}",
        role = config.role,
        short = id.short(),
        ipv6 = id.ipv6(),
        mesh = config.mesh,
    );
    if buffers.recv < turn_gw::SOCKET_BUFFER {
        tracing::warn!(
            "udp receive buffer is {} bytes, less than the {} asked for: raise \
             net.core.rmem_max, or expect loss under load",
            buffers.recv,
            turn_gw::SOCKET_BUFFER
        );
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut port_task = tokio::spawn(port.run(async {
        let _ = stop_rx.await;
    }));

    loop {
        tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                tracing::warn!("SIGHUP: this build cannot reload its config yet; restart to apply changes");
            }
            ended = &mut port_task => {
                let err = match ended {
                    Ok(Ok(())) => io::Error::other("stopped unexpectedly"),
                    Ok(Err(e)) => e,
                    Err(join) => io::Error::other(join.to_string()),
                };
                return Err(RunError::Port { addr: local, source: err });
            }
        }
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, port_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(source))) => {
            return Err(RunError::Port {
                addr: local,
                source,
            });
        }
        Ok(Err(join)) => tracing::warn!("shared port task ended badly: {join}"),
        Err(_) => tracing::warn!("shared port did not stop within {SHUTDOWN_GRACE:?}"),
    }
    tracing::info!("stopped");
    Ok(())
}
