//! Support for sandbox tests: one isolated agent per test binary, and a small
//! client that creates sessions, runs code, and plays the orchestrator for
//! sub-calls.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use rlm_proto::rlm::sandbox::v1::sandbox_service_client::SandboxServiceClient;
use rlm_proto::rlm::sandbox::v1::*;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::{Service, channel, wait_serving};

/// Fails (never skips) when the tests cannot isolate.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "sandbox tests need root (namespaces, cgroups, setuid): run them as root, as CI does"
    );
}

pub struct SharedAgent {
    pub address: String,
    pub pid: i32,
    pub data_dir: std::path::PathBuf,
    pub canary: String,
}

/// An isolated agent shared by every test in this binary. It is started from a
/// thread that lives as long as the process and dies with it (PDEATHSIG).
pub fn shared_agent() -> &'static SharedAgent {
    static AGENT: OnceLock<SharedAgent> = OnceLock::new();
    AGENT.get_or_init(|| {
        require_root();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let address = format!("unix://{}", dir.join("run/sandbox.sock").display());
            let canary = format!("canary-{}", std::process::id());
            let env = HashMap::from([
                ("RLM_AGENT_LISTEN".to_owned(), address.clone()),
                (
                    "RLM_AGENT_DATA_DIR".to_owned(),
                    dir.join("agent").display().to_string(),
                ),
                ("RLM_AGENT_POOL_SIZE".to_owned(), "2".to_owned()),
                ("RLM_TEST_CANARY".to_owned(), canary.clone()),
                (
                    "RLM_LOG".to_owned(),
                    std::env::var("RLM_TEST_AGENT_LOG").unwrap_or_else(|_| "info".to_owned()),
                ),
            ]);
            let service = Service::start_dying_with_parent("rlm-sandbox-agent", &dir, &env, &[]);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(wait_serving(&address, &service));
            sender
                .send(SharedAgent {
                    address,
                    pid: service.pid(),
                    data_dir: dir.join("agent"),
                    canary,
                })
                .expect("send agent");
            // Keep the service (and this thread, which PDEATHSIG is tied to) alive.
            let _service = service;
            loop {
                std::thread::park();
            }
        });
        receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("shared agent started")
    })
}

/// Host processes whose command line contains `marker` (how tests find a
/// session's processes from outside its PID namespace).
pub fn processes_matching(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
        .count()
}

/// Starts an agent of the test's own with `env` (which sets
/// `RLM_AGENT_LISTEN`) and connects to it.
pub async fn dedicated_agent(
    dir: &std::path::Path,
    env: &HashMap<String, String>,
) -> (Service, Sandbox) {
    let address = env["RLM_AGENT_LISTEN"].clone();
    let agent = Service::start("rlm-sandbox-agent", dir, env, &[]);
    wait_serving(&address, &agent).await;
    (agent, Sandbox::connect(&address).await)
}

/// What one Execute produced.
#[derive(Debug, Default)]
pub struct Run {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (stream, bytes) in arrival order.
    pub chunks: Vec<(OutputStream, Vec<u8>)>,
    pub subcalls: Vec<SubcallRequest>,
    pub result: ExecuteResult,
}

impl Run {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with the output when the cell raised.
    pub fn ok(self) -> Self {
        assert!(
            self.result.error.is_none() && !self.result.session_ended,
            "cell failed: {:?}\nstdout: {}\nstderr: {}",
            self.result,
            self.out(),
            self.err()
        );
        self
    }
}

/// Answers sub-calls: given the request, the results (one per prompt).
pub type Answerer = Box<dyn Fn(&SubcallRequest) -> Vec<subcall_result::Outcome> + Send + Sync>;

#[derive(Clone)]
pub struct Sandbox {
    pub client: SandboxServiceClient<Channel>,
}

impl Sandbox {
    pub async fn connect(address: &str) -> Self {
        Self {
            client: SandboxServiceClient::new(channel(address).await.expect("connect to agent"))
                .max_decoding_message_size(64 << 20),
        }
    }

    pub async fn shared() -> Self {
        Self::connect(&shared_agent().address).await
    }

    /// Waits (30 s at most) until the agent's pool `index` (0: the default
    /// profile's) has `at_least` ready sessions.
    pub async fn wait_pool_ready(&mut self, index: usize, at_least: u32) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let info = self.client.get_info(GetInfoRequest {}).await?.into_inner();
            if info.pools.get(index).is_some_and(|p| p.ready >= at_least) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("pool {index} never reached {at_least} ready sessions: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn create(
        &mut self,
        limits: Option<SessionLimits>,
        context_ids: Vec<String>,
    ) -> CreateSessionResponse {
        self.client
            .create_session(CreateSessionRequest {
                limits,
                context_ids,
                labels: None,
                json_contexts: Vec::new(),
            })
            .await
            .expect("create session")
            .into_inner()
    }

