//! The `rlm` binary against the real orchestrator and sandbox agent, started
//! the way the end-to-end tests start them (`rlm_e2e::Stack`), with the
//! offline scripted model. Build the service binaries first:
//! `cargo build --workspace --bins`.
//!
//! As root the agent runs with full isolation; otherwise with
//! `RLM_AGENT_ISOLATION=none` (these tests are about the CLI, not isolation).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rlm_e2e::{Stack, free_port};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Turns of a root model that searches its context, starts one child RLM on
/// a slice of it, and answers with both results.
const ROOT_TURNS: &str = r#"(scripted model, test) Searching.

```repl
import re
m = re.search(r"needle=(\w+)", context)
print("found", m.group(1))
```
---
```repl
child = rlm_query("Count the x characters in your context.", context=context[:1000])
FINAL(f"needle {m.group(1)}, child says {child}")
```
"#;

/// A child RLM: counts `x` in its context.
const SUB_TURNS: &str = "```repl\nFINAL(context.count('x'))\n```\n";

/// A model whose code sleeps, to be cancelled.
const SLOW_TURNS: &str = "(slow) Working.\n\n```repl\nimport time\nprint('sleeping')\ntime.sleep(60)\n```\n---\nFINAL(too late)\n";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [
            ("root.txt", ROOT_TURNS),
            ("sub.txt", SUB_TURNS),
            ("slow.txt", SLOW_TURNS),
        ] {
            std::fs::write(dir.path().join(name), text).expect("write turns");
        }
        Self { dir }
    }

    fn model(&self, name: &str) -> String {
        format!("scripted:{}", self.path(name).display())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A context of `size` bytes: `x` filler with `needle=<word>` in the middle.
    fn context(&self, size: usize, word: &str) -> PathBuf {
        let needle = format!("\nneedle={word}\n");
        let half = (size - needle.len()) / 2;
        let text = format!(
            "{}{needle}{}",
            "x".repeat(half),
            "y".repeat(size - needle.len() - half)
        );
        let path = self.path(&format!("context-{size}.txt"));
        std::fs::write(&path, text).expect("write context");
        path
    }
}

fn isolation_env() -> Vec<(&'static str, &'static str)> {
    if nix::unistd::geteuid().is_root() {
        Vec::new()
    } else {
        vec![("RLM_AGENT_ISOLATION", "none")]
    }
}

async fn start_stack(fixture: &Fixture) -> Stack {
    let model = fixture.model("root.txt");
    let sub_model = fixture.model("sub.txt");
    let mut env = isolation_env();
    env.push(("RLM_MODEL", &model));
    env.push(("RLM_SUB_MODEL", &sub_model));
    Stack::start(&env).await
}

/// `rlm` with a clean environment, pointed at `addr`.
fn rlm(addr: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rlm"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RLM_ADDR", addr)
        .kill_on_drop(true);
    command
}

