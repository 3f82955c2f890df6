//! `rlm-bench churn`: session churn against the agent alone. Starts the
//! agent (the binary next to this one; own cgroup parent, warm pool of
//! `--pool-size`), then creates and destroys `--sessions` sessions one after
//! the other: CreateSession (default profile, so from the warm pool when it
//! has one ready; `--cold`: a 32 MiB tmpfs, other mounts than any pool's, so
//! every session is started on the request path), one cell `x = 1` on an Execute
//! stream (`--no-execute` skips it), DestroySession.
//!
//! Before the first session and after every `--every` sessions it waits for
//! the agent to be idle (no live session, the warm pool full), then records
//! the session cgroups under the agent's parent in every mounted hierarchy
//! (`<mount point>/<parent>/…`, v1 controllers and cgroup2), the host's
//! mount table (`/proc/self/mountinfo`: all lines, and the lines naming the
//! run's directory or cgroup), the agent's own mount table, its open
//! descriptors, threads, RSS and descendant processes, the entries of its
//! data directory, and the host-wide count of memory cgroups
//! (`/proc/cgroups`, which includes removed cgroups the kernel has not
//! freed yet). Prints a table and a verdict; exits non-zero on growth.
//!
//! The counts must come back exactly to their value before the first
//! session (the warm pool's own sessions are in both). Threads are
//! compared between two settled rows (11 s idle, so the runtime's idle
//! blocking threads have exited): before the first session and after the
//! last. Descriptors and RSS are compared from the first checkpoint (after
//! the agent's one-time lazy set-up) to the last, RSS with a tolerance of
//! max(1 MiB, 2 %).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rlm_e2e::sandbox::Sandbox;
use rlm_e2e::{Service, wait_serving};
use rlm_proto::rlm::sandbox::v1::*;

use crate::Stats;
use crate::args::Args;
use crate::host;

/// Longer than the keep-alive of the runtime's idle blocking threads (10 s).
const SETTLE: Duration = Duration::from_secs(11);

pub struct Options {
    sessions: usize,
    every: usize,
    pool_size: u32,
    cold: bool,
    execute: bool,
}

impl Options {
    pub fn parse(argv: &[String]) -> anyhow::Result<Self> {
        let args = Args::parse(
            argv,
            &["--sessions", "--every", "--pool-size"],
            &["--cold", "--no-execute"],
        )?;
        let options = Self {
            sessions: args.number("--sessions", 1000)?,
            every: args.number("--every", 100)?,
            pool_size: args.number("--pool-size", 4)?,
            cold: args.switch("--cold"),
            execute: !args.switch("--no-execute"),
        };
        if options.sessions == 0 || options.every == 0 {
            bail!("--sessions and --every must be at least 1");
        }
        Ok(options)
    }
}

#[derive(Clone, Debug)]
struct Checkpoint {
    sessions: usize,
    cgroups: usize,
    hierarchies: usize,
    host_mounts: usize,
    host_mounts_ours: usize,
    agent_mounts: usize,
    fds: usize,
    threads: u64,
    rss_kib: u64,
    processes: usize,
    data_entries: usize,
    memory_cgroups: u64,
    load: String,
}

struct Agent {
    pid: i32,
    cgroup: String,
    dir: std::path::PathBuf,
    sandbox: Sandbox,
    pool_size: u32,
}

