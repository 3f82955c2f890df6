//! Faults the runtime must survive, end to end on the real binaries: the
//! sandbox agent killed in the middle of a cell, a misbehaving model API
//! (timeouts, 429 storms, 5xx, resets, invalid JSON, stalled bodies), the
//! orchestrator stopped with completions in flight, a client that goes away
//! mid-stream, and a full trajectory disk.
//!
//! Every test starts its own stack and needs root (the agent isolates
//! sessions, the disk test mounts a tmpfs); run `cargo build --workspace
//! --bins` first. The model is the in-process fault server, whose every
//! reply (and every way a reply can break) the test controls.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rlm_e2e::fault_llm::{FaultLlm, Reply, Request};
use rlm_e2e::sandbox::{Sandbox, processes_matching, require_root};
use rlm_e2e::{Service, Stack, channel, health_status, wait_serving};
use rlm_proto::rlm::sandbox::v1 as sandbox_pb;
use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::*;
use serde_json::Value;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// Arrivals are stamped by the fake server, the 1 s attempt timeout runs in
/// the orchestrator: the gap between two arrivals can fall short of it by
/// the difference of two request latencies (0.16 ms was seen under load).
const TIMEOUT_SLACK_FLOOR_MS: u64 = 990;

/// The model every test configures as the server default.
const MODEL: &str = "openai/fake-rlm";
/// Upper bound of one completion RPC in these tests (a hung engine fails).
const RPC_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Set-up helpers
// ---------------------------------------------------------------------------

/// Orchestrator settings pointing at a fake model at `base_url`, with
/// `extra` on top (both services get them).
fn model_env(base_url: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("RLM_MODEL", MODEL),
        ("RLM_LLM_BASE_URL", base_url),
        ("OPENAI_API_KEY", "e2e-test-key"),
        ("RLM_LLM_RETRY_BASE", "10ms"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), (*v).to_owned()));
    }
    env
}

async fn start_stack(env: &[(String, String)]) -> Stack {
    require_root();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Stack::start(&env).await
}

async fn client(stack: &Stack) -> RlmServiceClient<Channel> {
    RlmServiceClient::new(
        channel(&stack.grpc_address)
            .await
            .expect("connect to the orchestrator"),
    )
}

async fn agent(stack: &Stack) -> Sandbox {
    Sandbox::connect(&stack.agent_address).await
}

fn spec(prompt: &str, limits: Option<CompletionLimits>) -> CompletionSpec {
    CompletionSpec {
        prompt: prompt.to_owned(),
        limits,
        ..Default::default()
    }
}

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// A completion limited to `timeout`.
fn within(timeout: Duration) -> Option<CompletionLimits> {
    Some(CompletionLimits {
        timeout: duration(timeout),
        ..Default::default()
    })
}

/// Complete, bounded by [`RPC_TIMEOUT`]; the RPC's own outcome.
async fn try_complete(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
) -> Result<CompletionResult, tonic::Status> {
    tokio::time::timeout(
        RPC_TIMEOUT,
        client.complete(CompleteRequest { spec: Some(spec) }),
    )
    .await
    .expect("Complete did not return within the test's bound")
    .map(|r| {
        r.into_inner()
            .result
            .expect("CompleteResponse.result is set")
    })
}

/// Complete; panics on an RPC error.
async fn complete(
    client: &mut RlmServiceClient<Channel>,
    spec: CompletionSpec,
) -> CompletionResult {
    try_complete(client, spec)
        .await
        .expect("Complete RPC failed")
}

fn usage(result: &CompletionResult) -> Usage {
    result.total_usage.unwrap_or_default()
}

/// Asserts a FINAL result with exactly `expected` as the answer.
fn assert_final(result: &CompletionResult, expected: &str) {
    assert_eq!(
        result.termination_reason(),
        TerminationReason::Final,
        "not FINAL: {result:#?}"
    );
    assert_eq!(result.answer, expected, "wrong answer: {result:#?}");
    assert!(result.detail.is_empty(), "detail with FINAL: {result:#?}");
}

/// Asserts a failure ending: the reason, `partial`, a detail.
fn assert_ended_by(result: &CompletionResult, reason: TerminationReason) {
    assert_eq!(
        result.termination_reason(),
        reason,
        "wrong termination reason: {result:#?}"
    );
    assert!(result.partial, "partial must be set: {result:#?}");
    assert!(
        !result.detail.is_empty(),
        "detail must say why: {result:#?}"
    );
}

/// Sessions the agent holds for `completion_id`.
async fn sessions_of(sandbox: &mut Sandbox, completion_id: &str) -> Vec<sandbox_pb::SessionInfo> {
    sandbox
        .client
        .list_sessions(sandbox_pb::ListSessionsRequest {
            completion_id: completion_id.to_owned(),
        })
        .await
        .expect("ListSessions")
        .into_inner()
        .sessions
}

/// `/health` as JSON, with its HTTP status.
async fn health(stack: &Stack) -> (u16, Value) {
    let (status, body) = stack.http_get("/health").await;
    let report = serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("/health is not JSON ({err}): {body}"));
    (status, report)
}

