//! Direct sandbox sessions (`rlm.v1.SessionService`): persistent REPLs on the
//! agent that a client drives cell by cell, with no model in the loop. Each
//! is owned by the API key that created it, capped per server and per key,
//! destroyed after its idle TTL, and destroyed when the server shuts down.
//!
//! `llm_query` / `rlm_query` are refused inside them: a direct session has no
//! completion, so no budget, trajectory or depth limit would bound the model
//! calls its code could make. Their callers get the usual `Error: <reason>`
//! string saying so.

mod registry;
mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rlm_proto::rlm::sandbox::v1 as sandbox;
use rlm_proto::rlm::v1::{CellError, ExecuteResponse, SandboxLimits, Session};
use tokio::sync::Mutex as AsyncMutex;
use tonic::Status;

use crate::engine::Shared;
use crate::remote_session::{CellRun, RemoteSession};
use registry::{Entry, Owner, Registry};

pub use service::SessionApi;

/// What every refused sub-call returns to the code (after `Error: `).
pub const SUBCALLS_REFUSED: &str = "llm_query and rlm_query are not available in a direct \
     session (rlm.v1.SessionService has no model); run a completion (RLMService.Complete, or \
     the rlm_complete tool of `rlm mcp-serve`) to use sub-models";

/// Longest Execute timeout a request may ask for.
pub const MAX_EXECUTE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The agent reaps a session this long after the server should have, in
/// case the server died without destroying it.
const AGENT_TTL_MARGIN: Duration = Duration::from_secs(60);

/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// Server settings of the direct sessions.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Sessions open at once on this server; 0 disables the service.
    pub max_sessions: u32,
    /// Sessions one API key may have open at once.
    pub max_per_key: u32,
    /// Idle TTL when a request gives none.
    pub idle_ttl: Duration,
    /// Largest idle TTL a request may ask for.
    pub max_idle_ttl: Duration,
}

