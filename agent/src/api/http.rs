//! Just enough HTTP/1.1 for the local API: one request per connection (`Connection: close`),
//! heads of at most [`MAX_HEAD`] bytes, no keep-alive. The parser is sans-IO so that bad input
//! is tested without sockets; a bad request is an `Err` with the status to answer, never a panic.

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The request head may not be longer than this.
pub const MAX_HEAD: usize = 8 * 1024;

/// Why a request cannot be served, as the status line and a text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: &'static str,
    pub why: String,
}

impl Refusal {
    pub fn new(status: &'static str, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }

    fn bad(why: &str) -> Self {
        Self::new("400 Bad Request", why)
    }
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, still percent-encoded, starting with '/'.
    pub path: String,
    /// What follows '?' (empty when nothing does).
    pub query: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses a request head (up to, not including, the blank line).
pub fn parse(head: &[u8]) -> Result<Request, Refusal> {
    let head =
        std::str::from_utf8(head).map_err(|_| Refusal::bad("the request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(Refusal::bad(
            "malformed request line: expected `METHOD /path HTTP/1.1`",
        ));
    };
    if !is_token(method) {
        return Err(Refusal::bad("malformed request line: bad method"));
    }
    if !matches!(*version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(Refusal::new(
            "505 HTTP Version Not Supported",
            "this API speaks HTTP/1.1 (and 1.0)",
        ));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control() || b > 0x7e) {
        return Err(Refusal::bad(
            "the request target must be a path (`/status`), not a URL",
        ));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines {
        // No obsolete line folding (RFC 9112 §5.2), no space before the colon (§5.1).
        let Some((name, value)) = line.split_once(':').filter(|(n, _)| is_token(n)) else {
            return Err(Refusal::bad("malformed header line"));
        };
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Request {
        method: (*method).to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    })
}

/// The end of the head (the index after the blank line), if `buf` holds all of it.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads a request head: the head (without its blank line) and the bytes read after it (the
/// start of a body). `Ok(Err(..))` is a bad request to answer.
pub async fn read_head(
    tcp: &mut TcpStream,
) -> std::io::Result<Result<(Vec<u8>, Vec<u8>), Refusal>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(Refusal::bad("the request ended before its head did")));
        }
        // Look for the end from just before the new bytes: the blank line may straddle reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf[from..]).map(|e| e + from) {
            if end > MAX_HEAD + 4 {
                break;
            }
            let rest = buf.split_off(end);
            buf.truncate(end - 4);
            return Ok(Ok((buf, rest)));
        }
        if buf.len() > MAX_HEAD + 4 {
            break;
        }
    }
    Ok(Err(Refusal::new(
        "431 Request Header Fields Too Large",
        format!("the request head is longer than {} KiB", MAX_HEAD / 1024),
    )))
}

/// A whole response; the connection closes after it.
#[derive(Debug)]
pub struct Response {
    pub status: &'static str,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
    /// The `Location` header of a redirect.
    pub location: Option<String>,
    /// Any other headers (the signaling's CORS and Date).
    pub headers: Vec<(&'static str, String)>,
}

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";
/// Prometheus text exposition format 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Response {
    /// A text body, with a final newline.
    pub fn text(status: &'static str, body: &str) -> Self {
        let mut body = body.as_bytes().to_vec();
        body.push(b'\n');
        Self {
            status,
            content_type: TEXT,
            body,
            allow: None,
            location: None,
            headers: Vec::new(),
        }
    }

    pub fn ok(content_type: &'static str, body: String) -> Self {
        Self {
            status: "200 OK",
            content_type,
            body: body.into_bytes(),
            allow: None,
            location: None,
            headers: Vec::new(),
        }
    }

    pub fn json(value: &impl serde::Serialize) -> Self {
        match serde_json::to_string_pretty(value) {
            Ok(mut body) => {
                body.push('\n');
                Self::ok(JSON, body)
            }
            Err(e) => Self::text("500 Internal Server Error", &format!("JSON: {e}")),
        }
    }

    /// Writes the response (without its body for HEAD) and closes our side.
    pub async fn send<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        head_only: bool,
    ) -> std::io::Result<()> {
        let mut extra = String::new();
        if let Some(allow) = self.allow {
            extra.push_str(&format!("Allow: {allow}\r\n"));
        }
        if let Some(location) = &self.location {
            extra.push_str(&format!("Location: {location}\r\n"));
        }
        for (name, value) in &self.headers {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
        let head = format!(
            "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Cache-Control: \
             no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        out.write_all(head.as_bytes()).await?;
        if !head_only {
            out.write_all(&self.body).await?;
        }
        out.shutdown().await
    }
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        Response::text(r.status, &r.why)
    }
}

pub fn percent_decode(s: &str) -> Option<String> {
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

    #[test]
    fn requests_parse() {
        let r = parse(b"GET /proxy/abcdefgh/a%20b?x=1&y HTTP/1.1\r\nHost: h\r\nX-A:  v \r\nx-b:")
            .unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/proxy/abcdefgh/a%20b");
        assert_eq!(r.query, "x=1&y");
        assert_eq!(r.header("x-a"), Some("v"));
        assert_eq!(r.header("X-B"), Some(""));
        assert_eq!(r.header("host"), Some("h"));
        assert_eq!(parse(b"HEAD / HTTP/1.0").unwrap().query, "");
    }

    #[test]
    fn bad_requests_are_refused_with_a_status() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "400"),
            (b"GET", "400"),
            (b"GET /", "400"),
            (b"GET  / HTTP/1.1", "400"),
            (b"GET / HTTP/1.1 x", "400"),
            (b"G(T / HTTP/1.1", "400"),
            (b"GET / HTTP/2", "505"),
            (b"GET http://x/ HTTP/1.1", "400"),
            (b"GET /\x01 HTTP/1.1", "400"),
            (b"GET / HTTP/1.1\r\nno colon", "400"),
            (b"GET / HTTP/1.1\r\n folded: x", "400"),
            (b"GET / HTTP/1.1\r\nName : x", "400"),
            (b"GET / HTTP/1.1\r\nA: \xff", "400"),
        ];
        for (head, status) in cases {
            let err = parse(head).expect_err(&String::from_utf8_lossy(head));
            assert!(err.status.starts_with(status), "{head:?}: {err:?}");
        }
    }

    #[test]
    fn head_end_is_found_across_reads() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r"), None);
    }
}
