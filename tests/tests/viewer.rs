//! The trajectory viewer on the orchestrator's HTTP port, end to end: a real
//! completion (scripted root model fanning out to three child RLMs) is
//! recorded, its JSON endpoints answer, and headless Chromium renders the
//! page: four nodes, the answer, the termination reason, model-written
//! markup shown as text. A screenshot is kept in
//! `target/test-artifacts/viewer.png`.
//!
//! Needs root (the agent isolates sessions) and Chromium (Debian's
//! `chromium` package, or `RLM_CHROMIUM=/path/to/chrome`); a missing browser
//! fails the test, it is never skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rlm_e2e::sandbox::require_root;
use rlm_e2e::{Stack, channel};
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{
    CompleteRequest, CompletionLimits, CompletionResult, CompletionSpec, TerminationReason,
};
use serde_json::Value;

/// The root model: one turn that fans out to three child RLMs, each given
/// one context, and answers with what they said. Its code prints markup,
/// which the page must show as text.
const ROOT_TURNS: &str = r#"I fan the three words out to three child RLMs.

```repl
answers = rlm_query_batched(['Shout your context <img id="xss-prompt" src=x>'] * 3, contexts=["alpha", "beta", "gamma"])
print('<b id="xss-output">root</b>', answers)
FINAL("viewer answer: " + "+".join(answers))
```
---
FINAL(the scripted root ran out of turns)
"#;

/// The sub-model, so every child RLM: shouts its context.
const SUB_TURNS: &str = r#"I shout my context.

```repl
print('<b id="xss-output">child</b>', context)
FINAL(context.upper())
```
---
FINAL(the scripted child ran out of turns)
"#;

