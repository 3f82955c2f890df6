//! `rlm-bench echo-server --listen unix:///path`: a SandboxService whose
//! Execute answers every cell at once with an empty result, on the agent's
//! server settings and with its stream shape (a task per stream, results
//! through a channel). `rlm-bench sandbox` times an open Execute stream
//! against it: the gRPC floor of an Execute round trip, with no session.

use std::pin::Pin;

use anyhow::Context;
use rlm_proto::rlm::sandbox::v1::sandbox_service_server::{SandboxService, SandboxServiceServer};
use rlm_proto::rlm::sandbox::v1::*;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let address = rlm_common::listen::Address::parse(listen)
        .map_err(|err| anyhow::anyhow!("--listen {listen:?}: {err}"))?;
    let mut builder = rlm_common::server::builder();
    let (router, _health) =
        rlm_common::server::with_standard_services(&mut builder, &[rlm_proto::FILE_DESCRIPTOR_SET])
            .context("echo server")?;
    let router = router.add_service(SandboxServiceServer::new(Echo));
    rlm_common::server::serve(router, &address, 0o600, std::future::pending()).await
}

struct Echo;

type ExecuteStream = Pin<Box<dyn Stream<Item = Result<ExecuteResponse, Status>> + Send>>;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented(
        "the echo server only answers Execute",
    ))
}

#[tonic::async_trait]
impl SandboxService for Echo {
    type ExecuteStream = ExecuteStream;

    async fn create_session(
        &self,
        _: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        unimplemented()
    }

    async fn destroy_session(
        &self,
        _: Request<DestroySessionRequest>,
    ) -> Result<Response<DestroySessionResponse>, Status> {
        unimplemented()
    }

    async fn list_sessions(
        &self,
        _: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        unimplemented()
    }

    async fn get_info(
        &self,
        _: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        unimplemented()
    }

    async fn put_context(
        &self,
        _: Request<Streaming<PutContextRequest>>,
    ) -> Result<Response<PutContextResponse>, Status> {
        unimplemented()
    }

    async fn execute(
        &self,
        request: Request<Streaming<ExecuteRequest>>,
    ) -> Result<Response<Self::ExecuteStream>, Status> {
        let mut inbound = request.into_inner();
        let (outbound, responses) = mpsc::channel(32);
        tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {
                let result = ExecuteResponse {
                    payload: Some(execute_response::Payload::Result(ExecuteResult::default())),
                };
                if outbound.send(Ok(result)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(responses),
        )))
    }
}
