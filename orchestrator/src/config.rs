//! The orchestrator's settings: flag > environment > TOML file (`--config`) > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use rlm_common::config::{ConfigError, ServiceArgs, ServiceSettings, Settings, parse_duration};
use rlm_common::listen::{ADDRESS_FORMS, Address};
use rlm_common::tls::{self, TlsFiles};

use crate::direct_sessions::SessionSettings;
use crate::model::{EndpointConfig, ModelRef, ModelsConfig, PriceTable, RetryPolicy};
use crate::queue::QueueSettings;
use crate::trajectory::StoreLocation;

const MODEL_FORMS: &str = "PROVIDER/MODEL (openai/..., anthropic/...) or scripted:FILE";

/// Checks a model reference, keeping it as written.
fn model_ref(v: &str) -> Result<Option<String>, String> {
    match optional(v)? {
        None => Ok(None),
        Some(m) => m
            .parse::<ModelRef>()
            .map(|r| Some(r.to_string()))
            .map_err(|e| e.to_string()),
    }
}

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
    /// Trajectory store: file:///abs/path or s3://bucket/prefix (AWS_* env
    /// for credentials and endpoint); when set, RLM_LOG_DIR is not used.
    #[arg(long, env = "RLM_TRAJECTORY_STORE", value_name = "URL")]
    pub trajectory_store: Option<String>,
    /// Default root model, e.g. openai/gpt-4o or scripted:/path/turns.txt.
    #[arg(long, env = "RLM_MODEL", value_name = "PROVIDER/MODEL")]
    pub model: Option<String>,
    /// Base URL of the OpenAI-compatible API [default: https://api.openai.com/v1].
    #[arg(long, env = "RLM_LLM_BASE_URL", value_name = "URL")]
    pub llm_base_url: Option<String>,
    /// Default sub-model (llm_query and child RLMs) [default: the root model].
    #[arg(long, env = "RLM_SUB_MODEL", value_name = "PROVIDER/MODEL")]
    pub sub_model: Option<String>,
    /// API key of the OpenAI-compatible endpoint.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub openai_api_key: Option<String>,
    /// File holding the OpenAI-compatible API key (used when OPENAI_API_KEY is unset).
    #[arg(long, env = "RLM_LLM_API_KEY_FILE", value_name = "FILE")]
    pub llm_api_key_file: Option<String>,
    /// API key of the Anthropic Messages API.
    #[arg(
        long,
        env = "ANTHROPIC_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub anthropic_api_key: Option<String>,
    /// Base URL of the Anthropic API [default: https://api.anthropic.com].
    #[arg(long, env = "RLM_ANTHROPIC_BASE_URL", value_name = "URL")]
    pub anthropic_base_url: Option<String>,
    /// Price table (JSON, or TOML by extension) overriding the built-in prices.
    #[arg(long, env = "RLM_PRICES_FILE", value_name = "FILE")]
    pub prices_file: Option<String>,
    /// Attempts per model call, first included [default: 5].
    #[arg(long, env = "RLM_LLM_MAX_ATTEMPTS", value_name = "N")]
    pub llm_max_attempts: Option<String>,
    /// Base of the exponential back-off between attempts [default: 200ms].
    #[arg(long, env = "RLM_LLM_RETRY_BASE", value_name = "DURATION")]
    pub llm_retry_base: Option<String>,
    /// Limit of one model request attempt [default: 300s].
    #[arg(long, env = "RLM_LLM_TIMEOUT", value_name = "DURATION")]
    pub llm_timeout: Option<String>,
    /// Default maximum depth of child RLMs [default: 1].
    #[arg(long, env = "RLM_MAX_DEPTH", value_name = "N")]
    pub max_depth: Option<String>,
    /// Default maximum iterations per RLM [default: 30].
    #[arg(long, env = "RLM_MAX_ITERATIONS", value_name = "N")]
    pub max_iterations: Option<String>,
    /// Default maximum sub-calls in flight per completion [default: 8].
    #[arg(long, env = "RLM_MAX_PARALLEL", value_name = "N")]
    pub max_parallel: Option<String>,
    /// Default wall-clock limit of a completion [default: 10m].
    #[arg(long, env = "RLM_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Default limit of one code block running on its own [default: 60s].
    #[arg(long, env = "RLM_CELL_TIMEOUT", value_name = "DURATION")]
    pub cell_timeout: Option<String>,
    /// Completions running at once; more are refused with RESOURCE_EXHAUSTED [default: 256].
    #[arg(long, env = "RLM_MAX_COMPLETIONS", value_name = "N")]
    pub max_completions: Option<String>,
    /// Redis of a fleet's shared queue, `redis://HOST:PORT/DB` [default: in-process queue].
    #[arg(
        long,
        env = "RLM_QUEUE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub queue_url: Option<String>,
    /// Queued completions this replica runs at once [default: 8].
    #[arg(long, env = "RLM_QUEUE_WORKERS", value_name = "N")]
    pub queue_workers: Option<String>,
    /// Completions waiting to start, at most; more are RESOURCE_EXHAUSTED [default: 1000].
    #[arg(long, env = "RLM_QUEUE_MAX", value_name = "N")]
    pub queue_max: Option<String>,
    /// How long an ended queued completion stays readable [default: 60m].
    #[arg(long, env = "RLM_QUEUE_RETENTION", value_name = "DURATION")]
    pub queue_retention: Option<String>,
    /// Fleet: lease of a running job; a worker silent this long is presumed dead [default: 30s].
    #[arg(long, env = "RLM_QUEUE_LEASE", value_name = "DURATION")]
    pub queue_lease: Option<String>,
    /// Fleet: runs of a job lost with their worker before it is failed [default: 3].
    #[arg(long, env = "RLM_QUEUE_MAX_ATTEMPTS", value_name = "N")]
    pub queue_max_attempts: Option<String>,
    /// Direct sandbox sessions (SessionService) open at once; 0 disables them [default: 32].
    #[arg(long, env = "RLM_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<String>,
    /// Direct sessions one API key may have open at once [default: 8].
    #[arg(long, env = "RLM_API_KEY_MAX_SESSIONS", value_name = "N")]
    pub api_key_max_sessions: Option<String>,
    /// Idle TTL of a direct session that asks for none [default: 10m].
    #[arg(long, env = "RLM_SESSION_IDLE_TTL", value_name = "DURATION")]
    pub session_idle_ttl: Option<String>,
    /// Largest idle TTL a direct session may ask for [default: 60m].
    #[arg(long, env = "RLM_SESSION_MAX_IDLE_TTL", value_name = "DURATION")]
    pub session_max_idle_ttl: Option<String>,
    /// API keys clients must present (`label:key` or `key`, comma-separated).
    #[arg(
        long,
        env = "RLM_API_KEYS",
        hide_env_values = true,
        value_name = "KEYS"
    )]
    pub api_keys: Option<String>,
    /// File of API keys (one `label:key` or `key` per line), reloaded when it changes.
    #[arg(long, env = "RLM_API_KEYS_FILE", value_name = "FILE")]
    pub api_keys_file: Option<String>,
    /// Completions one API key may run at once [default: 16].
    #[arg(long, env = "RLM_API_KEY_MAX_CONCURRENT", value_name = "N")]
    pub api_key_max_concurrent: Option<String>,
    /// PEM certificate chain for TLS on the gRPC port (with --tls-key).
    #[arg(long, env = "RLM_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// PEM private key for TLS on the gRPC port.
    #[arg(long, env = "RLM_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// PEM CA: clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "RLM_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<String>,
    /// PEM CA that signed the agent's certificate (required for a tcp:// agent unless insecure).
    #[arg(long, env = "RLM_SANDBOX_TLS_CA", value_name = "FILE")]
    pub sandbox_tls_ca: Option<String>,
    /// PEM client certificate presented to the agent (mutual TLS).
    #[arg(long, env = "RLM_SANDBOX_TLS_CERT", value_name = "FILE")]
    pub sandbox_tls_cert: Option<String>,
    /// PEM key of that client certificate.
    #[arg(long, env = "RLM_SANDBOX_TLS_KEY", value_name = "FILE")]
    pub sandbox_tls_key: Option<String>,
    /// Name the agent's certificate must carry [default: the endpoint's host].
    #[arg(long, env = "RLM_SANDBOX_TLS_SERVER_NAME", value_name = "NAME")]
    pub sandbox_tls_server_name: Option<String>,
    /// Allow a tcp:// agent without TLS (unsafe outside a trusted network).
    #[arg(long, env = "RLM_SANDBOX_INSECURE", value_name = "BOOL")]
    pub sandbox_insecure: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// How the orchestrator reaches a TCP agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTransport {
    /// Unix socket, or plaintext TCP explicitly allowed.
    Plain,
    /// TLS (mutual when `files` holds a client certificate).
    Tls {
        ca: PathBuf,
        client: Option<TlsFiles>,
        server_name: String,
    },
}

