//! `rlm-bench load`: the load and soak run. Starts the shared fake model
//! (`fake_llm.py`, `generic` dialect), the agent and the orchestrator (the
//! binaries next to this one: run `target/release/rlm-bench` for a release
//! stack), then `--concurrency` workers each run completions back to back
//! through the public gRPC API (`rlm.v1.RLMService/Complete`) for
//! `--duration`:
//!
//! * default: the fake's `fanout` scenario with `--fanout` chunks (a JSON
//!   context of k chunks of 1,500 characters; the root batches k
//!   `llm_query` calls and sums their answers): 2 root turns, k sub-calls and
//!   one sandbox session (the root's) per completion;
//! * `--child-rlms`: the project's `recursion` scenario
//!   (`tests/fake_scenarios/recursion.py`) with `--fanout` values (default 3):
//!   the root runs `rlm_query_batched` over k child RLMs, each of which runs
//!   one `rlm_query` grandchild that makes one `llm_query`: 2 + 4k model
//!   calls and 1 + 2k sessions per completion, so sessions are churned too.
//!
//! A completion counts as an error unless it ends FINAL with the fake's
//! ground-truth answer; RPC errors and timeouts are errors too. The first
//! few errors are printed as they happen. Every `--sample-every` (10 s) the
//! orchestrator's and the agent's RSS (`VmRSS`), open descriptors
//! (`/proc/<pid>/fd`) and threads are sampled, with the agent's sessions
//! (GetInfo: live, warm, starting), its session cgroups, its descendant
//! processes, and where the machine's CPU went (`/proc/stat`; the session
//! cgroups' `cpuacct.usage`; the agent, orchestrator and fake processes;
//! "other" is everything else on the host, e.g. a concurrent build).
//! After the run the stack is sampled idle (no live session, warm pool
//! full), and `--linger D` keeps sampling it idle for D (idle HTTP
//! connections and blocking threads time out; what stays is what a leak
//! would leave).
//!
//! The report: latency percentiles and throughput, a per-minute table, the
//! minute-1 → last-minute deltas, the idle-before → idle-after deltas, what
//! the remaining descriptors are, every sample, and the fake's counters.
//! Exits non-zero when any completion failed or the fake saw a protocol
//! problem.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rlm_e2e::Stack;
use rlm_e2e::fake_llm::{self, FakeLlm};
use rlm_e2e::sandbox::Sandbox;
use rlm_proto::rlm::sandbox::v1::GetInfoRequest;
use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::*;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::Stats;
use crate::args::Args;
use crate::host;

const MODEL: &str = "openai/fake-rlm";
/// Characters per fan-out chunk, and the generator's seed (as `engine`).
const CHUNK_CHARS: usize = 1500;
const SEED: u64 = 99;
/// A completion's own limit; the client gives up a minute later.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(120);
const RPC_TIMEOUT: Duration = Duration::from_secs(180);
/// Errors printed in full as they happen.
const ERRORS_SHOWN: usize = 5;

pub struct Options {
    concurrency: usize,
    duration: Duration,
    fanout: usize,
    max_parallel: u32,
    pool_size: u32,
    latency_ms: f64,
    sample_every: Duration,
    linger: Duration,
    child_rlms: bool,
}

impl Options {
    pub fn parse(argv: &[String]) -> anyhow::Result<Self> {
        let args = Args::parse(
            argv,
            &[
                "--concurrency",
                "--duration",
                "--fanout",
                "--max-parallel",
                "--pool-size",
                "--latency-ms",
                "--sample-every",
                "--linger",
            ],
            &["--child-rlms"],
        )?;
        let child_rlms = args.switch("--child-rlms");
        let options = Self {
            concurrency: args.number("--concurrency", 64)?,
            duration: args.duration("--duration", Duration::from_secs(300))?,
            fanout: args.number("--fanout", if child_rlms { 3 } else { 10 })?,
            max_parallel: args.number("--max-parallel", 8)?,
            pool_size: args.number("--pool-size", 16)?,
            latency_ms: args.number("--latency-ms", 0.0)?,
            sample_every: args.duration("--sample-every", Duration::from_secs(10))?,
            linger: args.duration("--linger", Duration::ZERO)?,
            child_rlms,
        };
        if options.concurrency == 0 || options.fanout == 0 || options.max_parallel == 0 {
            bail!("--concurrency, --fanout and --max-parallel must be at least 1");
        }
        if options.sample_every < Duration::from_millis(100) {
            bail!("--sample-every must be at least 100ms");
        }
        if args.given("--fanout") && child_rlms && options.fanout > 16 {
            bail!("--child-rlms with --fanout above 16 starts 2k+1 sessions per completion");
        }
        Ok(options)
    }
}

