//! Configuration precedence (flag > environment > file > default) and clear
//! failures on bad values, observed on the real binaries.

use std::collections::HashMap;
use std::time::Duration;

use rlm_e2e::{Service, binary, free_port, wait_serving};

fn env(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Starts the agent with `env` and `args`, and returns the address it serves on
/// among `candidates` (the one that answers health).
async fn serving_address(
    dir: &std::path::Path,
    env: HashMap<String, String>,
    args: &[&str],
    candidates: &[String],
) -> String {
    let mut agent = Service::start("rlm-sandbox-agent", dir, &env, args);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        for address in candidates {
            if std::path::Path::new(address.trim_start_matches("unix://")).exists() {
                wait_serving(address, &agent).await;
                assert_eq!(agent.stop().code(), Some(0));
                return address.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "agent never listened; log:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = |name: &str| format!("unix://{}", dir.path().join(name).display());
    let (from_file, from_env, from_flag) =
        (socket("file.sock"), socket("env.sock"), socket("flag.sock"));
    let candidates = [from_file.clone(), from_env.clone(), from_flag.clone()];
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{from_file}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let config = config.display().to_string();

    let file_only = env(&[("RLM_AGENT_CONFIG", config.clone())]);
    assert_eq!(
        serving_address(dir.path(), file_only.clone(), &[], &candidates).await,
        from_file
    );

    let mut with_env = file_only.clone();
    with_env.insert("RLM_AGENT_LISTEN".into(), from_env.clone());
    assert_eq!(
        serving_address(dir.path(), with_env.clone(), &[], &candidates).await,
        from_env
    );

    let flag_args = ["--listen", from_flag.as_str()];
    assert_eq!(
        serving_address(dir.path(), with_env, &flag_args, &candidates).await,
        from_flag
    );
}

fn run_to_exit(name: &str, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_values_exit_non_zero_naming_the_variable_and_the_forms() {
    /// (binary, environment, arguments, fragments the error must contain)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: [Case; 7] = [
        (
            "rlm-orchestrator",
            &[("RLM_TRAJECTORY_STORE", "gs://bucket/x")],
            &[],
            &["RLM_TRAJECTORY_STORE", "s3://bucket/prefix"],
        ),
        (
            "rlm-orchestrator",
            &[("RLM_TRAJECTORY_STORE", "file://relative/dir")],
            &[],
            &["RLM_TRAJECTORY_STORE", "absolute path"],
        ),
        (
            "rlm-orchestrator",
            &[("RLM_LISTEN", "nope")],
            &[],
            &["RLM_LISTEN", "environment variable", "HOST:PORT"],
        ),
        (
            "rlm-orchestrator",
            &[],
            &["--http-listen", "1.2.3.4"],
            &["RLM_HTTP_LISTEN", "flag --http-listen", "HOST:PORT"],
        ),
        (
            "rlm-orchestrator",
            &[("RLM_SANDBOX_ENDPOINT", "unix://relative")],
            &[],
            &["RLM_SANDBOX_ENDPOINT", "unix:///"],
        ),
        (
            "rlm-sandbox-agent",
            &[("RLM_AGENT_SOCKET_MODE", "rw")],
            &[],
            &["RLM_AGENT_SOCKET_MODE", "octal"],
        ),
        (
            "rlm-sandbox-agent",
            &[("RLM_LOG_FORMAT", "xml")],
            &[],
            &["RLM_LOG_FORMAT", "text, json"],
        ),
    ];
    for (name, env, args, expected) in cases {
        let (code, stderr) = run_to_exit(name, env, args);
        assert_eq!(code, Some(2), "{name} {env:?} {args:?}: {stderr}");
        for fragment in expected {
            assert!(
                stderr.contains(fragment),
                "{name} {env:?} {args:?}: {fragment:?} not in {stderr}"
            );
        }
    }
}

#[test]
fn config_file_errors_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "lissen = \"127.0.0.1:1\"\n").expect("write");
    let typo = typo.display().to_string();
    let (code, stderr) = run_to_exit("rlm-orchestrator", &[("RLM_CONFIG", typo.as_str())], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown key `lissen`") && stderr.contains("http_listen"),
        "{stderr}"
    );

    let port = free_port().to_string();
    let (code, stderr) = run_to_exit(
        "rlm-orchestrator",
        &[("RLM_CONFIG", "/nonexistent/rlm.toml")],
        &["--listen", &port],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/rlm.toml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let stack = rlm_e2e::Stack::start(&[("RLM_LOG_FORMAT", "json")]).await;
    for service in [&stack.agent, &stack.orchestrator] {
        let log = service.log_text();
        let lines: Vec<&str> = log.lines().collect();
        assert!(!lines.is_empty(), "{} logged nothing", service.name);
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: {err} in {line:?}", service.name));
            assert!(
                event["timestamp"].is_string() && event["level"].is_string(),
                "{line}"
            );
        }
        assert!(
            log.contains("\"message\":\"") && log.contains("serving"),
            "{log}"
        );
    }
}

/// `RLM_TRAJECTORY_STORE` wins over `RLM_LOG_DIR`: the store's directory is
/// the one created and probed by `/health`; the log directory is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn trajectory_store_wins_over_log_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_dir = dir.path().join("log-dir");
    let store_dir = dir.path().join("store-dir");
    let http = format!("127.0.0.1:{}", free_port());
    let mut orchestrator = Service::start(
        "rlm-orchestrator",
        dir.path(),
        &env(&[
            ("RLM_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("RLM_HTTP_LISTEN", http.clone()),
            (
                "RLM_SANDBOX_ENDPOINT",
                format!("unix://{}", dir.path().join("no-agent.sock").display()),
            ),
            ("RLM_LOG_DIR", log_dir.display().to_string()),
            (
                "RLM_TRAJECTORY_STORE",
                format!("file://{}", store_dir.display()),
            ),
        ]),
        &[],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let report = loop {
        if let Ok(response) = reqwest::get(format!("http://{http}/health")).await {
            break response.text().await.expect("body");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no /health; log:\n{}",
            orchestrator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(report["components"]["storage"], "healthy", "{report:#}");
    assert!(store_dir.is_dir());
    assert!(!log_dir.exists());
    orchestrator.stop();
}