/// Server defaults of the completion limits (a request overrides them).
#[derive(Debug, Clone)]
pub struct LimitDefaults {
    pub max_depth: u32,
    pub max_iterations: u32,
    pub max_parallel: u32,
    pub timeout: Duration,
    pub cell_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub sandbox_endpoint: Address,
    pub log_dir: PathBuf,
    /// Where trajectories go: `trajectory_store` when set, else `log_dir`.
    pub trajectory_store: StoreLocation,
    pub model: Option<String>,
    pub llm_base_url: String,
    pub sub_model: Option<String>,
    /// Model endpoints, keys, retries and prices.
    pub models: ModelsConfig,
    pub limits: LimitDefaults,
    pub max_completions: u32,
    /// Queued completions (`RLM_QUEUE_*`).
    pub queue: QueueSettings,
    /// Direct sandbox sessions (`rlm.v1.SessionService`).
    pub sessions: SessionSettings,
    /// `RLM_API_KEYS` (kept out of `Debug`).
    pub api_keys: Secret,
    pub api_keys_file: Option<PathBuf>,
    pub api_key_max_concurrent: u32,
    /// TLS on the gRPC port.
    pub tls: Option<TlsFiles>,
    pub agent_transport: AgentTransport,
    pub service: ServiceSettings,
}