/// The value of the sample `series` (name and labels, exactly) on `/metrics`; 0 when absent.
async fn metric(stack: &Stack, series: &str) -> f64 {
    let (status, text) = stack.http_get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `check` every 20 ms until it returns `None` (done), failing with
/// its last message after `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    let deadline = Instant::now() + within;
    loop {
        let Some(problem) = check().await else {
            return;
        };
        assert!(Instant::now() < deadline, "after {within:?}: {problem}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A marker unique to this test process and `tag`: `sleep <marker>` runs
/// in a session so its processes can be found from outside its PID
/// namespace (an argument `sleep` accepts: seconds with a fraction).
fn marker(tag: u32) -> String {
    let pid = std::process::id();
    format!("{}.{pid}", 900 + tag * 10 + pid % 10)
}

/// A cell that leaves a `sleep <marker>` process and never ends.
fn looping_cell(marker: &str) -> String {
    format!(
        "```repl\nimport subprocess, time\nkeep = subprocess.Popen(['sleep', '{marker}'])\n\
         while True:\n    time.sleep(0.05)\n```"
    )
}

// ---------------------------------------------------------------------------
// Host inspection: processes, cgroups, mounts
// ---------------------------------------------------------------------------

/// A host process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Proc {
    pid: i32,
    ppid: i32,
    /// Start time in clock ticks since boot (tells a reused pid apart).
    start: u64,
    /// Real uid.
    uid: u32,
    /// The command name (at most 15 bytes).
    comm: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything.
    let comm = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Proc {
        pid,
        ppid,
        start,
        uid,
        comm,
    })
}

fn processes() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(read_proc)
        .collect()
}

/// Whether `p` (as seen in `all`) has `ancestor` among its ancestors.
fn descends_from(all: &HashMap<i32, Proc>, p: &Proc, ancestor: i32) -> bool {
    let mut pid = p.ppid;
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        match all.get(&pid) {
            Some(parent) if pid > 1 => pid = parent.ppid,
            _ => return false,
        }
    }
    false
}

/// Whether `p` runs under a live sandbox agent (any test's).
fn under_an_agent(all: &HashMap<i32, Proc>, p: &Proc) -> bool {
    all.values()
        .filter(|a| a.comm == "rlm-sandbox-age")
        .any(|agent| descends_from(all, p, agent.pid))
}

/// Every live descendant of `root`.
fn descendants(root: i32) -> Vec<Proc> {
    let all: HashMap<i32, Proc> = processes().into_iter().map(|p| (p.pid, p)).collect();
    all.values()
        .filter(|p| descends_from(&all, p, root))
        .cloned()
        .collect()
}

/// The cgroup hierarchies an agent may put session cgroups in (v1
/// controllers, and the v2 tree whether unified or hybrid).
const HIERARCHIES: [&str; 7] = [
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpuacct",
    "/sys/fs/cgroup/freezer",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup",
];

