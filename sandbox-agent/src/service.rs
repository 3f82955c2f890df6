//! `rlm.sandbox.v1.SandboxService` over the session manager and the context store.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{Stream, StreamExt};
use rlm_proto::rlm::sandbox::v1::sandbox_service_server::SandboxService;
use rlm_proto::rlm::sandbox::v1::*;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::context_store::{ContextStore, ContextStoreError, UploadExpectations};
use crate::session::limits::{self, Policy};
use crate::session::manager::{EndReason, ExecuteOutcome, Labels, Manager, ManagerError, Session};
use crate::session::process::{CellEvent, CellInput, Stream as OutStream};
use crate::session::protocol::{SubcallAnswer, SubcallItem, SubcallKind as DriverKind};

pub struct SandboxApi {
    pub contexts: Arc<ContextStore>,
    pub manager: Arc<Manager>,
    pub policy: Policy,
    pub info: StaticInfo,
    pub started_at: SystemTime,
}

/// What GetInfo reports that does not change while the agent runs.
#[derive(Debug, Clone, Default)]
pub struct StaticInfo {
    pub isolation_mode: IsolationMode,
    pub features: Vec<IsolationFeature>,
    pub cgroup_version: CgroupVersion,
    pub warnings: Vec<String>,
    pub python_version: String,
}

const DEFAULT_CELL_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_CELL_TIMEOUT: Duration = Duration::from_secs(86_400);
const MAX_CODE_BYTES: usize = 8 << 20;

fn store_error(err: ContextStoreError) -> Status {
    match err {
        ContextStoreError::TooLarge { .. } => Status::resource_exhausted(err.to_string()),
        ContextStoreError::DigestMismatch { .. } | ContextStoreError::SizeMismatch { .. } => {
            Status::invalid_argument(err.to_string())
        }
        ContextStoreError::Io { .. } => {
            tracing::error!("{err}");
            Status::internal(err.to_string())
        }
    }
}

fn manager_error(err: ManagerError) -> Status {
    match &err {
        ManagerError::UnknownContext { .. } => Status::not_found(err.to_string()),
        ManagerError::TooMany(_) => Status::resource_exhausted(err.to_string()),
        ManagerError::NotFound(_) => Status::not_found(format!("session_id: {err}")),
        ManagerError::Busy(_) | ManagerError::Ended { .. } => {
            Status::failed_precondition(err.to_string())
        }
        ManagerError::Launch(_) | ManagerError::ContextIo { .. } | ManagerError::Attach(_) => {
            tracing::error!("{err}");
            Status::internal(err.to_string())
        }
    }
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    time.into()
}

fn session_info(session: &Session) -> SessionInfo {
    let state = if session.ended_reason().is_some() {
        SessionState::Ended
    } else if session.is_busy() {
        SessionState::Executing
    } else {
        SessionState::Idle
    };
    SessionInfo {
        session_id: session.id.clone(),
        state: state as i32,
        created_at: Some(timestamp(session.created_at)),
        last_used_at: Some(timestamp(session.last_used())),
        profile: session.limits.profile().name(),
        limits: Some(session.limits.to_proto()),
        labels: Some(SessionLabels {
            completion_id: session.labels.completion_id.clone(),
            depth: session.labels.depth,
            node_id: session.labels.node_id.clone(),
        }),
        context_ids: session.context_ids.clone(),
        executions: session
            .executions
            .load(std::sync::atomic::Ordering::Relaxed),
        pid_count: None,
        memory_bytes: None,
    }
}

fn duration_from(
    d: Option<&prost_types::Duration>,
    field: &str,
) -> Result<Option<Duration>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.seconds == 0 && d.nanos == 0 => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(Status::invalid_argument(format!(
            "{field}: must not be negative"
        ))),
        Some(d) => {
            let value = Duration::new(d.seconds as u64, d.nanos as u32);
            if value > MAX_CELL_TIMEOUT {
                return Err(Status::invalid_argument(format!("{field}: at most 24 h")));
            }
            Ok(Some(value))
        }
    }
}

