//! Model clients: how the orchestrator talks to language models.
//!
//! The RLM engine calls [`Models::chat`] for every root iteration and every
//! `llm_query`. A request names its model with a [`ModelRef`]
//! (`provider/model`); [`Models`] routes it to the matching client:
//!
//! * [`openai::OpenAiClient`] — any OpenAI-compatible Chat Completions server
//!   (OpenAI, vLLM, Ollama, llama.cpp, OpenRouter, the bench fake);
//! * [`anthropic::AnthropicClient`] — the Anthropic Messages API;
//! * [`scripted::ScriptedModel`] — an offline model replaying a turns file.
//!
//! HTTP clients retry transient failures ([`retry`]) within the caller's
//! deadline; [`pricing`] turns usage into dollars.

pub mod anthropic;
#[cfg(test)]
mod fake;
pub mod openai;
pub mod pricing;
pub mod retry;
pub mod scripted;
mod transport;

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

pub use pricing::{Price, PriceTable};
pub use retry::RetryPolicy;
pub use transport::http_client;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// The wire name shared by the OpenAI and Anthropic APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub model: ModelRef,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    pub text: String,
    pub usage: Usage,
    /// Cost the provider itself reported (e.g. OpenRouter's `usage.cost`).
    pub provider_cost_usd: Option<f64>,
    /// The cost to account: the provider's figure when it gave one, else the
    /// price table's; `None` when neither knows (never a made-up 0).
    /// Filled by [`Models::chat`]; the bare clients leave it at the
    /// provider's figure.
    pub cost_usd: Option<f64>,
    /// Wall time of the whole call, retries and back-off included.
    pub latency: Duration,
    /// HTTP attempts made (1 when the first one succeeded).
    pub attempts: u32,
}

/// The kind of server a model lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI Chat Completions or any compatible server; the default.
    OpenAi,
    Anthropic,
    /// The offline [`scripted::ScriptedModel`]; never a real model.
    Scripted,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Scripted => "scripted",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model name with its provider.
///
/// Accepted forms:
/// * `openai/gpt-4o`, `anthropic/claude-sonnet-4-5` — provider, `/`, model.
///   Only the first `/` splits, so `openai/meta-llama/Llama-3.1-8B` sends
///   `meta-llama/Llama-3.1-8B` to the OpenAI-compatible server.
/// * `gpt-4o` — a bare name (no `/`) goes to the default provider (OpenAI
///   compatible).
/// * `scripted:/path/turns.txt` — the offline scripted model; `name` is the
///   path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    pub provider: Provider,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelRefError {
    #[error(
        "empty model name; expected `provider/model` (openai, anthropic), a bare model name, or `scripted:<file>`"
    )]
    Empty,
    #[error("model `{0}` has an empty name after the provider; expected e.g. `openai/gpt-4o`")]
    EmptyName(String),
    #[error("`scripted:` needs a turns file path, e.g. `scripted:/path/turns.txt`")]
    EmptyScriptPath,
    #[error(
        "unknown model provider `{provider}` in `{input}`; known providers: openai, anthropic, scripted (as `scripted:<file>`); prefix with `openai/` to send a name containing `/` to an OpenAI-compatible server"
    )]
    UnknownProvider { provider: String, input: String },
}

impl FromStr for ModelRef {
    type Err = ModelRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ModelRefError::Empty);
        }
        if let Some(path) = s.strip_prefix("scripted:") {
            if path.is_empty() {
                return Err(ModelRefError::EmptyScriptPath);
            }
            return Ok(ModelRef {
                provider: Provider::Scripted,
                name: path.to_owned(),
            });
        }
        let Some((provider, name)) = s.split_once('/') else {
            return Ok(ModelRef {
                provider: Provider::OpenAi,
                name: s.to_owned(),
            });
        };
        let provider = match provider {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            other => {
                return Err(ModelRefError::UnknownProvider {
                    provider: other.to_owned(),
                    input: s.to_owned(),
                });
            }
        };
        if name.is_empty() {
            return Err(ModelRefError::EmptyName(s.to_owned()));
        }
        Ok(ModelRef {
            provider,
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.provider {
            Provider::Scripted => write!(f, "scripted:{}", self.name),
            p => write!(f, "{p}/{}", self.name),
        }
    }
}

/// Why a model call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    /// The server answered with a non-success status; `message` is the
    /// provider's `error.message` when it sent one, else the body's start.
    #[error("model server returned HTTP {status} from {url}: {message}")]
    Http {
        status: u16,
        message: String,
        retryable: bool,
        url: String,
    },
    /// One attempt took longer than its timeout.
    #[error("model request to {url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    /// Could not connect, or the connection broke mid-exchange.
    #[error("cannot reach model server at {url}: {message}")]
    Connect { url: String, message: String },
    /// A success status with a body we cannot use.
    #[error("invalid response from {url}: {message}")]
    InvalidResponse { url: String, message: String },
    /// The deadline left no room for (another) attempt.
    #[error("deadline exceeded after {attempts} attempt(s); last error: {last}")]
    DeadlineExceeded {
        attempts: u32,
        last: Box<ModelError>,
    },
    /// Every allowed attempt failed with a retryable error.
    #[error("gave up after {attempts} attempt(s); last error: {last}")]
    RetriesExhausted {
        attempts: u32,
        last: Box<ModelError>,
    },
    /// Misconfiguration (missing key file, unreadable turns file, ...).
    #[error("model configuration error: {0}")]
    Config(String),
}

