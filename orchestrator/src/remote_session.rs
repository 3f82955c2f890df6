//! A sandbox session as the engine uses it: created on the agent, cells run one
//! after another on one long-lived `Execute` stream, sub-calls answered
//! concurrently while output keeps flowing, destroyed at the end.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rlm_proto::rlm::sandbox::v1::{
    CreateSessionRequest, CreateSessionResponse, DestroySessionRequest, ExecuteRequest,
    ExecuteResult, ExecuteStart, OutputStream, SubcallRequest, SubcallResponse, SubcallResult,
    execute_request, execute_response,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::sandbox_client::{Sandbox, SandboxConnection};

/// What one cell produced.
#[derive(Debug, Default)]
pub struct CellRun {
    /// Output as the sandbox wrote it (bytes: it may not be UTF-8).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub result: ExecuteResult,
}

struct OpenStream {
    requests: mpsc::Sender<ExecuteRequest>,
    responses: Streaming<rlm_proto::rlm::sandbox::v1::ExecuteResponse>,
}

pub struct RemoteSession {
    id: String,
    client: Sandbox,
    stream: Option<OpenStream>,
    pub created: CreateSessionResponse,
}

fn start(session_id: &str, code: &str, timeout: Duration) -> ExecuteRequest {
    ExecuteRequest {
        payload: Some(execute_request::Payload::Start(ExecuteStart {
            session_id: session_id.to_owned(),
            code: code.to_owned(),
            timeout: prost_types::Duration::try_from(timeout).ok(),
        })),
    }
}

impl RemoteSession {
    pub async fn create(
        connection: &SandboxConnection,
        request: CreateSessionRequest,
    ) -> Result<Self, Status> {
        let mut client = connection.client();
        let created = client.create_session(request).await?.into_inner();
        Ok(Self {
            id: created.session_id.clone(),
            client,
            stream: None,
            created,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `code` as the next cell. `answer` resolves each sub-call request
    /// (several may be in flight; they are answered as they complete, while the
    /// cell's output keeps being read).
    pub async fn run<F, Fut>(
        &mut self,
        code: &str,
        timeout: Duration,
        answer: F,
    ) -> Result<CellRun, Status>
    where
        F: Fn(SubcallRequest) -> Fut,
        Fut: Future<Output = Vec<SubcallResult>>,
    {
        let request = start(&self.id, code, timeout);
        let stream =
            match self.stream.take() {
                Some(stream) => {
                    stream.requests.send(request).await.map_err(|_| {
                        Status::unavailable("the Execute stream to the agent closed")
                    })?;
                    stream
                }
                None => {
                    let (requests, receiver) = mpsc::channel(8);
                    requests
                        .send(request)
                        .await
                        .map_err(|_| Status::internal("request queue closed"))?;
                    let responses = self
                        .client
                        .execute(tokio_stream::wrappers::ReceiverStream::new(receiver))
                        .await?
                        .into_inner();
                    OpenStream {
                        requests,
                        responses,
                    }
                }
            };
        let mut stream = stream;
        let run = collect_cell(&mut stream, answer).await?;
        // Kept open for the next cell only after a clean result.
        self.stream = Some(stream);
        Ok(run)
    }

    /// Destroys the session on the agent (idempotent).
    pub async fn destroy(mut self) -> Result<bool, Status> {
        self.stream = None;
        let response = self
            .client
            .destroy_session(DestroySessionRequest {
                session_id: self.id.clone(),
            })
            .await?;
        Ok(response.into_inner().existed)
    }
}

async fn collect_cell<F, Fut>(stream: &mut OpenStream, answer: F) -> Result<CellRun, Status>
where
    F: Fn(SubcallRequest) -> Fut,
    Fut: Future<Output = Vec<SubcallResult>>,
{
    let mut run = CellRun::default();
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            message = stream.responses.message() => {
                let Some(message) = message? else {
                    return Err(Status::unavailable("the agent ended the Execute stream before the result"));
                };
                match message.payload {
                    Some(execute_response::Payload::Output(chunk)) => match chunk.stream() {
                        OutputStream::Stderr => run.stderr.extend_from_slice(&chunk.data),
                        _ => run.stdout.extend_from_slice(&chunk.data),
                    },
                    Some(execute_response::Payload::SubcallRequest(request)) => {
                        let id = request.id;
                        let answering = answer(request);
                        pending.push(async move { (id, answering.await) });
                    }
                    Some(execute_response::Payload::Result(result)) => {
                        run.result = result;
                        return Ok(run);
                    }
                    None => {}
                }
            }
            Some((id, results)) = pending.next(), if !pending.is_empty() => {
                let response = ExecuteRequest {
                    payload: Some(execute_request::Payload::SubcallResponse(SubcallResponse { id, results })),
                };
                // A closed queue means the stream is gone; the next read says why.
                let _ = stream.requests.send(response).await;
            }
        }
    }
}
