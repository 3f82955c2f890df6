//! Per-session cgroups: every sandbox session runs in its own cgroup with a
//! memory limit (swap included where the kernel can account it), a pids limit
//! and a CPU quota. This module creates those cgroups, attaches processes,
//! reads usage, kills a session's whole process tree, removes the cgroup and
//! reaps cgroups that a crashed agent left behind. It works on cgroup v1 and
//! v2.
//!
//! # Layout
//!
//! Session cgroups live in `<hierarchy>/<parent>/<name>`, where `<hierarchy>`
//! is the cgroup2 mount point (v2) or each v1 controller's mount point (v1:
//! memory, pids, cpu, cpuacct — the last two are often one mount — and the
//! freezer when it is mounted). `<parent>` belongs to the agent: everything
//! under it is considered a session cgroup of this agent.
//!
//! # What the caller must do
//!
//! * Create the cgroup first, then start the session process *blocked* (for
//!   example waiting on a pipe before it `execve`s), call
//!   [`SessionCgroup::add_process`] with its pid, and only then release it.
//!   Anything the process forks afterwards is born inside the cgroup. If
//!   `add_process` fails, kill the process and `remove()` the cgroup.
//! * Call [`SessionCgroup::usage`] *before* [`SessionCgroup::remove`] to get the
//!   final numbers; after removal the counters are gone.
//! * Call [`SessionCgroup::remove`] when the session ends. It blocks (it kills
//!   the processes and waits up to [`KILL_TIMEOUT`] for them to leave); from
//!   async code run it on a blocking thread. There is no `Drop` cleanup: a
//!   cgroup that was never removed is found by [`CgroupRoot::reap_stale`].
//! * Call [`CgroupRoot::reap_stale`] once at start-up, before creating sessions:
//!   it kills and removes *every* session cgroup under the parent.
//! * On v1 there is no group OOM kill: the kernel kills one victim. Treat
//!   `Usage::oom_kills > 0` as fatal for the session and `kill_all()` it.
//! * Processes must not be able to write to cgroupfs (run them unprivileged);
//!   otherwise they could move themselves out of their cgroup.
//! * If the session process gets its own cgroup namespace, create that
//!   namespace *after* `add_process` (e.g. `unshare(CLONE_NEWCGROUP)` in the
//!   released child); a namespace made at clone time is rooted at the agent's
//!   cgroup, not the session's.
//!
//! # cgroups-rs and hand-written parts
//!
//! The controllers of the `cgroups-rs` crate do the work: deleting the
//! directories (`Controller::delete`), attaching processes
//! (`add_task_by_tgid`), memory, swap and swappiness limits (`MemController`),
//! `pids.max` (`PidController`), the v1 CFS quota (`CpuController`) and the
//! freezer (`FreezerController`). They are built directly on paths (not through
//! its `Hierarchy`/`Cgroup` types, which re-read mountinfo, create every
//! mounted v1 controller and hard-wire `/sys/fs/cgroup` for v2), which is also
//! what lets the v2 code run on fixture directories in tests. Written by hand,
//! each marked `by hand:` below, because cgroups-rs lacks it or does it in a
//! way that does not fit:
//! * creating a session directory: an exclusive `mkdir` (cgroups-rs's
//!   `create_dir_all` would silently adopt an existing, possibly populated,
//!   cgroup);
//! * mount detection (cgroups-rs lists only v1 mounts of the live process and
//!   assumes cgroup2 lives at `/sys/fs/cgroup`, so hybrid hosts and fixtures
//!   are out of its reach), and enabling v2 controllers in
//!   `cgroup.subtree_control` (cgroups-rs ignores failures there);
//! * `memory.oom_control = 0` on the v1 parent (cgroups-rs can only disable
//!   the OOM killer),
//!   `memory.oom.group` (v2: absent from cgroups-rs), `cpu.max` (v2:
//!   cgroups-rs does a read-modify-write; we know both values and write once);
//! * `cgroup.kill` (cgroups-rs only offers it on a `Cgroup` bound to its
//!   `/sys/fs/cgroup` hierarchy) and the v2 `cgroup.events` frozen state
//!   (cgroups-rs reads back `cgroup.freeze`, which is only the request);
//! * reading `cgroup.procs` and the usage files: cgroups-rs turns read errors
//!   into empty lists or zeros (an unreadable `cgroup.procs` would look like an
//!   empty cgroup), reads every stat file of a controller at once, and its
//!   `memory.oom_control` parser is positional and panics on surprises.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::cpuacct::CpuAcctController;
use cgroups_rs::fs::error::Error as CgroupsRsError;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Controller, MaxValue, Subsystem};
use cgroups_rs::{CgroupPid, FreezerState};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// CFS period used for every session: 100 ms.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest CPU limit: the kernel's minimum quota is 1 ms per period.
pub const MIN_CPU_MILLICORES: u32 = 10;
/// Smallest memory limit accepted (a smaller one is almost surely a unit mix-up).
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// How long `kill_all` / `remove` wait for the processes to leave the cgroup.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the freezer gets to report "frozen" before killing goes on without it.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(100);
const MAX_NAME_LEN: usize = 64;
/// Controllers a v2 hierarchy must offer (in the order they are enabled).
const V2_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// Controllers that must be mounted on v1.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// Limits of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory limit in bytes (v1 rounds it down to a page multiple). Swap cannot
    /// extend it where [`CgroupRoot::limits_swap`] is true.
    pub memory_bytes: u64,
    /// CPU limit in thousandths of a CPU: quota = millicores × 100 µs per 100 ms.
    pub cpu_millicores: u32,
    /// Maximum number of tasks (processes and threads).
    pub max_pids: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Resource usage of a session so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// CPU time of all processes, in nanoseconds.
    pub cpu_ns: u64,
    /// Peak memory use in bytes (v2 without `memory.peak`: the current use).
    pub memory_peak_bytes: u64,
    /// How many processes the OOM killer killed in the cgroup.
    pub oom_kills: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid session cgroup name {0:?}: expected 1-64 characters from [A-Za-z0-9_-]")]
    InvalidName(String),
    #[error(
        "invalid cgroup parent {0:?}: expected a relative path whose components use [A-Za-z0-9_.-] (not '.' or '..')"
    )]
    InvalidParent(String),
    #[error("invalid limits for session cgroup {name:?}: {reason}")]
    InvalidLimits { name: String, reason: String },
    #[error("no usable cgroup hierarchy with memory, pids and cpu controllers: {0}")]
    Unavailable(String),
    #[error("session cgroup {0} already exists")]
    AlreadyExists(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} {path}: {source}")]
    Controller {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: CgroupsRsError,
    },
    #[error("enabling controllers {controllers} in {path}: {source}{hint}")]
    EnableControllers {
        path: PathBuf,
        controllers: String,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("sending SIGKILL to pid {pid} of cgroup {path}: {source}")]
    Signal {
        pid: i32,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("cgroup {path} contains the agent itself (pid {pid}); refusing to freeze or kill it")]
    ContainsAgent { path: PathBuf, pid: i32 },
    #[error("cgroup {path} still has processes {pids:?} after {waited:?} of killing")]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
    #[error(
        "reaping stale session cgroups under {parent}: removed {reaped}, could not remove {failed:?}: {first}"
    )]
    Reap {
        parent: PathBuf,
        reaped: usize,
        failed: Vec<String>,
        #[source]
        first: Box<CgroupError>,
    },
}

/// Where session cgroups are created: `<hierarchy>/<parent>/`.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    parent: String,
    layout: Layout,
    swap: bool,
}

/// Parent directories (`<mount>/<parent>`) of the hierarchy in use.
#[derive(Debug, Clone)]
enum Layout {
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
        /// Equal to `cpu` when cpu and cpuacct share a mount.
        cpuacct: PathBuf,
        freezer: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
    },
}

