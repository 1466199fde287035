//! `[[forward]]`: local TCP listeners whose connections are carried to a target on a peer
//! (DESIGN.md §6, §11). Each accepted connection becomes one stream; the peer decides whether
//! the target is allowed and says why not.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Forward;
use crate::session::Mesh;

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
pub async fn serve(forward: Forward, listener: TcpListener, mesh: Arc<Mesh>) {
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
        let opened = mesh
            .resolve_peer(&forward.peer)
            .and_then(|peer| mesh.open(peer, &forward.target.to_string()));
        match opened {
            Ok(side) => {
                let name = name.clone();
                tokio::spawn(async move {
                    let end = side.pump(tcp).await;
                    tracing::debug!("{name}: connection from {from} ended: {end:?}");
                    if let crate::session::tcp::End::Reset(why) = end {
                        tracing::info!("{name}: connection from {from} reset: {why}");
                    }
                });
            }
            Err(why) => {
                tracing::info!("{name}: connection from {from} refused: {why}");
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(std::time::Duration::ZERO));
            }
        }
    }
}
