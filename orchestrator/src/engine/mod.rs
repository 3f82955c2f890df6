//! The recursive completion engine: a completion is a tree of RLMs, each a
//! model driving its own sandbox REPL; this module starts trees, stops them
//! (cancellation, deadline) and records their results.

pub mod node;
pub mod parse;
pub mod prompt;
pub mod setup;
pub mod spec;
pub mod tree;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rlm_proto::rlm::sandbox::v1::PutContextRequest;
use rlm_proto::rlm::v1::{CompletionEvent, CompletionResult, CompletionSpec, TerminationReason};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::Instrument;

use crate::budget::{Budget, BudgetLimits};
use crate::config::LimitDefaults;
use crate::metrics::Metrics;
use crate::model::Models;
use crate::sandbox_client::SandboxConnection;
use crate::trajectory::{
    EventBody, FinishedRecord, LimitsRecord, TrajectoryHeader, TrajectoryStore, UsageRecord,
    prompt_preview,
};
use node::{Node, NodeContext, NodeEnd, NodeSpec};
use spec::{ContextSource, Resolved, ServerDefaults};
use tree::{EventSink, PermitSlot, Tree, lock};

/// A cancellation this close to the deadline counts as the timeout.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);

/// Upload chunk size towards the agent.
const CHUNK_BYTES: usize = 1 << 20;

/// Everything the engine shares between completions.
pub struct Shared {
    pub models: Models,
    pub sandbox: SandboxConnection,
    pub metrics: Arc<Metrics>,
    pub store: TrajectoryStore,
    pub root_model: Option<String>,
    pub sub_model: Option<String>,
    pub limits: LimitDefaults,
    running: Mutex<HashMap<String, Running>>,
    slots: Arc<Semaphore>,
    max_completions: u32,
    /// Cancelled by [`Engine::shutdown`]; every completion's token is a child.
    stopping: CancellationToken,
}

struct Running {
    cancel: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

impl Shared {
    /// Agent failures keep their code when they are about the request, and
    /// become UNAVAILABLE naming the agent when the agent itself is the problem.
    pub fn sandbox_error(&self, status: Status) -> Status {
        match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::ResourceExhausted
            | tonic::Code::NotFound
            | tonic::Code::PermissionDenied => status,
            _ => {
                self.metrics.count_error("sandbox_unavailable");
                Status::unavailable(format!(
                    "sandbox agent at {}: {}",
                    self.sandbox.address(),
                    status.message()
                ))
            }
        }
    }

    /// Stores `bytes` in the agent's context store; returns the content id.
    pub async fn put_context(&self, bytes: Vec<u8>) -> Result<String, Status> {
        let mut messages: Vec<PutContextRequest> = bytes
            .chunks(CHUNK_BYTES)
            .map(|chunk| PutContextRequest {
                chunk: chunk.to_vec(),
                ..Default::default()
            })
            .collect();
        if messages.is_empty() {
            messages.push(PutContextRequest::default());
        }
        messages[0].total_size_bytes = bytes.len() as u64;
        let result = self
            .sandbox
            .client()
            .put_context(futures::stream::iter(messages))
            .await;
        self.metrics.observe_sandbox_call(
            "PutContext",
            result
                .as_ref()
                .map_or_else(|s| s.code(), |_| tonic::Code::Ok),
        );
        Ok(result
            .map_err(|s| self.sandbox_error(s))?
            .into_inner()
            .context_id)
    }
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// Configuration of [`Engine::new`].
pub struct EngineConfig {
    pub models: Models,
    pub sandbox: SandboxConnection,
    pub metrics: Arc<Metrics>,
    pub store: TrajectoryStore,
    pub root_model: Option<String>,
    pub sub_model: Option<String>,
    pub limits: LimitDefaults,
    pub max_completions: u32,
}

/// Cancels its completion when dropped before the result was taken: the
/// RPC that started it went away.
struct CancelOnDrop(Option<CancellationToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            token.cancel();
        }
    }
}

/// Ids of a completion and of its trajectory.
#[derive(Debug, Clone)]
pub struct CompletionIds {
    pub completion_id: String,
    pub trajectory_id: String,
}

impl CompletionIds {
    /// A new random id, used for both.
    pub fn fresh() -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        Self {
            completion_id: id.clone(),
            trajectory_id: id,
        }
    }
}