/// Names of the session cgroups (`<hierarchy>/<parent>/<name>`) under the
/// agent's parent `parent`, in any hierarchy.
fn session_cgroups(parent: &str) -> BTreeSet<String> {
    HIERARCHIES
        .iter()
        .map(|h| Path::new(h).join(parent))
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Lines of this process's mount table that mention `path`.
fn mounts_under(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------
// The sandbox agent dies mid-Execute
// ---------------------------------------------------------------------------

/// The agent is SIGKILLed while a cell runs: the completion ends at once
/// with SANDBOX_ERROR naming the agent, /health shows the sandbox down, a
/// new completion is refused with UNAVAILABLE naming the agent; once the
/// agent restarts (same socket, cgroup parent and data dir) nothing of the
/// old sessions is left (processes, cgroups, mounts) and the same
/// orchestrator runs completions again.
#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_mid_execute_fails_fast_and_recovers_after_restart() {
    require_root();
    let marker = marker(1);
    let loop_code = looping_cell(&marker);
    let fault = FaultLlm::with_handler(move |request| {
        let first = request.first_user();
        let reply = match (
            request.assistant_turns(),
            first.contains("LOOP_UNTIL_KILLED"),
        ) {
            (0, true) => loop_code.clone(),
            (0, false) => "```repl\nFINAL(str(6 * 7))\n```".to_owned(),
            _ => "FINAL(unexpected second turn)".to_owned(),
        };
        Reply::answer(request, &reply)
    })
    .await;
    let cgroup = format!("rlm-test-faults-kill-{}", std::process::id());
    let env = model_env(
        &fault.base_url(),
        &[
            ("RLM_AGENT_CGROUP", cgroup.as_str()),
            ("RLM_AGENT_POOL_SIZE", "1"),
        ],
    );
    let mut stack = start_stack(&env).await;
    let socket = stack.agent_socket().display().to_string();
    let mounts_before = mounts_under(stack.dir.path());
    let mut rpc = client(&stack).await;

    // A completion whose first cell never ends.
    let running = tokio::spawn({
        let mut rpc = rpc.clone();
        async move {
            try_complete(
                &mut rpc,
                spec("LOOP_UNTIL_KILLED", within(Duration::from_secs(100))),
            )
            .await
        }
    });
    eventually(Duration::from_secs(30), || async {
        (processes_matching(&marker) != 1).then(|| "the looping cell never started".to_owned())
    })
    .await;

    // What the old agent owns: its process tree (sessions, warm pool), the
    // session uids, the session cgroups.
    let old_agent = stack.agent.pid();
    let old_tree = descendants(old_agent);
    let old_uids: HashSet<u32> = old_tree
        .iter()
        .map(|p| p.uid)
        .filter(|&uid| uid != 0)
        .collect();
    assert!(
        !old_uids.is_empty(),
        "sessions run as their own uids: {old_tree:#?}"
    );
    let old_cgroups = session_cgroups(&cgroup);
    assert!(!old_cgroups.is_empty(), "no session cgroups under {cgroup}");

    // kill -9 in the middle of the Execute.
    stack.agent.kill();
    let killed_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the completion did not end within 10 s of the agent's death")
        .expect("task")
        .expect("a started completion answers OK, with the sandbox error as its reason");
    let failed_after = killed_at.elapsed();
    assert!(
        failed_after < Duration::from_secs(3),
        "the agent's death took {failed_after:?} to end the completion"
    );
    assert_ended_by(&result, TerminationReason::SandboxError);
    assert!(
        result.detail.contains(&stack.agent_address),
        "the detail names the agent: {result:#?}"
    );

    // Health shows the sandbox down, naming the agent.
    let (status, report) = health(&stack).await;
    assert_eq!(status, 503, "{report:#}");
    assert_eq!(report["components"]["sandbox"], "unhealthy", "{report:#}");
    assert!(
        report["details"]["sandbox"]
            .as_str()
            .is_some_and(|d| d.contains(&socket)),
        "{report:#}"
    );

    // A completion that cannot start: UNAVAILABLE naming the agent, at once.
    let started = Instant::now();
    let refused = try_complete(&mut rpc, spec("NEVER_STARTS", None))
        .await
        .expect_err("no agent: the completion cannot start");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains(&stack.agent_address),
        "the error names the agent: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusing took {:?}",
        started.elapsed()
    );

    // The agent restarts: same socket, cgroup parent and data directory.
    let restart_dir = stack.dir.path().join("restarted");
    std::fs::create_dir_all(&restart_dir).expect("log dir");
    let mut agent_env: HashMap<String, String> = env.iter().cloned().collect();
    agent_env.insert("RLM_AGENT_LISTEN".into(), stack.agent_address.clone());
    agent_env.insert(
        "RLM_AGENT_DATA_DIR".into(),
        stack.dir.path().join("agent").display().to_string(),
    );
    agent_env.insert("RLM_SHUTDOWN_ANNOUNCE".into(), "300ms".into());
    let new_agent = Service::start("rlm-sandbox-agent", &restart_dir, &agent_env, &[]);
    wait_serving(&stack.agent_address, &new_agent).await;
    stack.agent = new_agent;

    // Nothing of the old sessions is left.
    let gone = old_tree.clone();
    eventually(Duration::from_secs(5), || {
        let gone = gone.clone();
        let old_uids = old_uids.clone();
        let old_cgroups = old_cgroups.clone();
        let cgroup = cgroup.clone();
        async move {
            let all: HashMap<i32, Proc> = processes().into_iter().map(|p| (p.pid, p)).collect();
            let survivors: Vec<&Proc> = gone
                .iter()
                .filter(|p| all.get(&p.pid).is_some_and(|now| now.start == p.start))
                .collect();
            // The new agent (and those of tests running alongside) may
            // lease the same uids to their own sessions: an orphan is one
            // no agent owns.
            let by_uid: Vec<&Proc> = all
                .values()
                .filter(|p| old_uids.contains(&p.uid) && !under_an_agent(&all, p))
                .collect();
            let cgroups: Vec<String> = session_cgroups(&cgroup)
                .intersection(&old_cgroups)
                .cloned()
                .collect();
            (!survivors.is_empty() || !by_uid.is_empty() || !cgroups.is_empty()).then(|| {
                format!(
                    "left of the old agent: processes {survivors:#?}, processes of its session \
                     uids {by_uid:#?}, cgroups {cgroups:#?}"
                )
            })
        }
    })
    .await;
    assert_eq!(processes_matching(&marker), 0, "the cell's sleep survived");
    assert_eq!(
        mounts_under(stack.dir.path()),
        mounts_before,
        "mounts left in the host's mount table"
    );

    // The same orchestrator reconnects on its own.
    let result = complete(
        &mut rpc,
        spec("AFTER_RESTART", within(Duration::from_secs(60))),
    )
    .await;
    assert_final(&result, "42");
    let mut sandbox = agent(&stack).await;
    assert!(
        sessions_of(&mut sandbox, &result.completion_id)
            .await
            .is_empty()
    );
    eventually(Duration::from_secs(10), || async {
        let (status, report) = health(&stack).await;
        (status != 200 || report["components"]["sandbox"] != "healthy")
            .then(|| format!("the sandbox is not healthy again: {report:#}"))
    })
    .await;
}

// ---------------------------------------------------------------------------
// Model API faults
// ---------------------------------------------------------------------------

/// Time between consecutive requests the fault server saw.
fn gaps(seen: &[Request]) -> Vec<Duration> {
    seen.windows(2)
        .map(|w| w[1].at.duration_since(w[0].at))
        .collect()
}

/// A stack on `fault` with `extra` model settings.
async fn fault_stack(
    fault: &FaultLlm,
    extra: &[(&str, &str)],
) -> (Stack, RlmServiceClient<Channel>) {
    let stack = start_stack(&model_env(&fault.base_url(), extra)).await;
    let client = client(&stack).await;
    (stack, client)
}

/// Waits a little, then asserts the server saw exactly `n` requests (no
/// retry still on its way).
async fn assert_requests(fault: &FaultLlm, n: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fault.request_count(),
        n,
        "requests the model server saw: {:#?}",
        fault.requests()
    );
}

