//! `rlm-bench`: measurements of the runtime, run as root on a release build
//! (the services started are the binaries next to this one):
//!
//!     cargo build --release --workspace --bins
//!     sudo target/release/rlm-bench sandbox [--iterations N]
//!     sudo target/release/rlm-bench engine [--iterations N]
//!     sudo target/release/rlm-bench load [--concurrency 64] [--duration 300s] [--fanout 10] [--child-rlms]
//!     sudo target/release/rlm-bench churn [--sessions 1000]
//!
//! * `sandbox` measures the sandbox agent against its targets and against
//!   baselines run in the same process on the same machine, and prints a
//!   Markdown table (medians and p95);
//! * `engine` measures the engine (orchestrator + agent + the shared fake
//!   model) through the public gRPC API; see [`engine`];
//! * `load` is the load and soak run (concurrent completions for minutes,
//!   latency percentiles, the services' RSS and fds over time); see [`load`];
//! * `churn` creates and destroys sessions one after the other against the
//!   agent alone and checks that nothing grows; see [`churn`].

mod args;
mod churn;
mod echo;
mod engine;
mod host;
mod load;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use rlm_e2e::sandbox::{CellStream, Sandbox};
use rlm_e2e::{Service, wait_serving};
use rlm_proto::rlm::sandbox::v1::*;

struct Stats {
    samples: Vec<Duration>,
}

impl Stats {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self { samples }
    }
    fn pct(&self, p: f64) -> Duration {
        let index = ((self.samples.len() as f64 - 1.0) * p).round() as usize;
        self.samples[index.min(self.samples.len() - 1)]
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

struct Table {
    rows: Vec<String>,
}

impl Table {
    fn row(&mut self, what: &str, stats: &Stats, target: &str) {
        let line = format!(
            "| {what} | {} | {} | {} | {target} |",
            ms(stats.pct(0.5)),
            ms(stats.pct(0.95)),
            stats.samples.len()
        );
        println!("{line}");
        self.rows.push(line);
    }
}

fn time_command(program: &str, args: &[&str], n: usize) -> Option<Stats> {
    let mut samples = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let status = Command::new(program).args(args).status().ok()?;
        if !status.success() {
            return None;
        }
        samples.push(started.elapsed());
    }
    Some(Stats::new(samples))
}

fn session_memory(cgroup: &str) -> (u64, u64) {
    // Sum of the session cgroups' memory charge, and of the processes' PSS.
    let mut charged = 0;
    let mut pss = 0;
    if let Ok(entries) = std::fs::read_dir(format!("/sys/fs/cgroup/memory/{cgroup}")) {
        for entry in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            charged += std::fs::read_to_string(entry.path().join("memory.usage_in_bytes"))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_default();
            let procs =
                std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                    .unwrap_or_default();
                pss += rollup
                    .lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .unwrap_or_default()
                    * 1024;
            }
        }
    }
    (charged, pss)
}

/// Round trips of one cell on an open Execute stream to `rlm-bench
/// echo-server` (this binary, another process), which answers at once.
async fn echo_floor(dir: &std::path::Path, cells: usize) -> anyhow::Result<Vec<Duration>> {
    let address = format!("unix://{}", dir.join("echo.sock").display());
    let server = Service::start(
        "rlm-bench",
        dir,
        &HashMap::new(),
        &["echo-server", "--listen", &address],
    );
    wait_serving(&address, &server).await;
    let mut echo = Sandbox::connect(&address).await;
    let (mut stream, _) = CellStream::open(&mut echo, "echo", "y = 0").await?;
    let mut rtt = Vec::with_capacity(cells);
    for _ in 0..cells {
        let started = Instant::now();
        stream.run("echo", "x = x + 1").await?;
        rtt.push(started.elapsed());
    }
    Ok(rtt)
}