/// The direct sessions of this server.
pub struct DirectSessions {
    shared: Arc<Shared>,
    settings: SessionSettings,
    registry: Registry,
    stopping: AtomicBool,
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// The agent's limits in force, as the public API describes them.
fn public_limits(l: &sandbox::SessionLimits) -> SandboxLimits {
    SandboxLimits {
        memory_bytes: l.memory_bytes,
        cpu_millicores: l.cpu_millicores,
        max_pids: l.max_pids,
        network: l.network,
        allowed_paths: l
            .allowed_paths
            .iter()
            .map(|p| rlm_proto::rlm::v1::AllowedPath {
                host_path: p.host_path.clone(),
                read_write: p.read_write,
            })
            .collect(),
    }
}

fn agent_limits(l: Option<SandboxLimits>, agent_ttl: Duration) -> sandbox::SessionLimits {
    sandbox::SessionLimits {
        idle_ttl: proto_duration(agent_ttl),
        ..crate::engine::spec::agent_limits(&l.unwrap_or_default())
    }
}

async fn refuse_subcalls(request: sandbox::SubcallRequest) -> Vec<sandbox::SubcallResult> {
    request
        .prompts
        .iter()
        .map(|_| sandbox::SubcallResult {
            outcome: Some(sandbox::subcall_result::Outcome::Error(
                SUBCALLS_REFUSED.to_owned(),
            )),
        })
        .collect()
}

fn response(run: CellRun) -> ExecuteResponse {
    let r = run.result;
    let end_detail = if r.session_ended {
        let reason = r
            .end_reason()
            .as_str_name()
            .trim_start_matches("SESSION_END_REASON_")
            .to_ascii_lowercase();
        if r.end_detail.is_empty() {
            reason
        } else {
            format!("{reason}: {}", r.end_detail)
        }
    } else {
        String::new()
    };
    ExecuteResponse {
        stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        result: r.final_value.filter(|_| r.final_called),
        error: r.error.map(|e| CellError {
            exception_type: e.exception_type,
            message: e.message,
            traceback: e.traceback,
        }),
        timed_out: r.timed_out,
        session_ended: r.session_ended,
        end_detail,
        truncated: r.truncated,
        duration: r.wall_duration,
        cpu_ms: r.cpu_ms,
    }
}

impl DirectSessions {
    /// Uses the engine's agent connection, metrics and cell timeout.
    pub fn new(shared: Arc<Shared>, settings: SessionSettings) -> Arc<Self> {
        Arc::new(Self {
            shared,
            settings,
            registry: Registry::default(),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The server's default Execute timeout.
    pub fn cell_timeout(&self) -> Duration {
        self.shared.limits.cell_timeout
    }

    fn agent_error(&self, method: &str, status: Status) -> Status {
        self.shared
            .metrics
            .observe_sandbox_call(method, status.code());
        self.shared.sandbox_error(status)
    }

    /// Opens a session for `owner`; `idle_ttl` is already validated.
    pub async fn create(
        &self,
        owner: Owner,
        limits: Option<SandboxLimits>,
        idle_ttl: Duration,
    ) -> Result<Session, Status> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(Status::unavailable("the server is shutting down"));
        }
        if self.settings.max_sessions == 0 {
            return Err(Status::failed_precondition(
                "direct sessions are disabled on this server (RLM_MAX_SESSIONS=0)",
            ));
        }
        let reservation = self.registry.reserve(&owner, &self.settings)?;
        let agent_ttl = (idle_ttl + AGENT_TTL_MARGIN).min(Duration::from_secs(86_400));
        let id = uuid::Uuid::new_v4().to_string();
        let request = sandbox::CreateSessionRequest {
            limits: Some(agent_limits(limits, agent_ttl)),
            context_ids: Vec::new(),
            labels: Some(sandbox::SessionLabels {
                node_id: format!("direct:{id}"),
                ..Default::default()
            }),
            json_contexts: Vec::new(),
        };
        let remote = RemoteSession::create(&self.shared.sandbox, request)
            .await
            .map_err(|s| self.agent_error("CreateSession", s))?;
        self.shared
            .metrics
            .observe_sandbox_call("CreateSession", tonic::Code::Ok);
        let in_force = remote
            .created
            .limits
            .as_ref()
            .map(public_limits)
            .unwrap_or_default();
        let owner_label = owner.clone().unwrap_or_else(|| "-".to_owned());
        let entry = Arc::new(Entry::new(
            id.clone(),
            owner,
            remote.id().to_owned(),
            idle_ttl,
            in_force,
            remote,
        ));
        let session = entry.describe();
        self.registry.insert(reservation, entry);
        // Shutdown may have started while the agent created it.
        if self.stopping.load(Ordering::Acquire) {
            if let Some(entry) = self.registry.remove_any(&id) {
                self.destroy_on_agent(&entry).await;
            }
            return Err(Status::unavailable("the server is shutting down"));
        }
        tracing::info!(session = %id, owner = %owner_label, "direct session created");
        Ok(session)
    }

    /// The caller's sessions, oldest first.
    pub fn list(&self, owner: &Owner) -> Vec<Session> {
        self.registry
            .owned_by(owner)
            .iter()
            .map(|e| e.describe())
            .collect()
    }

    /// Runs one cell. The cell runs in its own task, so a caller going away
    /// does not cut it (and kill the session) half-way.
    pub async fn execute(
        &self,
        owner: &Owner,
        id: &str,
        code: String,
        timeout: Duration,
    ) -> Result<ExecuteResponse, Status> {
        let entry = self.registry.get(owner, id)?;
        let repl = Arc::clone(&entry.repl).try_lock_owned().map_err(|_| {
            Status::failed_precondition(format!(
                "session_id: session {id} is already running an Execute call; wait for it to end"
            ))
        })?;
        if entry.gone.load(Ordering::Acquire) {
            return Err(registry::not_found(id));
        }
        entry.started();
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let task_entry = Arc::clone(&entry);
        tokio::spawn(async move {
            let mut repl = repl;
            let outcome = repl.run(&code, timeout, refuse_subcalls).await;
            task_entry.finished();
            drop(repl);
            let _ = sender.send(outcome);
        });
        let outcome = receiver
            .await
            .map_err(|_| Status::internal("the cell's task ended without a result"))?;
        if entry.gone.load(Ordering::Acquire) && outcome.is_err() {
            // DestroySession (or the shutdown) took it away while the cell ran.
            return Err(Status::not_found(format!(
                "session_id: session {id} was destroyed while the code ran"
            )));
        }
        match outcome {
            Ok(run) => {
                self.shared
                    .metrics
                    .observe_sandbox_call("Execute", tonic::Code::Ok);
                let response = response(run);
                if response.session_ended {
                    tracing::info!(session = %id, detail = %response.end_detail, "direct session ended");
                    self.forget(&entry).await;
                }
                Ok(response)
            }
            // The agent no longer has it (it ended and was reaped, or the
            // agent restarted): gone for the caller too.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) =>
            {
                self.shared
                    .metrics
                    .observe_sandbox_call("Execute", status.code());
                self.forget(&entry).await;
                Err(Status::not_found(format!(
                    "session_id: session {id} is gone on the sandbox agent ({}); create a new one",
                    status.message()
                )))
            }
            Err(status) => Err(self.agent_error("Execute", status)),
        }
    }

    /// Destroys one of `owner`'s sessions.
    pub async fn destroy(&self, owner: &Owner, id: &str) -> Result<(), Status> {
        let entry = self.registry.get(owner, id)?;
        if self.registry.remove(&entry) {
            entry.gone.store(true, Ordering::Release);
            self.destroy_on_agent(&entry).await;
            tracing::info!(session = %id, "direct session destroyed");
            Ok(())
        } else {
            Err(registry::not_found(id))
        }
    }

    async fn forget(&self, entry: &Arc<Entry>) {
        if self.registry.remove(entry) {
            entry.gone.store(true, Ordering::Release);
            self.destroy_on_agent(entry).await;
        }
    }

    async fn destroy_on_agent(&self, entry: &Entry) {
        let result = self
            .shared
            .sandbox
            .client()
            .destroy_session(sandbox::DestroySessionRequest {
                session_id: entry.agent_id.clone(),
            })
            .await;
        let code = result
            .as_ref()
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok);
        self.shared
            .metrics
            .observe_sandbox_call("DestroySession", code);
        if let Err(status) = result {
            // The agent reaps it after its own idle TTL.
            tracing::warn!(session = %entry.id, error = %status.message(), "destroying a direct session on the agent failed");
        }
    }

