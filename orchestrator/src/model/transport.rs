//! HTTP plumbing shared by the provider clients: the pooled client, one
//! JSON POST attempt with its failure classified, and API-key loading.

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::Value;

use super::ModelError;
use super::retry::{AttemptError, parse_retry_after};

/// How much of an unparseable error body goes into a message.
const BODY_EXCERPT_CHARS: usize = 500;

/// The one `reqwest::Client` all model calls share: pooled keep-alive
/// connections, TCP_NODELAY (without it Nagle + delayed ACK add ~40 ms per
/// small request). Per-request timeouts are set by each attempt.
pub fn http_client() -> Result<reqwest::Client, ModelError> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| ModelError::Config(format!("cannot build HTTP client: {}", chain(&e))))
}

/// The API key: the value when given, else the first line of `file`
/// (trimmed), else none.
pub fn load_api_key(
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, ModelError> {
    if let Some(key) = value.map(str::trim).filter(|k| !k.is_empty()) {
        return Ok(Some(key.to_owned()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ModelError::Config(format!("cannot read API key file {}: {e}", path.display()))
    })?;
    let key = text.trim();
    if key.is_empty() {
        return Err(ModelError::Config(format!(
            "API key file {} is empty",
            path.display()
        )));
    }
    Ok(Some(key.to_owned()))
}

/// One POST of `body` to `url`; a 2xx JSON body is returned, anything else
/// becomes a classified [`AttemptError`].
pub async fn post_json(
    request: reqwest::RequestBuilder,
    url: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, AttemptError> {
    let response = request
        .json(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| classify(&e, url, timeout))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let bytes = response
        .bytes()
        .await
        .map_err(|e| classify(&e, url, timeout))?;
    if !status.is_success() {
        let code = status.as_u16();
        let retryable = code == 408 || code == 429 || status.is_server_error();
        let error = ModelError::Http {
            status: code,
            message: error_message(&bytes),
            retryable,
            url: url.to_owned(),
        };
        return Err(AttemptError { error, retry_after });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        AttemptError::from(ModelError::InvalidResponse {
            url: url.to_owned(),
            message: format!("body is not JSON ({e}): {}", excerpt(&bytes)),
        })
    })
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()
        .and_then(parse_retry_after)
}

fn classify(error: &reqwest::Error, url: &str, timeout: Duration) -> AttemptError {
    let error = if error.is_timeout() {
        ModelError::Timeout {
            url: url.to_owned(),
            after: timeout,
        }
    } else if error.is_builder() {
        ModelError::Config(format!("cannot build request to {url}: {}", chain(error)))
    } else {
        // Connect failures, resets and truncated bodies: all transient.
        ModelError::Connect {
            url: url.to_owned(),
            message: chain(error),
        }
    };
    error.into()
}

/// `error.message` from an OpenAI- or Anthropic-style error body, else the
/// start of the body.
fn error_message(body: &[u8]) -> String {
    let from_json = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let error = v.get("error")?;
        match error.get("message").and_then(Value::as_str) {
            Some(m) => Some(m.to_owned()),
            None => error.as_str().map(str::to_owned),
        }
    });
    from_json.unwrap_or_else(|| excerpt(body))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(BODY_EXCERPT_CHARS).collect();
    if text.chars().count() > BODY_EXCERPT_CHARS {
        out.push_str("...");
    }
    if out.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        out
    }
}

/// reqwest's Display omits the cause ("error sending request"); include it.
fn chain(error: &reqwest::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The text of an OpenAI-style content value: a string, or a list of parts
/// whose `text` fields are concatenated.
pub fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text")
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

/// The token count the bench fake and the scripted model use: ceil(chars/4).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// Remaining time bounded by the per-attempt limit.
pub fn attempt_timeout(limit: Duration, remaining: Duration) -> Duration {
    limit.min(remaining)
}
