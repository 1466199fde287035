//! meshgate: the agent. Identity, configuration, the CLI and the daemon shell; the shared UDP
//! port lives in the `turn-gw` crate.

pub mod cli;
pub mod config;
pub mod dtls;
pub mod gateway;
pub mod identity;
pub mod run;
pub mod sdnotify;
