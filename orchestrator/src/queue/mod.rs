//! Queued completions (`SubmitCompletion`, `GetCompletion`,
//! `WatchCompletion`, and `CancelCompletion` of queued ids): an in-process
//! queue by default, or a Redis queue shared by every replica of a fleet
//! (`RLM_QUEUE_URL`). See docs/queue.md.

pub mod embedded;
pub mod fleet;
pub mod job;
mod scripts;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use rlm_proto::rlm::v1::{
    CompletionSpec, GetCompletionResponse, SubmitCompletionResponse, WatchCompletionResponse,
};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use crate::engine::Engine;
use crate::metrics::Metrics;

/// Settings of the queue (`RLM_QUEUE_*`).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `redis://HOST:PORT/DB`: the fleet backend; `None` = embedded.
    pub url: Option<String>,
    /// Queued completions this replica runs at once.
    pub workers: u32,
    /// Completions waiting to start, at most (fleet: across the fleet).
    pub max_queued: u32,
    /// How long an ended completion stays readable.
    pub retention: Duration,
    /// Fleet: a worker that does not renew its lease for this long is
    /// presumed dead and its completion is run again.
    pub lease: Duration,
    /// Fleet: runs of one completion lost with their worker before it is
    /// failed.
    pub max_attempts: u32,
}

/// Events kept per completion for WatchCompletion (oldest dropped beyond).
pub const MAX_KEPT_EVENTS: usize = 50_000;

/// Retry hint of a full queue.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(2);

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchCompletionResponse, Status>> + Send>>;

/// The queue; cheap to clone.
#[derive(Clone)]
pub enum Queue {
    Embedded(Arc<embedded::EmbeddedQueue>),
    Fleet(Arc<fleet::FleetQueue>),
}

/// Who submits: the API key's label (scopes idempotency keys) and its
/// concurrency permit (held while an embedded job is queued or running).
#[derive(Default)]
pub struct Submitter {
    pub label: Option<String>,
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Queue {
    /// Starts the backend `settings` select and its workers.
    pub async fn start(
        settings: QueueSettings,
        engine: Engine,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        Ok(match &settings.url {
            None => Self::Embedded(embedded::EmbeddedQueue::start(settings, engine, metrics)),
            Some(_) => Self::Fleet(fleet::FleetQueue::start(settings, engine, metrics).await?),
        })
    }

    pub async fn submit(
        &self,
        spec: CompletionSpec,
        idempotency_key: &str,
        submitter: Submitter,
    ) -> Result<SubmitCompletionResponse, Status> {
        let key = job::idempotency_key(idempotency_key)?
            .map(|k| format!("{}/{k}", submitter.label.as_deref().unwrap_or("")));
        match self {
            Self::Embedded(q) => q.submit(spec, key, submitter.slot),
            Self::Fleet(q) => q.submit(spec, key).await,
        }
    }

    pub async fn get(&self, id: &str) -> Result<GetCompletionResponse, Status> {
        job::check_id(id)?;
        match self {
            Self::Embedded(q) => q.get(id),
            Self::Fleet(q) => q.get(id).await,
        }
    }

    pub async fn watch(&self, id: &str, from: u64) -> Result<WatchStream, Status> {
        job::check_id(id)?;
        match self {
            Self::Embedded(q) => q.watch(id, from),
            Self::Fleet(q) => q.watch(id, from).await,
        }
    }

    /// Cancels a queued or running job; `Ok(None)` when `id` is no job of
    /// the queue (it may be a Complete / StreamComplete completion).
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Option<bool>, Status> {
        if !crate::trajectory::valid_id(id) {
            return Ok(None);
        }
        match self {
            Self::Embedded(q) => Ok(q.cancel(id, reason)),
            Self::Fleet(q) => q.cancel(id, reason).await,
        }
    }

    /// Stops taking jobs. Embedded: queued jobs end CANCELLED. Fleet: they
    /// stay in Redis, and running ones are handed back for another replica.
    /// Call before [`Engine::shutdown`].
    pub async fn shutdown(&self) {
        match self {
            Self::Embedded(q) => q.shutdown(),
            Self::Fleet(q) => q.shutdown().await,
        }
    }
}

/// Forwards `source` into a bounded stream, so a slow client slows reading
/// down and a gone client ends the task.
pub(crate) fn spawn_stream<F>(produce: F) -> WatchStream
where
    F: FnOnce(
            tokio::sync::mpsc::Sender<Result<WatchCompletionResponse, Status>>,
        ) -> futures::future::BoxFuture<'static, ()>
        + Send
        + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(sender));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
}
