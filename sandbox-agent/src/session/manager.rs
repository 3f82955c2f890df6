//! Live sessions: creation (from the warm pool when the limits fit), contexts,
//! one cell at a time per session, idle expiry, the session limit, destruction.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::launcher::{LaunchError, Launched, Launcher, Priority};
use super::limits::{Limits, Profile};
use super::pool::Pool;
use super::process::{CellEvent, CellInput, CellLimits, CellOutcome, Ended};
use crate::context_store::ContextStore;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("context_ids[{index}]: no context {id} in this agent (upload it with PutContext)")]
    UnknownContext { index: usize, id: String },
    #[error("too many sessions: the limit is {0}")]
    TooMany(usize),
    #[error("no session {0}")]
    NotFound(String),
    #[error("session {0} is running another Execute")]
    Busy(String),
    #[error("session {id} has ended: {reason}")]
    Ended { id: String, reason: String },
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("opening context {id}: {source}")]
    ContextIo { id: String, source: std::io::Error },
    #[error("handing contexts to the session: {0}")]
    Attach(String),
}

#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub completion_id: String,
    pub depth: u32,
    pub node_id: String,
}

pub struct Session {
    pub id: String,
    pub labels: Labels,
    pub limits: Limits,
    pub context_ids: Vec<String>,
    pub created_at: SystemTime,
    pub from_pool: bool,
    pub python_version: String,
    pub executions: AtomicU64,
    /// The process of a running cell, so destroy can kill it without waiting for the cell.
    running_pid: std::sync::atomic::AtomicI64,
    last_used: Mutex<(Instant, SystemTime)>,
    live: tokio::sync::Mutex<Option<Launched>>,
    /// Why the session ended, once it has.
    ended: Mutex<Option<String>>,
}

impl Session {
    pub fn last_used(&self) -> SystemTime {
        self.last_used
            .lock()
            .map(|t| t.1)
            .unwrap_or(self.created_at)
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.0.elapsed())
            .unwrap_or_default()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = (Instant::now(), SystemTime::now());
        }
    }

    pub fn ended_reason(&self) -> Option<String> {
        self.ended.lock().ok().and_then(|r| r.clone())
    }

    pub fn is_busy(&self) -> bool {
        self.live.try_lock().is_err()
    }

    pub fn pid(&self) -> Option<i32> {
        self.live
            .try_lock()
            .ok()
            .and_then(|live| live.as_ref().map(|l| l.process.pid))
    }
}

pub struct Manager {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    launcher: Arc<Launcher>,
    pools: Vec<Arc<Pool>>,
    contexts: Arc<ContextStore>,
    max_sessions: usize,
    counter: AtomicU64,
    /// After SIGINT, how long a cell has before SIGKILL.
    pub grace: Duration,
}

/// Why a session ended, for the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    OomKilled,
    TimeoutKilled,
    /// The interpreter exited on its own.
    Exited,
    /// Killed by a signal the agent did not send.
    Crashed,
    ProtocolViolation,
    Abandoned,
}

pub struct ExecuteOutcome {
    pub cell: CellOutcome,
    pub end_reason: Option<EndReason>,
    pub end_detail: String,
    pub cpu_ms: u64,
    pub max_rss_bytes: u64,
}

