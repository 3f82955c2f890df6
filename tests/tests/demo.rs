//! The README's demo command, `scripts/demo.sh`, run as CI runs everything:
//! with the debug binaries `make test` built (`DEMO_PROFILE=debug
//! DEMO_BUILD=0`, so it builds nothing), as root (full isolation), on ports,
//! a state directory and an agent cgroup of its own so it never meets
//! another test's services. It must end with status 0 and the ground-truth
//! check line.
//!
//! The same script with `RLM_MODEL` + `RLM_LLM_BASE_URL` set uses that model
//! instead of the scripted one: checked against an in-process
//! OpenAI-compatible server that plays the demo's turns.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rlm_e2e::fault_llm::{FaultLlm, Reply};
use rlm_e2e::free_port;
use rlm_e2e::sandbox::require_root;

const CHECK_LINE: &str = "✓ the answer matches the generator's ground truth";
/// Bound of one demo run (a debug build, 8 MiB of context).
const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

/// Variables of the caller's environment that would change what the demo
/// does (a real model, other addresses or state): never passed on.
const SCRUBBED: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "RLM_MODEL",
    "RLM_SUB_MODEL",
    "RLM_LLM_BASE_URL",
    "RLM_LLM_API_KEY_FILE",
    "RLM_ANTHROPIC_BASE_URL",
    "RLM_CONFIG",
    "RLM_API_KEYS",
    "RLM_API_KEYS_FILE",
    "RLM_ADDR",
    "RLM_HTTP_ADDR",
    "RLM_SANDBOX_ENDPOINT",
    "RLM_AGENT_LISTEN",
    "RLM_AGENT_DATA_DIR",
    "RLM_AGENT_ISOLATION",
    "RLM_LOG_DIR",
    "RLM_TLS_CERT",
    "RLM_TLS_KEY",
    "RLM_SANDBOX_TLS_CA",
    "DEMO_MODEL",
    "DEMO_KEEP",
    "DEMO_MIB",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory of the built binaries (`target/debug`), checked to hold
/// the three the demo runs.
fn bin_dir() -> PathBuf {
    let rlm = rlm_e2e::binary("rlm");
    for name in ["rlm-orchestrator", "rlm-sandbox-agent"] {
        rlm_e2e::binary(name);
    }
    rlm.parent().expect("binary directory").to_path_buf()
}

