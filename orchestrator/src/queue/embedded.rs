//! The embedded queue: jobs wait in memory in submission order, at most
//! `workers` run at once (each also takes an RLM_MAX_COMPLETIONS slot, waiting
//! for one rather than being refused), and their events stay in memory for
//! WatchCompletion until `retention` after they end.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::FutureExt;
use rlm_proto::rlm::v1::{
    CompletionEvent, CompletionResult, CompletionSpec, CompletionState, GetCompletionResponse,
    SubmitCompletionResponse, TerminationReason, WatchCompletionResponse,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::job::{self, Attempt, Progress};
use super::{MAX_KEPT_EVENTS, QUEUE_FULL_RETRY, QueueSettings, WatchStream, spawn_stream};
use crate::engine::Engine;
use crate::engine::tree::lock;
use crate::metrics::Metrics;

pub struct EmbeddedQueue {
    engine: Engine,
    metrics: Arc<Metrics>,
    settings: QueueSettings,
    worker: String,
    state: Mutex<State>,
    /// Signalled when a job is queued.
    wake: Notify,
    stopping: CancellationToken,
}

#[derive(Default)]
struct State {
    jobs: HashMap<String, Arc<Job>>,
    queued: VecDeque<String>,
    idempotency: HashMap<String, String>,
}

struct Job {
    id: String,
    submitted_at: SystemTime,
    idempotency_key: Option<String>,
    /// Bumped on every change, for watchers.
    changed: watch::Sender<()>,
    inner: Mutex<JobInner>,
}

struct JobInner {
    state: CompletionState,
    spec: Option<CompletionSpec>,
    caller_slot: Option<OwnedSemaphorePermit>,
    events: VecDeque<CompletionEvent>,
    progress: Progress,
    result: Option<CompletionResult>,
    attempts: u32,
    /// CancelCompletion came while the job was starting.
    cancel_reason: Option<String>,
}

impl Job {
    /// Appends an event (dropping the oldest beyond the cap) and wakes
    /// watchers.
    fn record(&self, event: CompletionEvent) {
        {
            let mut inner = lock(&self.inner);
            inner.progress.observe(&event);
            if let Some(result) = job::result_of(&event) {
                inner.result = Some(result.clone());
            }
            inner.events.push_back(event);
            if inner.events.len() > MAX_KEPT_EVENTS {
                inner.events.pop_front();
            }
        }
        self.changed.send_replace(());
    }

    /// Ends the job in `state`; records `result` unless the engine did.
    fn end(&self, state: CompletionState, result: impl FnOnce(&Progress) -> CompletionResult) {
        let missing = {
            let mut inner = lock(&self.inner);
            inner.state = state;
            inner.caller_slot = None;
            inner.spec = None;
            inner
                .result
                .is_none()
                .then(|| (result(&inner.progress), inner.progress.event_count + 1))
        };
        match missing {
            Some((result, sequence)) => self.record(job::result_event(result, sequence)),
            None => {
                self.changed.send_replace(());
            }
        }
    }
}

fn cancel_detail(reason: &str) -> String {
    if reason.is_empty() {
        "cancelled by CancelCompletion before it started".to_owned()
    } else {
        format!("cancelled by CancelCompletion before it started: {reason}")
    }
}

impl EmbeddedQueue {
    pub fn start(settings: QueueSettings, engine: Engine, metrics: Arc<Metrics>) -> Arc<Self> {
        let queue = Arc::new(Self {
            engine,
            metrics,
            worker: super::fleet::worker_name(),
            settings,
            state: Mutex::default(),
            wake: Notify::new(),
            stopping: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&queue).dispatch());
        queue
    }

    pub fn submit(
        &self,
        spec: CompletionSpec,
        idempotency_key: Option<String>,
        caller_slot: Option<OwnedSemaphorePermit>,
    ) -> Result<SubmitCompletionResponse, Status> {
        if self.stopping.is_cancelled() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        self.engine.validate(Some(spec.clone()))?;
        let mut state = lock(&self.state);
        if let Some(id) = idempotency_key
            .as_ref()
            .and_then(|k| state.idempotency.get(k))
        {
            return Ok(SubmitCompletionResponse {
                completion_id: id.clone(),
                duplicate: true,
            });
        }
        if state.queued.len() >= self.settings.max_queued as usize {
            self.metrics.count_job("rejected");
            return Err(job::queue_full(
                format!(
                    "the queue holds its maximum of {} completions (RLM_QUEUE_MAX)",
                    self.settings.max_queued
                ),
                QUEUE_FULL_RETRY,
            ));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (changed, _) = watch::channel(());
        let job = Arc::new(Job {
            id: id.clone(),
            submitted_at: SystemTime::now(),
            idempotency_key: idempotency_key.clone(),
            changed,
            inner: Mutex::new(JobInner {
                state: CompletionState::Queued,
                spec: Some(spec),
                caller_slot,
                events: VecDeque::new(),
                progress: Progress::new(),
                result: None,
                attempts: 0,
                cancel_reason: None,
            }),
        });
        if let Some(key) = idempotency_key {
            state.idempotency.insert(key, id.clone());
        }
        state.jobs.insert(id.clone(), job);
        state.queued.push_back(id.clone());
        self.metrics.queue_depth.set(state.queued.len() as i64);
        self.metrics.count_job("submitted");
        drop(state);
        self.wake.notify_one();
        tracing::info!(completion = %id, "completion queued");
        Ok(SubmitCompletionResponse {
            completion_id: id,
            duplicate: false,
        })
    }

    fn job(&self, id: &str) -> Result<Arc<Job>, Status> {
        lock(&self.state)
            .jobs
            .get(id)
            .cloned()
            .ok_or_else(|| job::not_found(id))
    }

    pub fn get(&self, id: &str) -> Result<GetCompletionResponse, Status> {
        let job = self.job(id)?;
        let queue_position = lock(&self.state)
            .queued
            .iter()
            .position(|q| q == id)
            .map_or(0, |i| i as u32 + 1);
        let inner = lock(&job.inner);
        Ok(GetCompletionResponse {
            completion_id: job.id.clone(),
            state: inner.state as i32,
            queue_position,
            result: inner.result.clone(),
            partial_answer: inner.progress.partial_answer.clone(),
            usage: Some(inner.progress.usage),
            event_count: inner.progress.event_count,
            attempts: inner.attempts,
            worker: if inner.attempts > 0 {
                self.worker.clone()
            } else {
                String::new()
            },
            submitted_at: Some(job.submitted_at.into()),
        })
    }

    pub fn watch(&self, id: &str, from: u64) -> Result<WatchStream, Status> {
        let job = self.job(id)?;
        let mut next = from.saturating_add(1);
        check_kept(&lock(&job.inner), next)?;
        Ok(spawn_stream(move |sender| {
            async move {
                let mut changes = job.changed.subscribe();
                loop {
                    changes.borrow_and_update();
                    let read = {
                        let inner = lock(&job.inner);
                        check_kept(&inner, next).map(|()| {
                            let batch: Vec<CompletionEvent> = inner
                                .events
                                .iter()
                                .filter(|e| e.sequence >= next)
                                .cloned()
                                .collect();
                            (batch, inner.result.is_some())
                        })
                    };
                    let (batch, ended) = match read {
                        Ok(read) => read,
                        Err(status) => {
                            let _ = sender.send(Err(status)).await;
                            return;
                        }
                    };
                    for event in batch {
                        next = event.sequence + 1;
                        let message = WatchCompletionResponse { event: Some(event) };
                        if sender.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    if ended || changes.changed().await.is_err() {
                        return;
                    }
                }
            }
            .boxed()
        }))
    }

    /// `None`: no such job.
    pub fn cancel(self: &Arc<Self>, id: &str, reason: &str) -> Option<bool> {
        let job = lock(&self.state).jobs.get(id).cloned()?;
        let state = lock(&job.inner).state;
        match state {
            CompletionState::Queued => {
                {
                    let mut queue = lock(&self.state);
                    queue.queued.retain(|q| q != id);
                    self.metrics.queue_depth.set(queue.queued.len() as i64);
                }
                self.end(&job, CompletionState::Cancelled, |p| {
                    job::queue_result(
                        id,
                        TerminationReason::Cancelled,
                        cancel_detail(reason),
                        job.submitted_at,
                        p,
                    )
                });
                Some(true)
            }
            CompletionState::Running => {
                lock(&job.inner).cancel_reason = Some(reason.to_owned());
                // Not yet registered by the engine: the runner cancels it
                // once started.
                let _ = self.engine.cancel_running(id, reason);
                Some(true)
            }
            _ => Some(false),
        }
    }

    pub fn shutdown(self: &Arc<Self>) {
        self.stopping.cancel();
        let queued: Vec<Arc<Job>> = {
            let mut state = lock(&self.state);
            let ids: Vec<String> = state.queued.drain(..).collect();
            ids.iter()
                .filter_map(|id| state.jobs.get(id).cloned())
                .collect()
        };
        self.metrics.queue_depth.set(0);
        if !queued.is_empty() {
            tracing::info!(
                queued = queued.len(),
                "cancelling the queued completions: the server is shutting down"
            );
        }
        for job in queued {
            self.end(&job, CompletionState::Cancelled, |p| {
                job::queue_result(
                    &job.id,
                    TerminationReason::Cancelled,
                    "cancelled: the server shut down before it started".to_owned(),
                    job.submitted_at,
                    p,
                )
            });
        }
    }

    /// Ends `job`, counts it, and forgets it after the retention.
    fn end(
        self: &Arc<Self>,
        job: &Arc<Job>,
        state: CompletionState,
        result: impl FnOnce(&Progress) -> CompletionResult,
    ) {
        job.end(state, result);
        self.metrics.count_job(outcome(state));
        let retention = self.settings.retention;
        let job = Arc::clone(job);
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(retention).await;
            if let Some(queue) = queue.upgrade() {
                let mut state = lock(&queue.state);
                state.jobs.remove(&job.id);
                if let Some(key) = &job.idempotency_key {
                    state.idempotency.remove(key);
                }
            }
        });
    }

    /// Takes the next queued job, now RUNNING.
    fn pop(&self) -> Option<(Arc<Job>, CompletionSpec, Option<OwnedSemaphorePermit>)> {
        let mut state = lock(&self.state);
        let id = state.queued.pop_front()?;
        self.metrics.queue_depth.set(state.queued.len() as i64);
        let job = state.jobs.get(&id).cloned()?;
        drop(state);
        let mut inner = lock(&job.inner);
        let spec = inner.spec.take()?;
        inner.state = CompletionState::Running;
        inner.attempts = 1;
        let caller_slot = inner.caller_slot.take();
        drop(inner);
        job.changed.send_replace(());
        Some((job, spec, caller_slot))
    }

    async fn dispatch(self: Arc<Self>) {
        let workers = Arc::new(Semaphore::new(self.settings.workers as usize));
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&workers).acquire_owned() => permit,
                () = self.stopping.cancelled() => return,
            };
            loop {
                let queued = self.wake.notified();
                if !lock(&self.state).queued.is_empty() {
                    break;
                }
                tokio::select! {
                    () = queued => {}
                    () = self.stopping.cancelled() => return,
                }
            }
            let slot = tokio::select! {
                slot = self.engine.wait_for_slot() => slot,
                () = self.stopping.cancelled() => return,
            };
            let Some(slot) = slot else { return };
            let Some((job, spec, caller_slot)) = self.pop() else {
                continue;
            };
            let queue = Arc::clone(&self);
            tokio::spawn(async move {
                let _permit = permit;
                queue.run(job, spec, slot, caller_slot).await;
            });
        }
    }

    async fn run(
        self: Arc<Self>,
        job: Arc<Job>,
        spec: CompletionSpec,
        slot: OwnedSemaphorePermit,
        caller_slot: Option<OwnedSemaphorePermit>,
    ) {
        let Attempt {
            mut events,
            started,
        } = job::launch(
            &self.engine,
            spec,
            job::attempt_ids(&job.id, 1),
            slot,
            caller_slot,
        )
        .await;
        if started.is_ok() {
            let cancel = lock(&job.inner).cancel_reason.clone();
            if let Some(reason) = cancel {
                let _ = self.engine.cancel_running(&job.id, &reason);
            }
        }
        while let Some(event) = events.recv().await {
            job.record(event);
        }
        let failure = match started {
            Ok(started) => started.result().await.err(),
            Err(status) => {
                tracing::warn!(completion = %job.id, %status, "queued completion could not start");
                Some(status)
            }
        };
        let state = job::end_state(failure.is_some());
        let (id, submitted_at) = (job.id.clone(), job.submitted_at);
        self.end(&job, state, move |p| {
            let (reason, detail) = failure.as_ref().map_or_else(
                || {
                    (
                        TerminationReason::Error,
                        "the completion ended without a result".to_owned(),
                    )
                },
                job::not_started,
            );
            job::queue_result(&id, reason, detail, submitted_at, p)
        });
    }
}

fn outcome(state: CompletionState) -> &'static str {
    match state {
        CompletionState::Cancelled => "cancelled",
        CompletionState::Failed => "failed",
        _ => "finished",
    }
}

/// OUT_OF_RANGE when events from `next` on were dropped from memory.
fn check_kept(inner: &JobInner, next: u64) -> Result<(), Status> {
    match inner.events.front() {
        Some(first) if next < first.sequence => Err(Status::out_of_range(format!(
            "from_event_index: events before {} are no longer kept in memory; read them with GetTrajectory",
            first.sequence
        ))),
        _ => Ok(()),
    }
}
