//! `[[forward]]`: local TCP listeners whose connections are carried to a target on a peer
//! (DESIGN.md §6, §11). Each accepted connection becomes one stream; the peer decides whether
//! the target is allowed and says why not.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;

use crate::config::Forward;
use crate::session::Mesh;
use turn_gw::counters::bump;

turn_gw::counter_set! {
    /// One `[[forward]]`'s connections (the local API shows them per forward).
    pub struct ForwardCounters {
        active => "forward_connections", "connections carried now (a gauge)";
        accepted => "forward_accepted", "connections accepted";
        refused => "forward_refused", "connections refused at once (the peer is unknown or has no address)";
        reset => "forward_reset", "connections that ended in a reset (refused by the peer, lost session, TCP error)";
    }
}

/// What the local API shows of a forward: counters, and the last thing that went wrong.
#[derive(Debug, Default)]
pub struct ForwardStats {
    pub counters: ForwardCounters,
    /// Only written when a connection fails, so a lock is cheap enough.
    last_error: Mutex<Option<(Instant, String)>>,
}

impl ForwardStats {
    fn failed(&self, why: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((Instant::now(), why));
        }
    }

    /// The last error and how long ago it was.
    pub fn last_error(&self) -> Option<(std::time::Duration, String)> {
        let last = self.last_error.lock().ok()?;
        last.as_ref().map(|(at, why)| (at.elapsed(), why.clone()))
    }
}

/// Decrements the gauge when the connection's task ends, however it ends.
struct Active(Arc<ForwardStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .counters
            .active
            .fetch_sub(1, portable_atomic::Ordering::Relaxed);
    }
}

/// Binds every forward's listener, so that a busy port is an error at start, naming it.
pub async fn bind(
    forwards: &[Forward],
) -> Result<Vec<(Forward, TcpListener)>, (SocketAddr, std::io::Error)> {
    let mut bound = Vec::new();
    for forward in forwards {
        let listener = TcpListener::bind(forward.listen)
            .await
            .map_err(|e| (forward.listen, e))?;
        bound.push((forward.clone(), listener));
    }
    Ok(bound)
}

/// Serves one forward until the task is dropped.
pub async fn serve(
    forward: Forward,
    listener: TcpListener,
    mesh: Arc<Mesh>,
    stats: Arc<ForwardStats>,
) {
    let name = format!("forward {} -> {}", forward.listen, forward.target);
    loop {
        let (tcp, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!("{name}: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        bump(&stats.counters.accepted);
        let opened = mesh
            .resolve_peer(&forward.peer)
            .and_then(|peer| mesh.open(peer, &forward.target.to_string()));
        match opened {
            Ok(side) => {
                let name = name.clone();
                bump(&stats.counters.active);
                let active = Active(Arc::clone(&stats));
                tokio::spawn(async move {
                    let end = side.pump(tcp).await;
                    tracing::debug!("{name}: connection from {from} ended: {end:?}");
                    if let crate::session::tcp::End::Reset(why) = end {
                        tracing::info!("{name}: connection from {from} reset: {why}");
                        bump(&active.0.counters.reset);
                        active.0.failed(why);
                    }
                    drop(active);
                });
            }
            Err(why) => {
                tracing::info!("{name}: connection from {from} refused: {why}");
                bump(&stats.counters.refused);
                stats.failed(why);
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
            }
        }
    }
}
