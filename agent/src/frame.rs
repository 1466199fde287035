//! The frame codec of DESIGN.md §6: how a forwarded TCP connection travels over a session.
//!
//! A frame is an 8-byte little-endian header, `u32 stream_id | u16 payload_len | u8 type |
//! u8 flags(0)`, then at most [`MAX_PAYLOAD`] (16384) payload bytes. On an SCTP stream each message
//! is exactly one frame ([`Frame::encode`] / [`Frame::decode`]); over a byte stream (the
//! single-channel mux or a TCP fallback) the length field makes frames self-delimiting and
//! [`Decoder`] cuts them out again.
//!
//! Sans-IO: bytes in, frames or a typed [`FrameError`] out; no sockets, no clock, no panics on any
//! input. Bounds: a frame is at most [`MAX_FRAME`] bytes on the wire, and a [`Decoder`] holds at
//! most `MAX_FRAME - 1` bytes plus the one chunk it was last given (see [`Decoder::push`]).

use bytes::{BufMut, Bytes, BytesMut};

pub const HEADER_LEN: usize = 8;
pub const MAX_PAYLOAD: usize = 16_384;
/// The largest frame on the wire: header plus the largest payload.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;
/// Credit each side starts a stream with (DESIGN §6).
pub const INITIAL_CREDIT: u32 = 262_144;

/// The wire type bytes.
pub mod kind {
    pub const DATA: u8 = 0;
    pub const OPEN: u8 = 1;
    pub const OPEN_OK: u8 = 2;
    pub const OPEN_ERR: u8 = 3;
    pub const EOF: u8 = 4;
    pub const RESET: u8 = 5;
    pub const CREDIT: u8 = 6;
    pub const PING: u8 = 7;
    pub const PONG: u8 = 8;

    /// The protocol's name for a type byte, for messages.
    pub fn name(kind: u8) -> &'static str {
        match kind {
            DATA => "DATA",
            OPEN => "OPEN",
            OPEN_OK => "OPEN_OK",
            OPEN_ERR => "OPEN_ERR",
            EOF => "EOF",
            RESET => "RESET",
            CREDIT => "CREDIT",
            PING => "PING",
            PONG => "PONG",
            _ => "unknown",
        }
    }

    /// The payload length a type requires, for the types whose payload has a fixed size.
    pub(super) fn fixed_len(kind: u8) -> Option<usize> {
        match kind {
            OPEN_OK | EOF => Some(0),
            CREDIT => Some(4),
            PING | PONG => Some(8),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of the forwarded TCP connection.
    Data(Bytes),
    /// Dialer to acceptor: connect to this target (`host:port` or `svc:NAME`).
    Open(String),
    OpenOk,
    /// The acceptor refused or could not connect; a human reason.
    OpenErr(String),
    /// TCP half-close (shutdown write) in the sender's direction.
    Eof,
    /// Abort the stream; a human reason.
    Reset(String),
    /// The receiver grants this many more bytes of DATA payload.
    Credit(u32),
    Ping(u64),
    Pong(u64),
}

/// Why bytes are not a frame, or a frame cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the header, or than the payload length the header declares.
    #[error(
        "frame truncated: shorter than its {HEADER_LEN}-byte header or than the payload length \
         the header declares"
    )]
    Truncated,
    /// A header declares, or an encoder was given, a payload over [`MAX_PAYLOAD`] bytes.
    #[error("frame payload longer than {MAX_PAYLOAD} bytes")]
    TooLong,
    /// A type byte this version does not know (a protocol error: reset the stream).
    #[error("unknown frame type {0} (known types are 0-8)")]
    UnknownType(u8),
    /// Nonzero flags (a protocol error: reset the stream).
    #[error("frame flags are {0:#04x}; this version only sends and accepts 0")]
    Flags(u8),
    /// A fixed-size payload of the wrong size (OPEN_OK/EOF 0, CREDIT 4, PING/PONG 8).
    #[error(
        "{} frame with a {len}-byte payload; it carries exactly {}",
        kind::name(*.kind),
        kind::fixed_len(*.kind).unwrap_or(0)
    )]
    BadLength { kind: u8, len: usize },
    /// The text of an OPEN, OPEN_ERR or RESET is not UTF-8.
    #[error("OPEN, OPEN_ERR or RESET frame whose text is not UTF-8")]
    Utf8,
    /// Bytes after the frame: an SCTP message carries exactly one frame.
    #[error("{0} bytes after the frame; an SCTP message carries exactly one frame")]
    Trailing(usize),
    /// [`Decoder::push`] refused bytes: it already holds this many, a whole frame or more.
    #[error(
        "frame decoder already holds {0} bytes (a whole frame or more); take frames with \
         next_frame before pushing more"
    )]
    Undrained(usize),
}

