//! `rlm mcp-serve` driven by the official MCP Python SDK over stdio, against
//! the real orchestrator and sandbox agent with the offline scripted model.
//! The client side is `cli/tests/mcp/mcp_client_check.py`, run with the
//! interpreter of `clients/.venv` (created by `clients/ci-deps.sh`, which
//! installs the pinned `mcp` package from `cli/tests/mcp/requirements.txt`).
//! Build the service binaries first: `cargo build --workspace --bins`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rlm_e2e::{Stack, free_port};
use tokio::process::Command;

/// Turns of a root model that reads its context, then answers from it.
const TURNS: &str = r#"(scripted model, mcp test) Looking for the needle.

```repl
import re
word = re.search(r"needle=(\w+)", context).group(1)
print("found", word)
```
---
```repl
FINAL(f"the needle is {word}")
```
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The venv interpreter, checked to have the MCP SDK; fails saying how to get it.
fn python_with_mcp() -> PathBuf {
    let python = repo().join("clients/.venv/bin/python");
    let fix = "run `clients/ci-deps.sh` (it creates clients/.venv and installs the pinned MCP SDK from cli/tests/mcp/requirements.txt)";
    assert!(python.is_file(), "{} is missing: {fix}", python.display());
    let probe = std::process::Command::new(&python)
        .args(["-c", "import mcp.client.stdio"])
        .output()
        .expect("running the venv python");
    assert!(
        probe.status.success(),
        "the Python package `mcp` is not importable in {}: {fix}\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

fn isolation_env() -> Vec<(&'static str, &'static str)> {
    if nix::unistd::geteuid().is_root() {
        Vec::new()
    } else {
        vec![("RLM_AGENT_ISOLATION", "none")]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_official_python_mcp_client_uses_every_tool() {
    let python = python_with_mcp();
    let dir = tempfile::tempdir().expect("tempdir");
    let turns = dir.path().join("turns.txt");
    std::fs::write(&turns, TURNS).expect("write turns");
    let context = dir.path().join("context.txt");
    // Over 1 MiB, so rlm_complete uploads it with UploadContext.
    let filler = "x".repeat(700 * 1024);
    std::fs::write(&context, format!("{filler}\nneedle=zebra42\n{filler}")).expect("context");
    let stack = Stack::start(&isolation_env()).await;
    // The same server over streamable HTTP, on a loopback port.
    let http = format!("127.0.0.1:{}", free_port());
    let mut http_server = Command::new(env!("CARGO_BIN_EXE_rlm"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--addr", &stack.grpc_address, "mcp-serve", "--http", &http])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting rlm mcp-serve --http");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&http).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "rlm mcp-serve --http never listened on {http}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut command = Command::new(&python);
    command
        .arg(repo().join("cli/tests/mcp/mcp_client_check.py"))
        .args(["--rlm", env!("CARGO_BIN_EXE_rlm")])
        .args(["--addr", &stack.grpc_address])
        .args(["--model", &format!("scripted:{}", turns.display())])
        .args(["--context-file", &context.display().to_string()])
        .args(["--expect-answer", "the needle is zebra42"])
        .args(["--http-url", &format!("http://{http}/mcp")])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the MCP client check did not finish within 300 s")
        .expect("running the MCP client check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the MCP client check failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- orchestrator log\n{}",
        output.status,
        stack.orchestrator.log_text()
    );
    assert!(
        stdout.contains(", 0 failed")
            && stdout.contains("ok: the variable from the first call is still there"),
        "{stdout}"
    );
    assert!(
        stderr.contains("rlm mcp-serve: serving MCP on stdio"),
        "the server logs to stderr: {stderr}"
    );
    assert!(stdout.contains("ok: over HTTP: state is kept"), "{stdout}");
    http_server.start_kill().expect("stopping the HTTP server");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_is_refused_on_a_non_loopback_address() {
    let output = Command::new(env!("CARGO_BIN_EXE_rlm"))
        .env_clear()
        .args(["mcp-serve", "--http", "0.0.0.0:1"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running rlm");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only loopback addresses"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout: {output:?}");
}
