//! Signaling: how peers that only have HTTP (browsers, aiortc) join (DESIGN.md §8, §11).

pub mod jwt;
pub mod relay;
pub mod sdp;
mod serve;

pub use serve::{SignalCounters, Signaling, http_date, serve};