/// A header that passed every check that does not need the payload.
#[derive(Debug, Clone, Copy)]
struct Header {
    stream_id: u32,
    len: usize,
    kind: u8,
}

impl Header {
    /// Parses and checks the first [`HEADER_LEN`] bytes of `bytes`: flags and type first (the
    /// rest means nothing otherwise), then the length against the limit and the type.
    fn parse(bytes: &[u8]) -> Result<Self, FrameError> {
        let h: [u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated)?;
        let stream_id = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let len = usize::from(u16::from_le_bytes([h[4], h[5]]));
        let kind = h[6];
        let flags = h[7];
        if flags != 0 {
            return Err(FrameError::Flags(flags));
        }
        if kind > kind::PONG {
            return Err(FrameError::UnknownType(kind));
        }
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong);
        }
        if kind::fixed_len(kind).is_some_and(|want| want != len) {
            return Err(FrameError::BadLength { kind, len });
        }
        Ok(Self {
            stream_id,
            len,
            kind,
        })
    }
}

fn text(payload: &[u8]) -> Result<String, FrameError> {
    std::str::from_utf8(payload)
        .map(str::to_owned)
        .map_err(|_| FrameError::Utf8)
}

/// The longest prefix of `s` that fits a payload, cut at a char boundary.
fn fit(s: &str) -> &str {
    let mut end = s.len().min(MAX_PAYLOAD);
    // Index 0 is always a boundary, so this stops.
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

impl Frame {
    /// The wire type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Data(_) => kind::DATA,
            Self::Open(_) => kind::OPEN,
            Self::OpenOk => kind::OPEN_OK,
            Self::OpenErr(_) => kind::OPEN_ERR,
            Self::Eof => kind::EOF,
            Self::Reset(_) => kind::RESET,
            Self::Credit(_) => kind::CREDIT,
            Self::Ping(_) => kind::PING,
            Self::Pong(_) => kind::PONG,
        }
    }

    /// A RESET whose reason is `reason` cut at a char boundary to fit a payload, for reasons
    /// built from error text of unknown length.
    pub fn reset_truncated(reason: &str) -> Self {
        Self::Reset(fit(reason).to_owned())
    }

    /// An OPEN_ERR whose reason is `reason` cut at a char boundary to fit a payload.
    pub fn open_err_truncated(reason: &str) -> Self {
        Self::OpenErr(fit(reason).to_owned())
    }

    /// Payload length on the wire.
    pub fn payload_len(&self) -> usize {
        match self {
            Self::Data(b) => b.len(),
            Self::Open(s) | Self::OpenErr(s) | Self::Reset(s) => s.len(),
            Self::OpenOk | Self::Eof => 0,
            Self::Credit(_) => 4,
            Self::Ping(_) | Self::Pong(_) => 8,
        }
    }

    /// Appends header + payload. Err(TooLong), with nothing appended, if the payload exceeds
    /// [`MAX_PAYLOAD`]: a reason that long is an error, not silently cut (see
    /// [`Frame::reset_truncated`]).
    pub fn encode(&self, stream_id: u32, out: &mut BytesMut) -> Result<(), FrameError> {
        let len = self.payload_len();
        let wire_len = u16::try_from(len)
            .ok()
            .filter(|_| len <= MAX_PAYLOAD)
            .ok_or(FrameError::TooLong)?;
        out.reserve(HEADER_LEN + len);
        out.put_u32_le(stream_id);
        out.put_u16_le(wire_len);
        out.put_u8(self.kind());
        out.put_u8(0);
        match self {
            Self::Data(b) => out.put_slice(b),
            Self::Open(s) | Self::OpenErr(s) | Self::Reset(s) => out.put_slice(s.as_bytes()),
            Self::OpenOk | Self::Eof => {}
            Self::Credit(n) => out.put_u32_le(*n),
            Self::Ping(n) | Self::Pong(n) => out.put_u64_le(*n),
        }
        Ok(())
    }

    /// Exactly one frame: a whole SCTP message. Zero-copy for DATA (a slice of `msg`).
    pub fn decode(msg: Bytes) -> Result<(u32, Frame), FrameError> {
        let header = Header::parse(&msg)?;
        let body = msg.len().saturating_sub(HEADER_LEN);
        if body < header.len {
            return Err(FrameError::Truncated);
        }
        if body > header.len {
            return Err(FrameError::Trailing(body - header.len));
        }
        let frame = Self::from_payload(header, msg.slice(HEADER_LEN..))?;
        Ok((header.stream_id, frame))
    }

    /// The frame of a checked header and its whole payload.
    fn from_payload(header: Header, payload: Bytes) -> Result<Self, FrameError> {
        Ok(match header.kind {
            kind::DATA => Self::Data(payload),
            kind::OPEN => Self::Open(text(&payload)?),
            kind::OPEN_OK => Self::OpenOk,
            kind::OPEN_ERR => Self::OpenErr(text(&payload)?),
            kind::EOF => Self::Eof,
            kind::RESET => Self::Reset(text(&payload)?),
            kind::CREDIT => Self::Credit(u32::from_le_bytes(array(header.kind, &payload)?)),
            kind::PING => Self::Ping(u64::from_le_bytes(array(header.kind, &payload)?)),
            kind::PONG => Self::Pong(u64::from_le_bytes(array(header.kind, &payload)?)),
            other => return Err(FrameError::UnknownType(other)),
        })
    }
}