type ExecuteStream = Pin<Box<dyn Stream<Item = Result<ExecuteResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SandboxService for SandboxApi {
    type ExecuteStream = ExecuteStream;

    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let request = request.into_inner();
        let limits = limits::resolve(request.limits.as_ref(), &self.policy).map_err(|err| {
            if err.denied {
                Status::permission_denied(err.to_string())
            } else {
                Status::invalid_argument(err.to_string())
            }
        })?;
        if request.context_ids.len() > 64 {
            return Err(Status::invalid_argument("context_ids: at most 64"));
        }
        for (index, id) in request.context_ids.iter().enumerate() {
            if crate::context_store::parse_context_id(id).is_none() {
                return Err(Status::invalid_argument(format!(
                    "context_ids[{index}]: {id:?} is not sha256:<64 hex>"
                )));
            }
        }
        let labels = request.labels.map_or_else(Labels::default, |l| Labels {
            completion_id: l.completion_id,
            depth: l.depth,
            node_id: l.node_id,
        });
        let summaries = summarize(
            Arc::clone(&self.contexts),
            request.context_ids.clone(),
            request.json_contexts,
        );
        let (session, contexts) = tokio::join!(
            self.manager.create(limits, request.context_ids, labels),
            summaries
        );
        let session = session.map_err(manager_error)?;
        tracing::info!(session = %session.id, from_pool = session.from_pool, "session created");
        Ok(Response::new(CreateSessionResponse {
            session_id: session.id.clone(),
            from_warm_pool: session.from_pool,
            profile: session.limits.profile().name(),
            limits: Some(session.limits.to_proto()),
            contexts,
        }))
    }

    async fn destroy_session(
        &self,
        request: Request<DestroySessionRequest>,
    ) -> Result<Response<DestroySessionResponse>, Status> {
        let id = request.into_inner().session_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("session_id: required"));
        }
        let existed = self.manager.destroy(&id).await;
        if existed {
            tracing::info!(session = %id, "session destroyed");
        }
        Ok(Response::new(DestroySessionResponse { existed }))
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let filter = request.into_inner().completion_id;
        let sessions = self
            .manager
            .list()
            .iter()
            .filter(|s| filter.is_empty() || s.labels.completion_id == filter)
            .map(|s| session_info(s))
            .collect();
        Ok(Response::new(ListSessionsResponse { sessions }))
    }

    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let (contexts, bytes) = self.contexts.stats();
        let mut pools = Vec::new();
        for pool in self.manager.pools() {
            let stats = pool.stats().await;
            pools.push(PoolStats {
                profile: stats.profile,
                target_size: stats.target as u32,
                ready: stats.ready as u32,
                starting: stats.starting as u32,
                hits: stats.hits,
                misses: stats.misses,
                ..Default::default()
            });
        }
        Ok(Response::new(GetInfoResponse {
            agent_version: rlm_common::VERSION.to_owned(),
            python_version: self.info.python_version.clone(),
            isolation_mode: self.info.isolation_mode as i32,
            isolation_features: self.info.features.iter().map(|f| *f as i32).collect(),
            cgroup_version: self.info.cgroup_version as i32,
            warnings: self.info.warnings.clone(),
            pools,
            live_sessions: self.manager.count() as u32,
            default_limits: Some(limits::Limits::default().to_proto()),
            max_limits: None,
            context_store: Some(ContextStoreStats {
                context_count: contexts,
                total_bytes: bytes,
            }),
            started_at: Some(timestamp(self.started_at)),
        }))
    }

    #[tracing::instrument(name = "sandbox.put_context", skip_all)]
    async fn put_context(
        &self,
        request: Request<Streaming<PutContextRequest>>,
    ) -> Result<Response<PutContextResponse>, Status> {
        let mut stream = request.into_inner();
        let first = stream.message().await?.ok_or_else(|| {
            Status::invalid_argument("chunk: the upload stream carried no message")
        })?;
        let expect = UploadExpectations {
            sha256_hex: first.expected_sha256.to_ascii_lowercase(),
            size: first.total_size_bytes,
        };
        if !expect.sha256_hex.is_empty()
            && crate::context_store::parse_context_id(&format!("sha256:{}", expect.sha256_hex))
                .is_none()
        {
            return Err(Status::invalid_argument(
                "expected_sha256: must be 64 hexadecimal digits",
            ));
        }
        let later = stream.map(|message| {
            let message = message?;
            if !message.expected_sha256.is_empty() || message.total_size_bytes != 0 {
                return Err(Status::invalid_argument(
                    "expected_sha256/total_size_bytes: only allowed on the first message",
                ));
            }
            Ok(message.chunk)
        });
        let chunks = futures::stream::once(async { Ok(first.chunk) }).chain(later);
        let stored = self
            .contexts
            .put(expect, Box::pin(chunks))
            .await?
            .map_err(store_error)?;
        tracing::info!(context_id = %stored.id, size_bytes = stored.size, already_existed = stored.already_existed, "context stored");
        Ok(Response::new(PutContextResponse {
            context_id: stored.id,
            size_bytes: stored.size,
            already_existed: stored.already_existed,
        }))
    }

    async fn execute(
        &self,
        request: Request<Streaming<ExecuteRequest>>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let mut inbound = request.into_inner();
        let start = match inbound.message().await?.and_then(|m| m.payload) {
            Some(execute_request::Payload::Start(start)) => start,
            _ => {
                return Err(Status::invalid_argument(
                    "start: the first message must be ExecuteStart",
                ));
            }
        };
        // The first cell's problems are RPC errors; later cells' end the stream.
        let timeout = check_start(&self.manager, &start)?;

        let (outbound, responses) = mpsc::channel::<Result<ExecuteResponse, Status>>(32);
        let manager = self.manager.clone();
        tokio::spawn(run_cells(manager, start, timeout, inbound, outbound));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(responses),
        )))
    }
}