impl CgroupRoot {
    /// Detects the hierarchy: v2 if a cgroup2 mount offers the memory, pids
    /// and cpu controllers (they are enabled in `cgroup.subtree_control` down
    /// to `<parent>`), else v1 with memory, pids, cpu and cpuacct mounted (the
    /// freezer is used when mounted). Creates `<parent>` in each hierarchy.
    /// `parent` is a relative path such as `"rlm-sandbox"`. The error lists
    /// what each hierarchy lacks.
    pub fn detect(parent: &str) -> Result<Self, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = read_small(path)?;
        Self::detect_from(&parse_mountinfo(&text), parent)
    }

    fn detect_from(mounts: &[Mount], parent: &str) -> Result<Self, CgroupError> {
        validate_parent(parent)?;
        let mut problems = Vec::new();

        let mut saw_cgroup2 = false;
        for mount in mounts.iter().filter(|m| m.fstype == "cgroup2") {
            saw_cgroup2 = true;
            let file = mount.point.join("cgroup.controllers");
            let available = match read_small(&file) {
                Ok(text) => text,
                Err(err) => {
                    problems.push(format!("cgroup2 mount {}: {err}", mount.point.display()));
                    continue;
                }
            };
            let missing = missing_controllers(&available, &V2_CONTROLLERS);
            if missing.is_empty() {
                return Self::setup_v2(&mount.point, parent);
            }
            problems.push(format!(
                "cgroup2 mount {} lacks {} (its cgroup.controllers lists {:?})",
                mount.point.display(),
                missing.join(", "),
                available.trim()
            ));
        }
        if !saw_cgroup2 {
            problems.push("no cgroup2 mount".to_owned());
        }

        let v1_mount = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == controller))
                .map(|m| m.point.clone())
        };
        let found: Vec<Option<PathBuf>> = V1_CONTROLLERS.iter().map(|c| v1_mount(c)).collect();
        let missing: Vec<&str> = V1_CONTROLLERS
            .iter()
            .zip(&found)
            .filter(|(_, point)| point.is_none())
            .map(|(name, _)| *name)
            .collect();
        if let [Some(memory), Some(pids), Some(cpu), Some(cpuacct)] = found.as_slice() {
            return Self::setup_v1(
                [memory, pids, cpu, cpuacct],
                v1_mount("freezer").as_deref(),
                parent,
            );
        }
        problems.push(format!("cgroup v1 has no mount for {}", missing.join(", ")));
        Err(CgroupError::Unavailable(problems.join("; ")))
    }

    fn setup_v1(
        [memory, pids, cpu, cpuacct]: [&PathBuf; 4],
        freezer: Option<&Path>,
        parent: &str,
    ) -> Result<Self, CgroupError> {
        let layout = Layout::V1 {
            memory: memory.join(parent),
            pids: pids.join(parent),
            cpu: cpu.join(parent),
            cpuacct: cpuacct.join(parent),
            freezer: freezer.map(|f| f.join(parent)),
        };
        let root = CgroupRoot {
            parent: parent.to_owned(),
            layout,
            swap: false,
        };
        for dir in root.parent_dirs() {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        let memory = memory.join(parent);
        let swap = memory.join("memory.memsw.limit_in_bytes").exists();
        // v1 copies oom_kill_disable and swappiness from the parent into each
        // new cgroup, so both are set here once instead of in every session.
        // by hand: cgroups-rs can only disable the OOM killer, not enable it.
        write_file(&memory.join("memory.oom_control"), "0")?;
        if !swap {
            // Without memsw swap cannot be capped; swappiness 0 keeps a v1
            // memcg's anonymous memory out of swap (best effort).
            MemController::new(memory.clone(), memory.clone(), false)
                .set_swappiness(0)
                .map_err(ctl_err("set", memory.join("memory.swappiness")))?;
        }
        Ok(CgroupRoot { swap, ..root })
    }

    fn setup_v2(mount: &Path, parent: &str) -> Result<Self, CgroupError> {
        // by hand: enable the controllers level by level down to <parent>.
        let mut dir = mount.to_path_buf();
        enable_v2_controllers(&dir)?;
        for component in parent.split('/') {
            dir.push(component);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(io_err("create", &dir)(err)),
            }
            let file = dir.join("cgroup.controllers");
            let available = read_small(&file)?;
            let missing = missing_controllers(&available, &V2_CONTROLLERS);
            if !missing.is_empty() {
                return Err(CgroupError::Unavailable(format!(
                    "{} lacks {} after enabling them in its parent",
                    file.display(),
                    missing.join(", ")
                )));
            }
            enable_v2_controllers(&dir)?;
        }
        let swap = dir.join("memory.swap.max").exists();
        Ok(CgroupRoot {
            parent: parent.to_owned(),
            layout: Layout::V2 { dir },
            swap,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self.layout {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// Whether memory limits include swap (v1: `memory.memsw.*` present; v2:
    /// `memory.swap.max` present). Without it, v1 sessions get
    /// `memory.swappiness = 0` instead (best effort).
    pub fn limits_swap(&self) -> bool {
        self.swap
    }

    /// The parent name given to [`CgroupRoot::detect`].
    pub fn parent(&self) -> &str {
        &self.parent
    }

    /// The `<parent>` directory in each hierarchy used (one on v2).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                for dir in [
                    Some(memory),
                    Some(pids),
                    Some(cpu),
                    Some(cpuacct),
                    freezer.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    if !dirs.contains(dir) {
                        dirs.push(dir.clone());
                    }
                }
            }
            Layout::V2 { dir } => dirs.push(dir.clone()),
        }
        dirs
    }

    /// Creates the session cgroup `name` with `limits`: memory limit (and
    /// memsw / `memory.swap.max = 0` so swap cannot extend it where the kernel
    /// accounts swap), `pids.max`, CFS quota `millicores × 100 µs` per 100 ms,
    /// and the OOM killer enabled (v2: `memory.oom.group = 1`, so the whole
    /// session dies together). On failure nothing is left behind.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<SessionCgroup, CgroupError> {
        validate_name(name)?;
        validate_limits(name, limits)?;
        let session = self.session(name);
        let mut created: Vec<&Path> = Vec::with_capacity(session.members.len());
        let mut result = Ok(());
        for member in &session.members {
            // by hand: an exclusive mkdir. cgroups-rs's Controller::create is
            // create_dir_all, which would silently adopt an existing (possibly
            // stale and populated) cgroup.
            let dir = member.to_controller().path();
            match fs::create_dir(dir) {
                Ok(()) => created.push(dir),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    result = Err(CgroupError::AlreadyExists(dir.to_path_buf()));
                    break;
                }
                Err(err) => {
                    result = Err(io_err("create", dir)(err));
                    break;
                }
            }
        }
        if let Err(err) = result.and_then(|()| session.apply_limits(limits)) {
            for dir in created.iter().rev() {
                if let Err(cleanup) = fs::remove_dir(dir) {
                    tracing::warn!(cgroup = %dir.display(), error = %cleanup, "cleanup after failed create");
                }
            }
            return Err(err);
        }
        tracing::debug!(cgroup = %name, ?limits, version = ?session.version, "session cgroup created");
        Ok(session)
    }

    /// Finds session cgroups left under the parent (by a crashed agent), kills
    /// their processes and removes them; returns how many were removed.
    /// Directories whose names are not valid session names are left alone.
    pub fn reap_stale(&self) -> Result<usize, CgroupError> {
        let mut names = BTreeSet::new();
        for dir in self.parent_dirs() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(io_err("list", &dir)(err)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list", &dir))?;
                let is_dir = entry
                    .file_type()
                    .map_err(io_err("stat", &entry.path()))?
                    .is_dir();
                if !is_dir {
                    continue;
                }
                match entry.file_name().to_str() {
                    Some(name) if validate_name(name).is_ok() => {
                        names.insert(name.to_owned());
                    }
                    _ => {
                        tracing::warn!(path = %entry.path().display(), "not a session cgroup name; left alone")
                    }
                }
            }
        }
        let mut reaped = 0;
        let mut failed = Vec::new();
        let mut first = None;
        for name in names {
            let session = self.session(&name);
            // A crash between freeze and thaw leaves the cgroup frozen, and
            // frozen v1 processes do not die of SIGKILL until thawed.
            if let Some(freezer) = session.freezer.as_ref().filter(|f| f.path().is_dir())
                && let Err(err) = freezer.thaw()
            {
                tracing::warn!(cgroup = %freezer.path().display(), error = %err, "thaw before reaping");
            }
            match session.remove() {
                Ok(()) => {
                    tracing::info!(cgroup = %name, "removed stale session cgroup");
                    reaped += 1;
                }
                Err(err) => {
                    failed.push(name);
                    first.get_or_insert(err);
                }
            }
        }
        match first {
            None => Ok(reaped),
            Some(first) => Err(CgroupError::Reap {
                parent: self.parent_dirs().into_iter().next().unwrap_or_default(),
                reaped,
                failed,
                first: Box::new(first),
            }),
        }
    }

    /// A handle on the session cgroup `name` (no I/O; it may not exist).
    fn session(&self, name: &str) -> SessionCgroup {
        let mut members: Vec<Subsystem> = Vec::new();
        let mut push = |sub: Subsystem| {
            let path = sub.to_controller().path().to_path_buf();
            if !members.iter().any(|m| m.to_controller().path() == path) {
                members.push(sub);
            }
        };
        match &self.layout {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
                freezer,
            } => {
                let memory = MemController::new(memory.join(name), memory.clone(), false);
                let pids = PidController::new(pids.join(name), pids.clone(), false);
                let cpu = CpuController::new(cpu.join(name), cpu.clone(), false);
                let cpuacct = CpuAcctController::new(cpuacct.join(name), cpuacct.clone());
                let freezer = freezer
                    .as_ref()
                    .map(|f| FreezerController::new(f.join(name), f.clone(), false));
                push(Subsystem::Mem(memory.clone()));
                push(Subsystem::Pid(pids.clone()));
                push(Subsystem::Cpu(cpu.clone()));
                push(Subsystem::CpuAcct(cpuacct.clone()));
                if let Some(freezer) = &freezer {
                    push(Subsystem::Freezer(freezer.clone()));
                }
                SessionCgroup {
                    name: name.to_owned(),
                    version: CgroupVersion::V1,
                    swap: self.swap,
                    memory,
                    pids,
                    cpu,
                    cpuacct: Some(cpuacct),
                    freezer,
                    members,
                    counters: Default::default(),
                }
            }
            Layout::V2 { dir } => {
                let path = dir.join(name);
                let memory = MemController::new(path.clone(), dir.clone(), true);
                let pids = PidController::new(path.clone(), dir.clone(), true);
                let cpu = CpuController::new(path.clone(), dir.clone(), true);
                let freezer = FreezerController::new(path, dir.clone(), true);
                push(Subsystem::Mem(memory.clone()));
                SessionCgroup {
                    name: name.to_owned(),
                    version: CgroupVersion::V2,
                    swap: self.swap,
                    memory,
                    pids,
                    cpu,
                    cpuacct: None,
                    freezer: Some(freezer),
                    members,
                    counters: Default::default(),
                }
            }
        }
    }

    #[cfg(test)]
    fn without_freezer(mut self) -> Self {
        if let Layout::V1 { freezer, .. } = &mut self.layout {
            *freezer = None;
        }
        self
    }
}