/// A configured secret; `Debug` never shows it.
#[derive(Clone, Default)]
pub struct Secret(pub Option<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        })
    }
}

fn optional(v: &str) -> Result<Option<String>, String> {
    Ok(Some(v.trim().to_owned()).filter(|m| !m.is_empty()))
}

fn http_url(v: &str) -> Result<String, String> {
    let v = v.trim().trim_end_matches('/');
    if v.starts_with("http://") || v.starts_with("https://") {
        Ok(v.to_owned())
    } else {
        Err("must start with http:// or https://".to_owned())
    }
}

fn number_in(range: std::ops::RangeInclusive<u32>) -> impl Fn(&str) -> Result<u32, String> {
    move |v| {
        let n: u32 = v
            .trim()
            .parse()
            .map_err(|_| format!("`{v}` is not a whole number"))?;
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(format!(
                "must be between {} and {}",
                range.start(),
                range.end()
            ))
        }
    }
}

fn positive_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        Err("must be greater than zero".to_owned())
    } else {
        Ok(d)
    }
}

fn flag(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "" | "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not a boolean".to_owned()),
    }
}

/// A TCP agent needs TLS (`RLM_SANDBOX_TLS_CA`, plus a client certificate
/// for mutual TLS) unless plaintext is explicitly allowed.
fn agent_transport(
    settings: &Settings<'_>,
    endpoint: &Address,
) -> Result<AgentTransport, ConfigError> {
    let client = tls::resolve(settings, "sandbox_tls_cert", "sandbox_tls_key", None)?;
    let ca = settings.get("sandbox_tls_ca", "", "a PEM file path", |v| {
        let v = v.trim();
        match v {
            "" => Ok(None),
            v if std::path::Path::new(v).is_file() => Ok(Some(PathBuf::from(v))),
            _ => Err("no such file".to_owned()),
        }
    })?;
    let insecure = settings.get("sandbox_insecure", "false", "true or false", flag)?;
    let Address::Tcp(addr) = endpoint else {
        return Ok(AgentTransport::Plain);
    };
    match ca {
        Some(ca) => Ok(AgentTransport::Tls {
            ca,
            client,
            server_name: settings.get("sandbox_tls_server_name", "", "a DNS name or IP", |v| {
                Ok(if v.trim().is_empty() {
                    addr.ip().to_string()
                } else {
                    v.trim().to_owned()
                })
            })?,
        }),
        None if insecure => Ok(AgentTransport::Plain),
        None => settings.get("sandbox_tls_ca", "", "a PEM file path", |_| {
            Err(format!(
                "required for the TCP agent {endpoint} (or set RLM_SANDBOX_INSECURE=true to \
                 talk plaintext, unsafe outside a trusted network)"
            ))
        }),
    }
}

