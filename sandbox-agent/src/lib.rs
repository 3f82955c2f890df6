//! rlm-sandbox-agent: the privileged side of RLM Runtime. It serves
//! `rlm.sandbox.v1.SandboxService` and keeps the content-addressed context store.

pub mod config;
pub mod context_store;
pub mod context_summary;
pub mod isolation;
pub mod service;
pub mod session;