struct Run {
    grpc: String,
    http: String,
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "scripts/demo.sh exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `scripts/demo.sh` with its own ports, state directory and cgroup,
/// plus `extra`; returns what it printed.
async fn run_demo(state: &Path, extra: &[(&str, String)]) -> Run {
    let bins = bin_dir();
    let profile = bins
        .file_name()
        .and_then(|n| n.to_str())
        .expect("profile directory name")
        .to_owned();
    let target = bins.parent().expect("target directory");
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(workspace_root().join("scripts/demo.sh"))
        .current_dir(workspace_root())
        .env("DEMO_PROFILE", &profile)
        .env("DEMO_BUILD", "0")
        .env("CARGO_TARGET_DIR", target)
        .env("RLM_STATE_DIR", state)
        .env("RLM_LISTEN", &grpc)
        .env("RLM_HTTP_LISTEN", &http)
        .env(
            "RLM_AGENT_CGROUP",
            format!("rlm-demo-test-{}-{}", std::process::id(), free_port()),
        )
        .env("RLM_AGENT_POOL_SIZE", "2")
        .env("LANG", "C.UTF-8")
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in SCRUBBED {
        command.env_remove(name);
    }
    for (k, v) in extra {
        command.env(k, v);
    }
    assert!(
        profile == "debug" || profile == "release",
        "the demo runs debug or release builds, not {profile}"
    );
    let child = command.spawn().expect("starting bash scripts/demo.sh");
    let pid = child.id().expect("pid");
    match tokio::time::timeout(DEMO_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => {
            let output = output.expect("waiting for the demo");
            Run {
                grpc,
                http,
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            // SIGTERM: the script's trap stops `rlm up` (and so both services).
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            tokio::time::sleep(Duration::from_secs(15)).await;
            panic!(
                "scripts/demo.sh ran for over {DEMO_TIMEOUT:?}; its service log:\n{}",
                std::fs::read_to_string(state.join("demo/up.log")).unwrap_or_default()
            );
        }
    }
}

/// The demo recorded its trajectory, and the services it started are gone
/// (the script stops `rlm up` on exit): its ports are free again.
fn assert_cleaned_up(run: &Run, state: &Path) {
    let trajectories = std::fs::read_dir(state.join("trajectories"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        trajectories >= 1,
        "no trajectory recorded under {}\n{}",
        state.display(),
        run.describe()
    );
    for address in [&run.grpc, &run.http] {
        assert!(
            std::net::TcpListener::bind(address.as_str()).is_ok(),
            "{address} is still taken after the demo ended; service log:\n{}",
            std::fs::read_to_string(state.join("demo/up.log")).unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_demo_matches_its_ground_truth() {
    require_root();
    let state = tempfile::tempdir().expect("state dir");
    let run = run_demo(state.path(), &[]).await;
    assert!(run.status.success(), "{}", run.describe());
    assert!(run.stdout.contains(CHECK_LINE), "{}", run.describe());
    assert!(
        run.stdout
            .contains("== Result (scripted model, offline demo)"),
        "the scripted model must be labelled as such:\n{}",
        run.describe()
    );
    assert!(
        run.stdout.contains("/trajectories/"),
        "the viewer's address is printed:\n{}",
        run.describe()
    );
    assert_cleaned_up(&run, state.path());
}

/// The demo's root and sub-model turns, as an OpenAI-compatible server
/// would answer them: turn n = number of assistant messages so far.
fn demo_turns(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("examples/demo").join(name))
        .expect("demo turns");
    let mut turns = vec![String::new()];
    for line in text.lines() {
        if line.trim() == "---" {
            turns.push(String::new());
        } else {
            let turn = turns.last_mut().expect("a turn");
            turn.push_str(line);
            turn.push('\n');
        }
    }
    turns
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_uses_a_configured_model_endpoint() {
    require_root();
    let root = demo_turns("turns.txt");
    let sub = demo_turns("sub_turns.txt");
    let llm = FaultLlm::with_handler(move |request| {
        let turns = if request.model().ends_with("demo-sub") {
            &sub
        } else {
            &root
        };
        let n = request.assistant_turns().min(turns.len() - 1);
        Reply::answer(request, &turns[n])
    })
    .await;
    let state = tempfile::tempdir().expect("state dir");
    let run = run_demo(
        state.path(),
        &[
            ("RLM_MODEL", "openai/demo-root".to_owned()),
            ("RLM_SUB_MODEL", "openai/demo-sub".to_owned()),
            ("RLM_LLM_BASE_URL", llm.base_url()),
            ("OPENAI_API_KEY", "demo-test-key-0123456789".to_owned()),
        ],
    )
    .await;
    assert!(run.status.success(), "{}", run.describe());
    assert!(run.stdout.contains(CHECK_LINE), "{}", run.describe());
    let label = format!(
        "real model openai/demo-root (sub-model openai/demo-sub) at {}",
        llm.base_url()
    );
    assert!(
        run.stdout.contains(&format!("== Result ({label})")),
        "the real model must be named:\n{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains("scripted:"),
        "no scripted model with a real one configured:\n{}",
        run.describe()
    );
    let requests = llm.requests();
    let models: std::collections::BTreeSet<&str> = requests.iter().map(|r| r.model()).collect();
    assert!(
        models.iter().any(|m| m.ends_with("demo-root"))
            && models.iter().any(|m| m.ends_with("demo-sub")),
        "the endpoint saw {models:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer demo-test-key-0123456789")),
        "the key reaches the endpoint"
    );
    assert_cleaned_up(&run, state.path());
}