/// Validates a start message: its fields, and that the session exists and is idle.
fn check_start(manager: &Manager, start: &ExecuteStart) -> Result<Duration, Status> {
    if start.session_id.is_empty() {
        return Err(Status::invalid_argument("start.session_id: required"));
    }
    if start.code.len() > MAX_CODE_BYTES {
        return Err(Status::invalid_argument(format!(
            "start.code: at most {MAX_CODE_BYTES} bytes"
        )));
    }
    let timeout =
        duration_from(start.timeout.as_ref(), "start.timeout")?.unwrap_or(DEFAULT_CELL_TIMEOUT);
    let session = manager
        .get(&start.session_id)
        .ok_or_else(|| Status::not_found(format!("session_id: no session {}", start.session_id)))?;
    if session.is_busy() {
        return Err(Status::failed_precondition(format!(
            "session {} is running another Execute",
            session.id
        )));
    }
    Ok(timeout)
}

/// Runs cells one after another on one Execute stream: after each result the
/// client may send the next `start`, or close its side to end the stream.
async fn run_cells(
    manager: Arc<Manager>,
    mut start: ExecuteStart,
    mut timeout: Duration,
    mut inbound: Streaming<ExecuteRequest>,
    outbound: mpsc::Sender<Result<ExecuteResponse, Status>>,
) {
    loop {
        match run_cell(&manager, &start, timeout, &mut inbound, &outbound).await {
            CellEnd::Result(response) => {
                if outbound.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            CellEnd::Failed(status) => {
                let _ = outbound.send(Err(status)).await;
                return;
            }
            CellEnd::InboundClosed(response) => {
                let _ = outbound.send(Ok(response)).await;
                return;
            }
            CellEnd::Abandoned => return,
        }
        // Between cells: the next start, or the end of the stream. Answers to
        // sub-calls of the finished cell (it cancels them at its end) and
        // interrupts that arrive too late are ignored.
        let next = loop {
            match inbound.message().await {
                Ok(Some(ExecuteRequest {
                    payload: Some(execute_request::Payload::Start(next)),
                })) => break next,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        };
        match check_start(&manager, &next) {
            Ok(next_timeout) => {
                start = next;
                timeout = next_timeout;
            }
            Err(status) => {
                let _ = outbound.send(Err(status)).await;
                return;
            }
        }
    }
}

/// The summaries of `ids` for CreateSessionResponse.contexts: all of them,
/// or none when one cannot be read (the caller then measures in the session).
async fn summarize(
    store: Arc<ContextStore>,
    ids: Vec<String>,
    json_contexts: Vec<u32>,
) -> Vec<ContextSummary> {
    if ids.is_empty() {
        return Vec::new();
    }
    let as_json = move |index: usize| json_contexts.iter().any(|&i| i as usize == index);
    // Known contents (the usual case) need no blocking thread.
    let cached: Option<Vec<ContextSummary>> = (0..)
        .zip(&ids)
        .map(|(index, id)| {
            let json = as_json(index);
            let summary = store.cached_summary(id, json)?;
            Some(to_proto(&summary, json))
        })
        .collect();
    if let Some(summaries) = cached {
        return summaries;
    }
    let work = tokio::task::spawn_blocking(move || {
        (0..)
            .zip(&ids)
            .map(|(index, id)| {
                let json = as_json(index);
                let summary = store.summary(id, json).ok()??;
                Some(to_proto(&summary, json))
            })
            .collect::<Option<Vec<_>>>()
    });
    match work.await {
        Ok(Some(summaries)) => summaries,
        Ok(None) | Err(_) => Vec::new(),
    }
}

fn to_proto(summary: &crate::context_summary::Summary, as_json: bool) -> ContextSummary {
    ContextSummary {
        chars: summary.text.chars,
        preview: summary.text.preview.clone(),
        json: summary
            .json
            .clone()
            .flatten()
            .filter(|_| as_json)
            .map(|shape| JsonShape {
                r#type: shape.kind.to_owned(),
                items: shape.items,
            }),
    }
}

/// How one cell's part of the stream ended.
enum CellEnd {
    Result(ExecuteResponse),
    /// The result, and the client has closed its side (no further cells).
    InboundClosed(ExecuteResponse),
    /// An error that ends the stream.
    Failed(Status),
    /// The caller went away; the session has been destroyed.
    Abandoned,
}

/// Runs one cell in a single task: the cell, the client's answers and
/// interrupts, and the cell's events going out, multiplexed with `select!`
/// (no helper tasks: every hop between tasks costs a wake-up on the hot path).
async fn run_cell(
    manager: &Manager,
    start: &ExecuteStart,
    timeout: Duration,
    inbound: &mut Streaming<ExecuteRequest>,
    outbound: &mpsc::Sender<Result<ExecuteResponse, Status>>,
) -> CellEnd {
    let (events_tx, mut events_rx) = mpsc::channel::<CellEvent>(16);
    let (inputs_tx, mut inputs_rx) = mpsc::channel::<CellInput>(16);
    // Prompt counts of sub-calls sent and not yet answered, to validate answers.
    let mut outstanding: HashMap<u64, usize> = HashMap::new();
    let mut inbound_open = true;
    let mut failure: Option<Status> = None;
    // The caller went away mid-cell: its session is killed, not left running.
    let mut abandoned = false;

    let cell = manager.execute(
        &start.session_id,
        &start.code,
        timeout,
        &events_tx,
        &mut inputs_rx,
    );
    tokio::pin!(cell);
    let outcome = loop {
        tokio::select! {
            biased;
            event = events_rx.recv() => {
                let Some(event) = event else { continue };
                if let CellEvent::Subcall(subcall) = &event {
                    outstanding.insert(subcall.id, subcall.prompts.len());
                }
                if outbound.send(Ok(to_response(event))).await.is_err() && !abandoned {
                    abandoned = true;
                    manager.kill_running(&start.session_id);
                }
            }
            outcome = &mut cell => break outcome,
            () = outbound.closed(), if !abandoned => {
                abandoned = true;
                manager.kill_running(&start.session_id);
            }
            message = inbound.message(), if inbound_open => {
                let input = match message {
                    Ok(Some(message)) => match client_input(message, &mut outstanding) {
                        Ok(input) => input,
                        Err(status) => {
                            failure.get_or_insert(status);
                            inbound_open = false;
                            CellInput::Interrupt
                        }
                    },
                    // The client is done sending; the cell goes on.
                    Ok(None) => {
                        inbound_open = false;
                        continue;
                    }
                    // A broken client stream: the caller is gone.
                    Err(_) => {
                        inbound_open = false;
                        abandoned = true;
                        manager.kill_running(&start.session_id);
                        continue;
                    }
                };
                let _ = inputs_tx.send(input).await;
            }
        }
    };
    // Events the cell queued after the last one forwarded.
    while let Ok(event) = events_rx.try_recv() {
        let _ = outbound.send(Ok(to_response(event))).await;
    }
    if abandoned || outbound.is_closed() {
        tracing::info!(session = %start.session_id, "caller went away mid-cell: destroying the session");
        manager.destroy(&start.session_id).await;
        return CellEnd::Abandoned;
    }
    match (failure, outcome) {
        (Some(status), _) => CellEnd::Failed(status),
        (None, Err(err)) => CellEnd::Failed(manager_error(err)),
        (None, Ok(outcome)) if inbound_open => CellEnd::Result(result_response(outcome)),
        (None, Ok(outcome)) => CellEnd::InboundClosed(result_response(outcome)),
    }
}

/// What one client message means for the running cell.
fn client_input(
    message: ExecuteRequest,
    outstanding: &mut HashMap<u64, usize>,
) -> Result<CellInput, Status> {
    match message.payload {
        Some(execute_request::Payload::SubcallResponse(response)) => {
            match outstanding.remove(&response.id) {
                Some(count) if count == response.results.len() => {
                    Ok(CellInput::Answer(to_answer(response)))
                }
                Some(count) => Err(Status::invalid_argument(format!(
                    "subcall_response.results: {} results for {count} prompts",
                    response.results.len()
                ))),
                None => Err(Status::invalid_argument(format!(
                    "subcall_response.id: {} is not an outstanding sub-call",
                    response.id
                ))),
            }
        }
        Some(execute_request::Payload::Interrupt(interrupt)) => {
            tracing::info!(reason = %interrupt.reason, "cell interrupted by the client");
            Ok(CellInput::Interrupt)
        }
        Some(execute_request::Payload::Start(_)) | None => Err(Status::invalid_argument(
            "start: only the first message may be ExecuteStart",
        )),
    }
}

fn to_response(event: CellEvent) -> ExecuteResponse {
    let payload = match event {
        CellEvent::Output(stream, data) => execute_response::Payload::Output(OutputChunk {
            stream: match stream {
                OutStream::Stdout => OutputStream::Stdout,
                OutStream::Stderr => OutputStream::Stderr,
            } as i32,
            data,
        }),
        CellEvent::Subcall(subcall) => execute_response::Payload::SubcallRequest(SubcallRequest {
            id: subcall.id,
            kind: match subcall.kind {
                DriverKind::Llm => SubcallKind::LlmQuery,
                DriverKind::Rlm => SubcallKind::RlmQuery,
            } as i32,
            prompts: subcall.prompts,
            model: subcall.model.unwrap_or_default(),
            batched: subcall.batched,
            contexts: subcall
                .contexts
                .into_iter()
                .map(|c| SubcallContext {
                    source: c.map(|c| subcall_context::Source::Text(c.text)),
                })
                .collect(),
        }),
    };
    ExecuteResponse {
        payload: Some(payload),
    }
}

fn result_response(outcome: ExecuteOutcome) -> ExecuteResponse {
    let cell = outcome.cell;
    let done = cell.done.unwrap_or_default();
    ExecuteResponse {
        payload: Some(execute_response::Payload::Result(ExecuteResult {
            final_called: done.final_called,
            final_value: if done.final_called {
                done.final_value
            } else {
                None
            },
            error: done.error.map(|e| ExecutionError {
                exception_type: e.kind,
                message: e.message,
                traceback: e.traceback,
            }),
            timed_out: cell.timed_out,
            interrupted: cell.interrupted,
            session_ended: outcome.end_reason.is_some(),
            end_reason: match outcome.end_reason {
                None => SessionEndReason::Unspecified,
                Some(EndReason::OomKilled) => SessionEndReason::OomKilled,
                Some(EndReason::TimeoutKilled) if cell.timed_out => SessionEndReason::TimeoutKilled,
                Some(EndReason::TimeoutKilled) | Some(EndReason::Abandoned) => {
                    SessionEndReason::InterruptKilled
                }
                Some(EndReason::Exited) => SessionEndReason::Exited,
                Some(EndReason::Crashed) => SessionEndReason::Crashed,
                Some(EndReason::ProtocolViolation) => SessionEndReason::ProtocolError,
            } as i32,
            end_detail: outcome.end_detail,
            truncated: cell.truncated,
            output_bytes: cell.output_bytes,
            cpu_ms: outcome.cpu_ms,
            max_rss_bytes: outcome.max_rss_bytes,
            wall_duration: prost_types::Duration::try_from(cell.wall).ok(),
            subcalls: cell.subcalls,
        })),
    }
}

fn to_answer(response: SubcallResponse) -> SubcallAnswer {
    SubcallAnswer {
        id: response.id,
        results: response
            .results
            .into_iter()
            .map(|r| match r.outcome {
                Some(subcall_result::Outcome::Text(text)) => SubcallItem::Text(text),
                Some(subcall_result::Outcome::Error(error)) => SubcallItem::Error(error),
                None => SubcallItem::Error(String::new()),
            })
            .collect(),
    }
}