/// An attempt that gets no answer within RLM_LLM_TIMEOUT is abandoned and
/// retried; the retry's answer is the answer, its usage the only usage.
#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_that_times_out_is_retried() {
    let fault = FaultLlm::scripted(vec![
        Reply::text("FINAL(too late)").delay(Duration::from_secs(30)),
        Reply::text_with_usage("FINAL(on time)", 11, 4),
    ])
    .await;
    let (_stack, mut client) = fault_stack(
        &fault,
        &[("RLM_LLM_TIMEOUT", "1s"), ("RLM_LLM_MAX_ATTEMPTS", "3")],
    )
    .await;
    let started = Instant::now();
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(20))),
    )
    .await;
    let elapsed = started.elapsed();
    assert_final(&result, "on time");
    let gap = gaps(&fault.requests())[0];
    assert!(
        gap >= Duration::from_millis(TIMEOUT_SLACK_FLOOR_MS) && gap < Duration::from_millis(2500),
        "the first attempt was given up after {gap:?} (RLM_LLM_TIMEOUT=1s)"
    );
    assert!(elapsed < Duration::from_secs(6), "took {elapsed:?}");
    let u = usage(&result);
    assert_eq!(
        (u.calls, u.input_tokens, u.output_tokens),
        (1, 11, 4),
        "{u:?}"
    );
    assert_requests(&fault, 2).await;
}

/// A body that starts and then stalls (headers and part of the JSON, then
/// nothing) times out per attempt and is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_times_out_per_attempt_and_is_retried() {
    let fault = FaultLlm::scripted(vec![
        Reply::text("FINAL(stalled)").stall_after(40),
        Reply::text("FINAL(whole)"),
    ])
    .await;
    let (_stack, mut client) = fault_stack(
        &fault,
        &[("RLM_LLM_TIMEOUT", "1s"), ("RLM_LLM_MAX_ATTEMPTS", "3")],
    )
    .await;
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(20))),
    )
    .await;
    assert_final(&result, "whole");
    let gap = gaps(&fault.requests())[0];
    assert!(
        gap >= Duration::from_millis(TIMEOUT_SLACK_FLOOR_MS) && gap < Duration::from_millis(2500),
        "the stalled attempt was given up after {gap:?} (RLM_LLM_TIMEOUT=1s)"
    );
    assert_eq!(usage(&result).calls, 1);
    assert_requests(&fault, 2).await;
}

/// A model whose every body stalls, with attempts to spare: the attempts
/// time out one after another and the completion ends at its deadline
/// with TIMEOUT; no attempt starts after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_always_stalls_ends_at_the_deadline() {
    let fault = FaultLlm::scripted(vec![Reply::text("FINAL(never)").stall_after(40)]).await;
    let (_stack, mut client) = fault_stack(
        &fault,
        &[("RLM_LLM_TIMEOUT", "1s"), ("RLM_LLM_MAX_ATTEMPTS", "20")],
    )
    .await;
    let timeout = Duration::from_millis(3500);
    let started = Instant::now();
    let result = complete(&mut client, spec("Answer.", within(timeout))).await;
    let elapsed = started.elapsed();
    assert_ended_by(&result, TerminationReason::Timeout);
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "timeout={timeout:?} ended after {elapsed:?}"
    );
    let n = fault.request_count();
    assert!((3..=4).contains(&n), "{n} attempts of 1 s in 3.5 s");
    assert_requests(&fault, n).await;
}

/// A server that never answers (no headers) with the default per-attempt
/// limit of 300 s: the completion's deadline still ends the call.
#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_never_answers_ends_at_the_deadline() {
    let fault = FaultLlm::scripted(vec![Reply::hang()]).await;
    let (_stack, mut client) = fault_stack(&fault, &[]).await;
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = complete(&mut client, spec("Answer.", within(timeout))).await;
    let elapsed = started.elapsed();
    assert_ended_by(&result, TerminationReason::Timeout);
    assert!(
        elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
        "timeout={timeout:?} ended after {elapsed:?}"
    );
    assert_requests(&fault, 1).await;
}

/// 429s are retried (honouring `Retry-After`) until one succeeds; a storm
/// that outlasts RLM_LLM_MAX_ATTEMPTS is a MODEL_ERROR saying so.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_is_retried_then_reported() {
    let storm = |n: usize| {
        let mut replies: Vec<Reply> = (0..n)
            .map(|_| Reply::error(429, "fault-llm: rate limited 9d2e").header("Retry-After", "0.1"))
            .collect();
        replies.push(Reply::text("FINAL(through)"));
        replies
    };
    let fault = FaultLlm::scripted(storm(4)).await;
    let (_stack, mut client) = fault_stack(&fault, &[("RLM_LLM_MAX_ATTEMPTS", "5")]).await;

    // Four 429s, then an answer: the fifth and last attempt.
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(20))),
    )
    .await;
    assert_final(&result, "through");
    let seen = fault.requests();
    assert_eq!(seen.len(), 5, "{seen:#?}");
    for gap in gaps(&seen) {
        assert!(
            gap >= Duration::from_millis(100) && gap < Duration::from_secs(1),
            "Retry-After: 0.1 honoured: {gap:?}"
        );
    }
    assert_eq!(usage(&result).calls, 1);

    // Five 429s: the attempts run out.
    fault.set_script(storm(5));
    let result = complete(
        &mut client,
        spec("Answer again.", within(Duration::from_secs(20))),
    )
    .await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains("429")
            && result.detail.contains("rate limited 9d2e")
            && result.detail.contains("5 attempt"),
        "{result:#?}"
    );
    assert_requests(&fault, 10).await;
}