async fn output(command: &mut Command) -> Output {
    tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("rlm did not finish in time")
        .expect("running rlm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", describe(out)))
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_prints_the_answer_and_its_json_parses() {
    let fixture = Fixture::new();
    let stack = start_stack(&fixture).await;
    // 3 MiB: uploaded with UploadContext rather than sent inline.
    let big = fixture.context(3 << 20, "walrus");

    let out = output(rlm(&stack.grpc_address).args([
        "run",
        "find the needle",
        "--context",
        &path_arg(&big),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout),
        "needle walrus, child says 1000\n",
        "{}",
        describe(&out)
    );
    let stderr = text(&out.stderr);
    for part in [
        "uploading context",
        "sub-call #1: rlm_query x1",
        "final after 2 iteration(s)",
    ] {
        assert!(
            stderr.contains(part),
            "{part:?} missing:\n{}",
            describe(&out)
        );
    }

    let small = fixture.context(5000, "otter");
    let out = output(rlm(&stack.grpc_address).args([
        "run",
        "find the needle",
        "--context",
        &path_arg(&small),
        "--model",
        &fixture.model("root.txt"),
        "--json",
        "--quiet",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(out.stderr.is_empty(), "--quiet: {}", describe(&out));
    let result = json(&out);
    assert_eq!(result["answer"], "needle otter, child says 1000");
    assert_eq!(result["termination_reason"], "final");
    assert_eq!(result["partial"], false);
    assert_eq!(result["iterations"], 2);
    assert_eq!(result["subcalls"], 1);
    assert_eq!(result["child_rlms"], 1);
    assert_eq!(result["depth_reached"], 1);
    assert!(result["usage"]["total_tokens"].as_u64().unwrap_or(0) > 0);
    assert_eq!(result["usage"]["cost_known"], false, "scripted: no price");
    assert!(result["duration"].as_f64().is_some());
    assert!(!result["trajectory_id"].as_str().unwrap_or("").is_empty());
    assert!(!result["completion_id"].as_str().unwrap_or("").is_empty());

    // A limit ends it with the partial answer and status 3.
    let out = output(rlm(&stack.grpc_address).args([
        "run",
        "find the needle",
        "--context",
        &path_arg(&small),
        "--max-iterations",
        "1",
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let result = json(&out);
    assert_eq!(result["termination_reason"], "max_iterations");
    assert_eq!(result["partial"], true);
    assert!(
        text(&out.stderr).contains("partial answer"),
        "{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_exit_2_naming_the_field() {
    let fixture = Fixture::new();
    let stack = start_stack(&fixture).await;
    let out =
        output(rlm(&stack.grpc_address).args(["run", "task", "--max-iterations", "5000"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("spec.limits.max_iterations"),
        "{}",
        describe(&out)
    );

    let out = output(rlm(&stack.grpc_address).args(["run", "task", "--model", "nope/x"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("spec.root_model"),
        "{}",
        describe(&out)
    );

    let bad_json = fixture.path("bad.json");
    std::fs::write(&bad_json, "{not json").expect("write");
    let out = output(rlm(&stack.grpc_address).args([
        "run",
        "task",
        "--context",
        &path_arg(&bad_json),
        "--json-context",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("not valid JSON"),
        "{}",
        describe(&out)
    );

    let out = output(rlm(&stack.grpc_address).args(["logs", "no-such-trajectory"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2_without_a_server() {
    let addr = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["run"],
        vec!["run", "task", "--max-iterations", "0"],
        vec!["run", "task", "--timeout", "soon"],
        vec!["logs", "--limit", "0"],
        vec!["frobnicate"],
    ] {
        let out = output(rlm(&addr).args(&args)).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let help = output(rlm(&addr).arg("--help")).await;
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for part in ["Exit status:", "69", "EX_UNAVAILABLE", "partial answer"] {
        assert!(help.contains(part), "{part:?} missing from --help:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_orchestrator_exits_69() {
    let addr = format!("http://127.0.0.1:{}", free_port());
    for args in [vec!["run", "task"], vec!["logs"], vec!["logs", "some-id"]] {
        let out = output(rlm(&addr).args(&args)).await;
        assert_eq!(out.status.code(), Some(69), "{args:?}: {}", describe(&out));
        assert!(
            text(&out.stderr).contains("cannot reach the orchestrator"),
            "{}",
            describe(&out)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_list_and_show_the_completion() {
    let fixture = Fixture::new();
    let stack = start_stack(&fixture).await;
    let context = fixture.context(5000, "heron");
    let out = output(rlm(&stack.grpc_address).args([
        "run",
        "logs test prompt",
        "--context",
        &path_arg(&context),
        "--json",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = json(&out)["trajectory_id"]
        .as_str()
        .expect("trajectory_id")
        .to_owned();

    let out = output(rlm(&stack.grpc_address).arg("logs")).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{table}"));
    for part in ["finished", "final", "logs test prompt"] {
        assert!(row.contains(part), "{part:?} missing: {row}");
    }

    let out = output(rlm(&stack.grpc_address).args(["logs", "--json", "--limit", "5"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let listed = json(&out);
    assert_eq!(listed["trajectories"][0]["trajectory_id"], id.as_str());
    assert_eq!(listed["trajectories"][0]["termination_reason"], "final");

    // The tree, found by a prefix of the id.
    let out = output(rlm(&stack.grpc_address).args(["logs", &id[..8]])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let tree = text(&out.stdout);
    for part in [
        format!("trajectory {id}"),
        "node 0 (depth 0)".to_owned(),
        "iteration 2".to_owned(),
        "sub-call #1 rlm_query x1".to_owned(),
        "node 0.0 (depth 1)".to_owned(),
        "│ found heron".to_owned(),
        "answer (final):".to_owned(),
    ] {
        assert!(tree.contains(&part), "{part:?} missing:\n{tree}");
    }

    let out = output(rlm(&stack.grpc_address).args(["logs", &id, "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let trajectory = json(&out);
    assert_eq!(trajectory["summary"]["trajectory_id"], id.as_str());
    assert_eq!(
        trajectory["result"]["answer"],
        "needle heron, child says 1000"
    );
    let events = trajectory["events"].as_array().expect("events");
    assert_eq!(events[0]["kind"], "iteration_started");
    assert_eq!(events.last().expect("last")["kind"], "result");
    assert!(
        events.iter().any(|e| e["kind"] == "subcall_started"
            && e["subcall_started"]["child_node_ids"][0] == "0.0"),
        "{trajectory}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_reports_ok_for_running_services() {
    let fixture = Fixture::new();
    let stack = start_stack(&fixture).await;
    let out = output(rlm(&stack.grpc_address).args([
        "doctor",
        "--json",
        "--http-addr",
        &format!("http://{}", stack.http_address),
        "--agent-addr",
        &stack.agent_address,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report}");
    let checks = report["checks"].as_array().expect("checks");
    let status_of = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
    };
    for name in [
        "orchestrator gRPC",
        "orchestrator /health",
        "sandbox from orch.",
        "trajectory storage",
        "model endpoint",
        "agent gRPC",
        "agent runtime",
    ] {
        assert_eq!(status_of(name), "ok", "{name}: {report}");
    }
    let expected_isolation = if nix::unistd::geteuid().is_root() {
        "full"
    } else {
        "none"
    };
    assert_eq!(report["agent"]["isolation_mode"], expected_isolation);
    assert_eq!(report["health"]["status"], "healthy");
    assert!(checks.iter().any(|c| c["group"] == "host"), "{report}");

    // The text form: one line per check.
    let out = output(rlm(&stack.grpc_address).args([
        "doctor",
        "--skip",
        "host",
        "--http-addr",
        &stack.http_address,
        "--agent-addr",
        &stack.agent_address,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("ok    agent gRPC")),
        "{}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_when_the_agent_is_down() {
    let fixture = Fixture::new();
    let mut stack = start_stack(&fixture).await;
    stack.agent.kill();
    let out = output(rlm(&stack.grpc_address).args([
        "doctor",
        "--json",
        "--skip",
        "host",
        "--http-addr",
        &format!("http://{}", stack.http_address),
        "--agent-addr",
        &stack.agent_address,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = json(&out);
    let status_of = |name: &str| {
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no check {name}: {report}"))
    };
    assert_eq!(status_of("orchestrator gRPC"), "ok", "{report}");
    assert_eq!(status_of("agent gRPC"), "fail", "{report}");
    assert_eq!(status_of("sandbox from orch."), "fail", "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_when_nothing_runs() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = output(rlm(&addr).args([
        "doctor",
        "--json",
        "--http-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--agent-addr",
        "unix:///nonexistent/rlm/sandbox.sock",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = json(&out);
    assert_eq!(report["ok"], false);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        failed,
        ["orchestrator gRPC", "orchestrator /health", "agent gRPC"],
        "{report}"
    );
    assert!(
        report["checks"][0]["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("rlm up")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_cancels_and_prints_the_partial_answer() {
    let fixture = Fixture::new();
    let stack = start_stack(&fixture).await;
    let mut child = rlm(&stack.grpc_address)
        .args(["run", "slow task", "--model", &fixture.model("slow.txt")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rlm");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    // The code block is running once the model has replied.
    tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let replied = line.contains("replied");
            seen.push(line);
            if replied {
                return;
            }
        }
        panic!("stderr closed before the model replied: {seen:?}");
    })
    .await
    .expect("the model never replied");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest
    });
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("rlm did not exit after Ctrl-C")
        .expect("wait");
    let stderr = rest.await.expect("stderr reader").join("\n");
    assert_eq!(out.status.code(), Some(4), "stderr:\n{stderr}");
    assert!(
        text(&out.stdout).contains("time.sleep(60)"),
        "the partial answer (the last reply) is printed: {}",
        text(&out.stdout)
    );
    assert!(stderr.contains("cancelling the completion"), "{stderr}");
    assert!(stderr.contains("cancelled"), "{stderr}");
}