/// Options of [`Engine::start_with`]; the default is a fresh id, no client
/// deadline, no event stream, and a slot taken (or refused) at once.
#[derive(Default)]
pub struct Launch {
    /// The client's gRPC deadline: shortens the completion's timeout.
    pub client_timeout: Option<Duration>,
    /// Receives every event, the result last.
    pub events: Option<mpsc::UnboundedSender<CompletionEvent>>,
    /// The API key's concurrency permit, held until the completion ends.
    pub caller_slot: Option<OwnedSemaphorePermit>,
    /// Ids chosen by the caller (queued completions); `None` = fresh.
    pub ids: Option<CompletionIds>,
    /// A slot already obtained with [`Engine::wait_for_slot`].
    pub slot: Option<OwnedSemaphorePermit>,
}

/// A running completion.
pub struct Started {
    pub completion_id: String,
    result: oneshot::Receiver<CompletionResult>,
    guard: CancelOnDrop,
}

impl Started {
    /// Waits for the result. Dropping the future (or `self`) before then
    /// cancels the completion.
    pub async fn result(mut self) -> Result<CompletionResult, Status> {
        let result = (&mut self.result)
            .await
            .map_err(|_| Status::internal("the completion task ended without a result"));
        self.guard.0 = None;
        result
    }

    /// Keeps the completion alive for as long as the returned guard lives
    /// (for StreamComplete, whose stream holds it).
    pub fn into_guard(self) -> impl Send + Sync + 'static {
        self.guard
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                models: config.models,
                sandbox: config.sandbox,
                metrics: config.metrics,
                store: config.store,
                root_model: config.root_model,
                sub_model: config.sub_model,
                limits: config.limits,
                running: Mutex::default(),
                slots: Arc::new(Semaphore::new(config.max_completions as usize)),
                max_completions: config.max_completions,
                stopping: CancellationToken::new(),
            }),
        }
    }

    /// For the end of the server's drain: refuses new completions
    /// (UNAVAILABLE), cancels the running ones (`CANCELLED`, "the server is
    /// shutting down") and waits, at most `grace`, until each has stopped,
    /// destroyed its sandbox sessions and recorded its result. Without this
    /// a completion task still running when the process exits would be
    /// dropped by the runtime, leaving its sessions on the agent. Returns
    /// whether every completion finished within `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let shared = &self.shared;
        shared.stopping.cancel();
        let running = lock(&shared.running).len();
        if running > 0 {
            tracing::info!(running, "cancelling the running completions");
        }
        // Every completion holds one slot until its task has cleaned up.
        let all = Arc::clone(&shared.slots).acquire_many_owned(shared.max_completions);
        match tokio::time::timeout(grace, all).await {
            Ok(_) => true,
            Err(_) => {
                let left = lock(&shared.running).len();
                tracing::warn!(
                    left,
                    grace_ms = grace.as_millis() as u64,
                    "completions still stopping at exit; their sandbox sessions may outlive them until the agent reaps them"
                );
                false
            }
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn store(&self) -> &TrajectoryStore {
        &self.shared.store
    }

    /// Validates `spec`, stores inline contexts, opens the root REPL and
    /// starts the tree. Errors here are RPC errors: nothing ran yet.
    /// `events` receives every event, the result last; `caller_slot` (the
    /// API key's concurrency permit) is held until the completion ends.
    pub async fn start(
        &self,
        spec: Option<CompletionSpec>,
        client_timeout: Option<Duration>,
        events: Option<mpsc::UnboundedSender<CompletionEvent>>,
        caller_slot: Option<OwnedSemaphorePermit>,
    ) -> Result<Started, Status> {
        self.start_with(
            spec,
            Launch {
                client_timeout,
                events,
                caller_slot,
                ..Launch::default()
            },
        )
        .await
    }

    /// Checks `spec` as [`start`](Self::start) would, without running it.
    pub fn validate(&self, spec: Option<CompletionSpec>) -> Result<(), Status> {
        self.resolve(spec).map(drop)
    }

    fn resolve(&self, spec: Option<CompletionSpec>) -> Result<Resolved, Status> {
        let shared = &self.shared;
        spec::resolve(
            spec,
            &ServerDefaults {
                root_model: shared.root_model.as_deref(),
                sub_model: shared.sub_model.as_deref(),
                limits: &shared.limits,
                pricing: shared.models.pricing(),
            },
        )
    }

    /// Waits for one of the RLM_MAX_COMPLETIONS slots (queued completions
    /// wait where an RPC would be refused); `None` once the engine stops.
    pub async fn wait_for_slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = Arc::clone(&self.shared.slots).acquire_owned() => permit.ok(),
            () = self.shared.stopping.cancelled() => None,
        }
    }

    /// [`start`](Self::start) with every option.
    pub async fn start_with(
        &self,
        spec: Option<CompletionSpec>,
        launch: Launch,
    ) -> Result<Started, Status> {
        let Launch {
            client_timeout,
            events,
            caller_slot,
            ids,
            slot,
        } = launch;
        let started = Instant::now();
        let shared = &self.shared;
        if shared.stopping.is_cancelled() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let slot = match slot {
            Some(slot) => slot,
            None => Arc::clone(&shared.slots).try_acquire_owned().map_err(|_| {
                Status::resource_exhausted(
                    "the server is running its maximum number of completions (RLM_MAX_COMPLETIONS); retry later",
                )
            })?,
        };
        let mut resolved = self.resolve(spec)?;
        if let Some(t) = client_timeout {
            resolved.limits.timeout = resolved.limits.timeout.min(t);
        }
        let mut contexts = Vec::with_capacity(resolved.contexts.len());
        for (i, c) in resolved.contexts.iter().enumerate() {
            let id = match &c.source {
                ContextSource::Id(id) => id.clone(),
                ContextSource::Text(text) => shared
                    .put_context(text.clone().into_bytes())
                    .await
                    .map_err(|s| prefixed(s, &format!("spec.contexts[{i}].text")))?,
            };
            contexts.push(NodeContext { id, json: c.json });
        }
        let CompletionIds {
            completion_id,
            trajectory_id,
        } = ids.unwrap_or_else(CompletionIds::fresh);
        let budget = Budget::new(&budget_limits(&resolved, started), started);
        let writer = self.open_trajectory(&completion_id, &trajectory_id, &resolved, &contexts);
        let tree = Arc::new(Tree::new(
            Arc::clone(shared),
            completion_id.clone(),
            resolved,
            budget.clone(),
            started,
            EventSink::new(writer, events),
        ));
        let root = Arc::new(Node::new(NodeSpec {
            tree: Arc::clone(&tree),
            id: "0".to_owned(),
            depth: 0,
            budget,
            model: tree.spec.root_model.clone(),
            task: tree.spec.prompt.clone(),
            contexts,
            tallies: Vec::new(),
            permit: PermitSlot::new(Arc::clone(&tree.parallel), None),
        }));
        let repl = match root.open_repl().await {
            Ok(repl) => repl,
            Err(e) => {
                let status = match e {
                    setup::SetupError::Sandbox(s) if s.code() == tonic::Code::NotFound => {
                        unknown_context(&s, &tree.spec.contexts, &root.contexts)
                    }
                    setup::SetupError::Sandbox(s) => prefixed(shared.sandbox_error(s), "spec"),
                    setup::SetupError::Context { index, message } => {
                        Status::invalid_argument(format!("spec.contexts[{index}]: {message}"))
                    }
                    setup::SetupError::Script(m) => {
                        Status::internal(format!("binding the contexts failed: {m}"))
                    }
                };
                self.finish(&tree, stopped_before_start(&status)).await;
                return Err(status);
            }
        };

        // A child of the engine's token: shutdown cancels it, even when it
        // comes between here and the insertion below.
        let cancel = shared.stopping.child_token();
        let reason = Arc::new(Mutex::new(None));
        lock(&shared.running).insert(
            completion_id.clone(),
            Running {
                cancel: cancel.clone(),
                reason: Arc::clone(&reason),
            },
        );
        let (result_tx, result_rx) = oneshot::channel();
        let engine = self.clone();
        let token = cancel.clone();
        shared.metrics.completions_running.inc();
        let span = tracing::info_span!(parent: tracing::Span::current(), "rlm.completion", completion = %completion_id);
        tokio::spawn(async move {
            let result = engine
                .run_tree(Arc::clone(&tree), root, repl, token, reason)
                .instrument(span.clone())
                .await;
            let _ = result_tx.send(result);
            // The caller has its answer; sessions still registered (idle
            // ones, or those of a stopped tree) go now, before the
            // completion's slots are released.
            tree.destroy_remaining_sessions().instrument(span).await;
            drop(tree);
            engine.shared.metrics.completions_running.dec();
            drop::<OwnedSemaphorePermit>(slot);
            drop(caller_slot);
        });
        Ok(Started {
            completion_id,
            result: result_rx,
            guard: CancelOnDrop(Some(cancel)),
        })
    }

    fn open_trajectory(
        &self,
        completion_id: &str,
        trajectory_id: &str,
        spec: &Resolved,
        contexts: &[NodeContext],
    ) -> crate::trajectory::TrajectoryWriter {
        let l = &spec.limits;
        let header = TrajectoryHeader {
            completion_id: completion_id.to_owned(),
            prompt_preview: prompt_preview(&spec.prompt),
            root_model: spec.root_model.to_string(),
            sub_model: spec.sub_model.to_string(),
            context_ids: contexts.iter().map(|c| c.id.clone()).collect(),
            json_contexts: (0u32..)
                .zip(contexts)
                .filter(|(_, c)| c.json)
                .map(|(i, _)| i)
                .collect(),
            limits: LimitsRecord {
                max_depth: Some(l.max_depth),
                max_iterations: l.max_iterations,
                token_budget: l.token_budget.unwrap_or(0),
                cost_budget_usd: l.cost_budget_usd.unwrap_or(0.0),
                max_parallel: l.max_parallel,
                max_subcalls: l.max_subcalls,
                timeout_ms: u64::try_from(l.timeout.as_millis()).unwrap_or(u64::MAX),
                cell_timeout_ms: u64::try_from(l.cell_timeout.as_millis()).unwrap_or(u64::MAX),
            },
            metadata: spec.metadata.clone(),
        };
        match self.shared.store.create(trajectory_id, header.clone()) {
            Ok(writer) => writer,
            Err(error) => {
                // The completion still runs; only its record is lost.
                tracing::warn!(completion = %completion_id, %error, "cannot create the trajectory file");
                self.shared.metrics.count_error("trajectory_write");
                crate::trajectory::TrajectoryWriter::detached(trajectory_id, header)
            }
        }
    }

    async fn run_tree(
        &self,
        tree: Arc<Tree>,
        root: Arc<Node>,
        repl: node::Repl,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<String>>>,
    ) -> CompletionResult {
        let deadline = tokio::time::Instant::from_std(tree.deadline);
        let timeout = || NodeEnd::Stopped {
            reason: TerminationReason::Timeout,
            detail: format!(
                "timeout: {:.3}s elapsed",
                tree.spec.limits.timeout.as_secs_f64()
            ),
            partial: lock(&tree.root_last_reply).clone(),
        };
        let end = tokio::select! {
            end = Arc::clone(&root).run(repl) => end,
            // The RPC going away at the deadline (the client's gRPC deadline,
            // which shortened ours) is the timeout, not a cancellation.
            () = cancel.cancelled() => if Instant::now() + DEADLINE_SLACK >= tree.deadline {
                timeout()
            } else {
                NodeEnd::Stopped {
                    reason: TerminationReason::Cancelled,
                    detail: lock(&reason).clone().unwrap_or_else(|| self.unexplained_cancel()),
                    partial: lock(&tree.root_last_reply).clone(),
                }
            },
            () = tokio::time::sleep_until(deadline) => timeout(),
        };
        // Whatever was in flight was dropped with the root's future (model
        // requests aborted, Execute streams closed, so the agent kills
        // running cells); idle sessions are destroyed once the result is out.
        let iterations = root.budget.node_iterations();
        self.finish(&tree, (end, iterations)).await
    }

    /// Why a completion was cancelled when CancelCompletion gave no reason.
    fn unexplained_cancel(&self) -> String {
        if self.shared.stopping.is_cancelled() {
            "cancelled: the server is shutting down".to_owned()
        } else {
            "cancelled by the client".to_owned()
        }
    }

    async fn finish(&self, tree: &Tree, (end, iterations): (NodeEnd, u32)) -> CompletionResult {
        let (answer, reason, detail) = match end {
            NodeEnd::Final(answer) => (answer, TerminationReason::Final, String::new()),
            NodeEnd::Stopped {
                reason,
                detail,
                partial,
            } => (partial, reason, detail),
        };
        let budget = &tree.budget;
        let record = FinishedRecord {
            answer: answer.clone(),
            termination_reason: reason,
            detail,
            total_usage: UsageRecord::from(&budget.usage()),
            model_usage: budget
                .model_usage()
                .into_iter()
                .map(|m| (m.model, UsageRecord::from(&m.usage.unwrap_or_default())))
                .collect::<BTreeMap<_, _>>(),
            iterations,
            total_iterations: budget.total_iterations(),
            depth_reached: tree
                .depth_reached
                .load(std::sync::atomic::Ordering::Acquire),
            subcalls: budget.subcalls(),
            child_rlms: tree.child_rlms.load(std::sync::atomic::Ordering::Acquire),
            duration_ms: u64::try_from(tree.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        // Ended for CancelCompletion before any caller can see the result.
        lock(&self.shared.running).remove(&tree.completion_id);
        let mut result = tree
            .events
            .emit_result(EventBody::CompletionFinished(record), &answer)
            .unwrap_or_default();
        result.trajectory_id = tree.events.trajectory_id().to_owned();
        // The caller gets the result once any replica can read it.
        tree.events.settled().await;
        if let Some(error) = tree.events.write_error() {
            self.shared.metrics.count_error("trajectory_write");
            tracing::warn!(completion = %tree.completion_id, %error, "the trajectory is incomplete");
        }
        let reason_name = reason
            .as_str_name()
            .trim_start_matches("TERMINATION_REASON_");
        self.shared
            .metrics
            .completions
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: reason_name.to_owned(),
            })
            .inc();
        tracing::info!(
            completion = %tree.completion_id,
            reason = reason.as_str_name(),
            iterations,
            duration_ms = tree.started.elapsed().as_millis() as u64,
            "completion finished"
        );
        result
    }

    /// Cancels `completion_id` if it runs here; false otherwise.
    pub fn cancel_running(&self, completion_id: &str, reason: &str) -> bool {
        let running = lock(&self.shared.running);
        let Some(running) = running.get(completion_id) else {
            return false;
        };
        let detail = if reason.is_empty() {
            "cancelled by CancelCompletion".to_owned()
        } else {
            format!("cancelled by CancelCompletion: {reason}")
        };
        *lock(&running.reason) = Some(detail);
        running.cancel.cancel();
        true
    }

    /// Cancels a running completion; `Ok(false)` when it already ended.
    pub async fn cancel(&self, completion_id: &str, reason: &str) -> Result<bool, Status> {
        if self.cancel_running(completion_id, reason) {
            return Ok(true);
        }
        match self.shared.store.read(completion_id).await {
            Ok(_) => Ok(false),
            Err(_) => Err(Status::not_found(format!(
                "completion_id: no completion {completion_id:?}"
            ))),
        }
    }
}

