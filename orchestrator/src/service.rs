//! `rlm.v1.RLMService`: request plumbing around the engine (completions)
//! and the trajectory store.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use rlm_proto::rlm::sandbox::v1 as sandbox;
use rlm_proto::rlm::v1::rlm_service_server::RlmService;
use rlm_proto::rlm::v1::*;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::engine::{Engine, parse_grpc_timeout};
use crate::metrics::Metrics;
use crate::queue::{Queue, Submitter, WatchStream};
use crate::sandbox_client::SandboxConnection;
use crate::trajectory::TrajectoryError;

pub struct RlmApi {
    pub engine: Engine,
    /// Completions one API key may run at once (when keys are configured).
    pub per_key_limit: u32,
    pub sandbox: SandboxConnection,
    pub metrics: Arc<Metrics>,
    /// Queued completions (SubmitCompletion and friends).
    pub queue: Queue,
}

impl RlmApi {
    /// Streams the client's chunks to the agent's content-addressed store.
    async fn upload_context_to_agent(
        &self,
        mut chunks: Streaming<UploadContextRequest>,
    ) -> Result<UploadContextResponse, Status> {
        let first = match chunks.message().await? {
            Some(first) => first,
            None => {
                return Err(Status::invalid_argument(
                    "chunk: the upload stream carried no message",
                ));
            }
        };
        let expected_sha256 = first.expected_sha256.to_ascii_lowercase();
        if !expected_sha256.is_empty()
            && (expected_sha256.len() != 64
                || !expected_sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(Status::invalid_argument(
                "expected_sha256: must be 64 hexadecimal digits",
            ));
        }
        let head = sandbox::PutContextRequest {
            chunk: first.chunk,
            expected_sha256,
            total_size_bytes: first.total_size_bytes,
        };
        // Forward through a small channel so the agent applies backpressure. If
        // the client's stream breaks, the agent call is dropped (cancelled), so a
        // truncated upload is never stored as if it were whole.
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let forward = async move {
            // A closed channel means the agent call already finished (it may answer
            // early when it holds the content); its result decides the outcome.
            if sender.send(head).await.is_err() {
                return Ok(());
            }
            while let Some(request) = chunks.message().await? {
                let chunk = sandbox::PutContextRequest {
                    chunk: request.chunk,
                    ..Default::default()
                };
                if sender.send(chunk).await.is_err() {
                    return Ok(());
                }
            }
            Ok::<(), Status>(())
        };
        let mut client = self.sandbox.client();
        let put = async {
            client
                .put_context(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await
                .map_err(|status| {
                    self.metrics
                        .observe_sandbox_call("PutContext", status.code());
                    self.sandbox_error(status)
                })
        };
        let ((), stored) = futures::future::try_join(forward, put).await?;
        self.metrics
            .observe_sandbox_call("PutContext", tonic::Code::Ok);
        let stored = stored.into_inner();
        Ok(UploadContextResponse {
            context_id: stored.context_id,
            size_bytes: stored.size_bytes,
        })
    }

    fn sandbox_error(&self, status: Status) -> Status {
        self.engine.shared().sandbox_error(status)
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamCompleteResponse, Status>> + Send>>;

/// One of the caller's completion slots, when the call came with an API key.
fn caller_slot<T>(
    request: &Request<T>,
    limit: u32,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.acquire(limit))
        .transpose()
}

fn client_timeout<T>(request: &Request<T>) -> Option<std::time::Duration> {
    request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

fn trajectory_status(error: TrajectoryError) -> Status {
    match error {
        TrajectoryError::NotFound(id) => {
            Status::not_found(format!("trajectory_id: no trajectory {id:?}"))
        }
        TrajectoryError::InvalidId(id) => {
            Status::invalid_argument(format!("trajectory_id: {id:?} is not a trajectory id"))
        }
        TrajectoryError::InvalidPageToken => {
            Status::invalid_argument(format!("page_token: {error}"))
        }
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl RlmService for RlmApi {
    type StreamCompleteStream = EventStream;
    type WatchCompletionStream = WatchStream;

    #[tracing::instrument(name = "rlm.complete", skip_all)]
    async fn complete(
        &self,
        request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        let started = Instant::now();
        let timeout = client_timeout(&request);
        let result = async {
            let slot = caller_slot(&request, self.per_key_limit)?;
            let run = self
                .engine
                .start(request.into_inner().spec, timeout, None, slot)
                .await?;
            let result = run.result().await?;
            Ok(Response::new(CompleteResponse {
                result: Some(result),
            }))
        }
        .await;
        self.metrics.record_request("Complete", started, result)
    }

    #[tracing::instrument(name = "rlm.stream_complete", skip_all)]
    async fn stream_complete(
        &self,
        request: Request<StreamCompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        let started = Instant::now();
        let timeout = client_timeout(&request);
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let run = match caller_slot(&request, self.per_key_limit) {
            Ok(slot) => {
                self.engine
                    .start(request.into_inner().spec, timeout, Some(sender), slot)
                    .await
            }
            Err(status) => Err(status),
        };
        let run = self
            .metrics
            .record_request("StreamComplete", started, run)?;
        // The stream owns the guard: the client going away drops the stream
        // and cancels the completion. It ends after the result event, when
        // the engine drops its sender.
        let guard = run.into_guard();
        let events =
            tokio_stream::wrappers::UnboundedReceiverStream::new(receiver).map(move |event| {
                let _keep = &guard;
                Ok(StreamCompleteResponse { event: Some(event) })
            });
        Ok(Response::new(Box::pin(events)))
    }

    #[tracing::instrument(name = "rlm.upload_context", skip_all)]
    async fn upload_context(
        &self,
        request: Request<Streaming<UploadContextRequest>>,
    ) -> Result<Response<UploadContextResponse>, Status> {
        let started = Instant::now();
        let result = self.upload_context_to_agent(request.into_inner()).await;
        if let Ok(stored) = &result {
            tracing::info!(context_id = %stored.context_id, size_bytes = stored.size_bytes, "context stored");
        }
        self.metrics
            .record_request("UploadContext", started, result.map(Response::new))
    }

    async fn get_trajectory(
        &self,
        request: Request<GetTrajectoryRequest>,
    ) -> Result<Response<GetTrajectoryResponse>, Status> {
        let started = Instant::now();
        let id = request.into_inner().trajectory_id;
        let result = self
            .engine
            .store()
            .read(&id)
            .await
            .map_err(trajectory_status)
            .map(|trajectory| {
                Response::new(GetTrajectoryResponse {
                    trajectory: Some(trajectory),
                })
            });
        self.metrics
            .record_request("GetTrajectory", started, result)
    }

    async fn list_trajectories(
        &self,
        request: Request<ListTrajectoriesRequest>,
    ) -> Result<Response<ListTrajectoriesResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let Ok(status) = TrajectoryStatus::try_from(r.status) else {
            let error = Status::invalid_argument(format!("status: unknown value {}", r.status));
            return self
                .metrics
                .record_request("ListTrajectories", started, Err(error));
        };
        let page_size = if r.page_size == 0 {
            50
        } else {
            r.page_size as usize
        };
        let metadata = r.metadata;
        let result = self
            .engine
            .store()
            .list_matching(page_size, &r.page_token, move |s| {
                (status == TrajectoryStatus::Unspecified || s.status == status as i32)
                    && metadata.iter().all(|(k, v)| s.metadata.get(k) == Some(v))
            })
            .await
            .map_err(trajectory_status)
            .map(|(trajectories, next_page_token)| {
                Response::new(ListTrajectoriesResponse {
                    trajectories,
                    next_page_token,
                })
            });
        self.metrics
            .record_request("ListTrajectories", started, result)
    }

    async fn cancel_completion(
        &self,
        request: Request<CancelCompletionRequest>,
    ) -> Result<Response<CancelCompletionResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = if r.reason.len() > 1024 {
            Err(Status::invalid_argument("reason: at most 1024 bytes"))
        } else {
            match self.queue.cancel(&r.completion_id, &r.reason).await {
                Ok(Some(was_running)) => Ok(was_running),
                Ok(None) => self.engine.cancel(&r.completion_id, &r.reason).await,
                Err(status) => Err(status),
            }
            .map(|was_running| Response::new(CancelCompletionResponse { was_running }))
        };
        self.metrics
            .record_request("CancelCompletion", started, result)
    }

    #[tracing::instrument(name = "rlm.submit_completion", skip_all)]
    async fn submit_completion(
        &self,
        request: Request<SubmitCompletionRequest>,
    ) -> Result<Response<SubmitCompletionResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let label = request
                .extensions()
                .get::<Caller>()
                .map(|c| c.label.clone());
            // Embedded jobs hold the key's slot while queued or running; the
            // fleet cannot hold a permit across replicas.
            let slot = match self.queue {
                Queue::Embedded(_) => caller_slot(&request, self.per_key_limit)?,
                Queue::Fleet(_) => None,
            };
            let r = request.into_inner();
            let spec = r
                .spec
                .ok_or_else(|| Status::invalid_argument("spec: required"))?;
            self.queue
                .submit(spec, &r.idempotency_key, Submitter { label, slot })
                .await
                .map(Response::new)
        }
        .await;
        self.metrics
            .record_request("SubmitCompletion", started, result)
    }

    async fn get_completion(
        &self,
        request: Request<GetCompletionRequest>,
    ) -> Result<Response<GetCompletionResponse>, Status> {
        let started = Instant::now();
        let id = request.into_inner().completion_id;
        let result = self.queue.get(&id).await.map(Response::new);
        self.metrics
            .record_request("GetCompletion", started, result)
    }

    async fn watch_completion(
        &self,
        request: Request<WatchCompletionRequest>,
    ) -> Result<Response<Self::WatchCompletionStream>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = self
            .queue
            .watch(&r.completion_id, r.from_event_index)
            .await
            .map(Response::new);
        self.metrics
            .record_request("WatchCompletion", started, result)
    }
}