/// A 429 asking for a wait longer than the completion has left is not
/// slept through: the completion ends at once, as a model error naming
/// the rate limit, not as a timeout that never happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_past_the_deadline_fails_at_once() {
    let fault = FaultLlm::scripted(vec![
        Reply::error(429, "fault-llm: come back in a minute 3b7f").header("Retry-After", "60"),
    ])
    .await;
    let (_stack, mut client) = fault_stack(&fault, &[("RLM_LLM_MAX_ATTEMPTS", "5")]).await;
    let started = Instant::now();
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(10))),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "a 60 s Retry-After with 10 s left took {elapsed:?}"
    );
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains("come back in a minute 3b7f"),
        "{result:#?}"
    );
    assert_requests(&fault, 1).await;
}

/// Every 5xx is transient: retried until an answer.
#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried() {
    let fault = FaultLlm::scripted(vec![
        Reply::error(500, "fault-llm: internal"),
        Reply::error(502, "fault-llm: bad gateway"),
        Reply::status(503, "<html>Service Unavailable</html>"),
        Reply::error(504, "fault-llm: gateway timeout"),
        Reply::text("FINAL(recovered)"),
    ])
    .await;
    let (_stack, mut client) = fault_stack(&fault, &[("RLM_LLM_MAX_ATTEMPTS", "5")]).await;
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(20))),
    )
    .await;
    assert_final(&result, "recovered");
    assert_eq!(usage(&result).calls, 1);
    assert_requests(&fault, 5).await;
}

/// A connection closed without an answer, and one closed mid-body (the
/// JSON cut short), are transient: retried.
#[tokio::test(flavor = "multi_thread")]
async fn connection_resets_are_retried() {
    let fault = FaultLlm::scripted(vec![
        Reply::reset(),
        Reply::text("FINAL(cut short)").close_after(30),
        Reply::text("FINAL(after the resets)"),
    ])
    .await;
    let (_stack, mut client) = fault_stack(&fault, &[("RLM_LLM_MAX_ATTEMPTS", "3")]).await;
    let started = Instant::now();
    let result = complete(
        &mut client,
        spec("Answer.", within(Duration::from_secs(20))),
    )
    .await;
    assert_final(&result, "after the resets");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(usage(&result).calls, 1);
    assert_requests(&fault, 3).await;

    // Resets to the last attempt: a MODEL_ERROR saying the connection broke.
    fault.set_script(vec![Reply::text("FINAL(cut)").close_after(30)]);
    let result = complete(&mut client, spec("Again.", within(Duration::from_secs(20)))).await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains("3 attempt") && result.detail.contains("cannot reach model server"),
        "{result:#?}"
    );
    assert_requests(&fault, 6).await;
}

/// A complete 200 reply that is not the expected JSON is the server's
/// bug, not a hiccup: reported at once as MODEL_ERROR, not retried.
#[tokio::test(flavor = "multi_thread")]
async fn invalid_json_is_reported_without_retrying() {
    let fault = FaultLlm::with_handler(|request| {
        if request.first_user().contains("TRUNCATED") {
            Reply::status(
                200,
                r#"{"choices": [{"message": {"role": "assistant", "content": "FINAL(4"#,
            )
        } else {
            Reply::status(200, r#"{"object": "chat.completion", "choices": []}"#)
        }
    })
    .await;
    let (_stack, mut client) = fault_stack(&fault, &[("RLM_LLM_MAX_ATTEMPTS", "5")]).await;

    let result = complete(
        &mut client,
        spec("TRUNCATED json", within(Duration::from_secs(20))),
    )
    .await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains("invalid response") && result.detail.contains("not JSON"),
        "{result:#?}"
    );
    assert_requests(&fault, 1).await;

    let result = complete(
        &mut client,
        spec("Wrong shape", within(Duration::from_secs(20))),
    )
    .await;
    assert_ended_by(&result, TerminationReason::ModelError);
    assert!(
        result.detail.contains("invalid response") && result.detail.contains("choices[0]"),
        "{result:#?}"
    );
    assert_requests(&fault, 2).await;
}

// ---------------------------------------------------------------------------
// Orchestrator SIGTERM with completions in flight
// ---------------------------------------------------------------------------

