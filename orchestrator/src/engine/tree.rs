//! State shared by every RLM of one completion tree: its events, its sandbox
//! sessions, the sub-call semaphore and the running totals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rlm_proto::rlm::sandbox::v1::{CreateSessionRequest, SessionLabels};
use rlm_proto::rlm::v1::{CompletionEvent, CompletionResult, Usage, completion_event::Event};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::Status;

use super::Shared;
use super::spec::Resolved;
use crate::budget::Budget;
use crate::remote_session::RemoteSession;
use crate::trajectory::{EventBody, TrajectoryWriter};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records events in the trajectory and, for StreamComplete, forwards them
/// to the client in the same order (one lock covers both).
pub struct EventSink {
    writer: TrajectoryWriter,
    /// Taken (closed) once the result is sent, so the client's stream ends
    /// without waiting for the tree's clean-up.
    stream: Mutex<Option<mpsc::UnboundedSender<CompletionEvent>>>,
    order: Mutex<()>,
    write_error: Mutex<Option<String>>,
}

impl EventSink {
    pub fn new(
        writer: TrajectoryWriter,
        stream: Option<mpsc::UnboundedSender<CompletionEvent>>,
    ) -> Self {
        Self {
            writer,
            stream: Mutex::new(stream),
            order: Mutex::new(()),
            write_error: Mutex::new(None),
        }
    }

    pub fn trajectory_id(&self) -> &str {
        self.writer.id()
    }

    /// Records `body`; returns the event as streamed.
    pub fn emit(&self, node: &str, depth: u32, body: EventBody) -> Option<CompletionEvent> {
        let _order = lock(&self.order);
        let (line, error) = self.writer.record(node, depth, body);
        if let Some(error) = error {
            *lock(&self.write_error) = Some(error.to_string());
        }
        let event = self.writer.event(&line);
        if let (Some(stream), Some(event)) = (lock(&self.stream).as_ref(), &event) {
            // A closed stream means the client left; the completion is
            // being cancelled and keeps recording.
            let _ = stream.send(event.clone());
        }
        event
    }

    /// Records the completion's end (the recorded answer may be capped) and
    /// streams it with the full `answer`; returns the result.
    pub fn emit_result(&self, body: EventBody, answer: &str) -> Option<CompletionResult> {
        let _order = lock(&self.order);
        let (line, error) = self.writer.record("0", 0, body);
        self.writer.close();
        if let Some(error) = error {
            *lock(&self.write_error) = Some(error.to_string());
        }
        let mut event = self.writer.event(&line)?;
        let Some(Event::Result(result)) = &mut event.event else {
            return None;
        };
        answer.clone_into(&mut result.answer);
        let result = result.clone();
        if let Some(stream) = lock(&self.stream).take() {
            let _ = stream.send(event);
        }
        Some(result)
    }

    /// After [`emit_result`](Self::emit_result): waits (bounded) until the
    /// result is stored where every replica reads it.
    pub async fn settled(&self) {
        self.writer.settled().await;
    }

    /// The first trajectory write error, if any.
    pub fn write_error(&self) -> Option<String> {
        lock(&self.write_error).clone()
    }
}

/// Usage accumulated for one sub-call request (children included).
#[derive(Debug)]
pub struct UsageTally(Mutex<Usage>);

impl Default for UsageTally {
    fn default() -> Self {
        Self(Mutex::new(Usage {
            cost_known: true,
            ..Default::default()
        }))
    }
}

impl UsageTally {
    pub fn add(&self, input: u64, output: u64, cost: Option<f64>) {
        let mut u = lock(&self.0);
        u.input_tokens += input;
        u.output_tokens += output;
        u.calls += 1;
        match cost {
            Some(c) => u.cost_usd += c,
            None => u.cost_known = false,
        }
    }

    pub fn get(&self) -> Usage {
        *lock(&self.0)
    }
}

/// One completion tree.
pub struct Tree {
    pub shared: Arc<Shared>,
    pub completion_id: String,
    pub spec: Resolved,
    pub budget: Budget,
    pub started: Instant,
    pub deadline: Instant,
    pub events: EventSink,
    /// max_parallel permits, shared by every RLM of the tree.
    pub parallel: Arc<Semaphore>,
    sessions: Mutex<HashSet<String>>,
    pub child_rlms: AtomicU32,
    pub depth_reached: AtomicU32,
    /// The root model's last reply: the partial answer if the tree is
    /// stopped from outside.
    pub root_last_reply: Mutex<String>,
}

