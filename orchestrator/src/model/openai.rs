//! OpenAI-compatible Chat Completions (`POST {base_url}/chat/completions`,
//! non-streaming): OpenAI itself, vLLM, Ollama, llama.cpp, OpenRouter.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::retry::{self, AttemptError, RetryPolicy};
use super::transport::{self, attempt_timeout, content_text, estimate_tokens};
use super::{ChatRequest, ChatResponse, EndpointConfig, ModelClient, ModelError, Usage};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Clone)]
pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    retry: RetryPolicy,
    attempt_timeout: Duration,
}

// Hand-written so the key never reaches a log.
impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("retry", &self.retry)
            .finish()
    }
}

impl OpenAiClient {
    pub fn new(config: EndpointConfig, http: reqwest::Client) -> Result<Self, ModelError> {
        let api_key =
            transport::load_api_key(config.api_key.as_deref(), config.api_key_file.as_deref())?;
        let base = config.base_url.trim().trim_end_matches('/');
        if base.is_empty() {
            return Err(ModelError::Config(
                "OpenAI-compatible base URL is empty".into(),
            ));
        }
        Ok(Self {
            http,
            url: format!("{base}/chat/completions"),
            api_key,
            retry: config.retry,
            attempt_timeout: config.attempt_timeout,
        })
    }

    fn body(request: &ChatRequest) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
            .collect();
        let mut body =
            json!({ "model": request.model.name, "messages": messages, "stream": false });
        if let Some(max_tokens) = request.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        body
    }

    fn parse(
        &self,
        value: &Value,
        input_estimate: u64,
    ) -> Result<(String, Usage, Option<f64>), AttemptError> {
        let invalid = |message: &str| {
            AttemptError::from(ModelError::InvalidResponse {
                url: self.url.clone(),
                message: message.to_owned(),
            })
        };
        let message = value
            .pointer("/choices/0/message")
            .ok_or_else(|| invalid("no choices[0].message in the reply"))?;
        let text = match message.get("content") {
            Some(Value::Null) | None => {
                // A refusal comes with null content; surface it as the text.
                message
                    .get("refusal")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            }
            Some(content) => content_text(content).ok_or_else(|| {
                invalid("choices[0].message.content is neither a string nor a list of parts")
            })?,
        };
        let usage = value.get("usage");
        let tokens = |field: &str| usage.and_then(|u| u.get(field)).and_then(Value::as_u64);
        let usage = match (tokens("prompt_tokens"), tokens("completion_tokens")) {
            (Some(input_tokens), Some(output_tokens)) => Usage {
                input_tokens,
                output_tokens,
            },
            _ => {
                // Some local servers omit usage; budgets still need a number.
                tracing::debug!(url = %self.url, "reply has no usage; estimating tokens");
                Usage {
                    input_tokens: input_estimate,
                    output_tokens: estimate_tokens(&text),
                }
            }
        };
        let cost = value.pointer("/usage/cost").and_then(Value::as_f64);
        Ok((text, usage, cost))
    }
}

