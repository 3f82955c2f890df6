//! `rlm-bench engine`: the engine's overheads through the public gRPC API,
//! with the real agent and orchestrator (the binaries next to this one, so a
//! release build when run as `target/release/rlm-bench`; warm pool of 8) and
//! the shared fake model (`fake_llm.py`, `generic` dialect, 0 ms latency
//! unless a row says otherwise). Run it as root:
//!
//!     cargo build --release --workspace --bins && sudo target/release/rlm-bench engine
//!
//! * Sub-call round trips are timed inside the root's REPL: a scripted root
//!   model (`scripted:<turns file>`) runs a `time.perf_counter()` loop around
//!   `llm_query("hi")` / `rlm_query("hi")` and prints the durations; the
//!   sub-model is the fake over HTTP, answering every call `FINAL(ok)` (so a
//!   child RLM ends after one model call). The child RLM overhead is each
//!   `rlm_query` minus the median `llm_query` of the same run.
//! * End-to-end rows are the client-side time of one completion (median of
//!   N runs after one warm-up), every answer checked against the fake's
//!   ground truth and every run checked for a clean fake (no notes, no
//!   unmatched calls, the expected number of model calls).
//!
//! `--iterations N`: runs per end-to-end row (default 10); the round-trip
//! rows make 20·N calls (default 200).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rlm_e2e::Stack;
use rlm_e2e::fake_llm::{self, FakeLlm};
use rlm_e2e::sandbox::Sandbox;
use rlm_proto::rlm::sandbox::v1::GetInfoRequest;
use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::*;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Stats, ms};

const POOL_SIZE: u32 = 8;
const MAX_PARALLEL: u32 = 16;
const MODEL: &str = "openai/fake-rlm";
/// What the fake's `echo` scenario answers every call with.
const ECHO: &str = "FINAL(ok)";
/// Upper bound of one RPC (a hung engine fails the bench).
const RPC_TIMEOUT: Duration = Duration::from_secs(600);
const NEEDLE_BYTES: usize = 10_000_000;
const UPLOAD_CHUNK: usize = 1 << 20;

// -----------------------------------------------------------------------
// Output
// -----------------------------------------------------------------------

fn print_header() {
    println!("| measurement | p50 ms | p90 ms | n | engine p50 ms | target |");
    println!("|---|---|---|---|---|---|");
}

/// One row; `engine` = the server-side durations (CompletionResult.duration).
fn print_row(what: &str, stats: &Stats, engine: Option<&Stats>, target: &str) {
    let engine = engine.map_or_else(|| "–".to_owned(), |e| ms(e.pct(0.5)));
    println!(
        "| {what} | {} | {} | {} | {engine} | {target} |",
        ms(stats.pct(0.5)),
        ms(stats.pct(0.9)),
        stats.samples.len()
    );
}

fn median(samples: &[Duration]) -> Duration {
    Stats::new(samples.to_vec()).pct(0.5)
}

