//! Counters of the shared port: datagrams by kind and drops by reason. Lock-free, read by the
//! local API; written only by the socket loop.

pub use portable_atomic::{AtomicU64, Ordering};

use crate::demux::{Drop, Kind};

/// Adds one to a counter of a [`counter_set!`] struct.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Declares a struct of monotonic counters (`AtomicU64`, portable to MIPS32) with a
/// `snapshot()` giving `(metric name, help, value)` for each, in declaration order. Shared by the
/// shared port's counters here and the agent's DTLS counters.
#[macro_export]
macro_rules! counter_set {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($field:ident => $metric:literal, $help:literal;)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $(pub $field: $crate::counters::AtomicU64,)*
        }

        impl $name {
            /// `(metric name, help, value)` for every counter, in a fixed order.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$(($metric, $help, self.$field.load($crate::counters::Ordering::Relaxed)),)*]
            }
        }
    };
}

counter_set! {
    /// Monotonic counters of the shared port (and one gauge, `turn_allocations`).
    pub struct Counters {
        rx_stun => "datagrams_stun", "STUN datagrams received (first byte 0-3)";
        rx_dtls => "datagrams_dtls", "DTLS datagrams received (first byte 20-63)";
        rx_channel_data => "datagrams_channel_data", "TURN ChannelData datagrams received (first byte 64-127)";
        drop_empty => "drop_empty", "empty datagrams dropped";
        drop_truncated => "drop_truncated", "datagrams shorter than their kind's header, dropped";
        drop_zrtp => "drop_zrtp", "ZRTP datagrams (first byte 16-19) dropped";
        drop_rtp => "drop_rtp", "RTP/RTCP datagrams (first byte 128-191) dropped";
        drop_other => "drop_other", "datagrams with an unassigned first byte dropped";
        drop_unhandled => "drop_unhandled", "classified datagrams dropped because nothing serves their kind on this node";
        drop_oversize => "drop_oversize", "datagrams longer than the 9216-byte receive slot, dropped";
        drop_malformed => "drop_malformed", "datagrams dropped because they did not parse (bad STUN, short ChannelData...)";
        stun_binding => "stun_binding_responses", "STUN Binding requests answered";
        stun_refused => "stun_refused", "STUN requests answered with an error because this node does not serve them (TURN off)";
        ice_checks => "ice_checks", "ICE connectivity checks answered (ICE-lite, for offers the signaling answered)";
        ice_refused => "ice_refused", "ICE connectivity checks refused (unknown or expired ufrag, bad integrity)";
        turn_allocations => "turn_allocations", "TURN allocations now (a gauge)";
        turn_allocations_total => "turn_allocations_total", "TURN allocations made";
        turn_auth_failures => "turn_auth_failures", "TURN requests refused for bad credentials";
        turn_quota_refused => "turn_quota_refused", "TURN allocations refused by max_allocations or max_allocations_per_user";
        turn_relay_denied => "turn_relay_denied", "TURN permissions/channels refused by the relay policy (403)";
        turn_drop_no_allocation => "turn_drop_no_allocation", "TURN data from clients without an allocation, dropped";
        turn_drop_no_permission => "turn_drop_no_permission", "TURN data to or from peers without a permission or channel, dropped";
        turn_to_peer_datagrams => "turn_to_peer_datagrams", "datagrams relayed from clients to peers";
        turn_to_peer_bytes => "turn_to_peer_bytes", "bytes relayed from clients to peers";
        turn_to_client_datagrams => "turn_to_client_datagrams", "datagrams relayed from peers to clients";
        turn_to_client_bytes => "turn_to_client_bytes", "bytes relayed from peers to clients";
        rx_bytes => "rx_bytes", "bytes received on the shared port";
        tx_datagrams => "tx_datagrams", "datagrams sent from the shared port";
        tx_bytes => "tx_bytes", "bytes sent from the shared port";
        tx_errors => "tx_errors", "datagrams the kernel refused to send";
    }
}

impl Counters {
    pub fn count(&self, class: Result<Kind, Drop>) {
        let c = match class {
            Ok(Kind::Stun) => &self.rx_stun,
            Ok(Kind::Dtls) => &self.rx_dtls,
            Ok(Kind::ChannelData) => &self.rx_channel_data,
            Err(Drop::Empty) => &self.drop_empty,
            Err(Drop::Truncated(_)) => &self.drop_truncated,
            Err(Drop::Zrtp) => &self.drop_zrtp,
            Err(Drop::Rtp) => &self.drop_rtp,
            Err(Drop::Other) => &self.drop_other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