/// A root whose first block sleeps, so the completion is seen running.
const SLOW_TURNS: &str = r#"```repl
import time
print("sleeping")
time.sleep(6)
print("awake")
```
---
FINAL(slept well)
"#;

const ANSWER: &str = "viewer answer: ALPHA+BETA+GAMMA";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing scripted turns");
    path.display().to_string()
}

async fn complete(stack: &Stack, spec: CompletionSpec) -> CompletionResult {
    let mut client = RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"));
    tokio::time::timeout(
        Duration::from_secs(120),
        client.complete(CompleteRequest { spec: Some(spec) }),
    )
    .await
    .expect("Complete within 120 s")
    .expect("Complete RPC")
    .into_inner()
    .result
    .expect("a result")
}

async fn get(stack: &Stack, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{}{path}", stack.http_address))
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

async fn get_json(stack: &Stack, path: &str) -> Value {
    let response = get(stack, path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "GET {path}"
    );
    response.json().await.expect("JSON body")
}

/// The Chromium to drive: `RLM_CHROMIUM`, else the first of the usual names
/// on PATH. Panics with what to install when there is none.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("RLM_CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "RLM_CHROMIUM={} is not a file",
            path.display()
        );
        return path;
    }
    let names = ["chromium", "chromium-browser", "google-chrome", "chrome"];
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the viewer test needs a headless Chromium and found none on PATH ({}): \
         install Debian's `chromium` package (`apt-get install -y --no-install-recommends \
         chromium fonts-liberation`), or set RLM_CHROMIUM to the browser's path",
        names.join(", ")
    );
}

/// Runs headless Chromium with `args` and the URL; returns its stdout.
async fn run_chromium(args: &[&str], url: &str) -> String {
    let browser = chromium();
    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = tokio::process::Command::new(&browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .env("HOME", profile.path())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} {url} ran for over 90 s", browser.display()))
        .unwrap_or_else(|err| panic!("starting {}: {err}", browser.display()));
    assert!(
        output.status.success(),
        "{} {args:?} {url} failed ({}); stderr:\n{}",
        browser.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The text of the first element carrying `data-field="<field>"` (the
/// element's own text, up to its first child tag).
fn field_text<'a>(dom: &'a str, field: &str) -> &'a str {
    let marker = format!("data-field=\"{field}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in the rendered page:\n{dom}"));
    let rest = &dom[at..];
    let open = rest.find('>').expect("end of tag") + 1;
    let close = rest[open..].find('<').expect("next tag");
    &rest[open..open + close]
}

/// `target/` of this build (the binaries live in `target/<profile>/`).
fn target_dir() -> PathBuf {
    let orchestrator = rlm_e2e::binary("rlm-orchestrator");
    orchestrator
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_renders_a_fanout_completion() {
    require_root();
    let browser = chromium(); // fail early, before anything starts
    let turns = tempfile::tempdir().expect("tempdir");
    let root = format!("scripted:{}", write(turns.path(), "root.txt", ROOT_TURNS));
    let sub = format!("scripted:{}", write(turns.path(), "sub.txt", SUB_TURNS));
    let stack = Stack::start(&[
        ("RLM_MODEL", root.as_str()),
        ("RLM_SUB_MODEL", sub.as_str()),
    ])
    .await;

    let result = complete(
        &stack,
        CompletionSpec {
            prompt: "Shout the three words <script>document.title='pwned'</script>".into(),
            limits: Some(CompletionLimits {
                max_depth: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        result.termination_reason(),
        TerminationReason::Final,
        "{result:#?}"
    );
    assert_eq!(result.answer, ANSWER, "{result:#?}");
    assert_eq!(result.child_rlms, 3, "{result:#?}");
    let id = result.trajectory_id.clone();

    // The JSON endpoints the page uses.
    let list = get_json(&stack, "/api/trajectories?limit=10").await;
    let first = &list["trajectories"][0];
    assert_eq!(first["id"], id.as_str(), "{list:#}");
    assert_eq!(first["status"], "finished", "{list:#}");
    assert_eq!(first["termination_reason"], "final", "{list:#}");
    let one = get_json(&stack, &format!("/api/trajectories/{id}")).await;
    assert_eq!(one["status"], "finished");
    let lines = one["lines"].as_array().expect("lines");
    assert_eq!(lines[0]["kind"], "completion_started");
    assert_eq!(
        lines.last().map(|l| l["kind"].clone()),
        Some("completion_finished".into())
    );
    let nodes: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l["node"].as_str()).collect();
    assert_eq!(nodes.len(), 4, "{nodes:?}");
    let last_seq = one["last_seq"].as_u64().expect("last_seq");
    let tail = get_json(
        &stack,
        &format!("/api/trajectories/{id}?after={}", last_seq - 1),
    )
    .await;
    assert_eq!(tail["lines"].as_array().map(Vec::len), Some(1), "{tail:#}");

    // Pages, assets, unknown and invalid ids, a planted symlink.
    let page = get(&stack, &format!("/trajectories/{id}")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers().contains_key("content-security-policy"));
    for (path, content_type) in [
        ("/trajectories", "text/html; charset=utf-8"),
        ("/assets/viewer.js", "text/javascript; charset=utf-8"),
        ("/assets/viewer.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&stack, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
    }
    let log_dir = stack.dir.path().join("trajectories");
    std::fs::write(stack.dir.path().join("secret.txt"), "not a trajectory").expect("write");
    std::os::unix::fs::symlink(
        stack.dir.path().join("secret.txt"),
        log_dir.join("planted.jsonl"),
    )
    .expect("symlink");
    for (path, status) in [
        ("/trajectories/no-such-id", 404),
        ("/api/trajectories/no-such-id", 404),
        ("/api/trajectories/planted", 404),
        ("/trajectories/planted", 404),
        ("/api/trajectories/bad.id", 400),
        ("/api/trajectories/..%2F..%2Fetc%2Fpasswd", 400),
    ] {
        assert_eq!(get(&stack, path).await.status(), status, "{path}");
    }

    // The page as a browser renders it.
    let url = format!("http://{}/trajectories/{id}", stack.http_address);
    let dom = run_chromium(&["--virtual-time-budget=5000", "--dump-dom"], &url).await;
    assert_eq!(
        dom.matches("data-node-id=\"").count(),
        4,
        "the tree should show 4 nodes (root + 3 children):\n{dom}"
    );
    for node in ["0", "0.0", "0.1", "0.2"] {
        assert!(
            dom.contains(&format!("data-node-id=\"{node}\"")),
            "node {node} missing:\n{dom}"
        );
        assert!(
            dom.contains(&format!("data-timeline-node=\"{node}\"")),
            "timeline row of node {node} missing:\n{dom}"
        );
    }
    assert_eq!(field_text(&dom, "answer"), ANSWER);
    assert_eq!(field_text(&dom, "termination-reason"), "final");
    assert_eq!(field_text(&dom, "status"), "finished");
    assert_eq!(field_text(&dom, "node-count"), "4");
    for child in ["ALPHA", "BETA", "GAMMA"] {
        assert!(dom.contains(child), "child answer {child} missing");
    }
    // Model-written markup is text, never markup.
    assert!(
        dom.contains("&lt;b id=\"xss-output\"&gt;"),
        "code output missing"
    );
    assert!(
        dom.contains("&lt;img id=\"xss-prompt\""),
        "sub-call prompt missing"
    );
    assert!(
        !dom.contains("<b id=\"xss-output\""),
        "output became markup"
    );
    assert!(
        !dom.contains("<img id=\"xss-prompt\""),
        "prompt became markup"
    );
    assert!(!dom.contains("pwned</title>"), "the prompt's script ran");

    // The list page links to it.
    let list_url = format!("http://{}/trajectories", stack.http_address);
    let list_dom = run_chromium(&["--virtual-time-budget=3000", "--dump-dom"], &list_url).await;
    assert!(
        list_dom.contains(&format!("href=\"/trajectories/{id}\"")),
        "the list page does not link to {id}:\n{list_dom}"
    );

    // A screenshot, for people (and CI artifacts).
    let artifacts = target_dir().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifact directory");
    let png = artifacts.join("viewer.png");
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &[
            "--virtual-time-budget=5000",
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,2000",
        ],
        &url,
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|err| {
        panic!(
            "{} wrote no screenshot {}: {err}",
            browser.display(),
            png.display()
        )
    });
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
        "{} is not a plausible PNG ({} bytes)",
        png.display(),
        bytes.len()
    );
    eprintln!("viewer screenshot: {}", png.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn viewer_follows_a_running_completion() {
    require_root();
    chromium();
    let turns = tempfile::tempdir().expect("tempdir");
    let slow = format!("scripted:{}", write(turns.path(), "slow.txt", SLOW_TURNS));
    let stack = Stack::start(&[("RLM_MODEL", slow.as_str())]).await;
    let running = {
        let grpc = stack.grpc_address.clone();
        tokio::spawn(async move {
            let mut client = RlmServiceClient::new(channel(&grpc).await.expect("connect"));
            client
                .complete(CompleteRequest {
                    spec: Some(CompletionSpec {
                        prompt: "take a nap".into(),
                        ..Default::default()
                    }),
                })
                .await
                .expect("Complete RPC")
                .into_inner()
                .result
                .expect("a result")
        })
    };

    // Wait until the trajectory exists and its first model call is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (id, seen) = loop {
        let list = get_json(&stack, "/api/trajectories?status=running").await;
        if let Some(id) = list["trajectories"][0]["id"].as_str() {
            let one = get_json(&stack, &format!("/api/trajectories/{id}")).await;
            let lines = one["lines"].as_array().cloned().unwrap_or_default();
            if lines.iter().any(|l| l["kind"] == "model_call") {
                assert_eq!(one["status"], "running", "{one:#}");
                break (id.to_owned(), one["last_seq"].as_u64().expect("last_seq"));
            }
        }
        assert!(
            Instant::now() < deadline,
            "no running trajectory appeared; orchestrator log:\n{}",
            stack.orchestrator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The page shows it running (the code block sleeps for seconds).
    let url = format!("http://{}/trajectories/{id}", stack.http_address);
    let dom = run_chromium(&["--virtual-time-budget=1500", "--dump-dom"], &url).await;
    assert_eq!(field_text(&dom, "status"), "running", "{dom}");
    assert!(dom.contains("data-node-id=\"0\""), "{dom}");
    assert!(
        dom.contains("Still running"),
        "the answer box should say the completion runs:\n{dom}"
    );

    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the slow completion ends")
        .expect("task");
    assert_eq!(result.answer, "slept well", "{result:#?}");
    // Polling with `after` gets only the new lines, the result last.
    let rest = get_json(&stack, &format!("/api/trajectories/{id}?after={seen}")).await;
    assert_eq!(rest["status"], "finished", "{rest:#}");
    let lines = rest["lines"].as_array().expect("lines");
    assert!(
        lines
            .iter()
            .all(|l| l["seq"].as_u64().is_some_and(|s| s > seen)),
        "{rest:#}"
    );
    assert_eq!(
        lines.last().map(|l| l["kind"].clone()),
        Some("completion_finished".into()),
        "{rest:#}"
    );
}
