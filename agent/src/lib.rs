//! meshgate: the agent. Identity, configuration, the CLI and the daemon shell; the shared UDP
//! port lives in the `turn-gw` crate.

pub mod api;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod dtls;
pub mod forward;
pub mod frame;
pub mod gateway;
pub mod identity;
pub mod run;
pub mod sdnotify;
pub mod session;
pub mod signal;
