//! Plumbing shared by `rlm-orchestrator` and `rlm-sandbox-agent`: layered
//! configuration, listen addresses, telemetry, trace propagation, and the gRPC
//! serving and shutdown sequence.

pub mod config;
pub mod deadline;
pub mod listen;
pub mod propagation;
pub mod server;
pub mod telemetry;
pub mod tls;

/// The version every binary reports (health JSON, GetInfo, `--version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
