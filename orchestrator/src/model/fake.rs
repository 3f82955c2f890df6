//! Test-only scripted HTTP server on 127.0.0.1:0: answers each request with
//! the next queued reply (the last one repeats) and records what it got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

#[derive(Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    pub fn ok(body: String) -> Self {
        Self::status(200, &body)
    }
    pub fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_owned(),
            delay: Duration::ZERO,
        }
    }
    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Inner {
    replies: Vec<Reply>,
    seen: Vec<Seen>,
}

pub struct Fake {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Fake {
    pub async fn start(replies: Vec<Reply>) -> Self {
        assert!(!replies.is_empty(), "a fake needs at least one reply");
        let inner = Arc::new(Mutex::new(Inner {
            replies,
            seen: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake server");
        let addr = listener.local_addr().expect("fake server address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake server");
        });
        Self {
            base: format!("http://{addr}"),
            inner,
            server,
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.inner.lock().expect("fake state").seen.clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = inner.lock().expect("fake state");
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        inner.seen.push(Seen {
            path: uri.path().to_owned(),
            headers,
            body,
        });
        let index = (inner.seen.len() - 1).min(inner.replies.len() - 1);
        inner.replies[index].clone()
    };
    tokio::time::sleep(reply.delay).await;
    let mut response = (
        StatusCode::from_u16(reply.status).expect("valid status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}
