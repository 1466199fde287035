//! The shared port's parsing path on arbitrary datagrams: the first-byte demux, then whatever
//! that kind's parser is, and every accessor the servers call on a parsed STUN message.
//! Run: `cargo +nightly fuzz run shared_port` (scripts/test.sh runs it for a bounded time).

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use turn_gw::stun::{self, Message};
use turn_gw::{IceLite, Kind, binding, classify, demux};

const ATTRS: &[u16] = &[
    stun::USERNAME,
    stun::REALM,
    stun::NONCE,
    stun::LIFETIME,
    stun::CHANNEL_NUMBER,
    stun::REQUESTED_TRANSPORT,
    stun::EVEN_PORT,
    stun::RESERVATION_TOKEN,
    stun::ATTR_DATA,
];

fn exercise(m: &Message<'_>) {
    let from: SocketAddr = "192.0.2.1:3478".parse().unwrap_or(SocketAddr::from(([0; 4], 0)));
    for &t in ATTRS {
        let _ = m.get(t);
        let _ = m.text(t);
        let _ = m.u32_attr(t);
    }
    let _ = m.xor_address(stun::XOR_PEER_ADDRESS);
    let _ = m.xor_address(stun::XOR_MAPPED_ADDRESS);
    let _ = m.get_all(stun::XOR_PEER_ADDRESS).count();
    let _ = m.unknown_required(ATTRS);
    let _ = m.check_integrity(b"key");
    // Building the answer from hostile input must not panic either.
    let _ = binding::respond(m, from);
    // The ICE-lite responder, with a live entry so that hostile checks reach the integrity check.
    let ice = IceLite::default();
    let now = std::time::Instant::now();
    let _ = ice.expect(now, "ufrag", "passwordpasswordpassword", "remote", [0; 32]);
    let _ = ice.check(now, m, from);
}

fuzz_target!(|data: &[u8]| {
    let from: SocketAddr = SocketAddr::from(([198, 51, 100, 7], 40000));
    match classify(data) {
        Ok(Kind::Stun) => match Message::parse(data) {
            Ok(m) => exercise(&m),
            Err(_) => {
                let _ = binding::respond_classic(data, from);
            }
        },
        Ok(Kind::ChannelData) => {
            let _ = demux::channel_data(data);
        }
        Ok(Kind::Dtls) | Err(_) => {}
    }
    // The parsers must hold up whatever the first byte says.
    if let Ok(m) = Message::parse(data) {
        exercise(&m);
    }
    let _ = demux::channel_data(data);
});
