//! The trajectory viewer, served on the orchestrator's HTTP port next to
//! `/metrics` and `/health`:
//!
//! | Route | What |
//! |---|---|
//! | `GET /trajectories` | the list page |
//! | `GET /trajectories/{id}` | one completion: tree, timeline, answer (updates while it runs) |
//! | `GET /assets/viewer.{css,js}`, `/assets/favicon.svg` | the page's own files, embedded in the binary |
//! | `GET /api/trajectories?limit=N&status=S&page_token=T` | summaries, most recent first |
//! | `GET /api/trajectories/{id}?after=SEQ` | the recorded JSONL lines (those with `seq > SEQ`) and the status |
//!
//! The pages hold no data: the script fetches it from the JSON endpoints and
//! renders every text with `textContent`, and a strict Content-Security-Policy
//! (`script-src 'self'`, no inline script or style) backs that up. Nothing is
//! loaded from elsewhere, so the viewer works offline.
//!
//! When API keys are configured (`RLM_API_KEYS*`), the JSON endpoints want the
//! same `Authorization: Bearer <key>` as the gRPC service (the page asks for
//! the key once and keeps it in the tab's session storage); the static files
//! stay open, as they hold no data.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rlm_proto::rlm::v1::{TerminationReason, TrajectoryStatus, TrajectorySummary, Usage};
use serde_json::{Value, json};

use crate::auth::ApiKeys;
use crate::trajectory::{TrajectoryError, TrajectoryStore, valid_id};

const PAGE_HTML: &str = include_str!("../assets/viewer.html");
const VIEWER_CSS: &str = include_str!("../assets/viewer.css");
const VIEWER_JS: &str = include_str!("../assets/viewer.js");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// Default and maximum `limit` of the list endpoint.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

/// Content-Security-Policy of the pages: only this origin's script, style
/// and API; no inline script, no frames, no forms, no plugins.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// What the viewer serves from.
#[derive(Clone)]
pub struct Viewer {
    /// The trajectory store the engine writes (a clone shares its record of
    /// running completions, which tells RUNNING from INCOMPLETE).
    pub store: TrajectoryStore,
    /// API keys of the gRPC service; `None` = the JSON endpoints are open.
    pub keys: Option<Arc<ApiKeys>>,
}

impl Viewer {
    /// A viewer of `store`, guarded by `keys` when some are configured.
    pub fn new(store: TrajectoryStore, keys: Option<Arc<ApiKeys>>) -> Self {
        Self { store, keys }
    }
}

/// The viewer's routes (pages, assets, JSON API), with their own state.
pub fn router(viewer: Viewer) -> Router {
    Router::new()
        .route("/trajectories", get(list_page))
        .route("/trajectories/", get(list_page))
        .route("/trajectories/{id}", get(trajectory_page))
        .route("/assets/viewer.css", get(css))
        .route("/assets/viewer.js", get(js))
        .route("/assets/favicon.svg", get(favicon))
        .route("/api/trajectories", get(api_list))
        .route("/api/trajectories/{id}", get(api_trajectory))
        .with_state(viewer)
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

fn page(status: StatusCode) -> Response {
    let mut response = (status, PAGE_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary: a new binary may change them, so revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(headers);
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(headers);
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

fn store_error(err: TrajectoryError) -> Response {
    match err {
        TrajectoryError::InvalidId(_) => error(
            StatusCode::BAD_REQUEST,
            "invalid trajectory id: [A-Za-z0-9_-]{1,64}",
        ),
        // A symlink or directory in the log directory is nobody's trajectory.
        TrajectoryError::NotFound(_) | TrajectoryError::NotRegular(_) => {
            error(StatusCode::NOT_FOUND, "no such trajectory")
        }
        TrajectoryError::InvalidPageToken => error(StatusCode::BAD_REQUEST, "invalid page_token"),
        other => {
            tracing::warn!(error = %other, "trajectory viewer: reading the store failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
        }
    }
}

/// Checks `Authorization: Bearer <key>` when keys are configured: `None`
/// lets the request through, `Some` is the 401 to answer.
fn rejection(viewer: &Viewer, headers: &HeaderMap) -> Option<Response> {
    let keys = viewer.keys.as_ref()?;
    let unauthorized = |message: &str| {
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"rlm\""),
        );
        Some(response)
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return unauthorized("an API key is required: `Authorization: Bearer <API key>`");
    };
    let value = value
        .to_str()
        .ok()
        .and_then(|v| tonic::metadata::MetadataValue::try_from(v).ok());
    let Some(value) = value else {
        return unauthorized("invalid Authorization header");
    };
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert("authorization", value);
    match keys.authenticate(request) {
        Ok(_) => None,
        Err(status) => unauthorized(status.message()),
    }
}

async fn list_page() -> Response {
    page(StatusCode::OK)
}

/// The page of one trajectory. It holds no data, but an unknown id is a 404
/// (when the endpoints are open: with API keys, existence is not disclosed
/// before the key, and the page itself reports what the API answers).
async fn trajectory_page(State(viewer): State<Viewer>, Path(id): Path<String>) -> Response {
    if !valid_id(&id) {
        return page(StatusCode::BAD_REQUEST);
    }
    if viewer.keys.is_some() {
        return page(StatusCode::OK);
    }
    match viewer.store.read_lines(&id).await.map(drop) {
        Ok(()) => page(StatusCode::OK),
        Err(TrajectoryError::NotFound(_) | TrajectoryError::NotRegular(_)) => {
            page(StatusCode::NOT_FOUND)
        }
        // Corrupt or unreadable: the page shows what the API says.
        _ => page(StatusCode::OK),
    }
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", VIEWER_CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", VIEWER_JS)
}

async fn favicon() -> Response {
    asset("image/svg+xml", FAVICON_SVG)
}

/// The value of `name` in the query string (percent-decoded; `+` is a
/// space), or `None`. axum's `Query` extractor is not enabled in this
/// workspace, and these few parameters need nothing more.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_name(status: i32) -> String {
    TrajectoryStatus::try_from(status)
        .unwrap_or(TrajectoryStatus::Unspecified)
        .as_str_name()
        .trim_start_matches("TRAJECTORY_STATUS_")
        .to_ascii_lowercase()
}