fn secs(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

fn to_duration(d: Option<prost_types::Duration>) -> Duration {
    let d = d.unwrap_or_default();
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// -----------------------------------------------------------------------
// Requests
// -----------------------------------------------------------------------

fn limits(max_iterations: u32, max_depth: Option<u32>) -> Option<CompletionLimits> {
    Some(CompletionLimits {
        max_depth,
        max_iterations,
        max_parallel: MAX_PARALLEL,
        timeout: secs(RPC_TIMEOUT.as_secs() as i64),
        cell_timeout: secs(RPC_TIMEOUT.as_secs() as i64),
        ..Default::default()
    })
}

fn context(source: Source, format: ContextFormat) -> ContextInput {
    ContextInput {
        source: Some(source),
        format: format as i32,
    }
}

fn upload_messages(data: &[u8]) -> Vec<UploadContextRequest> {
    let mut messages: Vec<UploadContextRequest> = data
        .chunks(UPLOAD_CHUNK)
        .map(|chunk| UploadContextRequest {
            chunk: chunk.to_vec(),
            ..Default::default()
        })
        .collect();
    if let Some(first) = messages.first_mut() {
        first.total_size_bytes = data.len() as u64;
    }
    messages
}

/// What a round-trip row times in the root's REPL.
struct Timing {
    /// The Python call, e.g. `llm_query("hi")`.
    call: &'static str,
    /// What every call must return.
    expect: &'static str,
    /// CompletionLimits.max_depth (1 lets `rlm_query` start children).
    max_depth: u32,
    /// Untimed pause after each call (lets the warm pool refill).
    pause_ms: u32,
}

/// Scripted root turns: one cell timing `n` calls (after five untimed
/// ones), printing the durations in ms and the replies that were not
/// the expected one; then `FINAL(done)`.
fn timing_turns(t: &Timing, n: usize) -> String {
    let (call, expect, pause) = (t.call, t.expect, f64::from(t.pause_ms) / 1000.0);
    format!(
        "```repl\n\
         import json, time\n\
         for _ in range(5):\n    {call}\n\
         replies, durations = [], []\n\
         for _ in range({n}):\n    \
             started = time.perf_counter()\n    \
             replies.append({call})\n    \
             durations.append(round((time.perf_counter() - started) * 1000, 4))\n    \
             time.sleep({pause})\n\
         bad = [r for r in replies if str(r).strip() != {expect:?}]\n\
         print(\"BAD\", len(bad), repr(bad[:3]))\n\
         print(\"DURATIONS_MS\", json.dumps(durations))\n\
         ```\n\
         ---\n\
         FINAL(done)\n"
    )
}

/// The durations printed by [`timing_turns`]'s cell.
fn parse_timings(output: &str) -> anyhow::Result<Vec<Duration>> {
    let bad = output
        .lines()
        .find_map(|l| l.strip_prefix("BAD "))
        .context("no BAD line in the cell output")?;
    ensure!(
        bad.starts_with("0 "),
        "sub-calls returned unexpected replies: {bad}"
    );
    let list = output
        .lines()
        .find_map(|l| l.strip_prefix("DURATIONS_MS "))
        .context("no DURATIONS_MS line in the cell output")?;
    let values: Vec<f64> = serde_json::from_str(list).context("parsing DURATIONS_MS")?;
    Ok(values
        .into_iter()
        .map(|v| Duration::from_secs_f64(v / 1000.0))
        .collect())
}

// -----------------------------------------------------------------------
// Workloads
// -----------------------------------------------------------------------

enum Request {
    /// Complete with this spec.
    Complete(CompletionSpec),
    /// UploadContext these messages, then Complete with `spec` plus the
    /// returned id as its only context; both timed.
    UploadThenComplete(Vec<UploadContextRequest>, CompletionSpec),
}

/// One end-to-end row: the fake's scenario and what the run must give.
struct Workload {
    label: &'static str,
    target: &'static str,
    scenario: &'static str,
    params: Value,
    latency_ms: f64,
    /// Model calls the fake must see per run (root + sub).
    calls: u64,
    expected: String,
    request: Request,
}

fn spec(
    scenario: &str,
    params: &Value,
    contexts: Vec<ContextInput>,
    iterations: u32,
) -> CompletionSpec {
    CompletionSpec {
        prompt: fake_llm::question(scenario, params),
        contexts,
        limits: limits(iterations, None),
        metadata: [("bench".to_owned(), scenario.to_owned())].into(),
        ..Default::default()
    }
}

fn needle_workloads(context_id: String, data: &[u8], expected: &str) -> [Workload; 2] {
    let params = json!({"n": NEEDLE_BYTES, "seed": 1234});
    let by_id = spec(
        "needle",
        &params,
        vec![context(Source::ContextId(context_id), ContextFormat::Text)],
        30,
    );
    let upload = spec("needle", &params, Vec::new(), 30);
    [
        Workload {
            label: "needle 10 MB by id (Complete only)",
            target: "≤ 10 ms",
            scenario: "needle",
            params: params.clone(),
            latency_ms: 0.0,
            calls: 2,
            expected: expected.to_owned(),
            request: Request::Complete(by_id),
        },
        Workload {
            label: "needle 10 MB incl. upload (UploadContext in 1 MiB chunks + Complete)",
            target: "≤ 40 ms",
            scenario: "needle",
            params,
            latency_ms: 0.0,
            calls: 2,
            expected: expected.to_owned(),
            request: Request::UploadThenComplete(upload_messages(data), upload),
        },
    ]
}

fn fanout_workload(latency_ms: f64) -> Workload {
    let params = json!({"k": 100});
    let (chunks, _) = fake_llm::fanout_chunks_json(100, 1500, 99);
    let contexts = vec![context(Source::Text(chunks), ContextFormat::Json)];
    let (label, target) = if latency_ms > 0.0 {
        ("fanout 100 @ 50 ms latency, max_parallel 16", "≤ 380 ms")
    } else {
        (
            "fanout 100 (JSON context, 100 batched llm_query)",
            "≤ 60 ms",
        )
    };
    Workload {
        label,
        target,
        scenario: "fanout",
        expected: fake_llm::expected_answer("fanout", &params),
        request: Request::Complete(spec("fanout", &params, contexts, 30)),
        params,
        latency_ms,
        calls: 102,
    }
}

fn iterations_workload() -> Workload {
    let params = json!({"n": 20});
    let contexts = vec![context(
        Source::Text(fake_llm::ITERATIONS_CONTEXT.to_owned()),
        ContextFormat::Text,
    )];
    Workload {
        label: "iterations 20 (21 model turns, 20 cells)",
        target: "≤ 15 ms",
        scenario: "iterations",
        expected: fake_llm::expected_answer("iterations", &params),
        request: Request::Complete(spec("iterations", &params, contexts, 25)),
        params,
        latency_ms: 0.0,
        calls: 21,
    }
}

// -----------------------------------------------------------------------
// The running system
// -----------------------------------------------------------------------

struct Bench {
    fake: FakeLlm,
    stack: Stack,
    client: RlmServiceClient<Channel>,
    agent: Sandbox,
    scratch: tempfile::TempDir,
}

impl Bench {
    async fn start() -> anyhow::Result<Self> {
        let fake = FakeLlm::start(None).await;
        let base_url = fake.base_url();
        let cgroup = format!("rlm-bench-{}", std::process::id());
        let pool = POOL_SIZE.to_string();
        let parallel = MAX_PARALLEL.to_string();
        let stack = Stack::start(&[
            ("RLM_MODEL", MODEL),
            ("RLM_LLM_BASE_URL", &base_url),
            ("OPENAI_API_KEY", "x"),
            ("RLM_MAX_PARALLEL", &parallel),
            ("RLM_AGENT_POOL_SIZE", &pool),
            ("RLM_AGENT_MAX_SESSIONS", "256"),
            ("RLM_AGENT_CGROUP", &cgroup),
        ])
        .await;
        let client = RlmServiceClient::new(rlm_e2e::channel(&stack.grpc_address).await?)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let agent = Sandbox::connect(&stack.agent_address).await;
        Ok(Self {
            fake,
            stack,
            client,
            agent,
            scratch: tempfile::tempdir()?,
        })
    }

    /// The orchestrator's and the fake's recent log lines, for errors.
    fn logs(&self) -> String {
        format!(
            "--- rlm-orchestrator log (tail) ---\n{}\n--- rlm-sandbox-agent log (tail) ---\n{}\n--- fake_llm.py log (tail) ---\n{}",
            tail(&self.stack.orchestrator.log_text(), 40),
            tail(&self.stack.agent.log_text(), 20),
            tail(&self.fake.log_text(), 20)
        )
    }

    /// Pool refills from the previous run never compete with a timed one.
    async fn wait_pool(&mut self) -> anyhow::Result<()> {
        self.agent.wait_pool_ready(0, POOL_SIZE).await
    }

    async fn complete(&mut self, spec: CompletionSpec) -> anyhow::Result<CompletionResult> {
        let call = self.client.complete(CompleteRequest { spec: Some(spec) });
        let response = tokio::time::timeout(RPC_TIMEOUT, call)
            .await
            .context("Complete did not return in time")?;
        match response {
            Ok(r) => r
                .into_inner()
                .result
                .context("CompleteResponse without a result"),
            Err(status) => bail!("Complete failed: {status:?}\n{}", self.logs()),
        }
    }

    async fn upload(&mut self, messages: Vec<UploadContextRequest>) -> anyhow::Result<String> {
        let stored = self
            .client
            .upload_context(futures::stream::iter(messages))
            .await
            .context("UploadContext")?
            .into_inner();
        Ok(stored.context_id)
    }

    /// A FINAL result with `expected` as the answer, or an error saying
    /// what was sent and what came back.
    fn check_result(
        &self,
        what: &str,
        result: &CompletionResult,
        expected: &str,
    ) -> anyhow::Result<()> {
        if result.termination_reason() == TerminationReason::Final && result.answer == expected {
            return Ok(());
        }
        bail!(
            "{what}: expected FINAL with answer {expected:?}, got {:?} with answer {:?} (detail {:?}; \
             trajectory {}; {} iterations, {} sub-calls)\n{}",
            result.termination_reason(),
            result.answer,
            result.detail,
            result.trajectory_id,
            result.iterations,
            result.subcalls,
            self.logs()
        )
    }

    /// The fake saw a clean run of exactly `calls` model calls.
    async fn check_fake(&self, what: &str, calls: u64) -> anyhow::Result<()> {
        let stats = self.fake.stats().await;
        let clean = stats["notes"] == json!([])
            && stats["unmatched"] == 0
            && stats["errors"] == 0
            && stats["llm_calls"] == calls;
        ensure!(
            clean,
            "{what}: the fake model expected {calls} clean calls, its counters say {stats:#}\n{}",
            self.logs()
        );
        Ok(())
    }

    /// Output of the root's cell that printed `marker`.
    async fn root_cell_output(
        &mut self,
        trajectory_id: &str,
        marker: &str,
    ) -> anyhow::Result<String> {
        let trajectory = self
            .client
            .get_trajectory(GetTrajectoryRequest {
                trajectory_id: trajectory_id.to_owned(),
            })
            .await
            .context("GetTrajectory")?
            .into_inner()
            .trajectory
            .context("GetTrajectoryResponse without a trajectory")?;
        let cells: Vec<&CodeExecutedEvent> = trajectory
            .events
            .iter()
            .filter(|e| e.depth == 0)
            .filter_map(|e| match &e.event {
                Some(Event::CodeExecuted(cell)) => Some(cell),
                _ => None,
            })
            .collect();
        match cells.iter().find(|c| c.output.contains(marker)) {
            Some(cell) if cell.error.is_empty() && !cell.output_truncated => {
                Ok(cell.output.clone())
            }
            _ => bail!("no clean root cell printed {marker}; root cells: {cells:#?}"),
        }
    }

    // -------------------------------------------------------------------
    // Measurements
    // -------------------------------------------------------------------

    /// Sequential keep-alive requests to the fake, from here: the floor
    /// under every model call of the rows below.
    async fn fake_floor(&self, n: usize) -> anyhow::Result<Stats> {
        self.fake.reset("echo", json!({"text": ECHO}), 0.0).await;
        let http = reqwest::Client::new();
        let url = format!("{}/chat/completions", self.fake.base_url());
        let body = json!({"model": "fake-rlm", "messages": [{"role": "user", "content": "hi"}]});
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n + 5 {
            let started = Instant::now();
            let response = http.post(&url).json(&body).send().await?;
            ensure!(
                response.status().is_success(),
                "fake answered {}",
                response.status()
            );
            response.bytes().await?;
            samples.push(started.elapsed());
        }
        Ok(Stats::new(samples.split_off(5)))
    }

    /// What the fake alone needs for the model calls of two workloads, sent
    /// from here: `fanout`'s 100 sub-calls with [`MAX_PARALLEL`] in flight
    /// (one chunk each, as the engine sends them), and 21 sequential
    /// requests whose history grows by two messages a turn as `iterations`'
    /// does (a 3 KB system prompt, then ~100-byte turns). `n` totals each.
    async fn fake_workload_floors(&self, n: usize) -> anyhow::Result<(Stats, Stats)> {
        let http = reqwest::Client::new();
        let url = format!("{}/chat/completions", self.fake.base_url());
        let post = |body: Value| {
            let request = http.post(&url).json(&body);
            async move {
                let response = request.send().await?;
                ensure!(
                    response.status().is_success(),
                    "fake answered {}",
                    response.status()
                );
                response.bytes().await?;
                anyhow::Ok(())
            }
        };
        let (chunks_json, _) = fake_llm::fanout_chunks_json(100, 1500, 99);
        let chunks: Vec<String> = serde_json::from_str(&chunks_json)?;
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL as usize));
        let mut fanout = Vec::with_capacity(n);
        for _ in 0..n {
            self.fake.reset("fanout", json!({"k": 100}), 0.0).await;
            let started = Instant::now();
            let calls = chunks.iter().map(|chunk| {
                let limit = std::sync::Arc::clone(&limit);
                let body = json!({"model": "fake-rlm", "messages": [
                    {"role": "user", "content": format!("COUNT_WORD[zebra]\n{chunk}")}]});
                let call = post(body);
                async move {
                    let _permit = limit.acquire().await?;
                    call.await
                }
            });
            futures::future::try_join_all(calls).await?;
            fanout.push(started.elapsed());
        }
        let mut iterations = Vec::with_capacity(n);
        for _ in 0..n {
            self.fake.reset("iterations", json!({"n": 20}), 0.0).await;
            let mut messages = vec![json!({"role": "system", "content": "s".repeat(3000)})];
            let started = Instant::now();
            for turn in 0..21 {
                messages.push(json!({"role": "user", "content": format!("Turn {turn}: REPL output:\nX = {turn}\n")}));
                post(json!({"model": "fake-rlm", "messages": messages})).await?;
                messages.push(json!({"role": "assistant", "content": "```repl\nX = X + 1\nprint('X =', X)\n```"}));
            }
            iterations.push(started.elapsed());
        }
        Ok((Stats::new(fanout), Stats::new(iterations)))
    }

    /// The warm pool's (hits, misses) so far.
    async fn pool_counters(&mut self) -> anyhow::Result<(u64, u64)> {
        let info = self.agent.client.get_info(GetInfoRequest {}).await?;
        let pools = &info.get_ref().pools;
        Ok((
            pools.iter().map(|p| p.hits).sum(),
            pools.iter().map(|p| p.misses).sum(),
        ))
    }

    /// Durations of `n` calls timed in the root's REPL, and how many
    /// sessions the warm pool served / had to start meanwhile.
    async fn repl_round_trips(
        &mut self,
        t: &Timing,
        n: usize,
    ) -> anyhow::Result<(Vec<Duration>, (u64, u64))> {
        let turns = self.scratch.path().join("timing.turns");
        std::fs::write(&turns, timing_turns(t, n))?;
        self.fake.reset("echo", json!({"text": ECHO}), 0.0).await;
        self.wait_pool().await?;
        let spec = CompletionSpec {
            prompt: format!("Time {n} calls of {}.", t.call),
            root_model: format!("scripted:{}", turns.display()),
            sub_model: MODEL.to_owned(),
            limits: limits(5, Some(t.max_depth)),
            ..Default::default()
        };
        let before = self.pool_counters().await?;
        let result = self.complete(spec).await?;
        let after = self.pool_counters().await?;
        self.check_result(t.call, &result, "done")?;
        self.check_fake(t.call, n as u64 + 5).await?;
        let output = self
            .root_cell_output(&result.trajectory_id, "DURATIONS_MS")
            .await?;
        let durations = parse_timings(&output)
            .with_context(|| format!("{}: cell output:\n{output}", t.call))?;
        Ok((durations, (after.0 - before.0, after.1 - before.1)))
    }

    /// Client-side time of one run of `request`, and its result.
    async fn run_once(
        &mut self,
        request: &Request,
    ) -> anyhow::Result<(Duration, CompletionResult)> {
        match request {
            Request::Complete(spec) => {
                let spec = spec.clone();
                let started = Instant::now();
                let result = self.complete(spec).await?;
                Ok((started.elapsed(), result))
            }
            Request::UploadThenComplete(messages, spec) => {
                let (messages, mut spec) = (messages.clone(), spec.clone());
                let started = Instant::now();
                let id = self.upload(messages).await?;
                spec.contexts = vec![context(Source::ContextId(id), ContextFormat::Text)];
                let result = self.complete(spec).await?;
                Ok((started.elapsed(), result))
            }
        }
    }

    /// One warm-up, then `runs` checked runs: (client, engine) durations.
    async fn measure(&mut self, w: &Workload, runs: usize) -> anyhow::Result<(Stats, Stats)> {
        let (mut client, mut engine) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            self.fake
                .reset(w.scenario, w.params.clone(), w.latency_ms)
                .await;
            self.wait_pool().await?;
            let (elapsed, result) = self.run_once(&w.request).await?;
            let what = format!("{} (run {run})", w.label);
            self.check_result(&what, &result, &w.expected)?;
            self.check_fake(&what, w.calls).await?;
            if run > 0 {
                client.push(elapsed);
                engine.push(to_duration(result.duration));
            }
        }
        Ok((Stats::new(client), Stats::new(engine)))
    }

    async fn needle_workloads(&mut self) -> anyhow::Result<[Workload; 2]> {
        let path = self.scratch.path().join("needle.txt");
        let code = fake_llm::needle_context_file(NEEDLE_BYTES, 1234, &path);
        let expected =
            fake_llm::expected_answer("needle", &json!({"n": NEEDLE_BYTES, "seed": 1234}));
        ensure!(
            code == expected,
            "needle file holds {code}, the fake expects {expected}"
        );
        let data = std::fs::read(&path)?;
        let id = self.upload(upload_messages(&data)).await?;
        Ok(needle_workloads(id, &data, &expected))
    }
}