/// One session's cgroup (v1: one directory per hierarchy; v2: one directory).
#[derive(Debug, Clone)]
pub struct SessionCgroup {
    name: String,
    version: CgroupVersion,
    swap: bool,
    memory: MemController,
    pids: PidController,
    cpu: CpuController,
    /// v1 only (its directory equals the cpu one when co-mounted).
    cpuacct: Option<CpuAcctController>,
    /// v1: when the freezer hierarchy is mounted; v2: always (core feature).
    freezer: Option<FreezerController>,
    /// One controller per distinct directory, in attach order.
    members: Vec<Subsystem>,
    /// The files `usage()` reads, once opened.
    counters: std::sync::Arc<std::sync::Mutex<Option<Counters>>>,
}

/// The counter files of one cgroup, kept open.
#[derive(Debug)]
struct Counters {
    cpu: Counter,
    /// What one unit of `cpu` is in nanoseconds (v2 counts microseconds).
    cpu_ns_per_unit: u64,
    peak: Counter,
    oom: Counter,
}

impl Counters {
    fn read(&self) -> Result<Usage, CgroupError> {
        let cpu = self.cpu.read()?.ok_or_else(|| CgroupError::Parse {
            path: self.cpu.path.clone(),
            detail: "no usage_usec line".to_owned(),
        })?;
        let memory_peak_bytes = self.peak.read()?.unwrap_or(0);
        Ok(Usage {
            cpu_ns: cpu.saturating_mul(self.cpu_ns_per_unit),
            memory_peak_bytes,
            oom_kills: self.oom.read()?.unwrap_or(0),
        })
    }
}

/// One open counter file: a plain number, or the value of `key` in a
/// flat-keyed file.
#[derive(Debug)]
struct Counter {
    path: PathBuf,
    file: File,
    key: Option<&'static str>,
}

impl Counter {
    fn open(path: PathBuf, key: Option<&'static str>) -> Result<Self, CgroupError> {
        let file = File::open(&path).map_err(io_err("open", &path))?;
        Ok(Self { path, file, key })
    }

    /// The value now (`None`: a keyed file without the key).
    fn read(&self) -> Result<Option<u64>, CgroupError> {
        use std::os::unix::fs::FileExt;
        // Every counter file is a few lines, returned whole by one read
        // (seq_file fills the buffer); 4 KiB is far more than enough.
        let mut buf = [0u8; 4096];
        let len = loop {
            match self.file.read_at(&mut buf, 0) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io_err("read", &self.path)(err)),
            }
        };
        let parse_error = |detail: String| CgroupError::Parse {
            path: self.path.clone(),
            detail,
        };
        if len == buf.len() {
            return Err(parse_error("larger than 4 KiB".to_owned()));
        }
        let text =
            std::str::from_utf8(&buf[..len]).map_err(|_| parse_error("not UTF-8".to_owned()))?;
        match self.key {
            None => parse_u64(&self.path, text).map(Some),
            Some(key) => parse_keyed(text, key).map_err(parse_error),
        }
    }
}

