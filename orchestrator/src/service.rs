//! `rlm.v1.RLMService`. Completions and trajectories belong to the engine
//! (a later module); until it lands those RPCs answer UNIMPLEMENTED.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::Stream;
use rlm_proto::rlm::sandbox::v1 as sandbox;
use rlm_proto::rlm::v1::rlm_service_server::RlmService;
use rlm_proto::rlm::v1::*;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::sandbox_client::SandboxConnection;

pub struct RlmApi {
    pub sandbox: SandboxConnection,
    pub metrics: Arc<Metrics>,
}

impl RlmApi {
    fn finish<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result
            .as_ref()
            .map_or_else(|status| status.code(), |_| tonic::Code::Ok);
        self.metrics.observe_request(method, started, code);
        result
    }

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

    /// Agent failures keep their code when they are about the request, and
    /// become UNAVAILABLE naming the agent when the agent itself is the problem.
    fn sandbox_error(&self, status: Status) -> Status {
        match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::ResourceExhausted => status,
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
}

type EventStream = Pin<Box<dyn Stream<Item = Result<StreamCompleteResponse, Status>> + Send>>;

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not available in this build"))
}

#[tonic::async_trait]
impl RlmService for RlmApi {
    type StreamCompleteStream = EventStream;

    async fn complete(
        &self,
        _request: Request<CompleteRequest>,
    ) -> Result<Response<CompleteResponse>, Status> {
        self.finish("Complete", Instant::now(), Err(not_yet("Complete")))
    }

    async fn stream_complete(
        &self,
        _request: Request<StreamCompleteRequest>,
    ) -> Result<Response<Self::StreamCompleteStream>, Status> {
        self.finish(
            "StreamComplete",
            Instant::now(),
            Err(not_yet("StreamComplete")),
        )
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
        self.finish("UploadContext", started, result.map(Response::new))
    }

    async fn get_trajectory(
        &self,
        _request: Request<GetTrajectoryRequest>,
    ) -> Result<Response<GetTrajectoryResponse>, Status> {
        self.finish(
            "GetTrajectory",
            Instant::now(),
            Err(not_yet("GetTrajectory")),
        )
    }

    async fn list_trajectories(
        &self,
        _request: Request<ListTrajectoriesRequest>,
    ) -> Result<Response<ListTrajectoriesResponse>, Status> {
        self.finish(
            "ListTrajectories",
            Instant::now(),
            Err(not_yet("ListTrajectories")),
        )
    }

    async fn cancel_completion(
        &self,
        _request: Request<CancelCompletionRequest>,
    ) -> Result<Response<CancelCompletionResponse>, Status> {
        self.finish(
            "CancelCompletion",
            Instant::now(),
            Err(not_yet("CancelCompletion")),
        )
    }
}
