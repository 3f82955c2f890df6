//! rlm-orchestrator: the public `rlm.v1.RLMService`, its HTTP side (metrics,
//! health, the trajectory viewer), and the connection to the sandbox agent.

pub mod auth;
pub mod budget;
pub mod config;
pub mod direct_sessions;
pub mod engine;
pub mod health;
pub mod http;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod remote_session;
pub mod sandbox_client;
pub mod service;
pub mod trajectory;
pub mod viewer;