impl ModelError {
    /// Whether another attempt might succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Http { retryable, .. } => *retryable,
            ModelError::Timeout { .. } | ModelError::Connect { .. } => true,
            ModelError::InvalidResponse { .. }
            | ModelError::DeadlineExceeded { .. }
            | ModelError::RetriesExhausted { .. }
            | ModelError::Config(_) => false,
        }
    }
}

/// Something that answers chat requests. Implemented by every client and by
/// the [`Models`] router, so the engine can be tested against a fake.
pub trait ModelClient: Send + Sync {
    /// Answer `request`, giving up (with [`ModelError::DeadlineExceeded`])
    /// rather than running past `deadline`.
    fn chat(
        &self,
        request: ChatRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<ChatResponse, ModelError>> + Send;
}

/// Everything [`Models`] needs; the config layer fills it from flags and
/// `RLM_*` / provider environment variables.
#[derive(Debug, Clone)]
pub struct ModelsConfig {
    /// `RLM_LLM_BASE_URL`, `OPENAI_API_KEY`, `RLM_LLM_API_KEY_FILE`.
    pub openai: EndpointConfig,
    /// `ANTHROPIC_API_KEY`; the base URL without the `/v1` suffix.
    pub anthropic: EndpointConfig,
    pub pricing: PriceTable,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            openai: EndpointConfig::new(openai::DEFAULT_BASE_URL),
            anthropic: EndpointConfig::new(anthropic::DEFAULT_BASE_URL),
            pricing: PriceTable::default(),
        }
    }
}

/// Where and how to reach one provider's API.
#[derive(Clone)]
pub struct EndpointConfig {
    pub base_url: String,
    /// The API key; wins over `api_key_file`.
    pub api_key: Option<String>,
    /// A file holding the key, read once, at construction.
    pub api_key_file: Option<std::path::PathBuf>,
    pub retry: retry::RetryPolicy,
    /// Limit of a single attempt (further bounded by the call's deadline).
    pub attempt_timeout: Duration,
}

impl EndpointConfig {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.to_owned(),
            api_key: None,
            api_key_file: None,
            retry: retry::RetryPolicy::default(),
            attempt_timeout: Duration::from_secs(300),
        }
    }
}

/// Never prints the key.
impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_file", &self.api_key_file)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

/// Routes each request to its provider's client and prices the result.
/// Cheap to clone: the clients share one pooled `reqwest::Client`.
#[derive(Debug, Clone)]
pub struct Models {
    openai: openai::OpenAiClient,
    anthropic: anthropic::AnthropicClient,
    pricing: PriceTable,
}

impl Models {
    pub fn new(config: ModelsConfig) -> Result<Self, ModelError> {
        let http = http_client()?;
        Ok(Self {
            openai: openai::OpenAiClient::new(config.openai, http.clone())?,
            anthropic: anthropic::AnthropicClient::new(config.anthropic, http)?,
            pricing: config.pricing,
        })
    }

    pub fn pricing(&self) -> &PriceTable {
        &self.pricing
    }
}

impl ModelClient for Models {
    async fn chat(
        &self,
        request: ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, ModelError> {
        let model = request.model.clone();
        let mut response = match model.provider {
            Provider::OpenAi => self.openai.chat(request, deadline).await?,
            Provider::Anthropic => self.anthropic.chat(request, deadline).await?,
            Provider::Scripted => scripted::ScriptedModel.chat(request, deadline).await?,
        };
        response.cost_usd =
            self.pricing
                .cost_or_reported(&model, response.usage, response.provider_cost_usd);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ModelRef, ModelRefError> {
        s.parse()
    }

    #[test]
    fn model_ref_accepted_forms() {
        let m = parse("openai/gpt-4o").expect("openai form");
        assert_eq!((m.provider, m.name.as_str()), (Provider::OpenAi, "gpt-4o"));
        let m = parse("anthropic/claude-sonnet-4-5").expect("anthropic form");
        assert_eq!(
            (m.provider, m.name.as_str()),
            (Provider::Anthropic, "claude-sonnet-4-5")
        );
        let m = parse("gpt-4o-mini").expect("bare form");
        assert_eq!(
            (m.provider, m.name.as_str()),
            (Provider::OpenAi, "gpt-4o-mini")
        );
        let m = parse("scripted:/tmp/turns.txt").expect("scripted form");
        assert_eq!(
            (m.provider, m.name.as_str()),
            (Provider::Scripted, "/tmp/turns.txt")
        );
        let m = parse("openai/meta-llama/Llama-3.1-8B").expect("nested name");
        assert_eq!(m.name, "meta-llama/Llama-3.1-8B");
        for s in [
            "openai/gpt-4o",
            "anthropic/claude-sonnet-4-5",
            "scripted:/tmp/t.txt",
        ] {
            assert_eq!(parse(s).expect("valid").to_string(), s);
        }
    }

    #[test]
    fn model_ref_errors() {
        assert_eq!(parse("  "), Err(ModelRefError::Empty));
        assert!(
            parse("")
                .expect_err("empty")
                .to_string()
                .contains("scripted:<file>")
        );
        assert_eq!(parse("scripted:"), Err(ModelRefError::EmptyScriptPath));
        assert!(matches!(parse("openai/"), Err(ModelRefError::EmptyName(_))));
        let err = parse("mistral/large").expect_err("unknown provider");
        assert!(
            matches!(&err, ModelRefError::UnknownProvider { provider, .. } if provider == "mistral")
        );
        let msg = err.to_string();
        assert!(
            msg.contains("`mistral`") && msg.contains("openai") && msg.contains("anthropic"),
            "{msg}"
        );
    }
}