/// SIGTERM with two completions in flight: gRPC health turns NOT_SERVING
/// during RLM_SHUTDOWN_ANNOUNCE, both completions still finish (FINAL)
/// within RLM_DRAIN_TIMEOUT, their sessions are destroyed, exit status 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_completions_finish_within_the_drain() {
    require_root();
    // Two slow turns each: a cell, then FINAL.
    let fault = FaultLlm::with_handler(|request| {
        let task = request.first_user();
        let tag = if task.contains("FIRST") {
            "first"
        } else {
            "second"
        };
        let reply = match request.assistant_turns() {
            0 => format!("```repl\nanswer = '{tag} done'\nprint(answer)\n```"),
            _ => "FINAL_VAR(answer)".to_owned(),
        };
        Reply::answer(request, &reply).delay(Duration::from_millis(1200))
    })
    .await;
    let env = model_env(
        &fault.base_url(),
        &[
            ("RLM_SHUTDOWN_ANNOUNCE", "1s"),
            ("RLM_DRAIN_TIMEOUT", "20s"),
        ],
    );
    let mut stack = start_stack(&env).await;
    let rpc = client(&stack).await;
    let health_channel = channel(&stack.grpc_address).await.expect("connect");
    let in_flight: Vec<_> = ["FIRST task", "SECOND task"]
        .into_iter()
        .map(|prompt| {
            let mut rpc = rpc.clone();
            tokio::spawn(async move {
                try_complete(&mut rpc, spec(prompt, within(Duration::from_secs(60)))).await
            })
        })
        .collect();
    eventually(Duration::from_secs(30), || async {
        (fault.request_count() < 2).then(|| "the completions never called the model".to_owned())
    })
    .await;

    stack.orchestrator.signal(nix::sys::signal::Signal::SIGTERM);
    let signalled = Instant::now();
    eventually(Duration::from_millis(700), || {
        let health_channel = health_channel.clone();
        async move {
            let overall = health_status(health_channel.clone(), "").await;
            let service = health_status(health_channel, "rlm.v1.RLMService").await;
            match (overall, service) {
                (Ok(ServingStatus::NotServing), Ok(ServingStatus::NotServing)) => None,
                other => Some(format!("health after SIGTERM: {other:?}")),
            }
        }
    })
    .await;
    assert!(signalled.elapsed() < Duration::from_secs(1));

    let mut ids = Vec::new();
    for (task, expected) in in_flight.into_iter().zip(["first done", "second done"]) {
        let result = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("an in-flight completion did not end within the drain")
            .expect("task")
            .expect("an in-flight completion is drained, not cut off");
        assert_final(&result, expected);
        ids.push(result.completion_id);
    }
    let status = stack
        .orchestrator
        .wait_exit(Duration::from_secs(10))
        .expect("the orchestrator exits once drained");
    assert_eq!(status.code(), Some(0), "{}", stack.orchestrator.log_text());
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "drained in {:?}",
        signalled.elapsed()
    );
    let mut sandbox = agent(&stack).await;
    for id in &ids {
        assert!(sessions_of(&mut sandbox, id).await.is_empty(), "{id}");
    }
}

/// Reads `responses` to its end: the result event, or why there was none.
async fn stream_end(
    responses: &mut tonic::Streaming<StreamCompleteResponse>,
) -> Result<CompletionResult, String> {
    loop {
        match responses.message().await {
            Ok(Some(message)) => {
                if let Some(Event::Result(result)) = message.event.and_then(|e| e.event) {
                    return Ok(result);
                }
            }
            Ok(None) => return Err("the stream ended without a result".to_owned()),
            Err(status) => return Err(format!("{status:?}")),
        }
    }
}

/// SIGTERM with two completions that cannot finish within
/// RLM_DRAIN_TIMEOUT, one in a cell that never ends, one waiting on a
/// model that never answers (its session idle between cells): both are
/// cancelled, their sessions and every process in them destroyed before
/// the orchestrator exits (0), and their trajectories record why.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cancels_what_cannot_drain_and_destroys_its_sessions() {
    require_root();
    let marker = marker(2);
    let loop_code = looping_cell(&marker);
    let leave_code = format!(
        "```repl\nimport subprocess\nkeep = subprocess.Popen(['sleep', '{marker}'])\nprint('left running')\n```"
    );
    let fault = FaultLlm::with_handler(move |request| {
        match (
            request.first_user().contains("LOOP"),
            request.assistant_turns(),
        ) {
            (true, _) => Reply::answer(request, &loop_code),
            (false, 0) => Reply::answer(request, &leave_code),
            (false, _) => Reply::hang(),
        }
    })
    .await;
    let env = model_env(
        &fault.base_url(),
        &[
            ("RLM_SHUTDOWN_ANNOUNCE", "300ms"),
            ("RLM_DRAIN_TIMEOUT", "1s"),
        ],
    );
    let mut stack = start_stack(&env).await;
    let mut rpc = client(&stack).await;
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    for prompt in ["LOOP in a cell forever.", "WAIT for the model forever."] {
        let mut responses = rpc
            .stream_complete(StreamCompleteRequest {
                spec: Some(spec(prompt, within(Duration::from_secs(100)))),
            })
            .await
            .expect("StreamComplete")
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("first event")
            .expect("stream")
            .expect("an event");
        ids.push(first.event.expect("event").completion_id);
        streams.push(responses);
    }
    eventually(Duration::from_secs(30), || async {
        let waiting = fault
            .requests()
            .iter()
            .any(|r| r.first_user().contains("WAIT") && r.assistant_turns() == 1);
        let processes = processes_matching(&marker);
        (!waiting || processes != 2).then(|| {
            format!(
                "not both in place: {processes} marker processes, waiting on the model: {waiting}"
            )
        })
    })
    .await;
    let mut sandbox = agent(&stack).await;
    for id in &ids {
        assert_eq!(sessions_of(&mut sandbox, id).await.len(), 1, "{id}");
    }

    stack.orchestrator.signal(nix::sys::signal::Signal::SIGTERM);
    let signalled = Instant::now();
    // Each stream ends one way or another (a CANCELLED result, or the
    // connection closing with the server), never hangs.
    let mut endings = Vec::new();
    for responses in &mut streams {
        let ending = tokio::time::timeout(Duration::from_secs(15), stream_end(responses))
            .await
            .expect("a stream did not end after SIGTERM");
        if let Ok(result) = &ending {
            assert_ended_by(result, TerminationReason::Cancelled);
        }
        endings.push(ending);
    }
    let status = stack
        .orchestrator
        .wait_exit(Duration::from_secs(15))
        .expect("the orchestrator exits after the drain deadline");
    let log = stack.orchestrator.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    let stopped = signalled.elapsed();
    assert!(
        stopped < Duration::from_secs(6),
        "announce 0.3 s + drain 1 s, stopped after {stopped:?}"
    );

    // Destroyed before the exit, not left for the agent's idle reaper.
    for id in &ids {
        let left = sessions_of(&mut sandbox, id).await;
        assert!(
            left.is_empty(),
            "sessions of {id} outlived the orchestrator: {left:#?}\nlog:\n{log}"
        );
    }
    eventually(Duration::from_secs(2), || async {
        let n = processes_matching(&marker);
        (n != 0).then(|| format!("{n} processes of the cancelled sessions left"))
    })
    .await;
    let store =
        rlm_orchestrator::trajectory::TrajectoryStore::open(stack.dir.path().join("trajectories"))
            .expect("trajectory store");
    for id in &ids {
        let trajectory = store.read(id).await.expect("trajectory");
        let summary = trajectory.summary.expect("summary");
        assert_eq!(
            (summary.status(), summary.termination_reason()),
            (TrajectoryStatus::Finished, TerminationReason::Cancelled),
            "{summary:#?}\nlog:\n{log}"
        );
        let recorded = trajectory
            .events
            .iter()
            .find_map(|e| match &e.event {
                Some(Event::Result(r)) => Some(r.clone()),
                _ => None,
            })
            .expect("the result is recorded");
        assert!(
            recorded.detail.contains("shutting down"),
            "{recorded:#?} (streams: {endings:?})"
        );
    }
}