    /// Destroys the sessions idle past their TTL (not those running a cell).
    pub async fn reap_idle(&self) -> usize {
        let now = Instant::now();
        let expired = self.registry.take_idle(now);
        for entry in &expired {
            tracing::info!(session = %entry.id, idle_ttl_s = entry.idle_ttl.as_secs_f64(), "direct session expired");
            self.destroy_on_agent(entry).await;
        }
        expired.len()
    }

    /// Reaps idle sessions every second until the process ends.
    pub fn spawn_reaper(self: &Arc<Self>) {
        let sessions = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if sessions.stopping.load(Ordering::Acquire) {
                    return;
                }
                sessions.reap_idle().await;
            }
        });
    }

    /// Refuses new sessions and destroys every open one (within `grace`).
    pub async fn shutdown(&self, grace: Duration) {
        self.stopping.store(true, Ordering::Release);
        let all = self.registry.take_all();
        if all.is_empty() {
            return;
        }
        tracing::info!(
            sessions = all.len(),
            "destroying the direct sessions before exit"
        );
        let destroy_all = futures::future::join_all(all.iter().map(|entry| {
            entry.gone.store(true, Ordering::Release);
            self.destroy_on_agent(entry)
        }));
        if tokio::time::timeout(grace, destroy_all).await.is_err() {
            tracing::warn!(
                "direct sessions still being destroyed at exit; the agent reaps them after their idle TTL"
            );
        }
    }
}

/// A REPL shared between the registry and the task running its cell.
type Repl = Arc<AsyncMutex<RemoteSession>>;