/// The agent does not hold a context id the request named.
fn unknown_context(
    status: &Status,
    requested: &[spec::RequestContext],
    contexts: &[NodeContext],
) -> Status {
    let missing = contexts
        .iter()
        .position(|c| status.message().contains(&c.id));
    match missing {
        Some(i) => {
            let field = match requested.get(i).map(|c| &c.source) {
                Some(ContextSource::Id(_)) => "context_id",
                _ => "text",
            };
            Status::not_found(format!(
                "spec.contexts[{i}].{field}: the server holds no context {} (upload it with UploadContext)",
                contexts[i].id
            ))
        }
        None => Status::not_found(format!("spec.contexts: {}", status.message())),
    }
}

fn prefixed(status: Status, field: &str) -> Status {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::NotFound => {
            Status::new(status.code(), format!("{field}: {}", status.message()))
        }
        _ => status,
    }
}

fn stopped_before_start(status: &Status) -> (NodeEnd, u32) {
    let reason = match status.code() {
        tonic::Code::Unavailable => TerminationReason::SandboxError,
        _ => TerminationReason::Error,
    };
    (
        NodeEnd::Stopped {
            reason,
            detail: format!("not started: {}", status.message()),
            partial: String::new(),
        },
        0,
    )
}

fn budget_limits(spec: &Resolved, started: Instant) -> BudgetLimits {
    let l = &spec.limits;
    BudgetLimits {
        token_budget: l.token_budget,
        cost_budget_usd: l.cost_budget_usd,
        max_iterations: Some(l.max_iterations),
        max_subcalls: l.max_subcalls,
        deadline: Some(started + l.timeout),
        ..BudgetLimits::default()
    }
}
