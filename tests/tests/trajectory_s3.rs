//! Trajectories in an S3-compatible bucket shared by two orchestrators
//! (`RLM_TRAJECTORY_STORE=s3://...`): a real S3 API server (moto_server, from
//! PyPI's `moto[server]`) on a free port, two full stacks (agent and
//! orchestrator each) writing to one bucket. A completion run on A is listed
//! and read on B, also while it still runs, through gRPC and the viewer's API;
//! one whose replica is killed mid-run turns INCOMPLETE on B once its
//! heartbeat is stale.
//!
//! Needs root (the agents isolate sessions) and moto_server: `tests/deps.sh`
//! (run by `make test`) installs `tests/moto-requirements.txt` into
//! `tests/.moto-venv`, or `RLM_MOTO_SERVER` names one; without it the tests
//! fail saying so.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rlm_e2e::sandbox::require_root;
use rlm_e2e::{Stack, channel, free_port};
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{
    CompleteRequest, CompletionResult, CompletionSpec, GetTrajectoryRequest,
    ListTrajectoriesRequest, Trajectory, TrajectoryStatus, TrajectorySummary,
    completion_event::Event,
};
use serde_json::Value;

const BUCKET: &str = "rlm-trajectories";

/// One code block, then the answer.
const QUICK_TURNS: &str = r#"```repl
print("written on replica A")
```
---
FINAL(shared answer)
"#;

/// A first block that sleeps, so the completion is seen running.
const SLOW_TURNS: &str = r#"```repl
import time
print("sleeping")
time.sleep(8)
print("awake")
```
---
FINAL(slept well)
"#;

/// moto_server: `RLM_MOTO_SERVER`, else `tests/.moto-venv/bin/moto_server`.
fn moto_server_path() -> PathBuf {
    let path = std::env::var_os("RLM_MOTO_SERVER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".moto-venv/bin/moto_server")
        });
    assert!(
        path.is_file(),
        "moto_server not found at {}: install the S3 API server with \
         `python3 -m venv tests/.moto-venv && tests/.moto-venv/bin/pip install -r tests/moto-requirements.txt` \
         (.ci/run does) or set RLM_MOTO_SERVER=/path/to/moto_server",
        path.display()
    );
    path
}

/// A moto S3 server on a free port; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("moto.log");
        let port = free_port();
        let child = Command::new(moto_server_path())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(dir.path().join("moto.err")).expect("log"))
            .spawn()
            .expect("starting moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Creating the bucket is the readiness probe.
        loop {
            let created = reqwest::Client::new()
                .put(format!("{}/{BUCKET}", moto.endpoint))
                .send()
                .await;
            match created {
                Ok(r) if r.status().is_success() => return moto,
                other => assert!(
                    Instant::now() < deadline,
                    "moto_server did not create the bucket: {other:?}; log:\n{}",
                    std::fs::read_to_string(moto._dir.path().join("moto.err")).unwrap_or_default()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The keys under `prefix` (one ListObjectsV2 page is plenty here).
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let body = reqwest::get(format!(
            "{}/{BUCKET}?list-type=2&prefix={prefix}",
            self.endpoint
        ))
        .await
        .expect("ListObjectsV2")
        .text()
        .await
        .expect("body");
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// What both orchestrators get: the store and the standard AWS settings.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RLM_TRAJECTORY_STORE", format!("s3://{BUCKET}/e2e")),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- moto_server log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Two stacks on one bucket, the model scripted by `turns`.
async fn two_replicas(moto: &Moto, turns: &Path) -> (Stack, Stack) {
    let model = format!("scripted:{}", turns.display());
    let mut env = moto.env();
    env.push(("RLM_MODEL", model));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Stack::start(&env).await;
    let b = Stack::start(&env).await;
    (a, b)
}

fn write_turns(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("turns.txt");
    std::fs::write(&path, text).expect("writing scripted turns");
    path
}

async fn client(stack: &Stack) -> RlmServiceClient<tonic::transport::Channel> {
    RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"))
}

fn spec(prompt: &str, run: &str) -> CompletionSpec {
    CompletionSpec {
        prompt: prompt.to_owned(),
        metadata: HashMap::from([("run".to_owned(), run.to_owned())]),
        ..Default::default()
    }
}

async fn complete(stack: &Stack, spec: CompletionSpec) -> CompletionResult {
    tokio::time::timeout(
        Duration::from_secs(120),
        client(stack)
            .await
            .complete(CompleteRequest { spec: Some(spec) }),
    )
    .await
    .expect("Complete within 120 s")
    .expect("Complete RPC")
    .into_inner()
    .result
    .expect("a result")
}

async fn get_trajectory(stack: &Stack, id: &str) -> Result<Trajectory, tonic::Status> {
    client(stack)
        .await
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().trajectory.expect("a trajectory"))
}

async fn list(stack: &Stack, run: &str, status: TrajectoryStatus) -> Vec<TrajectorySummary> {
    client(stack)
        .await
        .list_trajectories(ListTrajectoriesRequest {
            page_size: 10,
            status: status as i32,
            metadata: HashMap::from([("run".to_owned(), run.to_owned())]),
            ..Default::default()
        })
        .await
        .expect("ListTrajectories")
        .into_inner()
        .trajectories
}

async fn http_json(stack: &Stack, path: &str) -> Value {
    let (status, body) = stack.http_get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_run_on_one_replica_is_listed_and_read_on_the_other() {
    require_root();
    let moto = Moto::start().await;
    let turns = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(&moto, &write_turns(turns.path(), QUICK_TURNS)).await;
    for stack in [&a, &b] {
        let health = http_json(stack, "/health").await;
        assert_eq!(health["components"]["storage"], "healthy", "{health:#}");
    }

    let result = complete(&a, spec("say it", "quick")).await;
    assert_eq!(result.answer, "shared answer", "{result:#?}");
    let id = result.trajectory_id.clone();

    // B lists it (metadata and status filters as on a directory) at once:
    // A answered only once the result was stored.
    let listed = list(&b, "quick", TrajectoryStatus::Finished).await;
    assert_eq!(
        listed
            .iter()
            .map(|s| s.trajectory_id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()],
        "{listed:#?}"
    );
    assert_eq!(listed[0].prompt_preview, "say it");
    assert!(
        list(&b, "quick", TrajectoryStatus::Running)
            .await
            .is_empty()
    );
    assert!(
        list(&b, "other", TrajectoryStatus::Unspecified)
            .await
            .is_empty()
    );

    // B reads the same events as A, the code block and the result included.
    let on_b = get_trajectory(&b, &id).await.expect("GetTrajectory on B");
    let on_a = get_trajectory(&a, &id).await.expect("GetTrajectory on A");
    assert_eq!(on_b.events, on_a.events);
    assert!(on_b.events.iter().any(|e| matches!(
        &e.event,
        Some(Event::CodeExecuted(c)) if c.output.contains("written on replica A")
    )));
    assert_eq!(
        on_b.result.as_ref().map(|r| r.answer.as_str()),
        Some("shared answer")
    );
    assert_eq!(
        on_b.summary.map(|s| s.status),
        Some(TrajectoryStatus::Finished as i32)
    );
    let status = get_trajectory(&b, "no-such-trajectory")
        .await
        .expect_err("an unknown id");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // B's viewer API serves it too.
    let one = http_json(&b, &format!("/api/trajectories/{id}")).await;
    assert_eq!(one["status"], "finished", "{one:#}");
    assert_eq!(
        one["lines"].as_array().map(Vec::len),
        Some(on_b.events.len() + 1),
        "{one:#}"
    );

    // In the bucket the segments become one object.
    let dir = format!("e2e/trajectories/{id}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = moto.keys(&dir).await;
        if keys
            == [
                format!("{dir}summary.json"),
                format!("{dir}trajectory.jsonl"),
            ]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "segments never consolidated: {keys:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get_trajectory(&b, &id)
            .await
            .expect("after consolidation")
            .events,
        on_a.events
    );
    let index = moto.keys("e2e/index/").await;
    assert!(
        index.iter().any(|k| k.ends_with(&format!(".{id}"))),
        "{index:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_completion_is_read_from_the_other_replica() {
    require_root();
    let moto = Moto::start().await;
    let turns = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(&moto, &write_turns(turns.path(), SLOW_TURNS)).await;
    let running = {
        let grpc = a.grpc_address.clone();
        tokio::spawn(async move {
            RlmServiceClient::new(channel(&grpc).await.expect("connect"))
                .complete(CompleteRequest {
                    spec: Some(spec("take a nap", "slow")),
                })
                .await
                .expect("Complete RPC")
                .into_inner()
                .result
                .expect("a result")
        })
    };

    // While the code block sleeps on A, B lists it RUNNING and reads its
    // first model call.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (id, seen) = loop {
        if let Some(summary) = list(&b, "slow", TrajectoryStatus::Running).await.first() {
            let t = get_trajectory(&b, &summary.trajectory_id)
                .await
                .expect("GetTrajectory on B");
            if t.events
                .iter()
                .any(|e| matches!(e.event, Some(Event::ModelCallFinished(_))))
            {
                assert_eq!(
                    t.summary.as_ref().map(|s| s.status),
                    Some(TrajectoryStatus::Running as i32)
                );
                assert!(t.result.is_none());
                break (summary.trajectory_id.clone(), t.events.len());
            }
        }
        assert!(
            Instant::now() < deadline,
            "B never saw the running trajectory; A's log:\n{}",
            a.orchestrator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let viewed = http_json(&b, &format!("/api/trajectories/{id}")).await;
    assert_eq!(viewed["status"], "running", "{viewed:#}");

    let result = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the slow completion ends")
        .expect("task");
    assert_eq!(result.answer, "slept well", "{result:#?}");
    let on_b = get_trajectory(&b, &id).await.expect("GetTrajectory on B");
    assert!(on_b.events.len() > seen);
    assert_eq!(
        on_b.summary.map(|s| s.status),
        Some(TrajectoryStatus::Finished as i32)
    );
    assert_eq!(
        on_b.events,
        get_trajectory(&a, &id).await.expect("on A").events
    );
}

/// A block that outlives the test, so the replica running it can die mid-run.
const STUCK_TURNS: &str = r#"```repl
import time
time.sleep(300)
```
---
FINAL(never)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_dies_mid_run_leaves_an_incomplete_trajectory() {
    require_root();
    let moto = Moto::start().await;
    let turns = tempfile::tempdir().expect("tempdir");
    let (mut a, b) = two_replicas(&moto, &write_turns(turns.path(), STUCK_TURNS)).await;
    let grpc = a.grpc_address.clone();
    let call = tokio::spawn(async move {
        RlmServiceClient::new(channel(&grpc).await.expect("connect"))
            .complete(CompleteRequest {
                spec: Some(spec("never ends", "dies")),
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        if let Some(s) = list(&b, "dies", TrajectoryStatus::Running).await.first() {
            break s.trajectory_id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "B never listed the running trajectory; A's log:\n{}",
            a.orchestrator.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // SIGKILL: no result line, no last summary; the heartbeat just stops.
    a.orchestrator.kill();
    assert!(call.await.expect("task").is_err());
    // B stops calling it RUNNING once the heartbeat is stale (30 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let t = get_trajectory(&b, &id).await.expect("GetTrajectory on B");
        match t.summary.map(|s| s.status) {
            Some(s) if s == TrajectoryStatus::Incomplete as i32 => {
                assert!(t.result.is_none());
                break;
            }
            other => assert_eq!(
                other,
                Some(TrajectoryStatus::Running as i32),
                "before the heartbeat goes stale"
            ),
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica's trajectory stayed RUNNING"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let incomplete = list(&b, "dies", TrajectoryStatus::Incomplete).await;
    assert_eq!(
        incomplete
            .iter()
            .map(|s| s.trajectory_id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()]
    );
}