fn session_settings(settings: &Settings<'_>) -> Result<SessionSettings, ConfigError> {
    let max_idle_ttl = settings.get(
        "session_max_idle_ttl",
        "60m",
        "a duration from 1s to 1440m, like 60m",
        |v| {
            let d = parse_duration(v)?;
            if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&d) {
                Ok(d)
            } else {
                Err("must be between 1s and 1440m (24 hours)".to_owned())
            }
        },
    )?;
    Ok(SessionSettings {
        max_sessions: settings.get("max_sessions", "32", "0 to 10000", number_in(0..=10_000))?,
        max_per_key: settings.get(
            "api_key_max_sessions",
            "8",
            "1 to 10000",
            number_in(1..=10_000),
        )?,
        idle_ttl: settings.get(
            "session_idle_ttl",
            "10m",
            "a duration like 10m, from 1s to RLM_SESSION_MAX_IDLE_TTL",
            |v| {
                let d = parse_duration(v)?;
                if d < Duration::from_secs(1) || d > max_idle_ttl {
                    Err(format!(
                        "must be between 1s and RLM_SESSION_MAX_IDLE_TTL ({}s)",
                        max_idle_ttl.as_secs()
                    ))
                } else {
                    Ok(d)
                }
            },
        )?,
        max_idle_ttl,
    })
}

fn models_config(settings: &Settings<'_>, llm_base_url: &str) -> Result<ModelsConfig, ConfigError> {
    let retry = RetryPolicy {
        max_attempts: settings.get("llm_max_attempts", "5", "1 to 20", number_in(1..=20))?,
        base: settings.get(
            "llm_retry_base",
            "200ms",
            "a duration like 200ms",
            parse_duration,
        )?,
        ..RetryPolicy::default()
    };
    let attempt_timeout = settings.get(
        "llm_timeout",
        "300s",
        "a duration like 60s",
        positive_duration,
    )?;
    let endpoint =
        |base_url: String, api_key: Option<String>, api_key_file: Option<PathBuf>| EndpointConfig {
            base_url,
            api_key,
            api_key_file,
            retry,
            attempt_timeout,
        };
    let pricing = match settings.get("prices_file", "", "a JSON or TOML file", optional)? {
        None => PriceTable::builtin(),
        Some(path) => settings.get("prices_file", "", "a JSON or TOML price file", |_| {
            PriceTable::load(std::path::Path::new(&path)).map_err(|e| e.to_string())
        })?,
    };
    Ok(ModelsConfig {
        openai: endpoint(
            llm_base_url.to_owned(),
            settings.get("openai_api_key", "", "an API key", optional)?,
            settings
                .get("llm_api_key_file", "", "a file path", optional)?
                .map(PathBuf::from),
        ),
        anthropic: endpoint(
            settings.get(
                "anthropic_base_url",
                crate::model::anthropic::DEFAULT_BASE_URL,
                "an http:// or https:// URL",
                http_url,
            )?,
            settings.get("anthropic_api_key", "", "an API key", optional)?,
            None,
        ),
        pricing,
    })
}

