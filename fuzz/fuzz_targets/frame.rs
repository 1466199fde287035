//! The frame codec (DESIGN.md §6) on arbitrary bytes: as one SCTP message (`Frame::decode`) and
//! as a byte stream cut into chunks (`Decoder`). Whatever decodes must re-encode to the very bytes
//! it came from (the encoding is canonical) and decode again to the same frame; the decoder must
//! stay within its documented bound.
//! Run: `cargo +nightly fuzz run frame` (scripts/test.sh runs it for a bounded time).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use meshgate::frame::{Decoder, Frame, HEADER_LEN, MAX_FRAME};

/// Re-encodes a decoded frame and checks that it is `wire` and decodes to the same frame.
fn check_round_trip(stream_id: u32, frame: &Frame, wire: &[u8]) {
    let mut out = BytesMut::new();
    assert!(
        frame.encode(stream_id, &mut out).is_ok(),
        "a decoded frame must encode"
    );
    assert_eq!(&out[..], wire, "the encoding is canonical");
    let again = Frame::decode(out.freeze());
    assert_eq!(again.as_ref().ok(), Some(&(stream_id, frame.clone())));
}

fuzz_target!(|data: &[u8]| {
    // As one SCTP message.
    if let Ok((stream_id, frame)) = Frame::decode(Bytes::copy_from_slice(data)) {
        check_round_trip(stream_id, &frame, data);
    }

    // As a byte stream: the first byte picks the chunk size (1-256), the rest is the stream.
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(seed) + 1;
    let mut decoder = Decoder::new();
    let mut consumed = 0;
    for piece in stream.chunks(chunk) {
        if decoder.push(piece).is_err() {
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some((stream_id, frame))) => {
                    let len = frame.payload_len() + HEADER_LEN;
                    let wire = stream.get(consumed..consumed + len);
                    assert!(wire.is_some(), "a frame from bytes that were never pushed");
                    check_round_trip(stream_id, &frame, wire.unwrap_or_default());
                    consumed += len;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        // Drained after every push: what is left is less than one whole frame.
        assert!(decoder.buffered() < MAX_FRAME);
    }
});