fn reason_name(reason: i32) -> Value {
    match TerminationReason::try_from(reason) {
        Ok(TerminationReason::Unspecified) | Err(_) => Value::Null,
        Ok(r) => Value::String(
            r.as_str_name()
                .trim_start_matches("TERMINATION_REASON_")
                .to_ascii_lowercase(),
        ),
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "calls": u.calls,
        "cost_usd": u.cost_usd,
        "cost_known": u.cost_known,
    })
}

fn summary_json(s: &TrajectorySummary) -> Value {
    let metadata: BTreeMap<&String, &String> = s.metadata.iter().collect();
    json!({
        "id": s.trajectory_id,
        "completion_id": s.completion_id,
        "prompt_preview": s.prompt_preview,
        "status": status_name(s.status),
        "termination_reason": reason_name(s.termination_reason),
        "started_at": s.started_at.map(|t| t.to_string()),
        "duration_ms": s.duration.map(|d| {
            d.seconds.max(0) as f64 * 1000.0 + f64::from(d.nanos.max(0)) / 1e6
        }),
        "usage": usage_json(&s.total_usage.unwrap_or_default()),
        "iterations": s.iterations,
        "root_model": s.root_model,
        "metadata": metadata,
    })
}

async fn api_list(State(viewer): State<Viewer>, headers: HeaderMap, uri: Uri) -> Response {
    if let Some(response) = rejection(&viewer, &headers) {
        return response;
    }
    let limit = match query_param(&uri, "limit")
        .as_deref()
        .map(str::parse::<usize>)
    {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit: between 1 and {MAX_LIMIT}"),
            );
        }
    };
    let wanted = match query_param(&uri, "status").as_deref() {
        None | Some("") => None,
        Some(s) => match TrajectoryStatus::from_str_name(&format!(
            "TRAJECTORY_STATUS_{}",
            s.to_ascii_uppercase()
        )) {
            Some(st) if st != TrajectoryStatus::Unspecified => Some(st as i32),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "status: running, finished or incomplete",
                );
            }
        },
    };
    let token = query_param(&uri, "page_token").unwrap_or_default();
    let listed = viewer
        .store
        .list_matching(limit, &token, move |s| wanted.is_none_or(|w| s.status == w))
        .await;
    match listed {
        Ok((summaries, next)) => json_response(
            StatusCode::OK,
            &json!({
                "trajectories": summaries.iter().map(summary_json).collect::<Vec<_>>(),
                "next_page_token": next,
            }),
        ),
        Err(err) => store_error(err),
    }
}

