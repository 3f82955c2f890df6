//! The agent's settings: flag > environment > TOML file (`--config`) > default.

use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use rlm_common::config::{ConfigError, ServiceArgs, ServiceSettings, Settings};
use rlm_common::listen::{ADDRESS_FORMS, Address};

/// rlm-sandbox-agent: runs model-written Python in isolated, persistent sessions.
#[derive(Debug, Parser)]
#[command(name = "rlm-sandbox-agent", version)]
pub struct Cli {
    /// TOML file with any of these settings (keys are the long flag names with `_`).
    #[arg(long, env = "RLM_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<String>,
    /// Listen address [default: unix:///run/rlm/sandbox.sock].
    #[arg(long, env = "RLM_AGENT_LISTEN", value_name = "ADDRESS")]
    pub listen: Option<String>,
    /// Permission bits of the Unix socket, octal [default: 600].
    #[arg(long, env = "RLM_AGENT_SOCKET_MODE", value_name = "OCTAL")]
    pub socket_mode: Option<String>,
    /// Directory for the agent's state: stored contexts [default: /var/lib/rlm-agent].
    #[arg(long, env = "RLM_AGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Largest context accepted by PutContext, in bytes [default: 1073741824].
    #[arg(long, env = "RLM_AGENT_MAX_CONTEXT_BYTES", value_name = "BYTES")]
    pub max_context_bytes: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Address,
    pub socket_mode: u32,
    pub data_dir: PathBuf,
    pub max_context_bytes: u64,
    pub service: ServiceSettings,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_args(std::env::args_os())
    }

    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Cli::command();
        let matches = command.clone().get_matches_from(args);
        let settings = Settings::new(&command, &matches, "config")?;
        Ok(Self {
            listen: settings.get(
                "listen",
                "unix:///run/rlm/sandbox.sock",
                ADDRESS_FORMS,
                Address::parse,
            )?,
            socket_mode: settings.get(
                "socket_mode",
                "600",
                "octal permission bits such as 600 or 660",
                |v| {
                    u32::from_str_radix(v.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|mode| *mode <= 0o777)
                        .ok_or_else(|| "not an octal mode".to_owned())
                },
            )?,
            data_dir: settings.get(
                "data_dir",
                "/var/lib/rlm-agent",
                "an absolute directory path",
                |v| {
                    let path = PathBuf::from(v);
                    if path.is_absolute() {
                        Ok(path)
                    } else {
                        Err("must be absolute".to_owned())
                    }
                },
            )?,
            max_context_bytes: settings.get(
                "max_context_bytes",
                "1073741824",
                "a byte count from 1 to 2^40",
                |v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| (1..=1 << 40).contains(n))
                        .ok_or_else(|| "not a byte count in range".to_owned())
                },
            )?,
            service: ServiceSettings::resolve(&settings)?,
        })
    }
}
