//! The local API (DESIGN.md §8), loopback only. For now it serves what `meshgate connect`
//! needs; status, peers and metrics come with discovery (issue 5).
//!
//! `POST /v1/connect?peer=<id or short id>&target=<svc:NAME or host:port>` with
//! `Connection: Upgrade` and `Upgrade: meshgate-stream`: once the peer has connected the target,
//! `101 Switching Protocols` and the connection carries the stream's bytes both ways (half-close
//! included). If the stream cannot be opened: `502` (or `504` when the peer did not answer in
//! time) with the reason as a text body.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::PeerRef;
use crate::session::Mesh;

/// The request head may not be longer than this.
const MAX_HEAD: usize = 8 * 1024;
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connect waits for the peer's answer (DESIGN.md §8: 20 s dial timeout).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
pub const UPGRADE: &str = "meshgate-stream";

pub async fn serve(listener: TcpListener, mesh: Arc<Mesh>) {
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("local API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mesh = Arc::clone(&mesh);
        tokio::spawn(async move {
            if let Err(e) = handle(tcp, mesh).await {
                tracing::debug!("local API: {e}");
            }
        });
    }
}

async fn respond(tcp: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len() + 1
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.write_all(b"\n").await?;
    tcp.shutdown().await
}

/// Reads up to the end of the request head; None if the client sent more than that (it must
/// wait for our answer) or the head is too long.
async fn read_head(tcp: &mut TcpStream) -> std::io::Result<Result<String, &'static str>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err("the request ended before its head did"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if end + 4 != buf.len() {
                return Ok(Err("data after the request head before the upgrade"));
            }
            return Ok(String::from_utf8(buf).map_err(|_| "the request head is not UTF-8"));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err("the request head is longer than 8 KiB"));
        }
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes a query value for [`percent_decode`].
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:[]".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn handle(mut tcp: TcpStream, mesh: Arc<Mesh>) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp)).await {
        Ok(head) => head?,
        Err(_) => return respond(&mut tcp, "408 Request Timeout", "no request head").await,
    };
    let head = match head {
        Ok(head) => head,
        Err(why) => return respond(&mut tcp, "400 Bad Request", why).await,
    };
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    if route != "/v1/connect" {
        return respond(
            &mut tcp,
            "404 Not Found",
            "this node's local API serves POST /v1/connect (status and peers come later)",
        )
        .await;
    }
    if method != "POST" {
        return respond(&mut tcp, "405 Method Not Allowed", "use POST").await;
    }
    let upgrade = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("upgrade") && v.trim().eq_ignore_ascii_case(UPGRADE)
        })
    });
    if !upgrade {
        let why = format!("ask for `Upgrade: {UPGRADE}`");
        return respond(&mut tcp, "426 Upgrade Required", &why).await;
    }
    let mut peer = None;
    let mut target = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "peer" => peer = percent_decode(v),
            "target" => target = percent_decode(v),
            _ => {}
        }
    }
    let (Some(peer), Some(target)) = (peer, target) else {
        return respond(&mut tcp, "400 Bad Request", "give peer= and target=").await;
    };
    let peer = match peer.parse::<PeerRef>().and_then(|p| mesh.resolve_peer(&p)) {
        Ok(peer) => peer,
        Err(why) => return respond(&mut tcp, "502 Bad Gateway", &why).await,
    };
    let mut side = match mesh.open(peer, &target) {
        Ok(side) => side,
        Err(why) => return respond(&mut tcp, "502 Bad Gateway", &why).await,
    };
    match tokio::time::timeout(OPEN_TIMEOUT, side.opened()).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return respond(&mut tcp, "502 Bad Gateway", &why).await,
        Err(_) => {
            let why = format!(
                "peer {} did not answer within {OPEN_TIMEOUT:?}",
                peer.short()
            );
            return respond(&mut tcp, "504 Gateway Timeout", &why).await;
        }
    }
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {UPGRADE}\r\nConnection: Upgrade\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let end = side.pump(tcp).await;
    tracing::debug!("connect to {target} on {}: {end:?}", peer.short());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_round_trip() {
        for s in ["svc:ssh", "[::1]:22", "a b&c=d%", "127.0.0.1:22", "ünï"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
    }
}