// ---------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------

struct Workload {
    description: String,
    scenario: &'static str,
    params: Value,
    spec: CompletionSpec,
    expected: String,
    /// Model calls (root + sub) of one completion.
    calls: u64,
    /// Sandbox sessions one completion opens.
    sessions: usize,
}

fn limits(o: &Options, max_depth: u32) -> Option<CompletionLimits> {
    let timeout = Some(prost_types::Duration {
        seconds: COMPLETION_TIMEOUT.as_secs() as i64,
        nanos: 0,
    });
    Some(CompletionLimits {
        max_depth: Some(max_depth),
        max_iterations: 5,
        max_parallel: o.max_parallel,
        timeout,
        cell_timeout: timeout,
        ..Default::default()
    })
}

fn fanout_workload(o: &Options) -> anyhow::Result<Workload> {
    let k = o.fanout;
    let params = json!({"k": k});
    let (chunks, counts) = fake_llm::fanout_chunks_json(k, CHUNK_CHARS, SEED);
    let expected = counts.iter().sum::<u64>().to_string();
    let generator = fake_llm::expected_answer("fanout", &params);
    if generator != expected {
        bail!("fanout {k}: the chunks sum to {expected}, the fake's generator says {generator}");
    }
    let spec = CompletionSpec {
        prompt: fake_llm::question("fanout", &params),
        contexts: vec![ContextInput {
            source: Some(Source::Text(chunks)),
            format: ContextFormat::Json as i32,
        }],
        limits: limits(o, 1),
        metadata: [("bench".to_owned(), "load-fanout".to_owned())].into(),
        ..Default::default()
    };
    Ok(Workload {
        description: format!(
            "fanout {k} (JSON context of {k} chunks × {CHUNK_CHARS} chars; k batched llm_query; \
             {} model calls and 1 session per completion)",
            k + 2
        ),
        scenario: "fanout",
        params,
        spec,
        expected,
        calls: k as u64 + 2,
        sessions: 1,
    })
}

fn recursion_workload(o: &Options) -> anyhow::Result<Workload> {
    let k = o.fanout;
    let values: Vec<u64> = (0..k as u64).map(|i| 3 + 2 * i).collect();
    let params = json!({"values": values});
    let expected = values.iter().map(|v| v * v + v).sum::<u64>().to_string();
    let generator =
        fake_llm::scenario_expected("recursion", &params, Some(&fake_llm::scenarios_dir()));
    if generator != expected {
        bail!("recursion {values:?}: expected {expected}, the scenario says {generator}");
    }
    let spec = CompletionSpec {
        prompt: "Sum the recursion tree.".to_owned(),
        limits: limits(o, 2),
        metadata: [("bench".to_owned(), "load-recursion".to_owned())].into(),
        ..Default::default()
    };
    Ok(Workload {
        description: format!(
            "recursion over {k} values (rlm_query_batched of {k} child RLMs, each one rlm_query \
             grandchild and one llm_query; {} model calls and {} sessions per completion)",
            2 + 4 * k,
            1 + 2 * k
        ),
        scenario: "recursion",
        params,
        spec,
        expected,
        calls: 2 + 4 * k as u64,
        sessions: 1 + 2 * k,
    })
}

// ---------------------------------------------------------------------------
// Outcomes
// ---------------------------------------------------------------------------

struct Outcome {
    /// When the completion was sent, since the start of the load.
    start: Duration,
    latency: Duration,
    ok: bool,
}

impl Outcome {
    fn end(&self) -> Duration {
        self.start + self.latency
    }
}

