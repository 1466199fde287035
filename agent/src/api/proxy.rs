//! `/proxy/<peer>/<path>`: carries one HTTP request to the peer's `[[service]]` named `http`
//! (DESIGN.md §8). The request line and head are rewritten (`/<path>?<query>`, `Host` the
//! peer's short ID, hop-by-hop headers dropped, `Connection: close`); the body and the whole
//! answer pass through untouched, so any framing (Content-Length, chunked) and any status work.
//! `X-Forwarded-Prefix: /proxy/<peer>` lets an application build links that come back here.

use bytes::Bytes;
use tokio::net::TcpStream;

use super::http::{Request, Response};
use super::{ApiState, open_stream};

/// The service a proxied request goes to.
pub const SERVICE: &str = "http";

/// Headers that concern one connection only (RFC 9110 §7.6.1), and ours, which a client may
/// not set.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "x-forwarded-host",
    "x-forwarded-prefix",
];

pub async fn serve(
    mut tcp: TcpStream,
    state: &ApiState,
    request: &Request,
    body: Vec<u8>,
) -> std::io::Result<()> {
    let rest = request.path.strip_prefix("/proxy/").unwrap_or_default();
    let (peer, path) = match rest.split_once('/') {
        Some((peer, path)) => (peer, path),
        None if !rest.is_empty() => {
            // `/proxy/<peer>`: relative links of the peer's pages need the trailing slash.
            let query = if request.query.is_empty() {
                String::new()
            } else {
                format!("?{}", request.query)
            };
            let location = format!("/proxy/{rest}/{query}");
            let mut moved = Response::text("308 Permanent Redirect", &location);
            moved.location = Some(location);
            return moved.send(&mut tcp, false).await;
        }
        None => {
            let why = "give the peer and the path: /proxy/<peer id or short id>/<path>";
            return Response::text("404 Not Found", why)
                .send(&mut tcp, false)
                .await;
        }
    };
    let target = format!("svc:{SERVICE}");
    let (id, side) = match open_stream(&state.mesh, peer, &target).await {
        Ok(opened) => opened,
        Err(mut refusal) => {
            refusal.why = format!(
                "cannot reach the {SERVICE} service of peer {peer}: {}",
                refusal.why
            );
            return Response::from(refusal).send(&mut tcp, false).await;
        }
    };
    let mut prefix = rewrite(request, &id.short(), peer, path).into_bytes();
    prefix.extend_from_slice(&body);
    let end = side.pump_with(tcp, Bytes::from(prefix)).await;
    tracing::debug!(
        "proxy {} /{path} on {}: {end:?}",
        request.method,
        id.short()
    );
    Ok(())
}

/// The request head as the peer's service gets it.
fn rewrite(request: &Request, host: &str, peer: &str, path: &str) -> String {
    // Headers that the Connection header names are hop-by-hop too.
    let named: Vec<String> = request
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    let query = if request.query.is_empty() {
        String::new()
    } else {
        format!("?{}", request.query)
    };
    let mut head = format!(
        "{} /{path}{query} HTTP/1.1\r\nHost: {host}\r\n",
        request.method
    );
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if DROPPED.contains(&lower.as_str()) || named.contains(&lower) {
            continue;
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(host) = request.header("host") {
        head.push_str(&format!("X-Forwarded-Host: {host}\r\n"));
    }
    head.push_str(&format!(
        "X-Forwarded-Prefix: /proxy/{peer}\r\nConnection: close\r\n\r\n"
    ));
    head
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::http::parse;

    #[test]
    fn the_head_is_rewritten_for_the_service() {
        let request = parse(
            b"POST /proxy/abcdefgh/a/b%20c?x=1 HTTP/1.1\r\nHost: 127.0.0.1:42000\r\n\
              Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 3\r\n\
              Upgrade: websocket\r\nX-Forwarded-Prefix: /evil\r\nAccept: */*",
        )
        .unwrap();
        assert_eq!(
            rewrite(&request, "abcdefgh", "abcdefgh", "a/b%20c"),
            "POST /a/b%20c?x=1 HTTP/1.1\r\nHost: abcdefgh\r\nContent-Length: 3\r\n\
             Accept: */*\r\nX-Forwarded-Host: 127.0.0.1:42000\r\n\
             X-Forwarded-Prefix: /proxy/abcdefgh\r\nConnection: close\r\n\r\n"
        );
        let request = parse(b"GET /proxy/abcdefgh/ HTTP/1.0").unwrap();
        assert_eq!(
            rewrite(&request, "abcdefgh", "abcdefgh", ""),
            "GET / HTTP/1.1\r\nHost: abcdefgh\r\nX-Forwarded-Prefix: /proxy/abcdefgh\r\n\
             Connection: close\r\n\r\n"
        );
    }
}
