//! Queued completions end to end (SubmitCompletion, GetCompletion,
//! WatchCompletion, CancelCompletion of queued ids): the real orchestrator
//! and sandbox agent with the scripted model, first with the embedded
//! in-process queue, then as a fleet of two orchestrators (each with its own
//! agent) sharing a real `redis-server`, one of which is killed while it
//! runs a job.
//!
//! Needs root (the agents isolate sessions), the built binaries
//! (`cargo build --workspace --bins`), and for the fleet test the
//! `redis-server` program (Debian package `redis-server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rlm_e2e::sandbox::require_root;
use rlm_e2e::{Stack, channel, free_port};
use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::*;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// Upper bound of any wait in these tests (a hung queue fails).
const BOUND: Duration = Duration::from_secs(120);

const QUICK_TURNS: &str = "```repl\nprint('hello from the queue')\n```\n---\nFINAL(done)\n";

/// A first turn whose cell sleeps `secs`, then FINAL.
fn sleepy_turns(secs: u32) -> String {
    format!("```repl\nimport time\ntime.sleep({secs})\nprint('slept')\n```\n---\nFINAL(slept)\n")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a turns file");
    format!("scripted:{}", path.display())
}

fn spec(model: &str, prompt: &str) -> CompletionSpec {
    CompletionSpec {
        prompt: prompt.to_owned(),
        root_model: model.to_owned(),
        ..Default::default()
    }
}

async fn client(address: &str) -> RlmServiceClient<Channel> {
    RlmServiceClient::new(channel(address).await.expect("connect to the orchestrator"))
}