/// Warns when this is not `target/release/rlm-bench` (the services started
/// are the binaries next to it).
pub fn warn_unless_release(subcommand: &str) {
    let exe = std::env::current_exe().unwrap_or_default();
    let release = exe.parent().is_some_and(|d| d.ends_with("release"));
    if !release {
        eprintln!(
            "warning: {} is not a release build; the services started are the ones next to it. \
             For figures: cargo build --release --workspace --bins && sudo target/release/rlm-bench {subcommand}",
            exe.display()
        );
    }
}

async fn round_trip_rows(bench: &mut Bench, calls: usize) -> anyhow::Result<()> {
    print_row(
        "floor: one request to fake_llm.py (keep-alive, from this process)",
        &bench.fake_floor(calls).await?,
        None,
        "–",
    );
    let llm_query = Timing {
        call: "llm_query(\"hi\")",
        expect: ECHO,
        max_depth: 0,
        pause_ms: 0,
    };
    let (llm, _) = bench.repl_round_trips(&llm_query, calls).await?;
    let llm_median = median(&llm);
    print_row(
        "`llm_query(\"hi\")` round trip, timed in the REPL",
        &Stats::new(llm),
        None,
        "≤ 1 ms",
    );
    // One child = one session + one model call (`FINAL(ok)`). The pause
    // lets the pool refill, so each child gets a warm session.
    let rlm_query = Timing {
        call: "rlm_query(\"hi\")",
        expect: "ok",
        max_depth: 1,
        pause_ms: 50,
    };
    let (rlm, (hits, misses)) = bench.repl_round_trips(&rlm_query, calls).await?;
    let overhead = rlm.iter().map(|d| d.saturating_sub(llm_median)).collect();
    print_row(
        &format!(
            "`rlm_query(\"hi\")` round trip (child RLM, one model call; {hits} warm / {misses} cold sessions), timed in the REPL"
        ),
        &Stats::new(rlm),
        None,
        "–",
    );
    print_row(
        "child RLM overhead: `rlm_query` − median `llm_query` of this run",
        &Stats::new(overhead),
        None,
        "≤ 5 ms",
    );
    Ok(())
}

async fn end_to_end_rows(bench: &mut Bench, runs: usize) -> anyhow::Result<()> {
    let (fanout_floor, iterations_floor) = bench.fake_workload_floors(runs).await?;
    print_row(
        "floor: fanout's 100 sub-calls sent to fake_llm.py from this process, 16 in flight",
        &fanout_floor,
        None,
        "–",
    );
    print_row(
        "floor: 21 sequential requests to fake_llm.py, history growing as in iterations",
        &iterations_floor,
        None,
        "–",
    );
    let mut workloads: Vec<Workload> = bench.needle_workloads().await?.into();
    workloads.push(fanout_workload(0.0));
    workloads.push(iterations_workload());
    workloads.push(fanout_workload(50.0));
    for w in &workloads {
        let (client, engine) = bench.measure(w, runs).await?;
        print_row(w.label, &client, Some(&engine), w.target);
    }
    Ok(())
}

pub async fn bench(runs: usize) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the engine bench needs root (the agent isolates sessions)");
    }
    warn_unless_release("engine");
    let mut bench = Bench::start().await?;
    print_header();
    round_trip_rows(&mut bench, (runs * 20).min(2000)).await?;
    end_to_end_rows(&mut bench, runs).await?;
    Ok(())
}