async fn api_trajectory(
    State(viewer): State<Viewer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Some(response) = rejection(&viewer, &headers) {
        return response;
    }
    if !valid_id(&id) {
        return store_error(TrajectoryError::InvalidId(id));
    }
    let after = match query_param(&uri, "after").as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "after: a sequence number (0, 1, ...)",
            );
        }
    };
    match viewer.store.read_lines(&id).await {
        Ok((lines, status)) => {
            let total = lines.len();
            let last_seq = lines.last().map_or(0, |l| l.seq);
            let lines: Vec<_> = lines
                .into_iter()
                .filter(|l| after.is_none_or(|a| l.seq > a))
                .collect();
            json_response(
                StatusCode::OK,
                &json!({
                    "id": id,
                    "status": status_name(status as i32),
                    "line_count": total,
                    "last_seq": last_seq,
                    "lines": lines,
                }),
            )
        }
        Err(err) => store_error(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trajectory::{EventBody, TrajectoryHeader, UsageRecord};

    const KEY: &str = "viewer-test-key-0123456789";

    async fn serve(viewer: Viewer) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router(viewer)).await;
        });
        format!("http://{addr}")
    }

    fn store_with_one() -> (tempfile::TempDir, TrajectoryStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        let w = store
            .create(
                "t1",
                TrajectoryHeader {
                    completion_id: "t1".into(),
                    prompt_preview: "<script>alert(1)</script>".into(),
                    ..Default::default()
                },
            )
            .expect("create");
        w.append(
            "0",
            0,
            EventBody::IterationStarted {
                iteration: 1,
                tree_usage: UsageRecord::default(),
            },
        )
        .expect("append");
        drop(w);
        (dir, store)
    }

    #[test]
    fn query_parameters() {
        let uri: Uri = "/api/trajectories?limit=5&status=run%6Eing&page_token=12.a-b&x"
            .parse()
            .expect("uri");
        assert_eq!(query_param(&uri, "limit").as_deref(), Some("5"));
        assert_eq!(query_param(&uri, "status").as_deref(), Some("running"));
        assert_eq!(query_param(&uri, "page_token").as_deref(), Some("12.a-b"));
        assert_eq!(query_param(&uri, "x").as_deref(), Some(""));
        assert_eq!(query_param(&uri, "after"), None);
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[tokio::test]
    async fn serves_pages_assets_and_lines() {
        let (dir, store) = store_with_one();
        let base = serve(Viewer::new(store, None)).await;
        let http = reqwest::Client::new();

        let r = http
            .get(format!("{base}/trajectories/t1"))
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert!(
            r.headers()["content-security-policy"]
                .to_str()
                .expect("ascii")
                .contains("script-src 'self'")
        );
        let body = r.text().await.expect("body");
        assert!(body.contains("/assets/viewer.js") && !body.contains("alert"));

        let r = http
            .get(format!("{base}/assets/viewer.js"))
            .send()
            .await
            .expect("js");
        assert_eq!(
            r.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );

        let v: Value = http
            .get(format!("{base}/api/trajectories/t1"))
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["lines"][0]["kind"], "completion_started");
        assert_eq!(v["lines"][0]["prompt_preview"], "<script>alert(1)</script>");
        assert_eq!(v["lines"][1]["kind"], "iteration_started");
        let v: Value = http
            .get(format!("{base}/api/trajectories/t1?after=0"))
            .send()
            .await
            .expect("api")
            .json()
            .await
            .expect("json");
        assert_eq!(v["lines"].as_array().map(Vec::len), Some(1));

        let v: Value = http
            .get(format!("{base}/api/trajectories?limit=5"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(v["trajectories"][0]["id"], "t1");

        // Unknown, invalid, symlinked.
        std::os::unix::fs::symlink(dir.path().join("t1.jsonl"), dir.path().join("ln.jsonl"))
            .expect("symlink");
        for (path, code) in [
            ("/api/trajectories/nope", 404),
            ("/api/trajectories/ln", 404),
            ("/trajectories/nope", 404),
            ("/trajectories/ln", 404),
            ("/api/trajectories/a.b", 400),
            ("/trajectories/a.b", 400),
            ("/api/trajectories/..%2f..%2fetc%2fpasswd", 400),
            ("/api/trajectories?limit=0", 400),
            ("/api/trajectories?status=bogus", 400),
            ("/api/trajectories/t1?after=x", 400),
        ] {
            let r = http.get(format!("{base}{path}")).send().await.expect(path);
            assert_eq!(r.status().as_u16(), code, "{path}");
        }
    }

    #[tokio::test]
    async fn api_keys_guard_the_data_not_the_page() {
        let (_dir, store) = store_with_one();
        let keys = ApiKeys::load(Some(&format!("alice:{KEY}")), None, 1)
            .expect("keys")
            .expect("some");
        let base = serve(Viewer::new(store, Some(keys))).await;
        let http = reqwest::Client::new();
        let page = http
            .get(format!("{base}/trajectories/t1"))
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 200);
        for auth in [None, Some("Bearer wrong-key-0123456789abc"), Some(KEY)] {
            let mut r = http.get(format!("{base}/api/trajectories/t1"));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let r = r.send().await.expect("api");
            assert_eq!(r.status(), 401, "{auth:?}");
            assert!(r.headers().contains_key("www-authenticate"));
        }
        let r = http
            .get(format!("{base}/api/trajectories"))
            .header("authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .expect("api");
        assert_eq!(r.status(), 200);
    }
}