impl Tree {
    pub fn new(
        shared: Arc<Shared>,
        completion_id: String,
        spec: Resolved,
        budget: Budget,
        started: Instant,
        events: EventSink,
    ) -> Self {
        let deadline = started + spec.limits.timeout;
        Self {
            shared,
            completion_id,
            parallel: Arc::new(Semaphore::new(spec.limits.max_parallel as usize)),
            spec,
            budget,
            started,
            deadline,
            events,
            sessions: Mutex::default(),
            child_rlms: AtomicU32::new(0),
            depth_reached: AtomicU32::new(0),
            root_last_reply: Mutex::default(),
        }
    }

    pub fn note_depth(&self, depth: u32) {
        self.depth_reached.fetch_max(depth, Ordering::AcqRel);
    }

    /// Creates a sandbox session for node `node_id`, registered so that it
    /// is destroyed with the tree whatever happens to the node.
    pub async fn create_session(
        &self,
        node_id: &str,
        depth: u32,
        context_ids: Vec<String>,
        json_contexts: Vec<u32>,
    ) -> Result<RemoteSession, Status> {
        let request = CreateSessionRequest {
            limits: Some(self.spec.session_limits.clone()),
            context_ids,
            json_contexts,
            labels: Some(SessionLabels {
                completion_id: self.completion_id.clone(),
                depth,
                node_id: node_id.to_owned(),
            }),
        };
        let result = RemoteSession::create(&self.shared.sandbox, request).await;
        self.shared.metrics.observe_sandbox_call(
            "CreateSession",
            result
                .as_ref()
                .map_or_else(|s| s.code(), |_| tonic::Code::Ok),
        );
        let session = result?;
        lock(&self.sessions).insert(session.id().to_owned());
        Ok(session)
    }

    /// Destroys a session of this tree in the background: killing a
    /// session's processes takes milliseconds nobody should wait for. Errors
    /// are logged; the tree's final sweep destroys what is still registered
    /// (destroying twice is harmless).
    pub fn destroy_session(self: &Arc<Self>, session: RemoteSession) {
        let tree = Arc::clone(self);
        tokio::spawn(async move {
            let id = session.id().to_owned();
            match session.destroy().await {
                Ok(_) => {
                    lock(&tree.sessions).remove(&id);
                }
                Err(status) => {
                    tracing::warn!(session = %id, %status, "destroying a sandbox session failed");
                }
            }
        });
    }

    /// Destroys every session still registered (after the tree stopped).
    pub async fn destroy_remaining_sessions(&self) {
        let ids: Vec<String> = lock(&self.sessions).drain().collect();
        let destroys = ids.into_iter().map(|id| {
            let mut client = self.shared.sandbox.client();
            async move {
                let request = rlm_proto::rlm::sandbox::v1::DestroySessionRequest {
                    session_id: id.clone(),
                };
                if let Err(status) = client.destroy_session(request).await {
                    tracing::warn!(session = %id, %status, "destroying a sandbox session failed");
                }
            }
        });
        futures::future::join_all(destroys).await;
    }
}

/// The max_parallel permit of a child RLM. A node gives it back while it
/// waits for its own sub-calls, so nested sub-calls can never deadlock on a
/// semaphore held by their waiting ancestors.
pub struct PermitSlot {
    semaphore: Arc<Semaphore>,
    /// Whether the node holds a permit when not waiting (children do, the
    /// root does not).
    holds: bool,
    state: Mutex<SlotState>,
}

struct SlotState {
    permit: Option<OwnedSemaphorePermit>,
    lent: usize,
}

impl PermitSlot {
    /// A slot holding `permit` (`None` for the root, which holds none).
    pub fn new(semaphore: Arc<Semaphore>, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            semaphore,
            holds: permit.is_some(),
            state: Mutex::new(SlotState { permit, lent: 0 }),
        }
    }

    /// Releases the permit while a sub-call request is outstanding; pair
    /// each call with one [`restore`](Self::restore).
    pub fn lend(&self) {
        let mut s = lock(&self.state);
        s.lent += 1;
        s.permit = None;
    }

    /// Takes the permit back once no request is outstanding.
    pub async fn restore(&self) {
        if !self.holds {
            return;
        }
        {
            let mut s = lock(&self.state);
            s.lent = s.lent.saturating_sub(1);
            if s.lent > 0 || s.permit.is_some() {
                return;
            }
        }
        let Ok(permit) = Arc::clone(&self.semaphore).acquire_owned().await else {
            return;
        };
        let mut s = lock(&self.state);
        if s.lent == 0 && s.permit.is_none() {
            s.permit = Some(permit);
        }
    }
}