/// A fixed-size payload as an array (Header::parse has checked the size; this keeps it a
/// typed error rather than a panic).
fn array<const N: usize>(kind: u8, payload: &[u8]) -> Result<[u8; N], FrameError> {
    payload.try_into().map_err(|_| FrameError::BadLength {
        kind,
        len: payload.len(),
    })
}

/// Writes a DATA header for `payload_len` bytes into the first [`HEADER_LEN`] bytes of `buf`
/// (callers read TCP into `buf[HEADER_LEN..]` and fill the header in afterwards: no copy).
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`] or `payload_len` exceeds [`MAX_PAYLOAD`]: both are
/// the caller's buffer arithmetic, never network input.
pub fn put_data_header(buf: &mut [u8], stream_id: u32, payload_len: usize) {
    assert!(
        payload_len <= MAX_PAYLOAD,
        "DATA payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"
    );
    let [l0, l1] = (payload_len as u16).to_le_bytes();
    let [s0, s1, s2, s3] = stream_id.to_le_bytes();
    buf[..HEADER_LEN].copy_from_slice(&[s0, s1, s2, s3, l0, l1, kind::DATA, 0]);
}

/// Byte-stream mode (single-channel mux / TCP fallback, §6): push bytes in, pull whole frames
/// out. Pushed bytes are copied once, into the decoder's buffer; DATA payloads are slices of it
/// (a DATA frame the caller keeps holds on to that part of the buffer, not more).
///
/// Bound: [`Decoder::push`] refuses a chunk while the decoder already holds [`MAX_FRAME`] bytes
/// or more (those bytes necessarily contain a whole frame the caller has not taken), so it never
/// holds more than `MAX_FRAME - 1` bytes plus the last chunk. A caller that calls
/// [`Decoder::next_frame`] until it returns `None` after each push is never refused.
///
/// A bad header is reported as soon as its 8 bytes are in, without waiting for the payload.
/// Errors other than `Undrained` are final: a byte stream that carried a bad frame cannot be
/// resynchronised, so every later call returns the same error and the caller drops the stream.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    failed: Option<FrameError>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes`, or refuses them whole with [`FrameError::Undrained`] (nothing taken;
    /// drain with [`Decoder::next_frame`] and push again) or with the decoder's earlier error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() >= MAX_FRAME {
            return Err(FrameError::Undrained(self.buf.len()));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole frame, `None` if more bytes are needed, or the stream's error.
    pub fn next_frame(&mut self) -> Result<Option<(u32, Frame)>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = match Header::parse(&self.buf) {
            Ok(h) => h,
            Err(e) => return Err(self.fail(e)),
        };
        if self.buf.len() < HEADER_LEN + header.len {
            return Ok(None);
        }
        let mut msg = self.buf.split_to(HEADER_LEN + header.len).freeze();
        let payload = msg.split_off(HEADER_LEN);
        match Frame::from_payload(header, payload) {
            Ok(frame) => Ok(Some((header.stream_id, frame))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Bytes held: a partial frame and any frames not yet taken.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e.clone());
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn encoded(stream_id: u32, frame: &Frame) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame.encode(stream_id, &mut out).unwrap();
        out.to_vec()
    }

    fn decode(bytes: &[u8]) -> Result<(u32, Frame), FrameError> {
        Frame::decode(Bytes::copy_from_slice(bytes))
    }

    fn header(stream_id: u32, len: u16, kind: u8, flags: u8) -> Vec<u8> {
        let mut h = stream_id.to_le_bytes().to_vec();
        h.extend_from_slice(&len.to_le_bytes());
        h.extend_from_slice(&[kind, flags]);
        h
    }

    fn one_of_each() -> Vec<Frame> {
        vec![
            Frame::Data(Bytes::from_static(b"hello")),
            Frame::Data(Bytes::new()),
            Frame::Open("example.org:22".into()),
            Frame::OpenOk,
            Frame::OpenErr("connection refused".into()),
            Frame::Eof,
            Frame::Reset("peer went away: ünïcödé".into()),
            Frame::Credit(INITIAL_CREDIT),
            Frame::Ping(u64::MAX),
            Frame::Pong(0),
        ]
    }

    #[test]
    fn each_type_round_trips() {
        for (i, frame) in one_of_each().into_iter().enumerate() {
            let stream_id = 0x9000_0000 + i as u32;
            let wire = encoded(stream_id, &frame);
            assert_eq!(wire.len(), HEADER_LEN + frame.payload_len());
            assert_eq!(decode(&wire), Ok((stream_id, frame.clone())), "{frame:?}");
            assert_eq!(wire[6], frame.kind());
        }
    }

    #[test]
    fn wire_bytes_of_each_type() {
        let cases: &[(u32, Frame, &[u8])] = &[
            (
                0x0102_0304,
                Frame::Data(Bytes::from_static(b"hi")),
                &[4, 3, 2, 1, 2, 0, 0, 0, b'h', b'i'],
            ),
            (
                7,
                Frame::Open("a:1".into()),
                &[7, 0, 0, 0, 3, 0, 1, 0, b'a', b':', b'1'],
            ),
            (0x0001_0000, Frame::OpenOk, &[0, 0, 1, 0, 0, 0, 2, 0]),
            (
                u32::MAX,
                Frame::OpenErr("no".into()),
                &[0xff, 0xff, 0xff, 0xff, 2, 0, 3, 0, b'n', b'o'],
            ),
            (1, Frame::Eof, &[1, 0, 0, 0, 0, 0, 4, 0]),
            (2, Frame::Reset("x".into()), &[2, 0, 0, 0, 1, 0, 5, 0, b'x']),
            (
                3,
                Frame::Credit(262_144),
                &[3, 0, 0, 0, 4, 0, 6, 0, 0x00, 0x00, 0x04, 0x00],
            ),
            (
                0,
                Frame::Ping(0x0102_0304_0506_0708),
                &[0, 0, 0, 0, 8, 0, 7, 0, 8, 7, 6, 5, 4, 3, 2, 1],
            ),
            (
                0x0a0b,
                Frame::Pong(0x1122_3344_5566_7788),
                &[
                    0x0b, 0x0a, 0, 0, 8, 0, 8, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
                ],
            ),
        ];
        for (stream_id, frame, wire) in cases {
            assert_eq!(encoded(*stream_id, frame), *wire, "encoding {frame:?}");
            assert_eq!(
                decode(wire),
                Ok((*stream_id, frame.clone())),
                "decoding {frame:?}"
            );
        }
        // The length field is a little-endian u16: 258 = 0x0102.
        let wire = encoded(0, &Frame::Data(Bytes::from(vec![0xaa; 258])));
        assert_eq!(wire[..8], [0, 0, 0, 0, 0x02, 0x01, 0, 0]);
    }

    #[test]
    fn max_payload_is_accepted_one_more_is_refused() {
        let max = Frame::Data(Bytes::from(vec![7; MAX_PAYLOAD]));
        let wire = encoded(5, &max);
        assert_eq!(wire[4..6], [0x00, 0x40]);
        assert_eq!(decode(&wire), Ok((5, max)));
        let text = "r".repeat(MAX_PAYLOAD);
        for frame in [
            Frame::Open(text.clone()),
            Frame::OpenErr(text.clone()),
            Frame::Reset(text),
        ] {
            assert_eq!(decode(&encoded(1, &frame)), Ok((1, frame)));
        }

        let mut out = BytesMut::from(&b"kept"[..]);
        let over = "r".repeat(MAX_PAYLOAD + 1);
        for frame in [
            Frame::Data(Bytes::from(vec![7; MAX_PAYLOAD + 1])),
            Frame::Data(Bytes::from(vec![7; 70_000])), // does not fit a u16 either
            Frame::Open(over.clone()),
            Frame::OpenErr(over.clone()),
            Frame::Reset(over),
        ] {
            assert_eq!(frame.encode(1, &mut out), Err(FrameError::TooLong));
            assert_eq!(&out[..], b"kept", "nothing appended on error");
        }

        let mut wire = header(1, MAX_PAYLOAD as u16 + 1, kind::DATA, 0);
        assert_eq!(
            decode(&wire),
            Err(FrameError::TooLong),
            "refused from the header alone"
        );
        wire.resize(HEADER_LEN + MAX_PAYLOAD + 1, 0);
        assert_eq!(decode(&wire), Err(FrameError::TooLong));
        assert_eq!(
            decode(&header(1, u16::MAX, kind::OPEN, 0)),
            Err(FrameError::TooLong)
        );
    }

    #[test]
    fn short_input_is_truncated() {
        let wire = encoded(1, &Frame::Ping(9));
        for n in 0..wire.len() {
            assert_eq!(decode(&wire[..n]), Err(FrameError::Truncated), "{n} bytes");
        }
        // The header declares 5 bytes, 4 are present.
        let mut wire = header(1, 5, kind::DATA, 0);
        wire.extend_from_slice(b"abcd");
        assert_eq!(decode(&wire), Err(FrameError::Truncated));
    }

    #[test]
    fn unknown_type_and_flags_are_refused() {
        for t in [9, 10, 0x7f, 0xff] {
            assert_eq!(decode(&header(1, 0, t, 0)), Err(FrameError::UnknownType(t)));
        }
        for f in [1, 0x80, 0xff] {
            assert_eq!(
                decode(&header(1, 0, kind::EOF, f)),
                Err(FrameError::Flags(f))
            );
        }
    }

    #[test]
    fn fixed_size_payloads_of_the_wrong_size_are_refused() {
        let cases = [
            (kind::OPEN_OK, 1),
            (kind::EOF, 3),
            (kind::CREDIT, 0),
            (kind::CREDIT, 3),
            (kind::CREDIT, 5),
            (kind::PING, 7),
            (kind::PING, 16),
            (kind::PONG, 4),
            (kind::PONG, 9),
        ];
        for (kind, len) in cases {
            let mut wire = header(1, len as u16, kind, 0);
            wire.resize(HEADER_LEN + len, 0);
            assert_eq!(decode(&wire), Err(FrameError::BadLength { kind, len }));
        }
        assert_eq!(
            FrameError::BadLength {
                kind: kind::CREDIT,
                len: 3
            }
            .to_string(),
            "CREDIT frame with a 3-byte payload; it carries exactly 4"
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        for kind in [kind::OPEN, kind::OPEN_ERR, kind::RESET] {
            let mut wire = header(1, 3, kind, 0);
            wire.extend_from_slice(&[b'a', 0xc3, 0x28]);
            assert_eq!(decode(&wire), Err(FrameError::Utf8));
        }
    }

    #[test]
    fn bytes_after_the_frame_are_trailing() {
        let mut wire = encoded(1, &Frame::Eof);
        wire.push(0);
        assert_eq!(decode(&wire), Err(FrameError::Trailing(1)));
        let mut two = encoded(1, &Frame::Data(Bytes::from_static(b"ab")));
        two.extend_from_slice(&encoded(1, &Frame::Credit(1)));
        assert_eq!(decode(&two), Err(FrameError::Trailing(HEADER_LEN + 4)));
    }

    #[test]
    fn decode_data_is_a_slice_of_the_message() {
        let msg = Bytes::from(encoded(3, &Frame::Data(Bytes::from_static(b"payload"))));
        let start = msg.as_ptr() as usize;
        let Ok((3, Frame::Data(data))) = Frame::decode(msg) else {
            panic!("not DATA")
        };
        assert_eq!(data.as_ptr() as usize, start + HEADER_LEN);
    }

    #[test]
    fn reasons_are_cut_at_a_char_boundary() {
        assert_eq!(
            Frame::reset_truncated("short"),
            Frame::Reset("short".into())
        );
        assert_eq!(Frame::open_err_truncated(""), Frame::OpenErr(String::new()));
        // 'é' is 2 bytes: after one 'a', byte MAX_PAYLOAD is inside a character.
        let long = format!("a{}", "é".repeat(MAX_PAYLOAD));
        let Frame::Reset(cut) = Frame::reset_truncated(&long) else {
            panic!()
        };
        assert_eq!(cut.len(), MAX_PAYLOAD - 1);
        assert!(long.starts_with(&cut));
        // '€' is 3 bytes; 16384 = 3 * 5461 + 1.
        let long = "€".repeat(MAX_PAYLOAD);
        let frame = Frame::open_err_truncated(&long);
        assert_eq!(frame.payload_len(), MAX_PAYLOAD - 1);
        assert_eq!(decode(&encoded(4, &frame)), Ok((4, frame)));
        let exact = "x".repeat(MAX_PAYLOAD);
        assert_eq!(Frame::reset_truncated(&exact), Frame::Reset(exact));
    }

    #[test]
    fn put_data_header_writes_what_encode_writes() {
        let mut buf = vec![0u8; HEADER_LEN + 300];
        buf[HEADER_LEN..].fill(0x5a);
        put_data_header(&mut buf, 0xdead_beef, 300);
        assert_eq!(
            buf,
            encoded(0xdead_beef, &Frame::Data(Bytes::from(vec![0x5a; 300])))
        );

        let mut buf = vec![0u8; HEADER_LEN];
        put_data_header(&mut buf, 1, MAX_PAYLOAD);
        assert_eq!(buf, header(1, MAX_PAYLOAD as u16, kind::DATA, 0));
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn put_data_header_refuses_an_oversized_payload() {
        put_data_header(&mut [0u8; HEADER_LEN], 1, MAX_PAYLOAD + 1);
    }

    #[test]
    fn decoder_waits_for_whole_frames() {
        let mut d = Decoder::new();
        let wire = encoded(2, &Frame::Open("svc:ssh".into()));
        for (i, b) in wire.iter().enumerate() {
            assert_eq!(d.next_frame(), Ok(None), "after {i} bytes");
            d.push(&[*b]).unwrap();
        }
        assert_eq!(d.next_frame(), Ok(Some((2, Frame::Open("svc:ssh".into())))));
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_reports_a_bad_header_before_its_payload_and_stays_failed() {
        let mut d = Decoder::new();
        d.push(&header(1, 100, kind::DATA, 1)).unwrap();
        assert_eq!(d.next_frame(), Err(FrameError::Flags(1)));
        assert_eq!(d.push(b"more"), Err(FrameError::Flags(1)));
        assert_eq!(d.next_frame(), Err(FrameError::Flags(1)));

        let mut d = Decoder::new();
        d.push(&header(1, u16::MAX, kind::DATA, 0)).unwrap();
        assert_eq!(d.next_frame(), Err(FrameError::TooLong));

        let mut d = Decoder::new();
        d.push(&header(1, 2, kind::PING, 0)).unwrap();
        assert_eq!(
            d.next_frame(),
            Err(FrameError::BadLength {
                kind: kind::PING,
                len: 2
            })
        );

        let mut d = Decoder::new();
        let mut wire = encoded(1, &Frame::Eof);
        wire.extend_from_slice(&header(1, 1, kind::RESET, 0));
        wire.push(0xff);
        d.push(&wire).unwrap();
        assert_eq!(d.next_frame(), Ok(Some((1, Frame::Eof))));
        assert_eq!(d.next_frame(), Err(FrameError::Utf8));
        assert_eq!(d.next_frame(), Err(FrameError::Utf8));

        let mut d = Decoder::new();
        d.push(&header(1, 0, 42, 0)).unwrap();
        assert_eq!(d.next_frame(), Err(FrameError::UnknownType(42)));
    }

    #[test]
    fn decoder_refuses_a_push_until_drained() {
        let big = encoded(1, &Frame::Data(Bytes::from(vec![1; MAX_PAYLOAD])));
        let mut d = Decoder::new();
        // Below one whole frame held, a push is taken, however large.
        d.push(&big[..MAX_FRAME - 1]).unwrap();
        d.push(&[&big[MAX_FRAME - 1..], &big[..]].concat()).unwrap();
        assert_eq!(d.buffered(), 2 * MAX_FRAME);
        assert_eq!(d.push(b"x"), Err(FrameError::Undrained(2 * MAX_FRAME)));
        assert_eq!(d.buffered(), 2 * MAX_FRAME, "a refused push takes nothing");
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.push(b"x"), Err(FrameError::Undrained(MAX_FRAME)));
        assert!(d.next_frame().unwrap().is_some());
        d.push(&big[..1]).unwrap(); // not a sticky error: drained, it takes bytes again
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 1);
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            8 => vec(any::<u8>(), 0..64),
            1 => vec(any::<u8>(), MAX_PAYLOAD - 16..=MAX_PAYLOAD),
        ]
        .prop_map(Bytes::from)
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => any::<String>(),
            1 => any::<char>().prop_map(|c| fit(&c.to_string().repeat(MAX_PAYLOAD)).to_owned()),
        ]
        .prop_filter("fits a payload", |s| s.len() <= MAX_PAYLOAD)
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            arb_bytes().prop_map(Frame::Data),
            arb_text().prop_map(Frame::Open),
            Just(Frame::OpenOk),
            arb_text().prop_map(Frame::OpenErr),
            Just(Frame::Eof),
            arb_text().prop_map(Frame::Reset),
            any::<u32>().prop_map(Frame::Credit),
            any::<u64>().prop_map(Frame::Ping),
            any::<u64>().prop_map(Frame::Pong),
        ]
    }

    /// Mostly noise, partly headers that are nearly right (small lengths, types around 0-8,
    /// flags mostly 0) so the later checks are reached too.
    fn arb_wire() -> impl Strategy<Value = Vec<u8>> {
        let near_frame = (
            any::<u32>(),
            prop_oneof![2 => Just(0u16), 2 => Just(4), 2 => Just(8), 4 => 0u16..20, 1 => any::<u16>()],
            prop_oneof![8 => 0u8..9, 1 => any::<u8>()],
            prop_oneof![8 => Just(0u8), 1 => any::<u8>()],
            prop_oneof![8 => Just(0usize), 1 => 0usize..3],
            prop_oneof![8 => Just(0usize), 1 => 0usize..3],
            vec(prop_oneof![8 => 0x20u8..0x7f, 1 => any::<u8>()], 24),
        )
            .prop_map(|(id, len, kind, flags, more, less, bytes)| {
                // Usually exactly the declared payload, sometimes a little more or less.
                let n = (usize::from(len) + more).saturating_sub(less).min(bytes.len());
                let mut w = header(id, len, kind, flags);
                w.extend_from_slice(&bytes[..n]);
                w
            });
        prop_oneof![
            vec(any::<u8>(), 0..300),
            vec(near_frame, 1..8).prop_map(|parts| parts.concat()),
        ]
    }

    /// Chunk sizes for feeding a Decoder: some tiny (splitting headers), some large.
    fn arb_cuts() -> impl Strategy<Value = Vec<usize>> {
        vec(prop_oneof![1usize..10, 1usize..40_000], 1..40)
    }

    /// Feeds `wire` to a decoder in chunks cut by `cuts` (cycled), draining after each push.
    /// Returns the frames and the first error; checks the buffer bound on the way.
    fn feed(wire: &[u8], cuts: &[usize]) -> (Vec<(u32, Frame)>, Option<FrameError>) {
        let mut d = Decoder::new();
        let mut frames = Vec::new();
        let mut rest = wire;
        let mut sizes = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap()).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            if let Err(e) = d.push(chunk) {
                return (frames, Some(e));
            }
            assert!(d.buffered() < MAX_FRAME + chunk.len());
            loop {
                match d.next_frame() {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
            assert!(d.buffered() < MAX_FRAME);
        }
        (frames, None)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn frames_round_trip(stream_id in any::<u32>(), frame in arb_frame()) {
            let wire = encoded(stream_id, &frame);
            prop_assert_eq!(wire.len(), HEADER_LEN + frame.payload_len());
            prop_assert_eq!(decode(&wire), Ok((stream_id, frame)));
        }

        #[test]
        fn frame_streams_round_trip_through_the_decoder_split_anywhere(
            frames in vec((any::<u32>(), arb_frame()), 0..24),
            cuts in arb_cuts(),
        ) {
            let mut wire = BytesMut::new();
            for (id, f) in &frames {
                f.encode(*id, &mut wire).unwrap();
            }
            let (got, err) = feed(&wire, &cuts);
            prop_assert_eq!(err, None);
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_frame_or_a_typed_error(wire in arb_wire()) {
            // The encoding is canonical: whatever decodes re-encodes to the same bytes.
            if let Ok((id, frame)) = decode(&wire) {
                prop_assert_eq!(encoded(id, &frame), wire);
            }
        }

        #[test]
        fn arbitrary_bytes_through_the_decoder(wire in arb_wire(), cuts in arb_cuts()) {
            let (frames, err) = feed(&wire, &cuts);
            let mut again = Vec::new();
            for (id, f) in &frames {
                again.extend_from_slice(&encoded(*id, f));
            }
            prop_assert!(wire.starts_with(&again));
            if err.is_none() {
                // What is left over is one incomplete frame: shorter than its header says.
                let rest = &wire[again.len()..];
                prop_assert!(matches!(decode(rest), Err(FrameError::Truncated)) || rest.is_empty());
            }
        }
    }
}
