//! `rlm.sandbox.v1.SandboxService`. Sessions and execution belong to the
//! isolation and session modules (a later piece of work); until they land those
//! RPCs answer UNIMPLEMENTED, while contexts and info are served for real.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rlm_proto::rlm::sandbox::v1::sandbox_service_server::SandboxService;
use rlm_proto::rlm::sandbox::v1::*;
use tonic::{Request, Response, Status, Streaming};

use crate::context_store::{ContextStore, ContextStoreError, UploadExpectations};

pub struct SandboxApi {
    pub contexts: Arc<ContextStore>,
    pub started_at: std::time::SystemTime,
}

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

type ExecuteStream = Pin<Box<dyn Stream<Item = Result<ExecuteResponse, Status>> + Send>>;

fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!("{method} is not available in this build"))
}

#[tonic::async_trait]
impl SandboxService for SandboxApi {
    type ExecuteStream = ExecuteStream;

    async fn create_session(
        &self,
        _request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        Err(not_yet("CreateSession"))
    }

    async fn destroy_session(
        &self,
        _request: Request<DestroySessionRequest>,
    ) -> Result<Response<DestroySessionResponse>, Status> {
        Err(not_yet("DestroySession"))
    }

    async fn list_sessions(
        &self,
        _request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        Err(not_yet("ListSessions"))
    }

    async fn get_info(
        &self,
        _request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let (contexts, bytes) = self.contexts.stats();
        Ok(Response::new(GetInfoResponse {
            agent_version: rlm_common::VERSION.to_owned(),
            isolation_mode: IsolationMode::None as i32,
            warnings: vec!["sessions are not available in this build".to_owned()],
            context_store: Some(ContextStoreStats {
                context_count: contexts,
                total_bytes: bytes,
            }),
            started_at: Some(self.started_at.into()),
            ..Default::default()
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
        _request: Request<Streaming<ExecuteRequest>>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        Err(not_yet("Execute"))
    }
}