// ---------------------------------------------------------------------------
// The client goes away mid-stream
// ---------------------------------------------------------------------------

/// A StreamComplete dropped by its client while the tree fans out (a root
/// and two child RLMs, each waiting on a batch of slow model calls): within
/// a second every session of the tree and every process in them is gone,
/// and no model call starts after.
#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_stream_tears_down_the_tree_within_a_second() {
    require_root();
    let marker = marker(3);
    let root_code = format!(
        "```repl\nimport subprocess\nkeep = subprocess.Popen(['sleep', '{marker}'])\n\
         answers = rlm_query_batched(['DROP_CHILD 0', 'DROP_CHILD 1'])\nprint(answers)\n```"
    );
    let child_code = format!(
        "```repl\nimport subprocess\nkeep = subprocess.Popen(['sleep', '{marker}'])\n\
         answers = llm_query_batched(['SLOW_ITEM %d' % i for i in range(40)])\nprint(len(answers))\n```"
    );
    let fault = FaultLlm::with_handler(move |request| {
        let first = request.first_user();
        let turns = request.assistant_turns();
        if first.contains("SLOW_ITEM") {
            Reply::answer(request, "slow answer").delay(Duration::from_millis(400))
        } else if first.contains("DROP_CHILD") {
            Reply::answer(
                request,
                if turns == 0 {
                    &child_code
                } else {
                    "FINAL(child)"
                },
            )
        } else {
            Reply::answer(
                request,
                if turns == 0 {
                    &root_code
                } else {
                    "FINAL(root)"
                },
            )
        }
    })
    .await;
    let cgroup = format!("rlm-test-faults-drop-{}", std::process::id());
    let env = model_env(
        &fault.base_url(),
        &[
            ("RLM_AGENT_POOL_SIZE", "0"),
            ("RLM_AGENT_CGROUP", cgroup.as_str()),
        ],
    );
    let stack = start_stack(&env).await;
    let mut sandbox = agent(&stack).await;
    let mut rpc = client(&stack).await;
    let limits = CompletionLimits {
        max_depth: Some(1),
        max_parallel: 4,
        timeout: duration(Duration::from_secs(100)),
        ..Default::default()
    };
    let mut responses = rpc
        .stream_complete(StreamCompleteRequest {
            spec: Some(spec("Fan out, then wait.", Some(limits))),
        })
        .await
        .expect("StreamComplete")
        .into_inner();
    let mut waiting = BTreeSet::new();
    let mut completion_id = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while waiting.len() < 2 {
            let event = responses
                .message()
                .await
                .expect("stream")
                .expect("the stream ended before the fan-out")
                .event
                .expect("event");
            completion_id.clone_from(&event.completion_id);
            match &event.event {
                Some(Event::SubcallStarted(s))
                    if s.kind() == SubcallKind::LlmQuery && event.node_id.starts_with("0.") =>
                {
                    waiting.insert(event.node_id.clone());
                }
                Some(Event::Result(r)) => panic!("ended early: {r:#?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("the children never started their sub-calls");
    let live = sessions_of(&mut sandbox, &completion_id).await;
    assert_eq!(live.len(), 3, "root and two children: {live:#?}");
    eventually(Duration::from_secs(5), || async {
        let n = processes_matching(&marker);
        (n != 3).then(|| format!("{n} marker processes, expected one per session"))
    })
    .await;
    assert_eq!(session_cgroups(&cgroup).len(), 3);

    // The client goes away: the stream (and its connection) dropped.
    drop(responses);
    drop(rpc);
    let dropped_at = Instant::now();
    eventually(Duration::from_secs(1), || {
        let mut sandbox = sandbox.clone();
        let completion_id = completion_id.clone();
        let cgroup = cgroup.clone();
        let marker = marker.clone();
        async move {
            let left = sessions_of(&mut sandbox, &completion_id).await;
            let processes = processes_matching(&marker);
            let cgroups = session_cgroups(&cgroup);
            (!left.is_empty() || processes > 0 || !cgroups.is_empty()).then(|| {
                format!(
                    "1 s after the client left: {} sessions, {processes} processes, cgroups {cgroups:?}",
                    left.len()
                )
            })
        }
    })
    .await;
    let torn_down = dropped_at.elapsed();

    // No model call starts afterwards; the trajectory says why it ended.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = fault.request_count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fault.request_count(),
        calls,
        "model calls after the client left"
    );
    let mut rpc = client(&stack).await;
    let trajectory = rpc
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: completion_id.clone(),
        })
        .await
        .expect("GetTrajectory")
        .into_inner()
        .trajectory
        .expect("trajectory");
    let summary = trajectory.summary.expect("summary");
    assert_eq!(
        (summary.status(), summary.termination_reason()),
        (TrajectoryStatus::Finished, TerminationReason::Cancelled),
        "torn down in {torn_down:?}: {summary:#?}"
    );
}