fn queue_url(v: &str) -> Result<Option<String>, String> {
    match optional(v)? {
        None => Ok(None),
        Some(url) if url.starts_with("redis://") => redis::Client::open(url.as_str())
            .map(|_| Some(url))
            .map_err(|e| e.to_string()),
        Some(_) => Err("must start with redis://".to_owned()),
    }
}

fn queue_settings(settings: &Settings<'_>) -> Result<QueueSettings, ConfigError> {
    Ok(QueueSettings {
        url: settings.get("queue_url", "", "redis://HOST:PORT/DB", queue_url)?,
        workers: settings.get("queue_workers", "8", "1 to 10000", number_in(1..=10_000))?,
        max_queued: settings.get(
            "queue_max",
            "1000",
            "1 to 10000000",
            number_in(1..=10_000_000),
        )?,
        retention: settings.get(
            "queue_retention",
            "60m",
            "a duration like 60m",
            positive_duration,
        )?,
        lease: settings.get("queue_lease", "30s", "a duration like 30s", |v| {
            let d = positive_duration(v)?;
            if d < Duration::from_millis(500) {
                Err("must be at least 500ms".to_owned())
            } else {
                Ok(d)
            }
        })?,
        max_attempts: settings.get("queue_max_attempts", "3", "1 to 100", number_in(1..=100))?,
    })
}

impl Config {
    /// Parses the process's arguments and environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        rlm_common::config::load(Cli::command(), Self::resolve)
    }

    fn resolve(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let llm_base_url = settings.get(
            "llm_base_url",
            crate::model::openai::DEFAULT_BASE_URL,
            "an http:// or https:// URL",
            http_url,
        )?;
        let sandbox_endpoint = settings.get(
            "sandbox_endpoint",
            DEFAULT_SANDBOX_ENDPOINT,
            ADDRESS_FORMS,
            Address::parse,
        )?;
        let log_dir = settings.get("log_dir", "rlm-logs", "a directory path", |v| {
            if v.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(PathBuf::from(v))
            }
        })?;
        let trajectory_store = settings
            .get(
                "trajectory_store",
                "",
                "file:///abs/path or s3://bucket/prefix",
                |v| optional(v)?.map(|v| StoreLocation::parse(&v)).transpose(),
            )?
            .unwrap_or_else(|| StoreLocation::Dir(log_dir.clone()));
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
            log_dir,
            trajectory_store,
            model: settings.get("model", "", MODEL_FORMS, model_ref)?,
            sub_model: settings.get("sub_model", "", MODEL_FORMS, model_ref)?,
            models: models_config(settings, &llm_base_url)?,
            llm_base_url,
            limits: LimitDefaults {
                max_depth: settings.get("max_depth", "1", "0 to 16", number_in(0..=16))?,
                max_iterations: settings.get(
                    "max_iterations",
                    "30",
                    "1 to 1000",
                    number_in(1..=1000),
                )?,
                max_parallel: settings.get("max_parallel", "8", "1 to 256", number_in(1..=256))?,
                timeout: settings.get(
                    "timeout",
                    "10m",
                    "a duration like 10m",
                    positive_duration,
                )?,
                cell_timeout: settings.get(
                    "cell_timeout",
                    "60s",
                    "a duration like 60s",
                    positive_duration,
                )?,
            },
            max_completions: settings.get(
                "max_completions",
                "256",
                "1 to 100000",
                number_in(1..=100_000),
            )?,
            queue: queue_settings(settings)?,
            sessions: session_settings(settings)?,
            api_keys: Secret(settings.get("api_keys", "", "label:key entries", optional)?),
            api_keys_file: settings
                .get("api_keys_file", "", "a file path", optional)?
                .map(PathBuf::from),
            api_key_max_concurrent: settings.get(
                "api_key_max_concurrent",
                "16",
                "1 to 100000",
                number_in(1..=100_000),
            )?,
            tls: tls::resolve(settings, "tls_cert", "tls_key", Some("tls_client_ca"))?,
            agent_transport: agent_transport(settings, &sandbox_endpoint)?,
            sandbox_endpoint,
            service: ServiceSettings::resolve(settings)?,
        })
    }
}