impl ModelClient for OpenAiClient {
    async fn chat(
        &self,
        request: ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, ModelError> {
        let started = Instant::now();
        let body = Self::body(&request);
        let input_estimate = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let ((text, usage, cost), attempts) = retry::run(&self.retry, deadline, |remaining| {
            let mut builder = self.http.post(&self.url);
            if let Some(key) = &self.api_key {
                builder = builder.bearer_auth(key);
            }
            let timeout = attempt_timeout(self.attempt_timeout, remaining);
            let body = &body;
            async move {
                let value = transport::post_json(builder, &self.url, body, timeout).await?;
                self.parse(&value, input_estimate)
            }
        })
        .await?;
        Ok(ChatResponse {
            text,
            usage,
            provider_cost_usd: cost,
            cost_usd: cost,
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
    use std::time::Duration;

    fn fast_retry(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        }
    }

    fn models(base_url: &str, retry: RetryPolicy) -> Models {
        Models::new(ModelsConfig {
            openai: EndpointConfig {
                base_url: base_url.to_owned(),
                api_key: Some("sk-test".into()),
                retry,
                ..EndpointConfig::new(DEFAULT_BASE_URL)
            },
            pricing: PriceTable::builtin(),
            ..ModelsConfig::default()
        })
        .expect("models")
    }

    fn request(model: &str) -> ChatRequest {
        ChatRequest {
            model: model.parse().expect("model ref"),
            messages: vec![ChatMessage::system("be brief"), ChatMessage::user("hi")],
            max_tokens: Some(64),
            temperature: None,
        }
    }

    fn ok_body(text: &str) -> String {
        json!({
            "choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500}
        })
        .to_string()
    }

    fn soon(secs: u64) -> Instant {
        Instant::now() + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn happy_path_sends_request_and_prices_usage() {
        let fake = Fake::start(vec![
            Reply::ok(ok_body("hello")),
            Reply::ok(ok_body("again")),
        ])
        .await;
        let models = models(&format!("{}/v1/", fake.base), fast_retry(3));

        let response = models
            .chat(request("openai/gpt-4o"), soon(5))
            .await
            .expect("chat");
        assert_eq!(response.text, "hello");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 1000,
                output_tokens: 500
            }
        );
        assert_eq!(response.attempts, 1);
        assert_eq!(response.provider_cost_usd, None);
        let price = PriceTable::builtin()
            .get("openai/gpt-4o")
            .expect("builtin gpt-4o");
        let expected = 1000.0 * price.input_per_mtok / 1e6 + 500.0 * price.output_per_mtok / 1e6;
        let cost = response.cost_usd.expect("priced");
        assert!((cost - expected).abs() < 1e-12, "{cost} vs {expected}");

        let seen = fake.requests();
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].header("authorization"), Some("Bearer sk-test"));
        let body = &seen[0].body;
        assert_eq!(body["model"], "gpt-4o");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}
            ])
        );

        // Unknown model: usage is reported, the cost is unknown, not 0.
        let response = models
            .chat(request("some-local-model"), soon(5))
            .await
            .expect("chat");
        assert_eq!(response.text, "again");
        assert_eq!(response.cost_usd, None);
        assert_eq!(fake.requests()[1].body["model"], "some-local-model");
    }

    #[tokio::test]
    async fn parts_content_and_provider_cost() {
        let body = json!({
            "choices": [{"message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "cost": 0.25}
        });
        let fake = Fake::start(vec![Reply::ok(body.to_string())]).await;
        let response = models(&fake.base, fast_retry(1))
            .chat(request("openai/gpt-4o"), soon(5))
            .await
            .expect("chat");
        assert_eq!(response.text, "ab");
        assert_eq!(response.provider_cost_usd, Some(0.25));
        assert_eq!(
            response.cost_usd,
            Some(0.25),
            "the provider's cost wins over the table"
        );
    }

    #[tokio::test]
    async fn retries_429_then_500_honouring_retry_after() {
        let fake = Fake::start(vec![
            Reply::status(429, r#"{"error":{"message":"slow down"}}"#).header("retry-after", "1"),
            Reply::status(500, "oops"),
            Reply::ok(ok_body("finally")),
        ])
        .await;
        let started = Instant::now();
        let response = models(&fake.base, fast_retry(5))
            .chat(request("gpt-4o"), soon(10))
            .await
            .expect("chat");
        assert_eq!(response.text, "finally");
        assert_eq!(response.attempts, 3);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "Retry-After ignored: {:?}",
            started.elapsed()
        );
        assert!(response.latency >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn client_error_is_not_retried() {
        let fake = Fake::start(vec![Reply::status(
            400,
            r#"{"error":{"message":"bad thing"}}"#,
        )])
        .await;
        let err = models(&fake.base, fast_retry(5))
            .chat(request("gpt-4o"), soon(5))
            .await
            .expect_err("400");
        assert!(
            matches!(&err, ModelError::Http { status: 400, retryable: false, message, .. } if message == "bad thing")
        );
        let text = err.to_string();
        assert!(text.contains("bad thing") && text.contains("400"), "{text}");
        assert_eq!(fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn bad_json_in_200_is_not_retried() {
        let fake = Fake::start(vec![Reply::ok("not json".into())]).await;
        let err = models(&fake.base, fast_retry(5))
            .chat(request("gpt-4o"), soon(5))
            .await
            .expect_err("bad json");
        assert!(matches!(err, ModelError::InvalidResponse { .. }), "{err}");
        assert_eq!(fake.requests().len(), 1);
    }

    #[tokio::test]
    async fn deadline_shorter_than_retry_after_fails_promptly() {
        let fake = Fake::start(vec![Reply::status(429, "busy").header("retry-after", "5")]).await;
        let started = Instant::now();
        let err = models(&fake.base, fast_retry(5))
            .chat(
                request("gpt-4o"),
                Instant::now() + Duration::from_millis(300),
            )
            .await
            .expect_err("deadline");
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "slept: {:?}",
            started.elapsed()
        );
        match err {
            ModelError::DeadlineExceeded { attempts, last } => {
                assert_eq!(attempts, 1);
                assert!(
                    matches!(*last, ModelError::Http { status: 429, .. }),
                    "{last}"
                );
            }
            other => panic!("expected DeadlineExceeded, got {other}"),
        }
    }

    #[tokio::test]
    async fn slow_server_times_out_within_deadline() {
        let fake = Fake::start(vec![
            Reply::ok(ok_body("late")).delay(Duration::from_secs(2)),
        ])
        .await;
        let started = Instant::now();
        let err = models(&fake.base, fast_retry(5))
            .chat(
                request("gpt-4o"),
                Instant::now() + Duration::from_millis(300),
            )
            .await
            .expect_err("timeout");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(
            matches!(&err, ModelError::DeadlineExceeded { last, .. } if matches!(**last, ModelError::Timeout { .. })),
            "{err}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = models(&format!("http://{addr}"), fast_retry(3))
            .chat(request("gpt-4o"), soon(5))
            .await
            .expect_err("refused");
        match err {
            ModelError::RetriesExhausted { attempts, last } => {
                assert_eq!(attempts, 3);
                assert!(matches!(*last, ModelError::Connect { .. }), "{last}");
            }
            other => panic!("expected RetriesExhausted, got {other}"),
        }
    }

    #[test]
    fn key_file_is_read_and_missing_file_is_a_config_error() {
        let dir = std::env::temp_dir().join(format!("rlm-model-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("key");
        std::fs::write(&path, "sk-from-file\n").expect("write key");
        let http = transport::http_client().expect("client");
        let config = EndpointConfig {
            api_key_file: Some(path.clone()),
            ..EndpointConfig::new(DEFAULT_BASE_URL)
        };
        let client = OpenAiClient::new(config, http.clone()).expect("client");
        assert_eq!(client.api_key.as_deref(), Some("sk-from-file"));
        assert!(!format!("{client:?}").contains("sk-from-file"));
        let with_key = EndpointConfig {
            api_key: Some("sk-in-config".into()),
            ..EndpointConfig::new(DEFAULT_BASE_URL)
        };
        assert!(
            !format!("{with_key:?}").contains("sk-in-config"),
            "config Debug redacts the key"
        );
        let missing = EndpointConfig {
            api_key_file: Some(dir.join("nope")),
            ..EndpointConfig::new(DEFAULT_BASE_URL)
        };
        let err = OpenAiClient::new(missing, http).expect_err("missing");
        assert!(
            matches!(&err, ModelError::Config(m) if m.contains("nope")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
