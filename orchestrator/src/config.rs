//! The orchestrator's settings: flag > environment > TOML file (`--config`) > default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use rlm_common::config::{ConfigError, ServiceArgs, ServiceSettings, Settings};
use rlm_common::listen::{ADDRESS_FORMS, Address};

pub const DEFAULT_SANDBOX_ENDPOINT: &str = "unix:///run/rlm/sandbox.sock";

/// rlm-orchestrator: drives recursive language-model completions over gRPC.
#[derive(Debug, Parser)]
#[command(name = "rlm-orchestrator", version)]
pub struct Cli {
    /// TOML file with any of these settings (keys are the long flag names with `_`).
    #[arg(long, env = "RLM_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "RLM_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// HTTP listen address for /metrics and /health [default: 127.0.0.1:9464].
    #[arg(long, env = "RLM_HTTP_LISTEN", value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
    /// The sandbox agent [default: unix:///run/rlm/sandbox.sock].
    #[arg(long, env = "RLM_SANDBOX_ENDPOINT", value_name = "ADDRESS")]
    pub sandbox_endpoint: Option<String>,
    /// Directory for trajectory files [default: ./rlm-logs].
    #[arg(long, env = "RLM_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<String>,
    /// Default root model, e.g. openai/gpt-4o or scripted:/path/turns.txt.
    #[arg(long, env = "RLM_MODEL", value_name = "PROVIDER/MODEL")]
    pub model: Option<String>,
    /// Base URL of the OpenAI-compatible API [default: https://api.openai.com/v1].
    #[arg(long, env = "RLM_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub sandbox_endpoint: Address,
    pub log_dir: PathBuf,
    pub model: Option<String>,
    pub llm_base_url: String,
    pub service: ServiceSettings,
}

impl Config {
    /// Parses the process's arguments and environment.
    /// Parses the process's arguments and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        rlm_common::config::load(Cli::command(), Self::resolve)
    }

    fn resolve(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: settings.get(
                "listen",
                "127.0.0.1:50051",
                "HOST:PORT, tcp://HOST:PORT",
                Address::parse_tcp,
            )?,
            http_listen: settings.get(
                "http_listen",
                "127.0.0.1:9464",
                "HOST:PORT, tcp://HOST:PORT",
                Address::parse_tcp,
            )?,
            sandbox_endpoint: settings.get(
                "sandbox_endpoint",
                DEFAULT_SANDBOX_ENDPOINT,
                ADDRESS_FORMS,
                Address::parse,
            )?,
            log_dir: settings.get("log_dir", "rlm-logs", "a directory path", |v| {
                if v.trim().is_empty() {
                    Err("must not be empty".to_owned())
                } else {
                    Ok(PathBuf::from(v))
                }
            })?,
            model: settings.get("model", "", "PROVIDER/MODEL, e.g. openai/gpt-4o", |v| {
                Ok(Some(v.trim().to_owned()).filter(|m| !m.is_empty()))
            })?,
            llm_base_url: settings.get(
                "llm_base_url",
                "https://api.openai.com/v1",
                "an http:// or https:// URL",
                |v| {
                    let v = v.trim().trim_end_matches('/');
                    if v.starts_with("http://") || v.starts_with("https://") {
                        Ok(v.to_owned())
                    } else {
                        Err("must start with http:// or https://".to_owned())
                    }
                },
            )?,
            service: ServiceSettings::resolve(settings)?,
        })
    }
}
