//! Anthropic Messages API (`POST {base_url}/v1/messages`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::retry::{self, AttemptError, RetryPolicy};
use super::transport::{self, attempt_timeout};
use super::{ChatRequest, ChatResponse, EndpointConfig, ModelClient, ModelError, Role, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// The API requires `max_tokens`; used when the request leaves it open.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Clone)]
pub struct AnthropicClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retry: RetryPolicy,
    attempt_timeout: Duration,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .finish()
    }
}

impl AnthropicClient {
    pub fn new(config: EndpointConfig, http: reqwest::Client) -> Result<Self, ModelError> {
        let api_key =
            transport::load_api_key(config.api_key.as_deref(), config.api_key_file.as_deref())?;
        let base = config.base_url.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(ModelError::Config("Anthropic base URL is empty".into()));
        }
        Ok(Self {
            http,
            url: format!("{base}/v1/messages"),
            api_key,
            retry: config.retry,
            attempt_timeout: config.attempt_timeout,
        })
    }

    /// System messages become the top-level `system` field (joined by blank
    /// lines); the rest keep their order.
    fn body(request: &ChatRequest) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let messages: Vec<Value> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
            .collect();
        let mut body = json!({
            "model": request.model.name,
            "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        body
    }

    fn parse(&self, value: &Value) -> Result<(String, Usage), AttemptError> {
        let invalid = |message: &str| {
            AttemptError::from(ModelError::InvalidResponse {
                url: self.url.clone(),
                message: message.to_owned(),
            })
        };
        let content = value
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no content list in the reply"))?;
        let text: String = content
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect();
        let tokens = |field: &str| {
            value
                .pointer(&format!("/usage/{field}"))
                .and_then(Value::as_u64)
        };
        let (Some(input_tokens), Some(output_tokens)) =
            (tokens("input_tokens"), tokens("output_tokens"))
        else {
            return Err(invalid(
                "no usage.input_tokens / usage.output_tokens in the reply",
            ));
        };
        Ok((
            text,
            Usage {
                input_tokens,
                output_tokens,
            },
        ))
    }
}

impl ModelClient for AnthropicClient {
    async fn chat(
        &self,
        request: ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let body = Self::body(&request);
        let ((text, usage), attempts) = retry::run(&self.retry, deadline, |remaining| {
            let mut builder = self
                .http
                .post(&self.url)
                .header("anthropic-version", API_VERSION);
            if let Some(key) = &self.api_key {
                builder = builder.header("x-api-key", key);
            }
            let timeout = attempt_timeout(self.attempt_timeout, remaining);
            let body = &body;
            async move {
                let value = transport::post_json(builder, &self.url, body, timeout).await?;
                self.parse(&value)
            }
        })
        .await?;
        Ok(ChatResponse {
            text,
            usage,
            provider_cost_usd: None,
            cost_usd: None,
            latency: started.elapsed(),
            attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fake::{Fake, Reply};
    use crate::model::{ChatMessage, Models, ModelsConfig, PriceTable};

    fn models(base: &str) -> Models {
        Models::new(ModelsConfig {
            anthropic: EndpointConfig {
                base_url: base.to_owned(),
                api_key: Some("ant-key".into()),
                retry: RetryPolicy {
                    max_attempts: 2,
                    base: Duration::from_millis(5),
                    cap: Duration::from_millis(10),
                },
                ..EndpointConfig::new(DEFAULT_BASE_URL)
            },
            pricing: PriceTable::builtin(),
            ..ModelsConfig::default()
        })
        .expect("models")
    }

    #[tokio::test]
    async fn happy_path_headers_system_and_parsing() {
        let reply = json!({
            "type": "message",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
            "usage": {"input_tokens": 12, "output_tokens": 3}
        });
        let fake = Fake::start(vec![Reply::ok(reply.to_string())]).await;
        let request = ChatRequest {
            model: "anthropic/claude-sonnet-4-5".parse().expect("model"),
            messages: vec![
                ChatMessage::system("You are terse."),
                ChatMessage::user("hi"),
                ChatMessage::assistant("hey"),
                ChatMessage::user("again"),
            ],
            max_tokens: None,
            temperature: Some(0.0),
        };
        let response = models(&fake.base)
            .chat(request, Instant::now() + Duration::from_secs(5))
            .await
            .expect("chat");
        assert_eq!(response.text, "Hello world");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 12,
                output_tokens: 3
            }
        );
        assert!(
            response.cost_usd.is_some_and(|c| c > 0.0),
            "builtin table prices claude-sonnet-4-5"
        );

        let seen = &fake.requests()[0];
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.header("x-api-key"), Some("ant-key"));
        assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(seen.header("authorization"), None);
        assert_eq!(seen.body["model"], "claude-sonnet-4-5");
        assert_eq!(seen.body["system"], "You are terse.");
        assert_eq!(seen.body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            seen.body["messages"],
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hey"},
                {"role": "user", "content": "again"}
            ])
        );
    }

    #[tokio::test]
    async fn error_message_is_surfaced() {
        let body = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        let fake = Fake::start(vec![Reply::status(401, body)]).await;
        let request = ChatRequest {
            model: "anthropic/claude-sonnet-4-5".parse().expect("model"),
            messages: vec![ChatMessage::user("hi")],
            max_tokens: Some(10),
            temperature: None,
        };
        let err = models(&fake.base)
            .chat(request, Instant::now() + Duration::from_secs(5))
            .await
            .expect_err("401");
        assert!(
            matches!(&err, ModelError::Http { status: 401, message, .. } if message == "invalid x-api-key"),
            "{err}"
        );
        assert_eq!(fake.requests().len(), 1);
    }
}
