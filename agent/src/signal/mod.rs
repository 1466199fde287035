//! HTTP signaling (DESIGN.md §8, §11): the token and the SDP, pure.

pub mod jwt;
pub mod sdp;