impl SessionCgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup's directories (one per v1 hierarchy, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.members
            .iter()
            .map(|m| m.to_controller().path().to_path_buf())
            .collect()
    }

    /// The `cgroup.procs` files a process must be written to (e.g. by a
    /// privileged helper that places itself before `execve`).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (all its threads) into the cgroup: into every
    /// controller's directory on v1, the one directory on v2. On error the
    /// process may be in some v1 hierarchies only: kill it.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::Io {
                op: "attach",
                path: self.memory.path().join("cgroup.procs"),
                source: io::Error::new(io::ErrorKind::InvalidInput, format!("invalid pid {pid}")),
            });
        }
        let task = CgroupPid::from(pid as u64);
        for member in &self.members {
            let controller = member.to_controller();
            controller.add_task_by_tgid(&task).map_err(ctl_err(
                "attach process to",
                controller.path().join("cgroup.procs"),
            ))?;
        }
        Ok(())
    }

    /// The processes (thread-group ids) in the cgroup, sorted; on v1 the union
    /// over its hierarchies. Zombies are not listed. Empty once removed.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for member in &self.members {
            // by hand: cgroups-rs's procs() reports a failed read as an empty list.
            all.extend(read_procs(
                &member.to_controller().path().join("cgroup.procs"),
            )?);
        }
        Ok(all.into_iter().collect())
    }

    /// CPU time, peak memory and OOM kills so far. v1: `cpuacct.usage`,
    /// `memory.max_usage_in_bytes`, `memory.oom_control` "oom_kill"; v2:
    /// `cpu.stat` "usage_usec" × 1000, `memory.peak` (or `memory.current`
    /// before Linux 5.19), `memory.events` "oom_kill".
    ///
    /// The files are opened on the first call and kept open: this runs after
    /// every cell, and a pread(2) of an open file costs ~1 µs where
    /// open/read/close costs ~7 µs here. A failed reading reopens them.
    pub fn usage(&self) -> Result<Usage, CgroupError> {
        // by hand: see the module doc (cgroups-rs reads every stat file and
        // hides errors as zeros).
        let mut kept = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counters = match kept.take() {
            Some(counters) => counters,
            None => self.open_counters()?,
        };
        let usage = counters.read();
        if usage.is_ok() {
            *kept = Some(counters);
        }
        usage
    }

    fn open_counters(&self) -> Result<Counters, CgroupError> {
        let mem = self.memory.path();
        match self.version {
            CgroupVersion::V1 => {
                let cpuacct = self.cpuacct.as_ref().map_or(self.cpu.path(), |c| c.path());
                Ok(Counters {
                    cpu: Counter::open(cpuacct.join("cpuacct.usage"), None)?,
                    cpu_ns_per_unit: 1,
                    peak: Counter::open(mem.join("memory.max_usage_in_bytes"), None)?,
                    oom: Counter::open(mem.join("memory.oom_control"), Some("oom_kill"))?,
                })
            }
            CgroupVersion::V2 => {
                let peak = match Counter::open(mem.join("memory.peak"), None) {
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        Counter::open(mem.join("memory.current"), None)?
                    }
                    other => other?,
                };
                Ok(Counters {
                    cpu: Counter::open(self.cpu.path().join("cpu.stat"), Some("usage_usec"))?,
                    cpu_ns_per_unit: 1000,
                    peak,
                    oom: Counter::open(mem.join("memory.events"), Some("oom_kill"))?,
                })
            }
        }
    }

    /// Kills every process in the cgroup and returns once it is empty (at
    /// most [`KILL_TIMEOUT`], then `NotEmpty`). A no-op for an empty or
    /// removed cgroup.
    ///
    /// v2 with `cgroup.kill` (Linux 5.14+): the kernel kills the whole cgroup,
    /// forks racing it included. Otherwise SIGKILL goes to every listed
    /// process, repeated on whatever `cgroup.procs` lists until it is empty.
    /// That loop cannot be escaped by forking: the kernel aborts a fork whose
    /// parent has a fatal signal pending, and a parent stays listed until its
    /// fork has placed the child in the cgroup. When a later pass still finds
    /// processes that were not signalled before (forks racing the kill) and a
    /// freezer is available (v1 freezer hierarchy, v2 `cgroup.freeze`), the
    /// cgroup is frozen once, everything listed is killed, and it is thawed.
    /// The freezer is not the first step because on v1 each freeze/thaw
    /// cycle costs ~0.7 ms here (the kernel patches its freezer static key
    /// on every cycle), more than the whole create/attach/remove.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        let started = Instant::now();
        let listed = self.pids_fast()?;
        if listed.is_empty() {
            return Ok(());
        }
        self.refuse_agent(&listed)?;
        let killed_by_kernel = self.version == CgroupVersion::V2 && self.write_cgroup_kill()?;
        if !killed_by_kernel {
            self.signal_all(&listed)?;
        }
        let mut signalled: BTreeSet<i32> = listed.into_iter().collect();
        let mut froze = false;
        let mut round = 0u32;
        loop {
            pause(round);
            round += 1;
            let pids = self.pids_fast()?;
            if pids.is_empty() {
                tracing::debug!(cgroup = %self.name, elapsed = ?started.elapsed(), froze, "session processes killed");
                return Ok(());
            }
            self.refuse_agent(&pids)?;
            let waited = started.elapsed();
            if waited >= KILL_TIMEOUT {
                return Err(CgroupError::NotEmpty {
                    path: self.memory.path().to_path_buf(),
                    pids,
                    waited,
                });
            }
            let racing = pids.iter().any(|p| !signalled.contains(p));
            if racing && !froze && !killed_by_kernel && self.freezer.is_some() {
                froze = true;
                self.freeze_kill_thaw()?;
            } else {
                self.signal_all(&pids)?;
            }
            signalled.extend(pids);
        }
    }

    /// The processes to kill: the first directory's list, and only when that
    /// is empty the union over all of them. `add_process` attaches in member
    /// order and processes cannot move themselves, so the first directory
    /// holds every process of the session; the union read keeps the result
    /// exact even if that ever fails to hold.
    fn pids_fast(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(first) = self.members.first() else {
            return Ok(Vec::new());
        };
        let pids = read_procs(&first.to_controller().path().join("cgroup.procs"))?;
        if pids.is_empty() && self.members.len() > 1 {
            return self.pids();
        }
        Ok(pids)
    }

    /// `kill_all` (which waits, bounded, for the cgroup to empty), then removes
    /// the directories. Idempotent: removing a removed cgroup is a no-op.
    pub fn remove(&self) -> Result<(), CgroupError> {
        self.kill_all()?;
        for member in self.members.iter().rev() {
            let controller = member.to_controller();
            controller
                .delete()
                .map_err(ctl_err("remove cgroup", controller.path().to_path_buf()))?;
        }
        tracing::debug!(cgroup = %self.name, "session cgroup removed");
        Ok(())
    }

    /// Writes the limits into the freshly created directories.
    /// Changes the limits of a cgroup whose processes have not run session
    /// code yet: a warm-pool session handed out for other limits. Refuses
    /// (`InvalidLimits`) when the memory already in use does not fit under
    /// the new limit, instead of letting the kernel reclaim or OOM-kill.
    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        validate_limits(&self.name, limits)?;
        let mem = self.memory.path();
        let in_use = read_u64(&mem.join(match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        }))?;
        if in_use >= limits.memory_bytes {
            return Err(CgroupError::InvalidLimits {
                name: self.name.clone(),
                reason: format!(
                    "{in_use} bytes of memory are in use, more than memory_bytes {}",
                    limits.memory_bytes
                ),
            });
        }
        if self.version == CgroupVersion::V1 && self.swap {
            // memory.memsw.limit_in_bytes may never be below
            // memory.limit_in_bytes: when raising, it goes first.
            let current = read_u64(&mem.join("memory.limit_in_bytes"))?;
            if limits.memory_bytes > current {
                self.memory
                    .set_memswap_limit(limits.memory_bytes as i64) // validated: fits
                    .map_err(ctl_err("set", mem.join("memory.memsw.limit_in_bytes")))?;
            }
        }
        self.apply_limits(limits)
    }

    fn apply_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let mem = self.memory.path();
        let memory = limits.memory_bytes as i64; // validated: fits
        let quota_us = u64::from(limits.cpu_millicores) * 100;
        self.memory
            .set_limit(memory)
            .map_err(ctl_err("set memory limit in", mem.to_path_buf()))?;
        match self.version {
            CgroupVersion::V1 => {
                if self.swap {
                    // memsw = memory + swap; equal to the memory limit means no swap.
                    self.memory
                        .set_memswap_limit(memory)
                        .map_err(ctl_err("set", mem.join("memory.memsw.limit_in_bytes")))?;
                }
                // OOM killer on and (without memsw) swappiness 0: inherited from
                // the parent, see setup_v1. The period of a new v1 cgroup is
                // always the kernel default of 100 ms (not inherited), so only
                // the quota is written.
                self.cpu
                    .set_cfs_quota(quota_us as i64)
                    .map_err(ctl_err("set", self.cpu.path().join("cpu.cfs_quota_us")))?;
            }
            CgroupVersion::V2 => {
                if self.swap {
                    // v2 swap.max is swap alone.
                    self.memory
                        .set_memswap_limit(0)
                        .map_err(ctl_err("set", mem.join("memory.swap.max")))?;
                }
                // by hand: cgroups-rs has no memory.oom.group.
                write_file(&mem.join("memory.oom.group"), "1")?;
                // by hand: one write of "quota period" instead of cgroups-rs's read-modify-write.
                write_file(
                    &self.cpu.path().join("cpu.max"),
                    &format!("{quota_us} {CPU_PERIOD_US}"),
                )?;
            }
        }
        self.pids
            .set_pid_max(MaxValue::Value(i64::from(limits.max_pids)))
            .map_err(ctl_err("set", self.pids.path().join("pids.max")))?;
        Ok(())
    }

    /// by hand: v2 `cgroup.kill` (Linux 5.14+). Ok(false) when the kernel lacks it.
    fn write_cgroup_kill(&self) -> Result<bool, CgroupError> {
        let path = self.memory.path().join("cgroup.kill");
        // No O_CREAT: a missing file means an older kernel, not something to create.
        match OpenOptions::new().write(true).open(&path) {
            Ok(mut file) => {
                file.write_all(b"1").map_err(io_err("write", &path))?;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(io_err("open", &path)(err)),
        }
    }

    /// Freezes the cgroup, SIGKILLs every process listed while it is frozen
    /// (frozen processes cannot fork, so the list is complete), thaws. Falls
    /// back to a plain SIGKILL pass when there is no freezer or freezing fails.
    fn freeze_kill_thaw(&self) -> Result<(), CgroupError> {
        let Some(freezer) = &self.freezer else {
            return self.pids().and_then(|pids| self.signal_all(&pids));
        };
        if let Err(err) = freezer.freeze() {
            tracing::warn!(cgroup = %freezer.path().display(), error = %err, "freeze failed; killing without it");
            return self.pids().and_then(|pids| self.signal_all(&pids));
        }
        if !self.wait_frozen(freezer) {
            tracing::warn!(cgroup = %freezer.path().display(), "not frozen after {FREEZE_TIMEOUT:?}; killing anyway");
        }
        #[cfg(test)]
        tests::FREEZE_PASSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let killed = self.pids().and_then(|pids| self.signal_all(&pids));
        let thawed = freezer
            .thaw()
            .map_err(ctl_err("thaw", freezer.path().to_path_buf()));
        tracing::debug!(cgroup = %self.name, "froze, killed and thawed racing processes");
        killed.and(thawed)
    }

    fn wait_frozen(&self, freezer: &FreezerController) -> bool {
        let deadline = Instant::now() + FREEZE_TIMEOUT;
        let mut pause = Duration::from_micros(20);
        loop {
            let frozen = match self.version {
                CgroupVersion::V1 => matches!(freezer.state(), Ok(FreezerState::Frozen)),
                // by hand: cgroup.freeze only echoes the request; cgroup.events says "frozen 1"
                // once it is done. Without a readable cgroup.events there is nothing to wait for.
                CgroupVersion::V2 => !matches!(
                    read_keyed(&freezer.path().join("cgroup.events"), "frozen"),
                    Ok(Some(0))
                ),
            };
            if frozen {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    fn signal_all(&self, pids: &[i32]) -> Result<(), CgroupError> {
        for &pid in pids {
            if pid <= 1 {
                continue;
            }
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(CgroupError::Signal {
                        pid,
                        path: self.memory.path().to_path_buf(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    fn refuse_agent(&self, pids: &[i32]) -> Result<(), CgroupError> {
        let me = std::process::id() as i32;
        if pids.contains(&me) {
            return Err(CgroupError::ContainsAgent {
                path: self.memory.path().to_path_buf(),
                pid: me,
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Validation

/// Waiting between kill passes: a dying process usually leaves within tens of
/// microseconds, so first just yield (16 rounds), then back off from 50 µs to 5 ms.
fn pause(round: u32) {
    if round < 16 {
        std::thread::yield_now();
    } else {
        let micros = 50u64 << (round - 16).min(7);
        std::thread::sleep(Duration::from_micros(micros.min(5_000)));
    }
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName(name.to_owned()))
    }
}

fn validate_parent(parent: &str) -> Result<(), CgroupError> {
    let ok = !parent.is_empty()
        && parent.len() <= 255
        && parent.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidParent(parent.to_owned()))
    }
}

fn validate_limits(name: &str, limits: &CgroupLimits) -> Result<(), CgroupError> {
    let invalid = |reason: String| {
        Err(CgroupError::InvalidLimits {
            name: name.to_owned(),
            reason,
        })
    };
    if limits.memory_bytes < MIN_MEMORY_BYTES || limits.memory_bytes > i64::MAX as u64 {
        return invalid(format!(
            "memory_bytes {} is outside {MIN_MEMORY_BYTES}..={}",
            limits.memory_bytes,
            i64::MAX
        ));
    }
    if limits.cpu_millicores < MIN_CPU_MILLICORES {
        return invalid(format!(
            "cpu_millicores {} is below {MIN_CPU_MILLICORES} (the kernel's 1 ms minimum quota)",
            limits.cpu_millicores
        ));
    }
    if limits.max_pids == 0 {
        return invalid("max_pids must be at least 1".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Mounts (by hand: cgroups-rs only exposes v1 mounts of the live process)

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    fstype: String,
    super_opts: Vec<String>,
}

/// Parses `/proc/<pid>/mountinfo` (proc(5)): field 5 is the mount point, then
/// optional fields, `-`, the filesystem type, the source and the super options.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let point = before.split(' ').nth(4)?;
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next()?;
            let super_opts = after.next().unwrap_or("");
            Some(Mount {
                point: PathBuf::from(unescape_mount_path(point)),
                fstype: fstype.to_owned(),
                super_opts: super_opts.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn missing_controllers<'a>(available: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    let present: Vec<&str> = available.split_whitespace().collect();
    wanted
        .iter()
        .filter(|c| !present.contains(c))
        .copied()
        .collect()
}

/// by hand: enables the missing wanted controllers in `dir/cgroup.subtree_control`
/// with one write (cgroups-rs writes them one by one and ignores failures).
fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = read_small(&file)?;
    let missing = missing_controllers(&enabled, &V2_CONTROLLERS);
    if missing.is_empty() {
        return Ok(());
    }
    let request = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    write_raw(&file, &request).map_err(|source| {
        let hint = if source.raw_os_error() == Some(Errno::EBUSY as i32) {
            " (this cgroup has member processes: cgroup v2 only lets a cgroup without processes \
             pass controllers on; move them into a leaf cgroup first)"
        } else {
            ""
        };
        CgroupError::EnableControllers {
            path: file.clone(),
            controllers: request.clone(),
            hint,
            source,
        }
    })
}

// ---------------------------------------------------------------------------
// File helpers

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError + use<> {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

fn ctl_err(op: &'static str, path: PathBuf) -> impl FnOnce(CgroupsRsError) -> CgroupError {
    move |source| CgroupError::Controller { op, path, source }
}

/// Reads a small (pseudo-)file with plain read(2) calls (no size probing).
fn read_small(path: &Path) -> Result<String, CgroupError> {
    read_raw(path).map_err(io_err("read", path))
}

fn read_raw(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// One write(2) of `value`. Opens like cgroups-rs (create + truncate, so it also
/// works on fixture directories); cgroupfs answers a missing file with EACCES,
/// so that case is reported as missing.
fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    write_raw(path, value).map_err(|source| {
        let op = if path.exists() {
            "write"
        } else {
            "write (file missing: controller not enabled or kernel too old)"
        };
        CgroupError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse_u64(path, &read_small(path)?)
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        detail: format!("expected an unsigned integer, got {:?}", text.trim()),
    })
}

/// The value of `key` in a flat-keyed file ("key value" per line).
fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let text = read_small(path)?;
    parse_keyed(&text, key).map_err(|detail| CgroupError::Parse {
        path: path.to_path_buf(),
        detail,
    })
}

fn parse_keyed(text: &str, key: &str) -> Result<Option<u64>, String> {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            let value = fields.next().unwrap_or("");
            return value
                .parse()
                .map(Some)
                .map_err(|_| format!("bad value {value:?} for {key}"));
        }
    }
    Ok(None)
}

/// `cgroup.procs`, one pid per line; a missing file (removed cgroup) is empty.
fn read_procs(path: &Path) -> Result<Vec<i32>, CgroupError> {
    let text = match read_raw(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_err("read", path)(err)),
    };
    parse_procs(&text).map_err(|detail| CgroupError::Parse {
        path: path.to_path_buf(),
        detail,
    })
}

fn parse_procs(text: &str) -> Result<Vec<i32>, String> {
    text.split_whitespace()
        .map(|s| s.parse::<i32>().map_err(|_| format!("bad pid {s:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, ExitStatus, Stdio};

    const MIB: u64 = 1 << 20;

    /// How often `freeze_kill_thaw` got as far as freezing (all tests).
    pub(super) static FREEZE_PASSES: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);

    // -----------------------------------------------------------------------
    // Helpers

    fn read(path: &Path) -> String {
        fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    fn write(path: &Path, value: &str) {
        fs::write(path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn mkdir(path: &Path) {
        fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    }

    fn limits(memory_bytes: u64, cpu_millicores: u32, max_pids: u32) -> CgroupLimits {
        CgroupLimits {
            memory_bytes,
            cpu_millicores,
            max_pids,
        }
    }

    fn mountinfo_line(point: &Path, fstype: &str, opts: &str) -> String {
        format!(
            "30 1 0:26 / {} rw,nosuid,nodev,noexec,relatime shared:9 - {fstype} {fstype} {opts}\n",
            point.display()
        )
    }

    /// A directory laid out like a cgroup2 mount whose root offers
    /// `controllers`, with `rlm-sandbox/` already present as the kernel would
    /// show it once the controllers are enabled in the root.
    struct V2Fixture {
        _tmp: tempfile::TempDir,
        mount: PathBuf,
        mounts: Vec<Mount>,
    }

    fn v2_fixture(controllers: &str, swap: bool) -> V2Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mount = tmp.path().join("cgroup2");
        mkdir(&mount);
        write(
            &mount.join("cgroup.controllers"),
            &format!("{controllers}\n"),
        );
        write(&mount.join("cgroup.subtree_control"), "");
        let parent = mount.join("rlm-sandbox");
        mkdir(&parent);
        write(&parent.join("cgroup.controllers"), "cpu memory pids\n");
        write(&parent.join("cgroup.subtree_control"), "");
        if swap {
            write(&parent.join("memory.swap.max"), "max\n");
        }
        let mounts = parse_mountinfo(&mountinfo_line(&mount, "cgroup2", "rw,nsdelegate"));
        V2Fixture {
            _tmp: tmp,
            mount,
            mounts,
        }
    }

    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates real cgroups under /sys/fs/cgroup and moves processes \
             into them; run `cargo test` as root"
        );
    }

    /// A real CgroupRoot under a parent unique to the test; on drop it reaps
    /// what the test left and removes the parent directories.
    struct RealRoot(CgroupRoot);

    impl RealRoot {
        fn new(tag: &str) -> Self {
            require_root();
            let parent = format!("rlm-test-{tag}-{}", std::process::id());
            let root = CgroupRoot::detect(&parent)
                .unwrap_or_else(|e| panic!("cgroup detection failed on this host: {e}"));
            RealRoot(root)
        }
    }

    impl Drop for RealRoot {
        fn drop(&mut self) {
            if let Err(e) = self.0.reap_stale() {
                eprintln!("test cleanup: {e}");
            }
            for dir in self.0.parent_dirs() {
                if let Err(e) = fs::remove_dir(&dir) {
                    eprintln!("test cleanup: rmdir {}: {e}", dir.display());
                }
            }
        }
    }

    /// Starts `argv` blocked: it waits for a line on stdin before exec'ing,
    /// the way the agent starts a session process blocked until it is placed.
    fn spawn_blocked(argv: &[&str]) -> Child {
        Command::new("sh")
            .arg("-c")
            .arg("read go && exec \"$@\"")
            .arg("sh")
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh")
    }

    fn release(child: &mut Child) {
        let mut stdin = child.stdin.take().expect("child stdin");
        stdin.write_all(b"go\n").expect("release child");
    }

    fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("child {} still running after {timeout:?}", child.id());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn comm(pid: u32) -> String {
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    fn median(mut samples: Vec<Duration>) -> Duration {
        samples.sort();
        samples[samples.len() / 2]
    }

    // -----------------------------------------------------------------------
    // Pure logic

    #[test]
    fn names_are_validated() {
        for ok in ["a", "s-1", "Session_42-x", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a/b",
            "..",
            ".",
            "a.b",
            "a b",
            "ü",
            "a\n",
            "-\0",
        ] {
            assert!(
                matches!(validate_name(bad), Err(CgroupError::InvalidName(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn parents_are_validated() {
        for ok in ["rlm-sandbox", "rlm.slice/sandbox", "a/b/c"] {
            assert!(validate_parent(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in [
            "", "/abs", "a//b", "../x", "a/./b", "a/", "a b", "a/..", "x\ny",
        ] {
            assert!(
                matches!(validate_parent(bad), Err(CgroupError::InvalidParent(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn limits_are_validated() {
        assert!(validate_limits("s", &limits(MIB, 10, 1)).is_ok());
        for bad in [
            limits(MIB - 1, 1000, 10),
            limits(u64::MAX, 1000, 10),
            limits(64 * MIB, 9, 10),
            limits(64 * MIB, 1000, 0),
        ] {
            let err = validate_limits("s", &bad).expect_err("should be rejected");
            assert!(err.to_string().contains("\"s\""), "{err}");
        }
    }

    #[test]
    fn mountinfo_is_parsed() {
        let text = "\
25 30 0:23 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:24 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:6 master:2 - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
29 25 0:27 / /mnt/with\\040space\\134x rw - cgroup2 none rw
garbage line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(mounts[1].fstype, "cgroup");
        assert_eq!(mounts[1].super_opts, ["rw", "memory"]);
        assert_eq!(mounts[2].super_opts, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert_eq!(mounts[4].point, PathBuf::from("/mnt/with space\\x"));
    }

    #[test]
    fn keyed_and_procs_files_are_parsed() {
        let events = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 3\noom_group_kill 1\n";
        assert_eq!(parse_keyed(events, "oom_kill"), Ok(Some(3)));
        assert_eq!(parse_keyed(events, "oom_group_kill"), Ok(Some(1)));
        assert_eq!(parse_keyed(events, "missing"), Ok(None));
        assert!(parse_keyed("oom_kill x\n", "oom_kill").is_err());
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n";
        assert_eq!(parse_keyed(oom_control, "oom_kill"), Ok(Some(4)));
        assert_eq!(parse_procs("12\n345\n"), Ok(vec![12, 345]));
        assert_eq!(parse_procs(""), Ok(vec![]));
        assert!(parse_procs("12\nabc\n").is_err());
    }

    #[test]
    fn types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CgroupRoot>();
        check::<SessionCgroup>();
        check::<CgroupError>();
    }

    // -----------------------------------------------------------------------
    // v2 on fixture directories

    #[test]
    fn v2_detect_enables_controllers_down_to_parent() {
        let fx = v2_fixture("cpuset cpu io memory hugetlb pids rdma misc", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        assert_eq!(root.version(), CgroupVersion::V2);
        assert!(root.limits_swap());
        assert_eq!(root.parent_dirs(), [fx.mount.join("rlm-sandbox")]);
        assert_eq!(
            read(&fx.mount.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(
            read(&fx.mount.join("rlm-sandbox/cgroup.subtree_control")),
            "+memory +pids +cpu"
        );

        // Already enabled (as the kernel lists them): nothing is written.
        let fx = v2_fixture("cpu memory pids", false);
        write(
            &fx.mount.join("cgroup.subtree_control"),
            "cpu io memory pids\n",
        );
        write(
            &fx.mount.join("rlm-sandbox/cgroup.subtree_control"),
            "memory pids cpu\n",
        );
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        assert!(!root.limits_swap());
        assert_eq!(
            read(&fx.mount.join("cgroup.subtree_control")),
            "cpu io memory pids"
        );
        // Only the missing one is requested.
        let fx = v2_fixture("cpu memory pids", false);
        write(&fx.mount.join("cgroup.subtree_control"), "memory pids\n");
        CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        assert_eq!(read(&fx.mount.join("cgroup.subtree_control")), "+cpu");
    }

    #[test]
    fn v2_detect_reports_what_is_missing() {
        let fx = v2_fixture("cpu io hugetlb", false);
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut mounts = fx.mounts.clone();
        mounts.extend(parse_mountinfo(&mountinfo_line(
            &tmp.path().join("memory"),
            "cgroup",
            "rw,memory",
        )));
        let err = CgroupRoot::detect_from(&mounts, "rlm-sandbox").expect_err("must fail");
        let msg = err.to_string();
        assert!(matches!(err, CgroupError::Unavailable(_)), "{msg}");
        assert!(msg.contains("lacks memory, pids"), "{msg}");
        assert!(
            msg.contains("cgroup v1 has no mount for pids, cpu, cpuacct"),
            "{msg}"
        );

        let err = CgroupRoot::detect_from(&[], "rlm-sandbox").expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("no cgroup2 mount"), "{msg}");
        assert!(msg.contains("memory, pids, cpu, cpuacct"), "{msg}");

        // A parent whose cgroup.controllers lacks something after enabling.
        let fx = v2_fixture("cpu memory pids", false);
        write(&fx.mount.join("rlm-sandbox/cgroup.controllers"), "memory\n");
        let msg = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox")
            .expect_err("must fail")
            .to_string();
        assert!(
            msg.contains("rlm-sandbox/cgroup.controllers lacks pids, cpu"),
            "{msg}"
        );
    }

    #[test]
    fn v2_create_writes_limits() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("sess-1", &limits(256 * MIB, 1500, 64))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/sess-1");
        assert_eq!(cg.name(), "sess-1");
        assert_eq!(cg.version(), CgroupVersion::V2);
        assert_eq!(cg.dirs(), std::slice::from_ref(&dir));
        assert_eq!(cg.procs_files(), [dir.join("cgroup.procs")]);
        assert_eq!(read(&dir.join("memory.max")), "268435456");
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "64");
        assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
        assert_eq!(read(&dir.join("memory.oom.group")), "1");

        let again = root.create("sess-1", &limits(256 * MIB, 1500, 64));
        assert!(matches!(again, Err(CgroupError::AlreadyExists(ref p)) if *p == dir));
        assert!(matches!(
            root.create("bad/name", &limits(256 * MIB, 1500, 64)),
            Err(CgroupError::InvalidName(_))
        ));
        assert!(!fx.mount.join("rlm-sandbox/bad").exists());

        // Without swap accounting no memory.swap.max is written; 10 millicores = 1 ms.
        let fx = v2_fixture("cpu memory pids", false);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        root.create("s2", &limits(MIB, 10, 1)).expect("create");
        let dir = fx.mount.join("rlm-sandbox/s2");
        assert!(!dir.join("memory.swap.max").exists());
        assert_eq!(read(&dir.join("memory.max")), "1048576");
        assert_eq!(read(&dir.join("cpu.max")), "1000 100000");
        assert_eq!(read(&dir.join("pids.max")), "1");
    }

    #[test]
    fn v2_usage_is_parsed() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("u", &limits(64 * MIB, 1000, 16))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/u");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 5\n\
             nr_throttled 1\nthrottled_usec 900\nnr_bursts 0\nburst_usec 0\n",
        );
        write(&dir.join("memory.peak"), "52428800\n");
        write(&dir.join("memory.current"), "4096\n");
        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 1\n",
        );
        assert_eq!(
            cg.usage().expect("usage"),
            Usage {
                cpu_ns: 1_234_567_000,
                memory_peak_bytes: 52_428_800,
                oom_kills: 2,
            }
        );
        // The files stay open: later readings see the counters move.
        write(&dir.join("cpu.stat"), "usage_usec 2000000\n");
        write(&dir.join("memory.peak"), "60000000\n");
        write(&dir.join("memory.events"), "oom_kill 3\n");
        assert_eq!(
            cg.usage().expect("usage"),
            Usage {
                cpu_ns: 2_000_000_000,
                memory_peak_bytes: 60_000_000,
                oom_kills: 3,
            }
        );
        // Errors name the file, and the next reading opens the files again.
        write(&dir.join("cpu.stat"), "user_usec 1\n");
        let msg = cg.usage().expect_err("no usage_usec").to_string();
        assert!(msg.contains("u/cpu.stat"), "{msg}");
        write(&dir.join("cpu.stat"), "usage_usec 1\n");
        fs::remove_file(dir.join("memory.events")).expect("rm memory.events");
        let msg = cg.usage().expect_err("missing file").to_string();
        assert!(msg.contains("u/memory.events"), "{msg}");
        write(&dir.join("memory.events"), "oom_kill 0\n");
        assert_eq!(cg.usage().expect("usage").cpu_ns, 1000);

        // Before Linux 5.19 there is no memory.peak: the current use stands in.
        let old = root
            .create("old", &limits(64 * MIB, 1000, 16))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/old");
        write(&dir.join("cpu.stat"), "usage_usec 5\n");
        write(&dir.join("memory.current"), "4096\n");
        write(&dir.join("memory.events"), "low 0\nhigh 0\nmax 0\noom 0\n");
        let _ = fs::remove_file(dir.join("memory.peak"));
        assert_eq!(
            old.usage().expect("usage"),
            Usage {
                cpu_ns: 5000,
                memory_peak_bytes: 4096,
                oom_kills: 0,
            }
        );
        write(&dir.join("memory.current"), "lots\n");
        let msg = old.usage().expect_err("bad number").to_string();
        assert!(msg.contains("old/memory.current"), "{msg}");
    }

    /// Plays the kernel on a fixture: once `trigger` returns true for the
    /// session directory, kill the child and empty `cgroup.procs`.
    fn fake_kernel(
        dir: PathBuf,
        mut child: Child,
        trigger: fn(&Path) -> bool,
    ) -> std::thread::JoinHandle<ExitStatus> {
        std::thread::spawn(move || {
            wait_for("kill trigger", Duration::from_secs(5), || trigger(&dir));
            let _ = child.kill();
            let status = wait_exit(&mut child, Duration::from_secs(5));
            write(&dir.join("cgroup.procs"), "");
            status
        })
    }

    #[test]
    fn v2_kill_all_uses_cgroup_kill() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("k", &limits(64 * MIB, 1000, 16))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/k");
        // Empty cgroup: nothing is written.
        write(&dir.join("cgroup.kill"), "");
        cg.kill_all().expect("kill_all on empty");
        assert_eq!(read(&dir.join("cgroup.kill")), "");

        let child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        write(&dir.join("cgroup.procs"), &format!("{}\n", child.id()));
        let kernel = fake_kernel(dir.clone(), child, |d| read(&d.join("cgroup.kill")) == "1");
        cg.kill_all().expect("kill_all");
        kernel.join().expect("fake kernel");
        assert_eq!(read(&dir.join("cgroup.kill")), "1");
        assert!(
            !dir.join("cgroup.freeze").exists(),
            "cgroup.kill path must not freeze"
        );
        assert!(cg.pids().expect("pids").is_empty());
    }

    /// Starts `sleep 30` and lists it in the fixture's `cgroup.procs`; a
    /// watcher thread plays the kernel by emptying the file once it is dead.
    fn fixture_process(dir: &Path) -> (u32, std::thread::JoinHandle<ExitStatus>) {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        write(&dir.join("cgroup.procs"), &format!("{pid}\n"));
        let dir = dir.to_path_buf();
        let watcher = std::thread::spawn(move || {
            let status = wait_exit(&mut child, Duration::from_secs(5));
            write(&dir.join("cgroup.procs"), "");
            status
        });
        (pid, watcher)
    }

    #[test]
    fn v2_kill_all_without_cgroup_kill_signals_each_process() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("f", &limits(64 * MIB, 1000, 16))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/f");
        let (pid, watcher) = fixture_process(&dir);
        cg.kill_all().expect("kill_all");
        let status = watcher.join().expect("watcher");
        assert_eq!(status.signal(), Some(9), "pid {pid} must die of SIGKILL");
        // No racing forks: no need to freeze.
        assert!(!dir.join("cgroup.freeze").exists());
        assert!(!dir.join("cgroup.kill").exists());
    }

    #[test]
    fn v2_freeze_kill_thaw_on_fixture() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("z", &limits(64 * MIB, 1000, 16))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/z");
        // The kernel reports "frozen 1" in cgroup.events once frozen.
        write(&dir.join("cgroup.events"), "populated 1\nfrozen 1\n");
        let (pid, watcher) = fixture_process(&dir);
        let started = Instant::now();
        cg.freeze_kill_thaw().expect("freeze_kill_thaw");
        assert!(
            started.elapsed() < FREEZE_TIMEOUT,
            "must not wait when frozen 1"
        );
        let status = watcher.join().expect("watcher");
        assert_eq!(status.signal(), Some(9), "pid {pid} must die of SIGKILL");
        // Thawed afterwards (the thaw only runs after a successful freeze).
        assert_eq!(read(&dir.join("cgroup.freeze")), "0");
    }

    // -----------------------------------------------------------------------
    // v1 file layout on fixture directories (co-mounted cpu,cpuacct; no memsw)

    #[test]
    fn v1_fixture_layout_and_limits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let m = |name: &str| tmp.path().join(name);
        let text = [
            mountinfo_line(&m("memory"), "cgroup", "rw,memory"),
            mountinfo_line(&m("pids"), "cgroup", "rw,pids"),
            mountinfo_line(&m("cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct"),
            mountinfo_line(&m("unified"), "cgroup2", "rw"),
        ]
        .concat();
        mkdir(&m("unified"));
        write(&m("unified/cgroup.controllers"), "hugetlb\n");
        let root = CgroupRoot::detect_from(&parse_mountinfo(&text), "rlm").expect("detect");
        assert_eq!(root.version(), CgroupVersion::V1);
        assert!(!root.limits_swap());
        assert_eq!(
            root.parent_dirs(),
            [m("memory/rlm"), m("pids/rlm"), m("cpu,cpuacct/rlm")]
        );
        let cg = root
            .create("s", &limits(128 * MIB, 250, 32))
            .expect("create");
        assert_eq!(
            cg.dirs(),
            [m("memory/rlm/s"), m("pids/rlm/s"), m("cpu,cpuacct/rlm/s")]
        );
        // Set once on the parent; the kernel copies both into new cgroups.
        assert_eq!(read(&m("memory/rlm/memory.oom_control")), "0");
        assert_eq!(read(&m("memory/rlm/memory.swappiness")), "0");
        assert_eq!(read(&m("memory/rlm/s/memory.limit_in_bytes")), "134217728");
        assert!(!m("memory/rlm/s/memory.memsw.limit_in_bytes").exists());
        assert_eq!(read(&m("pids/rlm/s/pids.max")), "32");
        assert_eq!(read(&m("cpu,cpuacct/rlm/s/cpu.cfs_quota_us")), "25000");

        write(&m("cpu,cpuacct/rlm/s/cpuacct.usage"), "987654321\n");
        write(&m("memory/rlm/s/memory.max_usage_in_bytes"), "1048576\n");
        write(
            &m("memory/rlm/s/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        assert_eq!(
            cg.usage().expect("usage"),
            Usage {
                cpu_ns: 987_654_321,
                memory_peak_bytes: MIB,
                oom_kills: 1,
            }
        );
    }

    // -----------------------------------------------------------------------
    // Real cgroups on this host (root)

    /// Reads back what `create` wrote, for whichever version the host has.
    fn assert_real_limits(root: &CgroupRoot, cg: &SessionCgroup, l: &CgroupLimits) {
        let mem = cg.memory.path();
        let quota = (u64::from(l.cpu_millicores) * 100).to_string();
        match root.version() {
            CgroupVersion::V1 => {
                assert_eq!(
                    read(&mem.join("memory.limit_in_bytes")),
                    l.memory_bytes.to_string()
                );
                if root.limits_swap() {
                    assert_eq!(
                        read(&mem.join("memory.memsw.limit_in_bytes")),
                        l.memory_bytes.to_string()
                    );
                }
                assert!(read(&mem.join("memory.oom_control")).contains("oom_kill_disable 0"));
                if !root.limits_swap() {
                    assert_eq!(read(&mem.join("memory.swappiness")), "0");
                }
                assert_eq!(
                    read(&cg.pids.path().join("pids.max")),
                    l.max_pids.to_string()
                );
                assert_eq!(read(&cg.cpu.path().join("cpu.cfs_quota_us")), quota);
                assert_eq!(read(&cg.cpu.path().join("cpu.cfs_period_us")), "100000");
            }
            CgroupVersion::V2 => {
                assert_eq!(read(&mem.join("memory.max")), l.memory_bytes.to_string());
                if root.limits_swap() {
                    assert_eq!(read(&mem.join("memory.swap.max")), "0");
                }
                assert_eq!(read(&mem.join("memory.oom.group")), "1");
                assert_eq!(read(&mem.join("pids.max")), l.max_pids.to_string());
                assert_eq!(read(&mem.join("cpu.max")), format!("{quota} 100000"));
            }
        }
    }

    #[test]
    fn real_set_limits_raises_and_lowers_under_a_live_process() {
        let guard = RealRoot::new("relimit");
        let root = &guard.0;
        let start = limits(128 * MIB, 1000, 32);
        let cg = root.create("relimit-1", &start).expect("create");
        let mut child = spawn_blocked(&["sleep", "30"]);
        cg.add_process(child.id() as i32).expect("add_process");
        release(&mut child);
        // Up (on v1 with swap accounting memsw has to move first), then down.
        for l in [limits(512 * MIB, 2000, 64), limits(64 * MIB, 500, 16)] {
            cg.set_limits(&l).expect("set_limits");
            assert_real_limits(root, &cg, &l);
        }
        let refused = cg.set_limits(&limits(1, 500, 16));
        assert!(matches!(refused, Err(CgroupError::InvalidLimits { .. })));
        let kept = limits(64 * MIB, 500, 16);
        assert_real_limits(root, &cg, &kept);
        let _ = child.kill();
        let _ = child.wait();
        cg.remove().expect("remove");
    }

    #[test]
    fn set_limits_refuses_a_limit_below_the_memory_in_use() {
        let fx = v2_fixture("cpu memory pids", true);
        let root = CgroupRoot::detect_from(&fx.mounts, "rlm-sandbox").expect("detect");
        let cg = root
            .create("busy", &limits(256 * MIB, 1000, 64))
            .expect("create");
        let dir = fx.mount.join("rlm-sandbox/busy");
        write(&dir.join("memory.current"), "20971520\n");
        let msg = cg
            .set_limits(&limits(16 * MIB, 1000, 64))
            .expect_err("20 MiB in use")
            .to_string();
        assert!(msg.contains("20971520 bytes of memory are in use"), "{msg}");
        assert_eq!(read(&dir.join("memory.max")), "268435456");
        cg.set_limits(&limits(32 * MIB, 500, 8)).expect("fits");
        assert_eq!(read(&dir.join("memory.max")), "33554432");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        assert_eq!(read(&dir.join("pids.max")), "8");
    }

    #[test]
    fn real_lifecycle() {
        let guard = RealRoot::new("life");
        let root = &guard.0;
        eprintln!(
            "host: {:?}, limits swap: {}, dirs: {:?}",
            root.version(),
            root.limits_swap(),
            root.parent_dirs()
        );
        let l = limits(256 * MIB, 1500, 64);
        let cg = root.create("life-1", &l).expect("create");
        assert_real_limits(root, &cg, &l);
        assert!(cg.dirs().iter().all(|d| d.is_dir()));
        assert!(matches!(
            root.create("life-1", &l),
            Err(CgroupError::AlreadyExists(_))
        ));
        assert!(cg.pids().expect("pids").is_empty());

        // Burn a little CPU, then sleep.
        let mut child = spawn_blocked(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 30",
        ]);
        let pid = child.id();
        cg.add_process(pid as i32).expect("add_process");
        assert_eq!(cg.pids().expect("pids"), [pid as i32]);
        for file in cg.procs_files() {
            assert_eq!(read(&file), pid.to_string(), "{}", file.display());
        }
        release(&mut child);
        wait_for("child to exec sleep", Duration::from_secs(20), || {
            comm(pid) == "sleep"
        });

        let usage = cg.usage().expect("usage");
        eprintln!("usage: {usage:?}");
        assert!(usage.cpu_ns > 10_000_000, "cpu_ns {}", usage.cpu_ns);
        assert!(
            usage.memory_peak_bytes > 0 && usage.memory_peak_bytes < l.memory_bytes,
            "memory_peak_bytes {}",
            usage.memory_peak_bytes
        );
        assert_eq!(usage.oom_kills, 0);

        cg.kill_all().expect("kill_all");
        assert!(cg.pids().expect("pids").is_empty());
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(9), "{status:?}");

        cg.remove().expect("remove");
        for dir in cg.dirs() {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
        cg.remove().expect("remove is idempotent");
        assert!(cg.pids().expect("pids of removed").is_empty());
        assert!(matches!(
            cg.add_process(std::process::id() as i32),
            Err(CgroupError::Controller { .. })
        ));
    }

    fn fork_bomb_is_confined(root: &CgroupRoot, name: &str) {
        let l = limits(256 * MIB, 1000, 8);
        let cg = root.create(name, &l).expect("create");
        // Every process forks forever; some children exit at once (churn).
        let mut child = spawn_blocked(&[
            "perl",
            "-e",
            "$SIG{CHLD} = 'IGNORE'; while (1) { my $p = fork; exit 0 if defined $p && $p == 0 && rand() < 0.3 }",
        ]);
        cg.add_process(child.id() as i32).expect("add_process");
        release(&mut child);
        let current = cg.pids.path().join("pids.current");
        let mut most = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(500) {
            let procs = cg.pids().expect("pids").len();
            let tasks: usize = read(&current).parse().expect("pids.current");
            assert!(
                procs <= 8 && tasks <= 8,
                "{procs} processes, {tasks} tasks > 8"
            );
            most = most.max(tasks);
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(most, 8, "the bomb never reached pids.max");
        let events = read(&cg.pids.path().join("pids.events"));
        assert!(
            parse_keyed(&events, "max").ok().flatten().unwrap_or(0) > 0,
            "{events}"
        );

        let t = Instant::now();
        cg.kill_all().expect("kill_all");
        eprintln!(
            "{name}: kill_all of the fork bomb took {:?} (freeze passes so far, all tests: {})",
            t.elapsed(),
            FREEZE_PASSES.load(std::sync::atomic::Ordering::Relaxed)
        );
        assert!(cg.pids().expect("pids").is_empty());
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(9), "{status:?}");
        cg.remove().expect("remove");
        assert!(cg.dirs().iter().all(|d| !d.exists()));
    }

    #[test]
    fn real_fork_bomb_confined_and_killed() {
        let guard = RealRoot::new("bomb");
        for round in 0..3 {
            fork_bomb_is_confined(&guard.0, &format!("bomb-{round}"));
        }
    }

    /// One frozen pass must be complete: after it, the bomb dies without any
    /// further signal.
    #[test]
    fn real_freezer_pass_kills_racing_forks() {
        let guard = RealRoot::new("freeze");
        let cg = guard
            .0
            .create("frz", &limits(256 * MIB, 2000, 16))
            .expect("create");
        assert!(
            cg.freezer.is_some(),
            "this host has no cgroup freezer (v1 freezer hierarchy not mounted): cannot test it"
        );
        let mut child = spawn_blocked(&[
            "perl",
            "-e",
            "$SIG{CHLD} = 'IGNORE'; while (1) { my $p = fork; exit 0 if defined $p && $p == 0 && rand() < 0.3 }",
        ]);
        cg.add_process(child.id() as i32).expect("add_process");
        release(&mut child);
        wait_for("the bomb to fill pids.max", Duration::from_secs(5), || {
            cg.pids().map(|p| p.len() >= 10).unwrap_or(false)
        });
        let before = FREEZE_PASSES.load(std::sync::atomic::Ordering::Relaxed);
        cg.freeze_kill_thaw().expect("freeze_kill_thaw");
        assert!(FREEZE_PASSES.load(std::sync::atomic::Ordering::Relaxed) > before);
        wait_for(
            "the cgroup to empty without more signals",
            Duration::from_secs(2),
            || cg.pids().map(|p| p.is_empty()).unwrap_or(false),
        );
        if let Some(freezer) = &cg.freezer {
            assert!(matches!(freezer.state(), Ok(FreezerState::Thawed)));
        }
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(9), "{status:?}");
        cg.remove().expect("remove");
    }

    #[test]
    fn real_fork_bomb_killed_without_freezer() {
        let guard = RealRoot::new("bomb-nofrz");
        let root = guard.0.clone().without_freezer();
        for round in 0..3 {
            fork_bomb_is_confined(&root, &format!("bomb-{round}"));
        }
    }

    #[test]
    fn real_memory_limit_oom_kills() {
        let guard = RealRoot::new("oom");
        let cg = guard
            .0
            .create("oom-1", &limits(32 * MIB, 1000, 16))
            .expect("create");
        let mut child =
            spawn_blocked(&["perl", "-e", "my $x = 'a' x (256 * 1024 * 1024); sleep 30"]);
        cg.add_process(child.id() as i32).expect("add_process");
        release(&mut child);
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert_eq!(
            status.signal(),
            Some(9),
            "the hog must be OOM-killed: {status:?}"
        );
        let usage = cg.usage().expect("usage");
        eprintln!("oom usage: {usage:?}");
        assert!(usage.oom_kills >= 1, "{usage:?}");
        assert!(usage.memory_peak_bytes <= 32 * MIB, "{usage:?}");
        cg.remove().expect("remove");
    }

    #[test]
    fn real_reap_stale_removes_left_cgroups() {
        let guard = RealRoot::new("reap");
        let l = limits(64 * MIB, 500, 16);
        let busy = guard.0.create("stale-busy", &l).expect("create");
        let mut child = spawn_blocked(&["sleep", "30"]);
        busy.add_process(child.id() as i32).expect("add_process");
        release(&mut child);
        wait_for("child to exec sleep", Duration::from_secs(5), || {
            comm(child.id()) == "sleep"
        });
        // The crash came between freeze and thaw: frozen v1 processes ignore
        // SIGKILL until thawed, so reaping must thaw.
        let freezer = busy
            .freezer
            .as_ref()
            .expect("this host has no cgroup freezer");
        freezer.freeze().expect("freeze");
        assert!(busy.wait_frozen(freezer), "not frozen");
        let idle = guard.0.create("stale-idle", &l).expect("create");
        let dirs: Vec<PathBuf> = busy.dirs().into_iter().chain(idle.dirs()).collect();
        // A non-session directory is left alone.
        let foreign = guard.0.parent_dirs()[0].join("not.a.session");
        mkdir(&foreign);
        // The agent "crashes": the handles are gone, a new agent starts.
        drop((busy, idle));
        let root = CgroupRoot::detect(guard.0.parent()).expect("detect again");
        let started = Instant::now();
        assert_eq!(root.reap_stale().expect("reap_stale"), 2);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        let status = wait_exit(&mut child, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(9), "{status:?}");
        for dir in dirs {
            assert!(!dir.exists(), "{} still exists", dir.display());
        }
        assert!(foreign.exists());
        fs::remove_dir(&foreign).expect("rmdir foreign");
        assert_eq!(root.reap_stale().expect("reap_stale again"), 0);
    }

    fn timing(root: &CgroupRoot, label: &str) {
        let l = limits(256 * MIB, 1000, 64);
        let (mut create, mut attach, mut remove, mut total, mut empty) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..50 {
            let mut child = spawn_blocked(&["sleep", "30"]);
            let pid = child.id() as i32;
            wait_blocked(child.id());
            let t0 = Instant::now();
            let cg = root.create(&format!("t-{i}"), &l).expect("create");
            let t1 = Instant::now();
            cg.add_process(pid).expect("add_process");
            let t2 = Instant::now();
            cg.remove().expect("remove");
            let t3 = Instant::now();
            create.push(t1 - t0);
            attach.push(t2 - t1);
            remove.push(t3 - t2);
            total.push(t3 - t0);
            let status = wait_exit(&mut child, Duration::from_secs(5));
            assert_eq!(status.signal(), Some(9));

            let t0 = Instant::now();
            let cg = root.create(&format!("e-{i}"), &l).expect("create");
            cg.remove().expect("remove");
            empty.push(t0.elapsed());
        }
        println!(
            "TIMING {label} ({} dirs), median of 50: create+limits {:?}, attach {:?}, \
             remove (kill the process, wait, rmdir) {:?}, total {:?}; create+remove of an empty cgroup {:?}",
            root.session("x").members.len(),
            median(create),
            median(attach),
            median(remove),
            median(total),
            median(empty)
        );
    }

    /// Waits until the blocked child sits in `read` (state S), so that its
    /// exec does not compete with the measurement.
    fn wait_blocked(pid: u32) {
        wait_for("the child to block", Duration::from_secs(5), || {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            comm(pid) == "sh" && state == Some("S")
        });
        std::thread::sleep(Duration::from_millis(1));
    }

    /// The same steps as bare syscalls (std::fs + kill), as a floor to compare with.
    fn raw_baseline(root: &CgroupRoot) {
        let mut total = Vec::new();
        for i in 0..50 {
            let mut child = spawn_blocked(&["sleep", "30"]);
            let pid = child.id();
            wait_blocked(pid);
            let dirs: Vec<PathBuf> = root
                .parent_dirs()
                .iter()
                .map(|d| d.join(format!("r-{i}")))
                .collect();
            let t0 = Instant::now();
            for d in &dirs {
                fs::create_dir(d).expect("mkdir");
            }
            let write_to = |f: &str, v: &str| {
                let d = dirs.iter().find(|d| d.join(f).exists()).expect("file");
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join(f))
                    .and_then(|mut h| h.write_all(v.as_bytes()))
                    .expect("write");
            };
            write_to("memory.limit_in_bytes", "268435456");
            if root.limits_swap() {
                write_to("memory.memsw.limit_in_bytes", "268435456");
            }
            write_to("pids.max", "64");
            write_to("cpu.cfs_quota_us", "100000");
            for d in &dirs {
                fs::write(d.join("cgroup.procs"), pid.to_string()).expect("attach");
            }
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("kill");
            while !read(&dirs[0].join("cgroup.procs")).is_empty() {
                std::thread::yield_now();
            }
            for d in dirs.iter().rev() {
                fs::remove_dir(d).expect("rmdir");
            }
            total.push(t0.elapsed());
            wait_exit(&mut child, Duration::from_secs(5));
        }
        println!(
            "TIMING raw-syscall floor ({} dirs, no checks; the exists() probes above are untimed), median of 50: {:?}",
            root.parent_dirs().len(),
            median(total)
        );
    }

    #[test]
    fn real_timing_create_attach_remove() {
        let guard = RealRoot::new("timing");
        timing(&guard.0, "with freezer");
        let without = guard.0.clone().without_freezer();
        timing(&without, "without freezer");
        raw_baseline(&guard.0);
    }
}