impl Agent {
    /// Waits up to 30 s for no live session and a full warm pool.
    async fn wait_idle(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self
                .sandbox
                .client
                .get_info(GetInfoRequest {})
                .await?
                .into_inner();
            let ready: u32 = info.pools.iter().map(|p| p.ready).sum();
            if info.live_sessions == 0 && ready >= self.pool_size {
                // Let a refill that just finished settle (its cgroup is made
                // before the session is counted ready).
                tokio::time::sleep(Duration::from_millis(300)).await;
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent is not idle after 30 s: {} live sessions, {ready} of {} warm",
                    info.live_sessions,
                    self.pool_size
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn checkpoint(&self, sessions: usize) -> Checkpoint {
        let (cgroups, hierarchies) = host::session_cgroups(&self.cgroup);
        let dir = self.dir.display().to_string();
        Checkpoint {
            sessions,
            cgroups,
            hierarchies,
            host_mounts: host::mounts(None),
            host_mounts_ours: host::mounts_mentioning(&dir) + host::mounts_mentioning(&self.cgroup),
            agent_mounts: host::mounts(Some(self.pid)),
            fds: host::fds(self.pid),
            threads: host::threads(self.pid),
            rss_kib: host::rss_kib(self.pid),
            processes: host::descendants(self.pid),
            data_entries: host::entries_below(&self.dir.join("data")),
            memory_cgroups: host::memory_num_cgroups(),
            load: host::load_average(),
        }
    }
}

fn print_header() {
    println!(
        "| sessions | session cgroups (hierarchies) | host mounts (ours) | agent mounts | agent fds | agent threads | agent RSS MiB | agent processes | data dir entries | host memory cgroups | load |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(label: &str, c: &Checkpoint) {
    println!(
        "| {label} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} |",
        c.cgroups,
        c.hierarchies,
        c.host_mounts,
        c.host_mounts_ours,
        c.agent_mounts,
        c.fds,
        c.threads,
        host::mib(c.rss_kib),
        c.processes,
        c.data_entries,
        c.memory_cgroups,
        c.load
    );
}

/// One line of the verdict: (metric, from, to, grew).
fn verdict_line(what: &str, from: i64, to: i64, n: usize, grew: bool) -> String {
    let delta = to - from;
    let per_100 = delta as f64 * 100.0 / n.max(1) as f64;
    format!(
        "- {what}: {from} → {to} ({delta:+} over {n} sessions, {per_100:+.2} per 100): {}",
        if grew { "GROWTH" } else { "no growth" }
    )
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the churn run needs root (the agent isolates sessions)");
    }
    crate::engine::warn_unless_release("churn");
    let dir = tempfile::tempdir()?;
    let cgroup = format!("rlm-bench-churn-{}", std::process::id());
    let address = format!("unix://{}", dir.path().join("sock").display());
    let env = HashMap::from([
        ("RLM_AGENT_LISTEN".to_owned(), address.clone()),
        (
            "RLM_AGENT_DATA_DIR".to_owned(),
            dir.path().join("data").display().to_string(),
        ),
        ("RLM_AGENT_CGROUP".to_owned(), cgroup.clone()),
        ("RLM_AGENT_POOL_SIZE".to_owned(), o.pool_size.to_string()),
        ("RLM_AGENT_MAX_SESSIONS".to_owned(), "64".to_owned()),
        ("RLM_LOG".to_owned(), "warn".to_owned()),
    ]);
    let service = Service::start("rlm-sandbox-agent", dir.path(), &env, &[]);
    wait_serving(&address, &service).await;
    let mut agent = Agent {
        pid: service.pid(),
        cgroup: cgroup.clone(),
        dir: dir.path().to_owned(),
        sandbox: Sandbox::connect(&address).await,
        pool_size: o.pool_size,
    };
    let limits = o.cold.then(|| SessionLimits {
        tmpfs_bytes: 32 << 20,
        ..Default::default()
    });

    println!("## rlm-bench churn");
    println!();
    println!(
        "{} sessions created and destroyed one after the other ({}{}); agent pid {}, cgroup parent {cgroup}, \
         RLM_AGENT_POOL_SIZE={}; binaries in {}; load average at start {}",
        o.sessions,
        if o.cold {
            "cold: a 32 MiB tmpfs, which no pool serves"
        } else {
            "default profile, from the warm pool when one is ready"
        },
        if o.execute {
            ", one cell `x = 1` each"
        } else {
            ", no cell"
        },
        agent.pid,
        o.pool_size,
        rlm_e2e::binary("rlm-sandbox-agent")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        host::load_average()
    );
    println!();
    print_header();

    agent.wait_idle().await?;
    tokio::time::sleep(SETTLE).await;
    let mut checkpoints = vec![agent.checkpoint(0)];
    print_row("0", &checkpoints[0]);
    let (mut create, mut execute, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    let (mut warm, mut cold) = (0usize, 0usize);
    let started = Instant::now();
    for n in 1..=o.sessions {
        let t = Instant::now();
        let created = agent
            .sandbox
            .client
            .create_session(CreateSessionRequest {
                limits: limits.clone(),
                ..Default::default()
            })
            .await
            .with_context(|| format!("CreateSession #{n}\n{}", service.log_text()))?
            .into_inner();
        create.push(t.elapsed());
        if created.from_warm_pool {
            warm += 1;
        } else {
            cold += 1;
        }
        let id = created.session_id;
        if o.execute {
            let t = Instant::now();
            let run = agent.sandbox.run(&id, "x = 1").await;
            execute.push(t.elapsed());
            if run.result.error.is_some() || run.result.session_ended {
                bail!("session #{n}: `x = 1` failed: {:?}", run.result);
            }
        }
        let t = Instant::now();
        let existed = agent
            .sandbox
            .client
            .destroy_session(DestroySessionRequest {
                session_id: id.clone(),
            })
            .await
            .with_context(|| format!("DestroySession #{n}"))?
            .into_inner()
            .existed;
        destroy.push(t.elapsed());
        if !existed {
            bail!("DestroySession #{n} ({id}): the agent did not know the session");
        }
        if n % o.every == 0 || n == o.sessions {
            agent.wait_idle().await?;
            let c = agent.checkpoint(n);
            print_row(&n.to_string(), &c);
            checkpoints.push(c);
        }
    }
    let elapsed = started.elapsed();
    // The runtime's idle blocking threads exit after 10 s: the last row is
    // taken once they have, so threads compare like for like.
    tokio::time::sleep(SETTLE).await;
    let settled = agent.checkpoint(o.sessions);
    print_row(
        &format!("{} (+{} s idle)", o.sessions, SETTLE.as_secs()),
        &settled,
    );
    checkpoints.push(settled);

    println!();
    println!(
        "{} sessions in {:.1} s ({warm} from the warm pool, {cold} started on request); p50 / p99 ms: \
         CreateSession {} / {}, {}DestroySession {} / {}",
        o.sessions,
        elapsed.as_secs_f64(),
        crate::ms(Stats::new(create.clone()).pct(0.5)),
        crate::ms(Stats::new(create).pct(0.99)),
        if execute.is_empty() {
            String::new()
        } else {
            format!(
                "Execute `x = 1` {} / {}, ",
                crate::ms(Stats::new(execute.clone()).pct(0.5)),
                crate::ms(Stats::new(execute).pct(0.99))
            )
        },
        crate::ms(Stats::new(destroy.clone()).pct(0.5)),
        crate::ms(Stats::new(destroy).pct(0.99)),
    );
    println!();

    // Verdict.
    let first = &checkpoints[0];
    let warmed = checkpoints.get(1).unwrap_or(first);
    let last = checkpoints.last().unwrap_or(first);
    let n = last.sessions;
    let n_warmed = last.sessions - warmed.sessions;
    let exact = [
        (
            "session cgroups (all hierarchies)",
            first.cgroups as i64,
            last.cgroups as i64,
        ),
        (
            "host mount table lines",
            first.host_mounts as i64,
            last.host_mounts as i64,
        ),
        (
            "host mounts naming this run",
            first.host_mounts_ours as i64,
            last.host_mounts_ours as i64,
        ),
        (
            "agent mount table lines",
            first.agent_mounts as i64,
            last.agent_mounts as i64,
        ),
        (
            "agent descendant processes",
            first.processes as i64,
            last.processes as i64,
        ),
        (
            "agent data dir entries",
            first.data_entries as i64,
            last.data_entries as i64,
        ),
    ];
    let mut lines = Vec::new();
    let mut growth = Vec::new();
    for (what, from, to) in exact {
        let grew = to > from;
        lines.push(verdict_line(what, from, to, n, grew));
        if grew {
            growth.push(what);
        }
    }
    let (from, to) = (warmed.fds as i64, last.fds as i64);
    let grew = to > from;
    lines.push(verdict_line(
        &format!("agent fds (from {} sessions)", warmed.sessions),
        from,
        to,
        n_warmed,
        grew,
    ));
    if grew {
        growth.push("agent fds");
    }
    let (from, to) = (first.threads as i64, last.threads as i64);
    let grew = to > from;
    lines.push(verdict_line(
        &format!(
            "agent threads (before the first session → {} s after the last)",
            SETTLE.as_secs()
        ),
        from,
        to,
        n,
        grew,
    ));
    if grew {
        growth.push("agent threads");
    }
    let (from, to) = (warmed.rss_kib as i64, last.rss_kib as i64);
    let tolerance = 1024.max(from / 50);
    let grew = to - from > tolerance;
    lines.push(format!(
        "- agent RSS (from {} sessions): {} → {} MiB ({:+.1} MiB over {n_warmed} sessions; tolerance {:.1} MiB): {}",
        warmed.sessions,
        host::mib(from as u64),
        host::mib(to as u64),
        (to - from) as f64 / 1024.0,
        tolerance as f64 / 1024.0,
        if grew { "GROWTH" } else { "no growth" }
    ));
    if grew {
        growth.push("agent RSS");
    }
    let (from, to) = (first.memory_cgroups as i64, last.memory_cgroups as i64);
    lines.push(format!(
        "- host memory cgroups (/proc/cgroups, host-wide, includes other processes' cgroups and removed ones not yet freed; informational): {from} → {to} ({:+})",
        to - from
    ));
    println!("Verdict:");
    println!();
    for line in &lines {
        println!("{line}");
    }
    println!();
    drop(service);
    // The agent removes its session cgroups when it stops; its parent
    // directories (`<hierarchy>/<parent>`) are listed here when left behind.
    let (left, parents) = host::session_cgroups(&cgroup);
    println!(
        "After the agent stopped (SIGTERM): {left} session cgroups, the parent `{cgroup}` left in {parents} hierarchies."
    );
    println!();
    if growth.is_empty() {
        println!("**No growth** in cgroups, mounts, processes, fds, threads or memory.");
        Ok(())
    } else {
        println!("**GROWTH** in: {}", growth.join(", "));
        bail!("resources grew over {n} sessions: {}", growth.join(", "))
    }
}