async fn sandbox_bench(iterations: usize) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the sandbox bench needs root (the agent isolates sessions)");
    }
    let dir = tempfile::tempdir()?;
    let cgroup = format!("rlm-bench-{}", std::process::id());
    let address = format!("unix://{}", dir.path().join("sock").display());
    let env = HashMap::from([
        ("RLM_AGENT_LISTEN".to_owned(), address.clone()),
        (
            "RLM_AGENT_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("RLM_AGENT_CGROUP".to_owned(), cgroup.clone()),
        ("RLM_AGENT_POOL_SIZE".to_owned(), "8".to_owned()),
        ("RLM_AGENT_MAX_SESSIONS".to_owned(), "300".to_owned()),
        ("RLM_LOG".to_owned(), "warn".to_owned()),
    ]);
    let agent = Service::start("rlm-sandbox-agent", dir.path(), &env, &[]);
    wait_serving(&address, &agent).await;
    let mut sandbox = Sandbox::connect(&address).await;
    let mut table = Table { rows: Vec::new() };
    println!("| measurement | median ms | p95 ms | n | target |");
    println!("|---|---|---|---|---|");

    // Baselines: a Python start, plain and under other isolators, without and
    // with `site` (sessions run with it, so that is the like-for-like row).
    let python = "/usr/bin/python3";
    let unshare = ["--pid", "--fork", "--net", "--mount", "--ipc", "--uts"];
    let bwrap = [
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--unshare-all",
        "--die-with-parent",
    ];
    for (flags, label) in [(&["-I", "-S"][..], "-I -S"), (&["-I"][..], "-I")] {
        let code = [flags, &["-c", "pass"]].concat();
        let runs = [
            ("plain", python, code.clone()),
            (
                "`unshare -pnmiu --fork`",
                "unshare",
                [&unshare[..], &[python], &code].concat(),
            ),
            (
                "bubblewrap `--unshare-all`",
                "bwrap",
                [&bwrap[..], &[python], &code].concat(),
            ),
        ];
        for (how, program, args) in runs {
            if let Some(stats) = time_command(program, &args, iterations.min(30)) {
                table.row(
                    &format!("baseline: `python3 {label} -c pass`, {how}"),
                    &stats,
                    "–",
                );
            }
        }
    }

    // Warm: a default-profile session handed out by the pool.
    let mut warm = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..iterations.min(50) {
        sandbox.wait_pool_ready(0, 1).await?;
        let started = Instant::now();
        let created = sandbox.create(None, Vec::new()).await;
        warm.push(started.elapsed());
        if !created.from_warm_pool {
            bail!("expected a warm session");
        }
        ids.push(created.session_id);
    }
    table.row(
        "CreateSession from the warm pool",
        &Stats::new(warm),
        "≤ 1 ms",
    );
    for id in ids.drain(..) {
        sandbox.destroy(&id).await;
    }

    // Other memory, CPU and pids limits: a pool session whose cgroup is re-limited.
    let mut relimited = Vec::new();
    for _ in 0..iterations.min(50) {
        sandbox.wait_pool_ready(0, 1).await?;
        let started = Instant::now();
        let created = sandbox
            .create(
                Some(SessionLimits {
                    memory_bytes: 256 << 20,
                    cpu_millicores: 500,
                    max_pids: 32,
                    ..Default::default()
                }),
                Vec::new(),
            )
            .await;
        relimited.push(started.elapsed());
        if !created.from_warm_pool {
            bail!("expected a re-limited warm session");
        }
        ids.push(created.session_id);
    }
    table.row(
        "CreateSession, other limits: a pool session re-limited",
        &Stats::new(relimited),
        "–",
    );
    for id in ids.drain(..) {
        sandbox.destroy(&id).await;
    }

    // Cold: other mounts (the tmpfs size), so every session starts a process.
    // The warm pool refills first, so its starts do not compete with the
    // measured ones.
    sandbox.wait_pool_ready(0, 8).await?;
    let cold_limits = SessionLimits {
        tmpfs_bytes: 32 << 20,
        ..Default::default()
    };
    let mut cold = Vec::new();
    for _ in 0..iterations.min(30) {
        let started = Instant::now();
        let created = sandbox.create(Some(cold_limits.clone()), Vec::new()).await;
        cold.push(started.elapsed());
        ids.push(created.session_id);
    }
    table.row(
        "CreateSession cold (isolated process to READY)",
        &Stats::new(cold),
        "≤ 15 ms",
    );
    for id in ids.drain(..) {
        sandbox.destroy(&id).await;
    }

    // Execute round trip.
    let id = sandbox.session().await;
    sandbox.run(&id, "x = 0").await.ok();
    let mut rtt = Vec::new();
    let mut inside = Vec::new();
    for _ in 0..(iterations * 10).max(200) {
        let started = Instant::now();
        let run = sandbox.run(&id, "x = x + 1").await;
        rtt.push(started.elapsed());
        if run.result.error.is_some() {
            bail!("x = x + 1 failed: {:?}", run.result);
        }
        let wall = run.result.wall_duration.unwrap_or_default();
        inside.push(Duration::new(wall.seconds as u64, wall.nanos as u32));
    }
    let mut open_rtt = Vec::new();
    let (mut stream, _) = CellStream::open(&mut sandbox, &id, "y = 0").await?;
    for _ in 0..(iterations * 10).max(200) {
        let started = Instant::now();
        let run = stream.run(&id, "x = x + 1").await?;
        open_rtt.push(started.elapsed());
        if run.result.error.is_some() {
            bail!("x = x + 1 failed: {:?}", run.result);
        }
    }
    drop(stream);
    table.row(
        "Execute `x = x + 1` on an open Execute stream",
        &Stats::new(open_rtt),
        "≤ 0.3 ms",
    );
    let echo_rtt = echo_floor(dir.path(), (iterations * 10).max(200)).await?;
    table.row(
        "floor: the same stream against an echo server (gRPC alone)",
        &Stats::new(echo_rtt),
        "–",
    );
    let mut unary = Vec::new();
    for _ in 0..(iterations * 10).max(200) {
        let started = Instant::now();
        sandbox
            .client
            .list_sessions(ListSessionsRequest::default())
            .await?;
        unary.push(started.elapsed());
    }
    table.row(
        "floor: a unary gRPC call (ListSessions), same socket",
        &Stats::new(unary),
        "–",
    );
    table.row(
        "Execute inside the agent: EXEC frame to DONE",
        &Stats::new(inside),
        "–",
    );
    table.row(
        "Execute `x = x + 1` round trip (Unix socket)",
        &Stats::new(rtt),
        "≤ 0.3 ms",
    );

    // 1 MB of output.
    let big = sandbox
        .create(
            Some(SessionLimits {
                output_cap_bytes: 4 << 20,
                ..Default::default()
            }),
            Vec::new(),
        )
        .await
        .session_id;
    sandbox
        .run(&big, "import sys\nblock = 'x' * (1 << 20)")
        .await
        .ok();
    let mut output = Vec::new();
    for _ in 0..iterations.min(30) {
        let started = Instant::now();
        let run = sandbox
            .run(&big, "sys.stdout.write(block); sys.stdout.flush()")
            .await;
        output.push(started.elapsed());
        if run.stdout.len() != 1 << 20 {
            bail!("got {} bytes of output", run.stdout.len());
        }
    }
    table.row(
        "1 MB of output streamed to the client",
        &Stats::new(output),
        "≤ 10 ms",
    );
    sandbox.destroy(&big).await;

    // 100 MB context: upload, then the first len(context) in a new session.
    let mut context = Vec::new();
    for round in 0..3u8 {
        let data = vec![b'a' + round; 100 << 20];
        let started = Instant::now();
        let chunks: Vec<PutContextRequest> = data
            .chunks(4 << 20)
            .map(|c| PutContextRequest {
                chunk: c.to_vec(),
                ..Default::default()
            })
            .collect();
        let stored = sandbox
            .client
            .put_context(futures::stream::iter(chunks))
            .await?
            .into_inner();
        let session = sandbox
            .create(None, vec![stored.context_id])
            .await
            .session_id;
        let run = sandbox.run(&session, "print(len(context))").await;
        context.push(started.elapsed());
        if run.out().trim() != (100u64 << 20).to_string() {
            bail!("len(context) printed {:?}", run.out());
        }
        sandbox.destroy(&session).await;
    }
    table.row(
        "100 MB PutContext + first `len(context)`",
        &Stats::new(context),
        "≤ 1500 ms",
    );

    // 256 idle sessions.
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(sandbox.session().await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (charged, pss) = session_memory(&cgroup);
    let line = format!(
        "| 256 idle sessions: memory charged to their cgroups / sum of PSS | {:.0} MiB / {:.0} MiB | – | 256 | ≤ 3072 MiB |",
        charged as f64 / 1048576.0,
        pss as f64 / 1048576.0
    );
    println!("{line}");
    for id in idle {
        sandbox.destroy(&id).await;
    }
    let _ = sandbox.destroy(&id).await;
    drop(agent);
    Ok(())
}

const USAGE: &str = "usage:
  rlm-bench sandbox [--iterations N]
  rlm-bench engine [--iterations N]
  rlm-bench load [--concurrency 64] [--duration 300s] [--fanout 10] [--max-parallel 8]
                 [--pool-size 16] [--latency-ms 0] [--sample-every 10s] [--linger 0s]
                 [--child-rlms]
  rlm-bench churn [--sessions 1000] [--every 100] [--pool-size 4] [--cold] [--no-execute]
  rlm-bench echo-server --listen unix:///path   (used by `sandbox`: the gRPC floor)";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv
        .iter()
        .any(|a| matches!(a.as_str(), "help" | "--help" | "-h"))
    {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    }
    // `{:#}`: the error and its causes on one line, without a backtrace.
    match run(&argv).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rlm-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(argv: &[String]) -> anyhow::Result<()> {
    let Some((command, rest)) = argv.split_first() else {
        bail!("{USAGE}");
    };
    match command.as_str() {
        "sandbox" => {
            let args = args::Args::parse(rest, &["--iterations"], &[])?;
            sandbox_bench(args.number("--iterations", 50)?).await
        }
        "engine" => {
            let args = args::Args::parse(rest, &["--iterations"], &[])?;
            engine::bench(args.number("--iterations", 10)?.max(1)).await
        }
        "load" => load::run(load::Options::parse(rest)?).await,
        "churn" => churn::run(churn::Options::parse(rest)?).await,
        "echo-server" => {
            let args = args::Args::parse(rest, &["--listen"], &[])?;
            let listen = args
                .value("--listen")
                .ok_or_else(|| anyhow::anyhow!("echo-server needs --listen unix:///path"))?;
            echo::serve(listen).await
        }
        other => bail!("unknown subcommand {other:?}\n{USAGE}"),
    }
}