struct Log {
    t0: Instant,
    outcomes: Mutex<Vec<Outcome>>,
    errors: AtomicUsize,
    /// Errors by kind (gRPC code, termination reason, wrong answer).
    kinds: Mutex<BTreeMap<String, usize>>,
}

impl Log {
    fn record(&self, start: Instant, result: Result<(), (String, String)>) {
        let latency = start.elapsed();
        let outcome = Outcome {
            start: start.duration_since(self.t0),
            latency,
            ok: result.is_ok(),
        };
        if let Err((kind, detail)) = result {
            let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= ERRORS_SHOWN {
                let mut detail = detail;
                detail.truncate(3000);
                eprintln!(
                    "error #{n} at {:.1} s (after {:.0} ms): {kind}: {detail}",
                    outcome.start.as_secs_f64(),
                    latency.as_secs_f64() * 1000.0
                );
            }
            *lock(&self.kinds).entry(kind).or_default() += 1;
        }
        lock(&self.outcomes).push(outcome);
    }

    fn done(&self) -> usize {
        lock(&self.outcomes).len()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ok, or (kind, detail).
fn check(response: CompleteResponse, expected: &str) -> Result<(), (String, String)> {
    let Some(result) = response.result else {
        return Err((
            "no result".to_owned(),
            "CompleteResponse without a result".to_owned(),
        ));
    };
    let reason = result.termination_reason();
    if reason != TerminationReason::Final {
        return Err((
            format!("{reason:?}"),
            format!(
                "ended {reason:?} (detail {:?}; answer {:?}; trajectory {})",
                result.detail, result.answer, result.trajectory_id
            ),
        ));
    }
    if result.answer != expected {
        return Err((
            "wrong answer".to_owned(),
            format!(
                "FINAL with answer {:?}, expected {expected:?} (trajectory {})",
                result.answer, result.trajectory_id
            ),
        ));
    }
    Ok(())
}

async fn worker(
    mut client: RlmServiceClient<Channel>,
    spec: CompletionSpec,
    expected: Arc<str>,
    deadline: Instant,
    log: Arc<Log>,
) {
    while Instant::now() < deadline {
        let started = Instant::now();
        let call = client.complete(CompleteRequest {
            spec: Some(spec.clone()),
        });
        let result = match tokio::time::timeout(RPC_TIMEOUT, call).await {
            Err(_) => Err((
                "client timeout".to_owned(),
                format!("no answer in {RPC_TIMEOUT:?}"),
            )),
            Ok(Err(status)) => Err((format!("rpc {:?}", status.code()), format!("{status:?}"))),
            Ok(Ok(response)) => check(response.into_inner(), &expected),
        };
        let failed = result.is_err();
        log.record(started, result);
        if failed {
            // An engine refusing at once must not turn this into a busy loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Default)]
struct ProcSample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

impl ProcSample {
    fn read(pid: i32) -> Self {
        Self {
            rss_kib: host::rss_kib(pid),
            fds: host::fds(pid),
            threads: host::threads(pid),
        }
    }
}

/// The agent's GetInfo: sessions handed out, and its warm pools.
#[derive(Clone, Copy, Default)]
struct AgentInfo {
    live: u32,
    ready: u32,
    starting: u32,
    hits: u64,
    misses: u64,
}

/// Cumulative CPU seconds: the machine, the session cgroups, the agent,
/// the orchestrator and the fake model.
#[derive(Clone, Copy, Default)]
struct Cpu {
    host: f64,
    sessions: f64,
    agent: f64,
    orchestrator: f64,
    fake: f64,
}

impl Cpu {
    /// Cores used from `self` to `later`: busy (the whole machine),
    /// sessions, agent, orchestrator, fake, and everything else.
    fn cores(&self, later: &Cpu, seconds: f64) -> [f64; 6] {
        let d = |a: f64, b: f64| ((b - a) / seconds).max(0.0);
        let busy = d(self.host, later.host);
        let sessions = d(self.sessions, later.sessions);
        let agent = d(self.agent, later.agent);
        let orchestrator = d(self.orchestrator, later.orchestrator);
        let fake = d(self.fake, later.fake);
        let other = (busy - sessions - agent - orchestrator - fake).max(0.0);
        [busy, sessions, agent, orchestrator, fake, other]
    }
}

fn cores(values: [f64; 6]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Cores used between two samples, as [`cores`] prints them.
fn cores_between(a: &Sample, b: &Sample) -> String {
    if b.at > a.at {
        cores(a.cpu.cores(&b.cpu, (b.at - a.at).as_secs_f64()))
    } else {
        "–".to_owned()
    }
}

#[derive(Clone)]
struct Sample {
    at: Duration,
    done: usize,
    errors: usize,
    orchestrator: ProcSample,
    agent: ProcSample,
    /// None: GetInfo did not answer within 5 s.
    info: Option<AgentInfo>,
    cgroups: usize,
    agent_processes: usize,
    cpu: Cpu,
    load: String,
}

impl Sample {
    fn live_sessions(&self) -> Option<u32> {
        self.info.map(|i| i.live)
    }
}

struct Probe {
    orchestrator_pid: i32,
    agent_pid: i32,
    fake_pid: Option<i32>,
    cgroup: String,
    agent: Sandbox,
}

impl Probe {
    async fn info(&mut self) -> Option<AgentInfo> {
        let call = self.agent.client.get_info(GetInfoRequest {});
        let info = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .ok()?
            .ok()?
            .into_inner();
        let pools = &info.pools;
        Some(AgentInfo {
            live: info.live_sessions,
            ready: pools.iter().map(|p| p.ready).sum(),
            starting: pools.iter().map(|p| p.starting).sum(),
            hits: pools.iter().map(|p| p.hits).sum(),
            misses: pools.iter().map(|p| p.misses).sum(),
        })
    }

    fn cpu(&self) -> Cpu {
        Cpu {
            host: host::host_busy_seconds(),
            sessions: host::cgroup_cpu_seconds(&self.cgroup).unwrap_or_default(),
            agent: host::cpu_seconds(self.agent_pid),
            orchestrator: host::cpu_seconds(self.orchestrator_pid),
            fake: self.fake_pid.map(host::cpu_seconds).unwrap_or_default(),
        }
    }

    async fn sample(&mut self, at: Duration, log: &Log) -> Sample {
        let cpu = self.cpu();
        let info = self.info().await;
        Sample {
            at,
            done: log.done(),
            errors: log.errors.load(Ordering::Relaxed),
            orchestrator: ProcSample::read(self.orchestrator_pid),
            agent: ProcSample::read(self.agent_pid),
            info,
            cgroups: host::session_cgroups(&self.cgroup).0,
            agent_processes: host::descendants(self.agent_pid),
            cpu,
            load: host::load_average(),
        }
    }

    /// Waits (up to `limit`) for no live session and a full warm pool.
    async fn wait_idle(&mut self, pool_size: u32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(info) = self.info().await
                && info.live == 0
                && info.ready >= pool_size
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

fn print_samples(samples: &[(String, Sample)]) {
    println!(
        "| sample | completions | errors | orch RSS MiB | orch fds | orch threads | agent RSS MiB | agent fds | agent threads | sessions live / warm / starting | session cgroups | agent processes | CPU cores since the previous row: busy / sessions / agent / orch / fake / other | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut previous: Option<&Sample> = None;
    for (label, s) in samples {
        let cpu = previous.map_or_else(|| "–".to_owned(), |p| cores_between(p, s));
        previous = Some(s);
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {cpu} | {} |",
            s.done,
            s.errors,
            host::mib(s.orchestrator.rss_kib),
            s.orchestrator.fds,
            s.orchestrator.threads,
            host::mib(s.agent.rss_kib),
            s.agent.fds,
            s.agent.threads,
            s.info.map_or_else(
                || "?".to_owned(),
                |i| format!("{} / {} / {}", i.live, i.ready, i.starting)
            ),
            s.cgroups,
            s.agent_processes,
            s.load
        );
    }
}

fn range<T: Ord + Copy + std::fmt::Display>(values: impl Iterator<Item = T>) -> String {
    let values: Vec<T> = values.collect();
    match (values.iter().min(), values.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}–{hi}"),
        _ => "–".to_owned(),
    }
}

fn rss_range(values: impl Iterator<Item = u64>) -> String {
    let values: Vec<u64> = values.collect();
    match (values.iter().min(), values.iter().max()) {
        (Some(&lo), Some(&hi)) if lo == hi => host::mib(lo),
        (Some(&lo), Some(&hi)) => format!("{}–{}", host::mib(lo), host::mib(hi)),
        _ => "–".to_owned(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn signed(delta: i64) -> String {
    format!("{delta:+}")
}

fn signed_mib(delta_kib: i64) -> String {
    format!("{:+.1}", delta_kib as f64 / 1024.0)
}

/// The per-minute table: completions by the minute they ended in, samples
/// by the minute they were taken in (a sample at 60 s closes minute 1).
/// Returns the last sample of each minute.
fn print_minutes(
    outcomes: &[Outcome],
    before: &Sample,
    samples: &[Sample],
    duration: Duration,
) -> Vec<Sample> {
    let minutes = duration.as_secs().div_ceil(60).max(1) as usize;
    println!(
        "| minute | completions | errors | p50 ms | p99 ms | orch RSS MiB | orch fds | agent RSS MiB | agent fds | live sessions | session cgroups | CPU cores: busy / sessions / agent / orch / fake / other |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut last_of_minute: Vec<Sample> = Vec::new();
    for m in 0..minutes {
        let (lo, hi) = (m as f64 * 60.0, (m + 1) as f64 * 60.0);
        let ended: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| {
                let t = o.end().as_secs_f64();
                t >= lo && (t < hi || m + 1 == minutes)
            })
            .collect();
        let ok: Vec<Duration> = ended.iter().filter(|o| o.ok).map(|o| o.latency).collect();
        let errors = ended.len() - ok.len();
        let (p50, p99) = if ok.is_empty() {
            ("–".to_owned(), "–".to_owned())
        } else {
            let stats = Stats::new(ok);
            (ms(stats.pct(0.5)), ms(stats.pct(0.99)))
        };
        let inside: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                let t = s.at.as_secs_f64();
                t > lo + 0.5 && t <= hi + 0.5
            })
            .collect();
        let start = last_of_minute.last().unwrap_or(before);
        let cpu = inside
            .last()
            .map_or_else(|| "–".to_owned(), |last| cores_between(start, last));
        if let Some(last) = inside.last() {
            last_of_minute.push((*last).clone());
        }
        println!(
            "| {} | {} | {errors} | {p50} | {p99} | {} | {} | {} | {} | {} | {} | {cpu} |",
            m + 1,
            ended.len(),
            rss_range(inside.iter().map(|s| s.orchestrator.rss_kib)),
            range(inside.iter().map(|s| s.orchestrator.fds)),
            rss_range(inside.iter().map(|s| s.agent.rss_kib)),
            range(inside.iter().map(|s| s.agent.fds)),
            range(inside.iter().filter_map(|s| s.live_sessions())),
            range(inside.iter().map(|s| s.cgroups)),
        );
    }
    last_of_minute
}

fn print_delta(what: &str, a: &Sample, b: &Sample) {
    let d = |x: u64, y: u64| y as i64 - x as i64;
    println!(
        "| {what} | {} ({} → {}) | {} ({} → {}) | {} ({} → {}) | {} ({} → {}) | {} ({} → {}) | {} ({} → {}) |",
        signed_mib(d(a.orchestrator.rss_kib, b.orchestrator.rss_kib)),
        host::mib(a.orchestrator.rss_kib),
        host::mib(b.orchestrator.rss_kib),
        signed(d(a.orchestrator.fds as u64, b.orchestrator.fds as u64)),
        a.orchestrator.fds,
        b.orchestrator.fds,
        signed(d(a.orchestrator.threads, b.orchestrator.threads)),
        a.orchestrator.threads,
        b.orchestrator.threads,
        signed_mib(d(a.agent.rss_kib, b.agent.rss_kib)),
        host::mib(a.agent.rss_kib),
        host::mib(b.agent.rss_kib),
        signed(d(a.agent.fds as u64, b.agent.fds as u64)),
        a.agent.fds,
        b.agent.fds,
        signed(d(a.agent.threads, b.agent.threads)),
        a.agent.threads,
        b.agent.threads,
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn logs(stack: &Stack, fake: &FakeLlm) -> String {
    format!(
        "--- rlm-orchestrator log (tail) ---\n{}\n--- rlm-sandbox-agent log (tail) ---\n{}\n--- fake_llm.py log (tail) ---\n{}",
        tail(&stack.orchestrator.log_text(), 40),
        tail(&stack.agent.log_text(), 20),
        tail(&fake.log_text(), 20)
    )
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

pub async fn run(o: Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the load run needs root (the agent isolates sessions)");
    }
    crate::engine::warn_unless_release("load");
    let workload = if o.child_rlms {
        recursion_workload(&o)?
    } else {
        fanout_workload(&o)?
    };
    let fake = if o.child_rlms {
        FakeLlm::start(Some(&fake_llm::scenarios_dir())).await
    } else {
        FakeLlm::start(None).await
    };
    fake.reset(workload.scenario, workload.params.clone(), o.latency_ms)
        .await;
    let base_url = fake.base_url();
    let cgroup = format!("rlm-bench-load-{}", std::process::id());
    let pool = o.pool_size.to_string();
    let max_sessions = (o.concurrency * workload.sessions * 2 + o.pool_size as usize + 16)
        .max(256)
        .to_string();
    let max_completions = (o.concurrency * 2).max(256).to_string();
    let parallel = o.max_parallel.to_string();
    let stack = Stack::start(&[
        ("RLM_MODEL", MODEL),
        ("RLM_LLM_BASE_URL", &base_url),
        ("OPENAI_API_KEY", "x"),
        ("RLM_MAX_PARALLEL", &parallel),
        ("RLM_MAX_COMPLETIONS", &max_completions),
        ("RLM_AGENT_POOL_SIZE", &pool),
        ("RLM_AGENT_MAX_SESSIONS", &max_sessions),
        ("RLM_AGENT_CGROUP", &cgroup),
        ("RLM_LOG", "warn"),
    ])
    .await;
    let channel = rlm_e2e::channel(&stack.grpc_address).await?;
    let client = RlmServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut probe = Probe {
        orchestrator_pid: stack.orchestrator.pid(),
        agent_pid: stack.agent.pid(),
        fake_pid: host::own_child_matching("fake_llm.py"),
        cgroup: cgroup.clone(),
        agent: Sandbox::connect(&stack.agent_address).await,
    };

    println!("## rlm-bench load");
    println!();
    println!(
        "workload: {}; {} workers back to back for {:?}; max_parallel {}; fake latency {} ms; \
         RLM_AGENT_POOL_SIZE={}, RLM_AGENT_MAX_SESSIONS={max_sessions}, RLM_MAX_COMPLETIONS={max_completions}; \
         binaries in {}",
        workload.description,
        o.concurrency,
        o.duration,
        o.max_parallel,
        o.latency_ms,
        o.pool_size,
        rlm_e2e::binary("rlm-orchestrator")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    println!(
        "orchestrator pid {} (gRPC {}), agent pid {}, fake pid {} (port {}), agent cgroup {cgroup}, load average at start {}",
        probe.orchestrator_pid,
        stack.grpc_address,
        probe.agent_pid,
        probe
            .fake_pid
            .map_or_else(|| "?".to_owned(), |p| p.to_string()),
        fake.port(),
        host::load_average()
    );
    println!();

    // One completion first, so a broken set-up fails fast and clearly.
    let mut first = client.clone();
    let response = first
        .complete(CompleteRequest {
            spec: Some(workload.spec.clone()),
        })
        .await
        .with_context(|| format!("the first completion failed\n{}", logs(&stack, &fake)))?;
    if let Err((kind, detail)) = check(response.into_inner(), &workload.expected) {
        bail!(
            "the first completion failed: {kind}: {detail}\n{}",
            logs(&stack, &fake)
        );
    }
    fake.reset(workload.scenario, workload.params.clone(), o.latency_ms)
        .await;
    probe.wait_idle(o.pool_size, Duration::from_secs(30)).await;
    let t0 = Instant::now();
    let log = Arc::new(Log {
        t0,
        outcomes: Mutex::new(Vec::new()),
        errors: AtomicUsize::new(0),
        kinds: Mutex::new(BTreeMap::new()),
    });
    let before = probe.sample(Duration::ZERO, &log).await;

    let deadline = t0 + o.duration;
    let expected: Arc<str> = workload.expected.as_str().into();
    let workers: Vec<_> = (0..o.concurrency)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                workload.spec.clone(),
                expected.clone(),
                deadline,
                log.clone(),
            ))
        })
        .collect();

    let mut samples = Vec::new();
    let mut next = t0 + o.sample_every;
    while next <= deadline + Duration::from_millis(1) {
        tokio::time::sleep_until(next.into()).await;
        let s = probe.sample(next - t0, &log).await;
        eprintln!(
            "{:>6.0} s: {} completions, {} errors; orchestrator {} MiB / {} fds, agent {} MiB / {} fds, {} live sessions, load {}",
            s.at.as_secs_f64(),
            s.done,
            s.errors,
            host::mib(s.orchestrator.rss_kib),
            s.orchestrator.fds,
            host::mib(s.agent.rss_kib),
            s.agent.fds,
            opt(s.live_sessions()),
            s.load
        );
        samples.push(s);
        next += o.sample_every;
    }
    for w in workers {
        w.await.context("a worker panicked")?;
    }
    let wall = t0.elapsed();
    let idle = probe.wait_idle(o.pool_size, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = probe.sample(t0.elapsed(), &log).await;
    let fd_kinds_after = (
        host::fd_kinds(probe.orchestrator_pid),
        host::fd_kinds(probe.agent_pid),
    );
    // --linger: the idle stack, sampled on (idle connections and threads
    // time out; what stays is what a leak would leave).
    let mut lingering = Vec::new();
    let rounds = (o.linger.as_secs_f64() / o.sample_every.as_secs_f64()).floor() as u32;
    let linger_start = Instant::now();
    for round in 1..=rounds {
        tokio::time::sleep_until((linger_start + o.sample_every * round).into()).await;
        let s = probe.sample(t0.elapsed(), &log).await;
        eprintln!(
            "idle +{:.0} s: orchestrator {} MiB / {} fds / {} threads, agent {} MiB / {} fds / {} threads",
            (s.at - after.at).as_secs_f64(),
            host::mib(s.orchestrator.rss_kib),
            s.orchestrator.fds,
            s.orchestrator.threads,
            host::mib(s.agent.rss_kib),
            s.agent.fds,
            s.agent.threads
        );
        lingering.push(s);
    }
    let fd_kinds_end = (
        host::fd_kinds(probe.orchestrator_pid),
        host::fd_kinds(probe.agent_pid),
    );

    // ---- report ----
    let outcomes = std::mem::take(&mut *lock(&log.outcomes));
    let ok: Vec<Duration> = outcomes
        .iter()
        .filter(|o| o.ok)
        .map(|o| o.latency)
        .collect();
    let errors = outcomes.len() - ok.len();
    println!("### Latency and throughput");
    println!();
    println!(
        "| completions | ok | errors | throughput /s | p50 ms | p95 ms | p99 ms | max ms | wall s | CPU cores: busy / sessions / agent / orch / fake / other |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (p50, p95, p99, max) = if ok.is_empty() {
        Default::default()
    } else {
        let stats = Stats::new(ok.clone());
        (
            ms(stats.pct(0.5)),
            ms(stats.pct(0.95)),
            ms(stats.pct(0.99)),
            ms(stats.pct(1.0)),
        )
    };
    println!(
        "| {} | {} | {errors} | {:.1} | {p50} | {p95} | {p99} | {max} | {:.1} | {} |",
        outcomes.len(),
        ok.len(),
        ok.len() as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        samples
            .last()
            .map_or_else(|| "–".to_owned(), |last| cores_between(&before, last))
    );
    if errors > 0 {
        println!();
        println!("errors by kind: {:?}", *lock(&log.kinds));
    }
    println!();
    println!("### Per minute");
    println!();
    println!(
        "Completions by the minute they ended in; resources as the min–max of the samples taken in that minute (every {:?}); CPU as cores used over the minute.",
        o.sample_every
    );
    println!();
    let last_of_minute = print_minutes(&outcomes, &before, &samples, o.duration);
    println!();
    println!("### Deltas");
    println!();
    println!(
        "| between | orch RSS MiB | orch fds | orch threads | agent RSS MiB | agent fds | agent threads |"
    );
    println!("|---|---|---|---|---|---|---|");
    if let (Some(first), Some(last)) = (last_of_minute.first(), last_of_minute.last())
        && last_of_minute.len() > 1
    {
        print_delta(
            &format!(
                "end of minute 1 ({:.0} s) → end of minute {} ({:.0} s)",
                first.at.as_secs_f64(),
                last_of_minute.len(),
                last.at.as_secs_f64()
            ),
            first,
            last,
        );
    }
    print_delta(
        &format!(
            "idle before → idle after ({})",
            if idle {
                "no live session, warm pool full"
            } else {
                "NOT idle after 60 s"
            }
        ),
        &before,
        &after,
    );
    if let Some(end) = lingering.last() {
        print_delta(
            &format!(
                "idle before → idle {:.0} s later (`--linger`)",
                (end.at - after.at).as_secs_f64()
            ),
            &before,
            end,
        );
    }
    println!();
    println!(
        "Idle before → after: session cgroups {} → {}, agent processes {} → {}, live sessions {} → {}.",
        before.cgroups,
        after.cgroups,
        before.agent_processes,
        after.agent_processes,
        opt(before.live_sessions()),
        opt(after.live_sessions())
    );
    println!(
        "Descriptors idle after: orchestrator {}; agent {}.",
        fd_kinds_after.0, fd_kinds_after.1
    );
    if !lingering.is_empty() {
        println!(
            "Descriptors at the end of --linger: orchestrator {}; agent {}.",
            fd_kinds_end.0, fd_kinds_end.1
        );
    }
    if let (Some(b), Some(a)) = (before.info, after.info) {
        println!(
            "Sessions handed out during the run: {} from the warm pool, {} started on request.",
            a.hits - b.hits,
            a.misses - b.misses,
        );
    }
    println!();
    println!("### Samples");
    println!();
    let mut labelled = vec![("idle before".to_owned(), before.clone())];
    labelled.extend(
        samples
            .iter()
            .map(|s| (format!("{:.0} s", s.at.as_secs_f64()), s.clone())),
    );
    labelled.push(("idle after".to_owned(), after.clone()));
    labelled.extend(lingering.iter().map(|s| {
        (
            format!("idle +{:.0} s", (s.at - after.at).as_secs_f64()),
            s.clone(),
        )
    }));
    print_samples(&labelled);
    println!();

    let stats = fake.stats().await;
    println!(
        "fake model: {} model calls ({} root, {} sub; {} per completion × {} completions = {}), \
         unmatched {}, errors {}, notes {}, max in flight {}",
        stats["llm_calls"],
        stats["root_calls"],
        stats["sub_calls"],
        workload.calls,
        ok.len(),
        workload.calls * ok.len() as u64,
        stats["unmatched"],
        stats["errors"],
        stats["notes"],
        stats["max_in_flight"]
    );
    let orchestrator_log = stack.orchestrator.log_text();
    let agent_log = stack.agent.log_text();
    println!(
        "service logs (RLM_LOG=warn): orchestrator {} lines, agent {} lines",
        orchestrator_log.lines().count(),
        agent_log.lines().count()
    );
    for (name, text) in [("orchestrator", &orchestrator_log), ("agent", &agent_log)] {
        if !text.trim().is_empty() {
            eprintln!("--- {name} log (tail) ---\n{}", tail(text, 10));
        }
    }
    let clean = stats["notes"] == json!([]) && stats["unmatched"] == 0 && stats["errors"] == 0;
    if errors > 0 {
        bail!(
            "{errors} of {} completions failed (kinds {:?})",
            outcomes.len(),
            *lock(&log.kinds)
        );
    }
    if !clean {
        bail!("the fake model saw a protocol problem: {stats:#}");
    }
    Ok(())
}