impl Manager {
    pub fn new(
        launcher: Arc<Launcher>,
        pools: Vec<Arc<Pool>>,
        contexts: Arc<ContextStore>,
        max_sessions: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(HashMap::new()),
            launcher,
            pools,
            contexts,
            max_sessions,
            counter: AtomicU64::new(0),
            grace: Duration::from_secs(2),
        })
    }

    pub fn launcher(&self) -> &Launcher {
        &self.launcher
    }

    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    pub fn count(&self) -> usize {
        self.sessions.lock().map(|s| s.len()).unwrap_or_default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().ok()?.get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        let mut list: Vec<_> = self
            .sessions
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|s| s.created_at);
        list
    }

    fn new_id(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        format!("s-{:x}-{n:x}-{nanos:08x}", std::process::id())
    }

    /// Creates a session; returns it and whether its process came from the pool.
    pub async fn create(
        &self,
        limits: Limits,
        context_ids: Vec<String>,
        labels: Labels,
    ) -> Result<Arc<Session>, ManagerError> {
        if self.count() >= self.max_sessions {
            return Err(ManagerError::TooMany(self.max_sessions));
        }
        let files = self.open_contexts(&context_ids)?;
        let profile = limits.profile();
        let id = self.new_id();
        // A pooled process that died while waiting (it fails the hand-over)
        // is replaced by a fresh one rather than failing the request.
        let mut pooled = self.take_warm(&profile).await;
        let (launched, from_pool) = loop {
            let (mut launched, from_pool) = match pooled.take() {
                Some(mut launched) => {
                    launched.to_foreground();
                    (launched, true)
                }
                None => (
                    self.launcher
                        .launch(&id, &profile, Priority::Request)
                        .await?,
                    false,
                ),
            };
            match launched.process.attach_contexts(&files).await {
                Ok(()) => break (launched, from_pool),
                Err(err) => {
                    tokio::task::spawn_blocking(move || launched.terminate());
                    if !from_pool {
                        return Err(ManagerError::Attach(err.to_string()));
                    }
                    tracing::warn!("a warm session was unusable ({err}); starting a fresh one");
                }
            }
        };
        let now = (Instant::now(), SystemTime::now());
        let session = Arc::new(Session {
            id: id.clone(),
            labels,
            limits,
            context_ids,
            created_at: now.1,
            from_pool,
            python_version: launched.python_version.clone(),
            executions: AtomicU64::new(0),
            running_pid: std::sync::atomic::AtomicI64::new(0),
            last_used: Mutex::new(now),
            live: tokio::sync::Mutex::new(Some(launched)),
            ended: Mutex::new(None),
        });
        let inserted = match self.sessions.lock() {
            Ok(mut sessions) if sessions.len() < self.max_sessions => {
                sessions.insert(id, session.clone());
                true
            }
            _ => false,
        };
        if !inserted {
            self.terminate(&session).await;
            return Err(ManagerError::TooMany(self.max_sessions));
        }
        Ok(session)
    }

    /// A warm process for `profile`: from its own pool, else from a pool
    /// whose processes differ only in cgroup limits, re-limited here (a few
    /// cgroup writes instead of a ~20 ms start). `None`: start one.
    async fn take_warm(&self, profile: &Profile) -> Option<Launched> {
        if let Some(pool) = self.pools.iter().find(|pool| pool.profile() == profile)
            && let Some(launched) = pool.take().await
        {
            return Some(launched);
        }
        for pool in &self.pools {
            if pool.profile() == profile || !pool.profile().relimits_to(profile) {
                continue;
            }
            let Some(mut launched) = pool.take_for_other().await else {
                continue;
            };
            match launched.relimit(profile) {
                Ok(()) => return Some(launched),
                Err(err) => {
                    tracing::warn!(profile = %profile.name(), "re-limiting a warm session failed ({err}); starting a fresh one");
                    tokio::task::spawn_blocking(move || launched.terminate());
                    return None;
                }
            }
        }
        None
    }

    fn open_contexts(&self, ids: &[String]) -> Result<Vec<OwnedFd>, ManagerError> {
        use std::os::unix::fs::OpenOptionsExt;
        ids.iter()
            .enumerate()
            .map(|(index, id)| {
                let path =
                    self.contexts
                        .path_of(id)
                        .ok_or_else(|| ManagerError::UnknownContext {
                            index,
                            id: id.clone(),
                        })?;
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|source| ManagerError::ContextIo {
                        id: id.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Destroys a session; false when there was none.
    pub async fn destroy(&self, id: &str) -> bool {
        let removed = self.sessions.lock().ok().and_then(|mut s| s.remove(id));
        match removed {
            Some(session) => {
                self.terminate(&session).await;
                true
            }
            None => false,
        }
    }

    /// Kills the session's processes and waits until they are gone. If a cell
    /// is running, its process is killed first so the cell ends promptly.
    async fn terminate(&self, session: &Session) {
        if let Some(pid) = session.pid().or_else(|| self.running_pid(session)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let launched = session.live.lock().await.take();
        if let Some(launched) = launched {
            let _ = tokio::task::spawn_blocking(move || launched.terminate()).await;
        }
        if let Ok(mut ended) = session.ended.lock() {
            ended.get_or_insert_with(|| "destroyed".to_owned());
        }
    }

    /// Kills the process of the cell running in session `id`, without waiting
    /// (the cell then ends and the session with it). For a caller that has gone away.
    pub fn kill_running(&self, id: &str) {
        if let Some(pid) = self.get(id).and_then(|session| self.running_pid(&session)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    fn running_pid(&self, session: &Session) -> Option<i32> {
        session
            .running_pid
            .load(Ordering::Relaxed)
            .try_into()
            .ok()
            .filter(|pid: &i32| *pid > 0)
    }

    /// Runs one cell in session `id`.
    pub async fn execute(
        &self,
        id: &str,
        code: &str,
        timeout: Duration,
        events: &mpsc::Sender<CellEvent>,
        inputs: &mut mpsc::Receiver<CellInput>,
    ) -> Result<ExecuteOutcome, ManagerError> {
        let session = self
            .get(id)
            .ok_or_else(|| ManagerError::NotFound(id.to_owned()))?;
        let mut live = session
            .live
            .try_lock()
            .map_err(|_| ManagerError::Busy(id.to_owned()))?;
        let Some(launched) = live.as_mut() else {
            return Err(ManagerError::Ended {
                id: id.to_owned(),
                reason: session.ended_reason().unwrap_or_else(|| "unknown".into()),
            });
        };
        session.touch();
        session.executions.fetch_add(1, Ordering::Relaxed);
        session
            .running_pid
            .store(launched.process.pid.into(), Ordering::Relaxed);
        let limits = CellLimits {
            timeout,
            grace: self.grace,
            output_cap: session.limits.output_cap_bytes,
        };
        // Usage is read once per cell, after it; the previous reading is kept.
        let before = launched.last_usage;
        let cell = launched
            .process
            .execute(code, &limits, events, inputs)
            .await;
        session.running_pid.store(0, Ordering::Relaxed);
        let after = launched.cgroup.as_ref().and_then(|c| c.usage().ok());
        launched.last_usage = after;
        let (cpu_ms, max_rss_bytes) = match (&before, &after) {
            (Some(before), Some(after)) => (
                (after.cpu_ns.saturating_sub(before.cpu_ns)) / 1_000_000,
                after.memory_peak_bytes,
            ),
            _ => (0, 0),
        };
        let oom = match (&before, &after) {
            (Some(before), Some(after)) => after.oom_kills > before.oom_kills,
            _ => false,
        };
        session.touch();
        let exit = match &cell.ended {
            Some(Ended::Exited) if !oom => exit_status(launched.process.pid).await,
            _ => None,
        };
        let end_reason = cell.ended.as_ref().map(|ended| match ended {
            Ended::TimeoutKilled => EndReason::TimeoutKilled,
            Ended::Exited if oom => EndReason::OomKilled,
            Ended::Exited => match exit {
                Some(nix::sys::wait::WaitStatus::Exited(..)) => EndReason::Exited,
                _ => EndReason::Crashed,
            },
            Ended::ProtocolViolation(_) => EndReason::ProtocolViolation,
            Ended::Abandoned => EndReason::Abandoned,
        });
        let end_detail = match (&cell.ended, end_reason) {
            (Some(Ended::ProtocolViolation(detail)), _) => detail.clone(),
            (_, Some(EndReason::OomKilled)) => {
                format!(
                    "memory limit of {} bytes exceeded",
                    session.limits.memory_bytes
                )
            }
            (_, Some(EndReason::TimeoutKilled)) => {
                format!("did not stop within {:?} of the interrupt", self.grace)
            }
            (_, Some(EndReason::Exited)) => match exit {
                Some(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                    format!("the interpreter exited with status {code}")
                }
                _ => "the interpreter exited".to_owned(),
            },
            (_, Some(EndReason::Crashed)) => match exit {
                Some(nix::sys::wait::WaitStatus::Signaled(
                    _,
                    nix::sys::signal::Signal::SIGSYS,
                    _,
                )) => "killed for a forbidden system call (seccomp)".to_owned(),
                Some(nix::sys::wait::WaitStatus::Signaled(_, signal, _)) => {
                    format!("killed by {signal}")
                }
                _ => "the session's Python process went away".to_owned(),
            },
            (_, Some(EndReason::Abandoned)) => "the caller went away mid-cell".to_owned(),
            _ => String::new(),
        };
        if end_reason.is_some() {
            if let Ok(mut ended) = session.ended.lock() {
                *ended = Some(end_detail.clone());
            }
            if let Some(launched) = live.take() {
                let _ = tokio::task::spawn_blocking(move || launched.terminate()).await;
            }
        }
        Ok(ExecuteOutcome {
            cell,
            end_reason,
            end_detail,
            cpu_ms,
            max_rss_bytes,
        })
    }

    /// Destroys sessions idle past their TTL and sessions that have ended.
    pub async fn expire(&self) -> usize {
        let expired: Vec<String> = self
            .list()
            .into_iter()
            .filter(|s| {
                !s.is_busy() && (s.idle_for() > s.limits.idle_ttl || s.ended_reason().is_some())
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(session = %id, "session expired");
            self.destroy(id).await;
        }
        expired.len()
    }

    /// Destroys every session (agent shutdown).
    pub async fn destroy_all(&self) {
        let ids: Vec<String> = self.list().into_iter().map(|s| s.id.clone()).collect();
        for id in ids {
            self.destroy(&id).await;
        }
    }
}

/// The exit status of a session process that has just closed its control
/// socket, waiting briefly for it to finish exiting (it is our child).
async fn exit_status(pid: i32) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    for _ in 0..50 {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => tokio::time::sleep(Duration::from_millis(2)).await,
            Ok(status) => return Some(status),
            Err(_) => return None,
        }
    }
    None
}
