//! A small programmable OpenAI-compatible model server, in process, for
//! tests about what the engine does when the model misbehaves (errors,
//! `Retry-After`, slowness) or when a test needs full control of every reply
//! (budgets, cancellation).
//!
//! It listens on `127.0.0.1:0` and answers `POST /v1/chat/completions` (also
//! `/chat/completions`) either from a script (a queue of [`Reply`]s; the
//! last one repeats) or from a handler computing the reply from the
//! [`Request`]. Every request is recorded with its arrival time.
//!
//! Besides statuses, headers and delays, a reply can break the transport
//! ([`BodyFault`]): send the headers and part of the body, then close the
//! connection (a reset mid-body) or stall forever (a hung stream).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

/// Token estimate used for generated usage: ceil(chars / 4), at least 1
/// (the same rule as the shared fake).
pub fn est_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4).max(1)
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Slept before answering (a cancelled client drops the wait).
    pub delay: Duration,
    /// What happens to the body on the wire (a clean reply by default).
    pub fault: BodyFault,
}

/// How the body of a reply travels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyFault {
    /// The whole body, then the response ends normally.
    #[default]
    None,
    /// The headers (announcing the full `content-length`) and the first
    /// `n` bytes of the body, then the connection is closed: the client
    /// sees a body cut short (a connection reset mid-exchange).
    CloseAfter(usize),
    /// The headers and the first `n` bytes, then nothing, ever (the
    /// connection stays open): a stalled stream.
    StallAfter(usize),
    /// The connection is closed before the response is flushed: the client
    /// gets no status at all (a connection reset).
    Reset,
}

impl Reply {
    /// A 200 `chat.completion` with `content` and the given usage.
    pub fn text_with_usage(content: &str, prompt_tokens: u64, completion_tokens: u64) -> Self {
        let body = json!({
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-rlm",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        });
        Self::status(200, &body.to_string())
    }

    /// A 200 `chat.completion` with `content`; usage 10 prompt tokens and
    /// [`est_tokens`] of the content.
    pub fn text(content: &str) -> Self {
        Self::text_with_usage(content, 10, est_tokens(content.len()))
    }

    /// A 200 answer to `request` whose usage is computed like the shared
    /// fake does (ceil(chars / 4) of every message, and of the content).
    pub fn answer(request: &Request, content: &str) -> Self {
        Self::text_with_usage(
            content,
            est_tokens(request.prompt_chars()),
            est_tokens(content.len()),
        )
    }

    /// Any status with a raw body (JSON content type).
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_owned(),
            delay: Duration::ZERO,
            fault: BodyFault::None,
        }
    }

    /// Never answers: not even the headers are sent (a server that hangs).
    pub fn hang() -> Self {
        Self::error(500, "fault_llm: hung").delay(Duration::from_secs(24 * 3600))
    }