// ---------------------------------------------------------------------------
// A full trajectory disk
// ---------------------------------------------------------------------------

/// A small tmpfs mounted over a directory; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap_or_else(|err| panic!("mounting a tmpfs on {}: {err}", dir.display()));
        Self {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Fills the file system of `path` by growing it page by page; returns its size.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let page = [b'x'; 4096];
    loop {
        match file.write_all(&page).and_then(|()| file.flush()) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ENOSPC as i32) => break,
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    drop(file);
    std::fs::metadata(path).expect("filler").len()
}

/// Warning lines of the orchestrator's log about `completion_id`.
fn warnings_about(log: &str, completion_id: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(completion_id) && l.contains("WARN"))
        .map(str::to_owned)
        .collect()
}

const TRAJECTORY_ERRORS: &str = r#"rlm_errors_total{kind="trajectory_write"}"#;

/// RLM_LOG_DIR on a full disk: completions still answer; each lost
/// trajectory is one warning in the log and one
/// `rlm_errors_total{kind="trajectory_write"}`, whether the file could not
/// be started or broke midway; the orchestrator never falls over, and
/// records again once there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_trajectory_disk_loses_records_not_completions() {
    require_root();
    // Two turns: a cell with some output, then FINAL; enough events to
    // outgrow one page of trajectory.
    let fault = FaultLlm::with_handler(|request| {
        let tag = request.first_user();
        let reply = match request.assistant_turns() {
            0 => "```repl\nfor i in range(40):\n    print('line', i, 'of a long enough output to fill a page')\n```".to_owned(),
            _ => format!("FINAL({})", tag.lines().nth(1).unwrap_or_default().trim()),
        };
        Reply::answer(request, &reply)
    })
    .await;
    let (stack, mut rpc) = fault_stack(&fault, &[]).await;
    let trajectories = stack.dir.path().join("trajectories");
    let _tmpfs = Tmpfs::mount(&trajectories, "64k");
    let filler = trajectories.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0 && filled <= 64 * 1024, "{filled}");
    assert_eq!(metric(&stack, TRAJECTORY_ERRORS).await, 0.0);

    // A full disk: no trajectory can even start. Three completions.
    let mut ids = Vec::new();
    for i in 0..3 {
        let answer = format!("answer-{i}");
        let result = complete(&mut rpc, spec(&answer, within(Duration::from_secs(30)))).await;
        assert_final(&result, &answer);
        ids.push(result.completion_id.clone());
        let missing = rpc
            .get_trajectory(GetTrajectoryRequest {
                trajectory_id: result.trajectory_id.clone(),
            })
            .await
            .expect_err("no trajectory could be written");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");
    }
    assert_eq!(metric(&stack, TRAJECTORY_ERRORS).await, 3.0);
    let (status, report) = health(&stack).await;
    assert_eq!(status, 503, "{report:#}");
    assert_eq!(report["components"]["storage"], "unhealthy", "{report:#}");

    // Room for one page: the trajectory starts, then breaks midway.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&filler)
        .and_then(|f| f.set_len(filled - 4096))
        .expect("free one page");
    let result = complete(&mut rpc, spec("midway", within(Duration::from_secs(30)))).await;
    assert_final(&result, "midway");
    ids.push(result.completion_id.clone());
    assert_eq!(metric(&stack, TRAJECTORY_ERRORS).await, 4.0);
    let partial = rpc
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: result.trajectory_id.clone(),
        })
        .await
        .expect("the trajectory's start was written")
        .into_inner()
        .trajectory
        .expect("trajectory");
    let summary = partial.summary.expect("summary");
    assert_eq!(
        summary.status(),
        TrajectoryStatus::Incomplete,
        "{summary:#?}"
    );

    // One warning per completion, whichever way its record was lost.
    let log = stack.orchestrator.log_text();
    for id in &ids {
        let warnings = warnings_about(&log, id);
        assert_eq!(warnings.len(), 1, "warnings about {id}: {warnings:#?}");
        assert!(warnings[0].contains("trajectory"), "{warnings:#?}");
    }

    // Room again: recording resumes, nothing more is counted.
    std::fs::remove_file(&filler).expect("free the disk");
    let result = complete(&mut rpc, spec("recorded", within(Duration::from_secs(30)))).await;
    assert_final(&result, "recorded");
    let recorded = rpc
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: result.trajectory_id.clone(),
        })
        .await
        .expect("recorded again")
        .into_inner()
        .trajectory
        .expect("trajectory");
    let summary = recorded.summary.expect("summary");
    assert_eq!(summary.status(), TrajectoryStatus::Finished, "{summary:#?}");
    assert_eq!(summary.termination_reason(), TerminationReason::Final);
    assert_eq!(metric(&stack, TRAJECTORY_ERRORS).await, 4.0);
    let (status, report) = health(&stack).await;
    assert_eq!(status, 200, "{report:#}");
    assert!(warnings_about(&stack.orchestrator.log_text(), &result.completion_id).is_empty());
}