async fn submit(client: &mut RlmServiceClient<Channel>, spec: CompletionSpec) -> String {
    client
        .submit_completion(SubmitCompletionRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .expect("SubmitCompletion")
        .into_inner()
        .completion_id
}

async fn get(client: &mut RlmServiceClient<Channel>, id: &str) -> GetCompletionResponse {
    client
        .get_completion(GetCompletionRequest {
            completion_id: id.to_owned(),
        })
        .await
        .expect("GetCompletion")
        .into_inner()
}

/// Polls GetCompletion until `done` holds.
async fn wait_for(
    client: &mut RlmServiceClient<Channel>,
    id: &str,
    what: &str,
    done: impl Fn(&GetCompletionResponse) -> bool,
) -> GetCompletionResponse {
    let deadline = Instant::now() + BOUND;
    loop {
        let got = get(client, id).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{id} never got {what}: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every event of WatchCompletion from `from` to the end of the stream.
async fn watch(
    client: &mut RlmServiceClient<Channel>,
    id: &str,
    from: u64,
) -> Vec<CompletionEvent> {
    let mut stream = client
        .watch_completion(WatchCompletionRequest {
            completion_id: id.to_owned(),
            from_event_index: from,
        })
        .await
        .expect("WatchCompletion")
        .into_inner();
    let mut events = Vec::new();
    loop {
        let next = tokio::time::timeout(BOUND, stream.message())
            .await
            .expect("WatchCompletion stalled");
        match next.expect("WatchCompletion stream error") {
            Some(message) => events.push(message.event.expect("event set")),
            None => return events,
        }
    }
}

fn result_of(events: &[CompletionEvent]) -> &CompletionResult {
    match events.last().and_then(|e| e.event.as_ref()) {
        Some(Event::Result(result)) => result,
        other => panic!("the stream did not end with the result: {other:?}"),
    }
}

fn assert_gapless(events: &[CompletionEvent], first: u64) {
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    let expected: Vec<u64> = (first..first + events.len() as u64).collect();
    assert_eq!(sequences, expected, "sequences must follow each other");
}

async fn start_embedded(extra: &[(&str, &str)]) -> Stack {
    require_root();
    Stack::start(extra).await
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_submit_watch_resume_and_get() {
    let stack = start_embedded(&[]).await;
    let model = write(stack.dir.path(), "quick.txt", QUICK_TURNS);
    let mut api = client(&stack.grpc_address).await;

    let id = submit(&mut api, spec(&model, "say hello")).await;
    let all = watch(&mut api, &id, 0).await;
    assert!(all.len() >= 4, "expected a whole run, got {all:?}");
    assert_gapless(&all, 1);
    assert!(
        all.iter().all(|e| e.completion_id == id),
        "the job id is the completion id"
    );
    let result = result_of(&all);
    assert_eq!(result.termination_reason(), TerminationReason::Final);
    assert_eq!(result.answer, "done");
    assert_eq!(result.completion_id, id);
    assert!(
        all.iter().any(|e| matches!(&e.event, Some(Event::CodeExecuted(c)) if c.output.contains("hello from the queue"))),
        "the cell ran: {all:?}"
    );

    // Resuming from index k returns exactly the tail.
    for k in [1, all.len() as u64 / 2, all.len() as u64 - 1] {
        let tail = watch(&mut api, &id, k).await;
        assert_eq!(tail, all[k as usize..].to_vec(), "resumed from {k}");
    }
    assert!(
        watch(&mut api, &id, all.len() as u64).await.is_empty(),
        "nothing after the end"
    );

    let got = get(&mut api, &id).await;
    assert_eq!(got.state(), CompletionState::Finished);
    assert_eq!(got.result.as_ref(), Some(result));
    assert_eq!(got.event_count, all.len() as u64);
    assert_eq!(got.attempts, 1);
    assert_eq!(got.queue_position, 0);

    // The trajectory is recorded under the job id, with the same events.
    let trajectory = api
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: id.clone(),
        })
        .await
        .expect("GetTrajectory of a queued completion")
        .into_inner()
        .trajectory
        .expect("trajectory");
    assert_eq!(trajectory.events, all);

    // While running: RUNNING, the root model's reply so far and its usage.
    let sleepy = write(stack.dir.path(), "sleepy.txt", &sleepy_turns(60));
    let id = submit(&mut api, spec(&sleepy, "sleep a while")).await;
    let running = wait_for(&mut api, &id, "a model reply", |g| {
        g.state() == CompletionState::Running && !g.partial_answer.is_empty()
    })
    .await;
    assert!(
        running.partial_answer.contains("time.sleep(60)"),
        "{running:?}"
    );
    assert!(
        running
            .usage
            .is_some_and(|u| u.calls >= 1 && u.output_tokens > 0),
        "{running:?}"
    );
    assert!(running.result.is_none());
    // A watch started mid-run gets the events so far, then the rest.
    let seen = running.event_count;
    let cancel = api
        .cancel_completion(CancelCompletionRequest {
            completion_id: id.clone(),
            reason: "test over".into(),
        })
        .await
        .expect("CancelCompletion")
        .into_inner();
    assert!(cancel.was_running);
    let rest = watch(&mut api, &id, seen).await;
    assert_gapless(&rest, seen + 1);
    let result = result_of(&rest);
    assert_eq!(result.termination_reason(), TerminationReason::Cancelled);
    assert!(result.detail.contains("test over"), "{result:?}");
    let got = get(&mut api, &id).await;
    assert_eq!(got.state(), CompletionState::Finished);
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_queue_limits_and_cancellation() {
    let stack = start_embedded(&[("RLM_QUEUE_WORKERS", "1"), ("RLM_QUEUE_MAX", "1")]).await;
    let sleepy = write(stack.dir.path(), "sleepy.txt", &sleepy_turns(60));
    let mut api = client(&stack.grpc_address).await;

    let running = submit(&mut api, spec(&sleepy, "first")).await;
    wait_for(&mut api, &running, "RUNNING", |g| {
        g.state() == CompletionState::Running
    })
    .await;
    let queued = submit(&mut api, spec(&sleepy, "second")).await;
    let got = get(&mut api, &queued).await;
    assert_eq!(got.state(), CompletionState::Queued);
    assert_eq!(got.queue_position, 1);
    assert_eq!(got.attempts, 0);

    // Full: RESOURCE_EXHAUSTED with a RetryInfo detail and a text hint.
    let full = api
        .submit_completion(SubmitCompletionRequest {
            spec: Some(spec(&sleepy, "third")),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("the queue is full");
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
    assert!(
        full.message().contains("RLM_QUEUE_MAX") && full.message().contains("retry in"),
        "{full:?}"
    );
    let retry = full
        .get_details_retry_info()
        .expect("a google.rpc.RetryInfo detail");
    assert!(
        retry.retry_delay.is_some_and(|d| d > Duration::ZERO),
        "{retry:?}"
    );

    // Watching a queued job waits; cancelling it ends it at once.
    let mut watcher = api.clone();
    let queued_id = queued.clone();
    let watching = tokio::spawn(async move { watch(&mut watcher, &queued_id, 0).await });
    let cancel = api
        .cancel_completion(CancelCompletionRequest {
            completion_id: queued.clone(),
            reason: "not needed".into(),
        })
        .await
        .expect("CancelCompletion of a queued job")
        .into_inner();
    assert!(cancel.was_running, "a queued job counts as not yet ended");
    let events = watching.await.expect("watcher");
    assert_eq!(events.len(), 1, "only the result: {events:?}");
    let result = result_of(&events);
    assert_eq!(result.termination_reason(), TerminationReason::Cancelled);
    assert!(
        result.detail.contains("before it started") && result.detail.contains("not needed"),
        "{result:?}"
    );
    let got = get(&mut api, &queued).await;
    assert_eq!(got.state(), CompletionState::Cancelled);
    assert_eq!(got.attempts, 0, "it never ran");
    let again = api
        .cancel_completion(CancelCompletionRequest {
            completion_id: queued.clone(),
            reason: String::new(),
        })
        .await
        .expect("cancelling twice is no error")
        .into_inner();
    assert!(!again.was_running);

    // Room again: a submission is accepted; then cancel the running one.
    let next = submit(&mut api, spec(&sleepy, "fourth")).await;
    api.cancel_completion(CancelCompletionRequest {
        completion_id: running.clone(),
        reason: "stop".into(),
    })
    .await
    .expect("CancelCompletion of a running job");
    let events = watch(&mut api, &running, 0).await;
    assert_eq!(
        result_of(&events).termination_reason(),
        TerminationReason::Cancelled
    );
    // The next one starts once the worker is free, and can be cancelled too.
    wait_for(&mut api, &next, "RUNNING", |g| {
        g.state() == CompletionState::Running
    })
    .await;
    api.cancel_completion(CancelCompletionRequest {
        completion_id: next.clone(),
        reason: String::new(),
    })
    .await
    .expect("CancelCompletion");
    let got = wait_for(&mut api, &next, "an end", |g| g.result.is_some()).await;
    assert_eq!(got.state(), CompletionState::Finished);

    let metrics = stack.http_get("/metrics").await.1;
    for series in [
        "rlm_queue_depth 0",
        "rlm_queue_jobs_total{outcome=\"rejected\"} 1",
        "rlm_queue_jobs_total{outcome=\"cancelled\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_rejects_bad_requests() {
    let stack = start_embedded(&[]).await;
    let model = write(stack.dir.path(), "quick.txt", QUICK_TURNS);
    let mut api = client(&stack.grpc_address).await;
    let bad = |spec: Option<CompletionSpec>| SubmitCompletionRequest {
        spec,
        idempotency_key: String::new(),
    };
    let cases = [
        (bad(None), "spec"),
        (bad(Some(spec(&model, "  "))), "spec.prompt"),
        (
            bad(Some(CompletionSpec {
                limits: Some(CompletionLimits {
                    max_depth: Some(99),
                    ..Default::default()
                }),
                ..spec(&model, "deep")
            })),
            "spec.limits.max_depth",
        ),
        (bad(Some(spec("nonsense/", "x"))), "spec.root_model"),
        (
            SubmitCompletionRequest {
                spec: Some(spec(&model, "x")),
                idempotency_key: "k".repeat(129),
            },
            "idempotency_key",
        ),
    ];
    for (request, field) in cases {
        let status = api
            .submit_completion(request)
            .await
            .expect_err("a bad request is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {status:?}"
        );
    }

    // Idempotency: the same key returns the same job.
    let keyed = || SubmitCompletionRequest {
        spec: Some(spec(&model, "once")),
        idempotency_key: "order-42".into(),
    };
    let first = api
        .submit_completion(keyed())
        .await
        .expect("submit")
        .into_inner();
    let second = api
        .submit_completion(keyed())
        .await
        .expect("submit")
        .into_inner();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(first.completion_id, second.completion_id);

    for (id, code) in [
        (
            "5f0c8e55-0000-4000-8000-000000000000",
            tonic::Code::NotFound,
        ),
        ("not an id!", tonic::Code::InvalidArgument),
    ] {
        let status = api
            .get_completion(GetCompletionRequest {
                completion_id: id.into(),
            })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with("completion_id:"), "{status:?}");
        let status = api
            .watch_completion(WatchCompletionRequest {
                completion_id: id.into(),
                from_event_index: 0,
            })
            .await
            .expect_err("unknown");
        assert_eq!(status.code(), code, "{status:?}");
    }
}

// ---------------------------------------------------------------------------
// Fleet: two orchestrators on one Redis
// ---------------------------------------------------------------------------

/// A `redis-server` of the test's own, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start(dir: &Path) -> Self {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "the fleet queue test needs redis-server: install the Debian package (apt-get install -y redis-server), as tests/deps.sh does (make test runs it)"
        );
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid in a worker name (`<host>-<pid>-<random>`).
fn worker_pid(worker: &str) -> i32 {
    let mut parts = worker.rsplitn(3, '-');
    parts.next();
    parts
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("worker name {worker:?} holds no pid"))
}

fn trajectory_file(stack: &Stack, id: &str) -> PathBuf {
    stack
        .dir
        .path()
        .join("trajectories")
        .join(format!("{id}.jsonl"))
}

/// Timestamps (`ts`) of every line of a trajectory file.
fn line_times(path: &Path) -> Vec<SystemTime> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|line| {
            let ts = line["ts"].as_str().expect("ts").to_owned();
            let parsed: prost_types::Timestamp = ts.parse().expect("RFC 3339 ts");
            SystemTime::try_from(parsed).expect("time")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_runs_jobs_on_any_replica_and_survives_a_killed_worker() {
    require_root();
    let scratch = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(scratch.path());
    let url = redis.url();
    let env = [
        ("RLM_QUEUE_URL", url.as_str()),
        ("RLM_QUEUE_LEASE", "2s"),
        ("RLM_QUEUE_WORKERS", "1"),
        ("RLM_QUEUE_MAX", "2"),
    ];
    let a = Stack::start(&env).await;
    let b = Stack::start(&env).await;
    let quick = write(scratch.path(), "quick.txt", QUICK_TURNS);
    let sleepy = write(scratch.path(), "sleepy.txt", &sleepy_turns(8));
    let mut api_a = client(&a.grpc_address).await;
    let mut api_b = client(&b.grpc_address).await;

    // Submitted to A, watched and read from B.
    let id = submit(&mut api_a, spec(&quick, "say hello")).await;
    let events = watch(&mut api_b, &id, 0).await;
    assert_gapless(&events, 1);
    assert_eq!(result_of(&events).answer, "done");
    let tail = watch(&mut api_a, &id, 2).await;
    assert_eq!(tail, events[2..].to_vec(), "resumed on the other replica");
    for api in [&mut api_a, &mut api_b] {
        let got = get(api, &id).await;
        assert_eq!(got.state(), CompletionState::Finished);
        assert_eq!(got.attempts, 1);
        assert_eq!(got.event_count, events.len() as u64);
    }

    // A context id held by no agent: the job fails, saying why.
    let id = submit(
        &mut api_a,
        CompletionSpec {
            contexts: vec![ContextInput {
                source: Some(context_input::Source::ContextId(format!(
                    "sha256:{}",
                    "0".repeat(64)
                ))),
                format: ContextFormat::Text as i32,
            }],
            ..spec(&quick, "read the context")
        },
    )
    .await;
    let events = watch(&mut api_b, &id, 0).await;
    let result = result_of(&events);
    assert!(
        result.detail.contains("spec.contexts[0].context_id") && result.detail.contains("inline"),
        "{result:?}"
    );
    assert_eq!(get(&mut api_a, &id).await.state(), CompletionState::Failed);

    // Two long jobs take both workers; two more wait; the fleet's queue is
    // then full. Cancelling works from either replica, queued or running.
    let forever = write(scratch.path(), "forever.txt", &sleepy_turns(600));
    let long: Vec<String> = vec![
        submit(&mut api_a, spec(&forever, "long 1")).await,
        submit(&mut api_a, spec(&forever, "long 2")).await,
    ];
    for id in &long {
        wait_for(&mut api_b, id, "RUNNING", |g| {
            g.state() == CompletionState::Running
        })
        .await;
    }
    let workers: std::collections::BTreeSet<String> = {
        let mut names = std::collections::BTreeSet::new();
        for id in &long {
            names.insert(get(&mut api_a, id).await.worker);
        }
        names
    };
    assert_eq!(workers.len(), 2, "one job per replica (1 worker each)");
    let waiting = [
        submit(&mut api_b, spec(&quick, "queued 1")).await,
        submit(&mut api_b, spec(&quick, "queued 2")).await,
    ];
    let got = get(&mut api_a, &waiting[1]).await;
    assert_eq!(
        (got.state(), got.queue_position),
        (CompletionState::Queued, 2)
    );
    let full = api_a
        .submit_completion(SubmitCompletionRequest {
            spec: Some(spec(&quick, "one too many")),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("the fleet's queue is full");
    assert_eq!(full.code(), tonic::Code::ResourceExhausted, "{full:?}");
    assert!(
        full.get_details_retry_info().is_some(),
        "RetryInfo detail: {full:?}"
    );
    for id in waiting.iter().chain(&long) {
        let cancel = api_b
            .cancel_completion(CancelCompletionRequest {
                completion_id: id.clone(),
                reason: "fleet test".into(),
            })
            .await
            .expect("CancelCompletion from any replica")
            .into_inner();
        assert!(cancel.was_running);
    }
    for id in &waiting {
        let events = watch(&mut api_a, id, 0).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            result_of(&events).termination_reason(),
            TerminationReason::Cancelled
        );
        assert_eq!(
            get(&mut api_b, id).await.state(),
            CompletionState::Cancelled
        );
    }
    for id in &long {
        let events = watch(&mut api_a, id, 0).await;
        assert_gapless(&events, 1);
        let result = result_of(&events);
        assert_eq!(result.termination_reason(), TerminationReason::Cancelled);
        assert!(result.detail.contains("fleet test"), "{result:?}");
        assert_eq!(get(&mut api_b, id).await.state(), CompletionState::Finished);
    }

    // A long job: kill -9 the replica running it mid-run.
    let id = submit(&mut api_b, spec(&sleepy, "sleep, then answer")).await;
    let running = wait_for(&mut api_a, &id, "a running first attempt", |g| {
        g.state() == CompletionState::Running && g.event_count >= 2
    })
    .await;
    let runner_pid = worker_pid(&running.worker);
    // `a` becomes the victim, `b` the survivor.
    let (mut victim, mut survivor, mut survivor_api) = if runner_pid == a.orchestrator.pid() {
        (a, b, api_b.clone())
    } else {
        assert_eq!(
            runner_pid,
            b.orchestrator.pid(),
            "the worker is one of ours"
        );
        (b, a, api_a.clone())
    };
    assert!(
        trajectory_file(&victim, &id).is_file(),
        "the runner records attempt 1"
    );
    victim.orchestrator.kill();
    let killed_at = SystemTime::now();

    let events = watch(&mut survivor_api, &id, 0).await;
    assert_gapless(&events, 1);
    let result = result_of(&events);
    assert_eq!(
        result.termination_reason(),
        TerminationReason::Final,
        "{result:?}"
    );
    assert_eq!(result.answer, "slept");
    assert_eq!(
        result.trajectory_id,
        format!("{id}-a2"),
        "the re-run has its own trajectory"
    );
    let got = get(&mut survivor_api, &id).await;
    assert_eq!(got.state(), CompletionState::Finished);
    assert_eq!(
        got.attempts, 2,
        "run once more after the worker died: {got:?}"
    );
    assert_eq!(worker_pid(&got.worker), survivor.orchestrator.pid());

    // Never on both at once: the survivor never ran attempt 1, and its run
    // began after the victim was dead (so after its last recorded event).
    assert!(
        !trajectory_file(&survivor, &id).exists(),
        "attempt 1 ran on the victim only"
    );
    let first = line_times(&trajectory_file(&victim, &id));
    let second = line_times(&trajectory_file(&survivor, &format!("{id}-a2")));
    let first_end = *first.iter().max().expect("attempt 1 lines");
    let second_start = *second.iter().min().expect("attempt 2 lines");
    assert!(second_start > killed_at, "attempt 2 started after the kill");
    assert!(
        second_start > first_end,
        "attempt 2 started after attempt 1's last event"
    );
    let metrics = survivor.http_get("/metrics").await.1;
    assert!(
        metrics.contains("rlm_queue_jobs_total{outcome=\"retried\"} 1"),
        "{metrics}"
    );

    // Graceful shutdown (SIGTERM) of the replica running a job hands it
    // back: a fresh replica joins, and whichever does not run the job
    // finishes it.
    let mut c = Stack::start(&env).await;
    let mut api_c = client(&c.grpc_address).await;
    let id = submit(&mut api_c, spec(&sleepy, "sleep, then answer")).await;
    let running = wait_for(&mut api_c, &id, "a running first attempt", |g| {
        g.state() == CompletionState::Running && g.event_count >= 2
    })
    .await;
    let (leaving, mut staying_api) = if worker_pid(&running.worker) == c.orchestrator.pid() {
        (&mut c, survivor_api.clone())
    } else {
        (&mut survivor, api_c.clone())
    };
    assert_eq!(leaving.orchestrator.stop().code(), Some(0));
    let log = leaving.orchestrator.log_text();
    assert!(log.contains("handed back"), "{log}");
    let events = watch(&mut staying_api, &id, 0).await;
    assert_gapless(&events, 1);
    assert_eq!(result_of(&events).answer, "slept");
    let got = get(&mut staying_api, &id).await;
    assert_eq!((got.state(), got.attempts), (CompletionState::Finished, 2));
    drop(redis);
}

/// Runs the orchestrator until it exits; its status code and stderr.
fn orchestrator_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new(rlm_e2e::binary("rlm-orchestrator"))
        .env_clear()
        .env("RLM_LOG_DIR", dir.path().join("logs"))
        .env("RLM_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RLM_HTTP_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .output()
        .expect("running rlm-orchestrator");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_queue_settings_stop_the_orchestrator_naming_them() {
    for (env, expected) in [
        (("RLM_QUEUE_URL", "http://localhost"), "redis://"),
        (("RLM_QUEUE_LEASE", "100ms"), "at least 500ms"),
        (("RLM_QUEUE_MAX", "0"), "1 to 10000000"),
        (("RLM_QUEUE_WORKERS", "many"), "whole number"),
    ] {
        let (code, stderr) = orchestrator_exit(&[env]);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        assert!(
            stderr.contains(env.0) && stderr.contains(expected),
            "{env:?}: {stderr}"
        );
    }
    // A Redis nobody listens on: the orchestrator does not start.
    let url = format!("redis://127.0.0.1:{}/0", free_port());
    let (code, stderr) = orchestrator_exit(&[("RLM_QUEUE_URL", url.as_str())]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("RLM_QUEUE_URL") && stderr.contains(&url),
        "{stderr}"
    );
}