    /// An OpenAI-style error: `{"error": {"message", "type", "code"}}`.
    pub fn error(status: u16, message: &str) -> Self {
        let kind = match status {
            400 => "invalid_request_error",
            429 => "rate_limit_exceeded",
            _ => "server_error",
        };
        let body = json!({"error": {"message": message, "type": kind, "code": null}});
        Self::status(status, &body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sends the headers and the first `n` body bytes, then closes the
    /// connection (see [`BodyFault::CloseAfter`]).
    pub fn close_after(mut self, n: usize) -> Self {
        self.fault = BodyFault::CloseAfter(n);
        self
    }

    /// Closes the connection without answering (see [`BodyFault::Reset`]).
    pub fn reset() -> Self {
        let mut reply = Self::text("fault_llm: reset");
        reply.fault = BodyFault::Reset;
        reply
    }

    /// Sends the headers and the first `n` body bytes, then stalls forever
    /// (see [`BodyFault::StallAfter`]).
    pub fn stall_after(mut self, n: usize) -> Self {
        self.fault = BodyFault::StallAfter(n);
        self
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// 0-based arrival index.
    pub index: usize,
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn model(&self) -> &str {
        self.body["model"].as_str().unwrap_or_default()
    }

    /// `(role, text)` of every message (part lists joined).
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| {
                        let role = m["role"].as_str().unwrap_or_default().to_owned();
                        (role, content_text(&m["content"]))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The system (and developer) messages, joined by newlines.
    pub fn system(&self) -> String {
        self.messages()
            .into_iter()
            .filter(|(role, _)| role == "system" || role == "developer")
            .map(|(_, text)| text)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The first user message ("" when none).
    pub fn first_user(&self) -> String {
        self.messages()
            .into_iter()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text)
            .unwrap_or_default()
    }

    /// The last message's text.
    pub fn last_text(&self) -> String {
        self.messages()
            .pop()
            .map(|(_, text)| text)
            .unwrap_or_default()
    }

    /// Number of assistant turns so far (the step of an RLM conversation).
    pub fn assistant_turns(&self) -> usize {
        self.messages()
            .iter()
            .filter(|(role, _)| role == "assistant")
            .count()
    }

    /// Every non-assistant message after the last assistant turn, joined
    /// (the observation of the previous step).
    pub fn observation(&self) -> String {
        let messages = self.messages();
        let last = messages.iter().rposition(|(role, _)| role == "assistant");
        match last {
            Some(i) => messages[i + 1..]
                .iter()
                .map(|(_, text)| text.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        }
    }

    /// Characters of every message's text.
    pub fn prompt_chars(&self) -> usize {
        self.messages()
            .iter()
            .map(|(_, text)| text.chars().count())
            .sum()
    }
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .map(|p| match p {
                Value::String(s) => s.clone(),
                other => other["text"].as_str().unwrap_or_default().to_owned(),
            })
            .collect(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Computes the reply to a request.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

enum Mode {
    Script(Vec<Reply>),
    Handler(Handler),
}

struct Inner {
    mode: Mode,
    seen: Vec<Request>,
    answered: usize,
}

/// A running fault server; stopped on drop.
pub struct FaultLlm {
    addr: std::net::SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultLlm {
    /// Answers from `replies` in order; the last one repeats. An empty
    /// script answers every request with a 500 saying so.
    pub async fn scripted(replies: Vec<Reply>) -> Self {
        Self::start(Mode::Script(replies)).await
    }

    /// Answers every request with `handler(request)`.
    pub async fn with_handler(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(Mode::Handler(Arc::new(handler))).await
    }

    async fn start(mode: Mode) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            mode,
            seen: Vec::new(),
            answered: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault server");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// `http://127.0.0.1:P/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Replaces the script (and switches to script mode).
    pub fn set_script(&self, replies: Vec<Reply>) {
        let mut inner = self.inner.lock().expect("fault state");
        inner.mode = Mode::Script(replies);
        inner.answered = 0;
    }

    /// Every chat request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().expect("fault state").seen.clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.lock().expect("fault state").seen.len()
    }
}

impl Drop for FaultLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if !path.ends_with("/chat/completions") {
        let body = json!({"error": {"message": format!("no route {path}")}});
        return (StatusCode::NOT_FOUND, body.to_string()).into_response();
    }
    let reply = {
        let mut state = inner.lock().expect("fault state");
        let request = Request {
            index: state.seen.len(),
            at: Instant::now(),
            path,
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        };
        state.seen.push(request.clone());
        let answered = state.answered;
        state.answered += 1;
        match &state.mode {
            Mode::Script(replies) => match replies.get(answered).or(replies.last()) {
                Some(reply) => reply.clone(),
                None => Reply::error(500, "fault_llm: empty script"),
            },
            Mode::Handler(handler) => {
                let handler = handler.clone();
                drop(state);
                handler(&request)
            }
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let full_length = reply.body.len();
    let mut response = match reply.fault {
        BodyFault::None => Response::new(axum::body::Body::from(reply.body)),
        BodyFault::Reset => {
            // The body fails before the server flushed the head it buffered,
            // so it drops the connection with nothing sent.
            let body = futures::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("fault_llm: connection reset"))
            });
            Response::new(axum::body::Body::from_stream(body))
        }
        BodyFault::CloseAfter(n) | BodyFault::StallAfter(n) => {
            let mut head = reply.body.into_bytes();
            head.truncate(n);
            let head = futures::stream::iter(
                (!head.is_empty()).then(|| Ok::<_, std::io::Error>(Bytes::from(head))),
            );
            let body = match reply.fault {
                // A body stream that fails makes the server abort the
                // connection with the body incomplete.
                BodyFault::CloseAfter(_) => head
                    .chain(futures::stream::once(async {
                        // Pending first, so the server flushes what it has:
                        // the client gets the headers and the bytes sent.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::other(
                            "fault_llm: connection closed mid-body",
                        ))
                    }))
                    .boxed(),
                _ => head.chain(futures::stream::pending()).boxed(),
            };
            let mut response = Response::new(axum::body::Body::from_stream(body));
            response.headers_mut().insert(
                axum::http::header::CONTENT_LENGTH,
                HeaderValue::from(full_length),
            );
            response
        }
    };
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(server: &FaultLlm, body: Value) -> (u16, Option<String>, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/chat/completions", server.base_url()))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, retry_after, response.json().await.expect("json"))
    }

    #[tokio::test]
    async fn script_plays_in_order_and_repeats_the_last() {
        let server = FaultLlm::scripted(vec![
            Reply::error(429, "slow down").header("Retry-After", "1"),
            Reply::error(500, "boom"),
            Reply::text_with_usage("FINAL(42)", 7, 3),
        ])
        .await;
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let (status, retry, reply) = post(&server, body.clone()).await;
        assert_eq!((status, retry.as_deref()), (429, Some("1")));
        assert_eq!(reply["error"]["message"], "slow down");
        assert_eq!(post(&server, body.clone()).await.0, 500);
        for _ in 0..2 {
            let (status, _, reply) = post(&server, body.clone()).await;
            assert_eq!(status, 200);
            assert_eq!(reply["choices"][0]["message"]["content"], "FINAL(42)");
            assert_eq!(reply["usage"]["total_tokens"], 10);
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].first_user(), "hi");
        assert!(seen[1].at >= seen[0].at);
    }

    #[tokio::test]
    async fn body_faults_break_the_transport() {
        let server = FaultLlm::scripted(vec![
            Reply::text("FINAL(cut)").close_after(20),
            Reply::text("FINAL(stalled)").stall_after(20),
            Reply::hang(),
            Reply::reset(),
        ])
        .await;
        let client = reqwest::Client::new();
        let url = format!("{}/chat/completions", server.base_url());
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});

        let cut = client.post(&url).json(&body).send().await.expect("headers");
        assert_eq!(cut.status().as_u16(), 200);
        let err = cut.bytes().await.expect_err("the body is cut short");
        assert!(!err.is_timeout(), "{err:?}");

        let stalled = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .expect("headers");
        assert_eq!(stalled.status().as_u16(), 200);
        let started = Instant::now();
        let err = stalled.bytes().await.expect_err("the body stalls");
        assert!(err.is_timeout(), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));

        let err = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_millis(300))
            .send()
            .await
            .expect_err("no headers ever");
        assert!(err.is_timeout(), "{err:?}");

        let err = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect_err("reset: no response");
        assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
        assert_eq!(server.request_count(), 4);
    }

    #[tokio::test]
    async fn handler_sees_the_conversation() {
        let server = FaultLlm::with_handler(|request| {
            let turns = request.assistant_turns();
            Reply::answer(request, &format!("turn {turns}: {}", request.observation()))
                .delay(Duration::from_millis(if turns == 0 { 0 } else { 50 }))
        })
        .await;
        let (_, _, reply) = post(
            &server,
            json!({"messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": [{"type": "text", "text": "task"}]},
                {"role": "assistant", "content": "code"},
                {"role": "user", "content": "out"},
            ]}),
        )
        .await;
        assert_eq!(reply["choices"][0]["message"]["content"], "turn 1: out");
        assert_eq!(reply["usage"]["prompt_tokens"], est_tokens(3 + 4 + 4 + 3));
        let seen = server.requests();
        assert_eq!(seen[0].system(), "sys");
        assert_eq!(seen[0].first_user(), "task");
    }
}