    pub async fn session(&mut self) -> String {
        self.create(None, Vec::new()).await.session_id
    }

    pub async fn destroy(&mut self, id: &str) -> bool {
        self.client
            .destroy_session(DestroySessionRequest {
                session_id: id.to_owned(),
            })
            .await
            .expect("destroy")
            .into_inner()
            .existed
    }

    pub async fn run(&mut self, id: &str, code: &str) -> Run {
        self.run_with(id, code, Duration::from_secs(30), None).await
    }

    /// Runs `code`; sub-calls are answered by `answer` (or fail the test).
    pub async fn run_with(
        &mut self,
        id: &str,
        code: &str,
        timeout: Duration,
        answer: Option<&Answerer>,
    ) -> Run {
        let (sender, receiver) = mpsc::channel(16);
        sender
            .send(ExecuteRequest {
                payload: Some(execute_request::Payload::Start(ExecuteStart {
                    session_id: id.to_owned(),
                    code: code.to_owned(),
                    timeout: prost_types::Duration::try_from(timeout).ok(),
                })),
            })
            .await
            .expect("queue start");
        let mut responses = self
            .client
            .execute(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await
            .expect("execute")
            .into_inner();
        let mut run = Run::default();
        while let Some(message) = responses.next().await {
            match message.expect("execute stream").payload {
                Some(execute_response::Payload::Output(chunk)) => {
                    let stream = chunk.stream();
                    match stream {
                        OutputStream::Stderr => run.stderr.extend_from_slice(&chunk.data),
                        _ => run.stdout.extend_from_slice(&chunk.data),
                    }
                    run.chunks.push((stream, chunk.data));
                }
                Some(execute_response::Payload::SubcallRequest(request)) => {
                    let answer = answer.expect("a sub-call arrived but this test answers none");
                    let results = answer(&request)
                        .into_iter()
                        .map(|outcome| SubcallResult {
                            outcome: Some(outcome),
                        })
                        .collect();
                    run.subcalls.push(request.clone());
                    sender
                        .send(ExecuteRequest {
                            payload: Some(execute_request::Payload::SubcallResponse(
                                SubcallResponse {
                                    id: request.id,
                                    results,
                                },
                            )),
                        })
                        .await
                        .expect("answer sub-call");
                }
                Some(execute_response::Payload::Result(result)) => {
                    // Closing our side ends the stream (it could carry more cells).
                    run.result = result;
                    break;
                }
                None => {}
            }
        }
        run
    }
}

/// One Execute stream kept open for many cells, as the orchestrator uses it.
pub struct CellStream {
    sender: mpsc::Sender<ExecuteRequest>,
    responses: tonic::Streaming<ExecuteResponse>,
}

impl CellStream {
    /// Opens the stream with its first cell; returns the stream and that cell's result.
    pub async fn open(
        sandbox: &mut Sandbox,
        session_id: &str,
        code: &str,
    ) -> Result<(Self, Run), tonic::Status> {
        let (sender, receiver) = mpsc::channel(4);
        sender
            .send(start(session_id, code))
            .await
            .map_err(|_| tonic::Status::internal("queue closed"))?;
        let responses = sandbox
            .client
            .execute(tokio_stream::wrappers::ReceiverStream::new(receiver))
            .await?
            .into_inner();
        let mut stream = Self { sender, responses };
        let run = stream.collect().await?;
        Ok((stream, run))
    }

    /// Runs the next cell on the open stream.
    pub async fn run(&mut self, session_id: &str, code: &str) -> Result<Run, tonic::Status> {
        self.sender
            .send(start(session_id, code))
            .await
            .map_err(|_| tonic::Status::internal("queue closed"))?;
        self.collect().await
    }

    async fn collect(&mut self) -> Result<Run, tonic::Status> {
        let mut run = Run::default();
        while let Some(message) = self.responses.message().await? {
            match message.payload {
                Some(execute_response::Payload::Output(chunk)) => match chunk.stream() {
                    OutputStream::Stderr => run.stderr.extend_from_slice(&chunk.data),
                    _ => run.stdout.extend_from_slice(&chunk.data),
                },
                Some(execute_response::Payload::Result(result)) => {
                    run.result = result;
                    return Ok(run);
                }
                _ => {
                    return Err(tonic::Status::internal(
                        "unexpected message on a cell stream",
                    ));
                }
            }
        }
        Err(tonic::Status::internal("stream ended before the result"))
    }
}

fn start(session_id: &str, code: &str) -> ExecuteRequest {
    ExecuteRequest {
        payload: Some(execute_request::Payload::Start(ExecuteStart {
            session_id: session_id.to_owned(),
            code: code.to_owned(),
            timeout: None,
        })),
    }
}
