//! `rlm.v1.SessionService` end to end: the real orchestrator and sandbox
//! agent. A session keeps its Python state across Execute calls, belongs to
//! the API key that created it, counts against the server and per-key caps,
//! expires after its idle TTL, and is destroyed on the agent when destroyed,
//! expired, or when the orchestrator shuts down.
//!
//! Needs root (the agent isolates sessions); run `cargo build --workspace
//! --bins` first.

use std::time::{Duration, Instant};

use rlm_e2e::sandbox::{Sandbox, require_root};
use rlm_e2e::{Stack, channel, health_status};
use rlm_proto::rlm::sandbox::v1::ListSessionsRequest as AgentListSessions;
use rlm_proto::rlm::v1::session_service_client::SessionServiceClient;
use rlm_proto::rlm::v1::*;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";

/// A SessionService client that sends `key` (if any) on every call.
#[derive(Clone)]
struct Client {
    inner: SessionServiceClient<Channel>,
    key: Option<&'static str>,
}

impl Client {
    async fn new(stack: &Stack, key: Option<&'static str>) -> Self {
        let channel = channel(&stack.grpc_address)
            .await
            .expect("connect to the orchestrator");
        Self {
            inner: SessionServiceClient::new(channel),
            key,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(Duration::from_secs(120));
        if let Some(key) = self.key {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("ascii"),
            );
        }
        request
    }

    async fn create(&mut self, request: CreateSessionRequest) -> Result<Session, tonic::Status> {
        let r = self.request(request);
        let session = self.inner.create_session(r).await?.into_inner().session;
        Ok(session.expect("CreateSessionResponse.session"))
    }

    async fn session(&mut self) -> String {
        self.create(CreateSessionRequest::default())
            .await
            .expect("CreateSession")
            .session_id
    }

    async fn execute_with(
        &mut self,
        session_id: &str,
        code: &str,
        timeout: Option<prost_types::Duration>,
    ) -> Result<ExecuteResponse, tonic::Status> {
        let r = self.request(ExecuteRequest {
            session_id: session_id.to_owned(),
            code: code.to_owned(),
            timeout,
        });
        Ok(self.inner.execute(r).await?.into_inner())
    }

    async fn execute(&mut self, session_id: &str, code: &str) -> ExecuteResponse {
        self.execute_with(session_id, code, None)
            .await
            .unwrap_or_else(|s| panic!("Execute {code:?}: {s:?}"))
    }

    async fn list(&mut self) -> Vec<Session> {
        let r = self.request(ListSessionsRequest {});
        self.inner
            .list_sessions(r)
            .await
            .expect("ListSessions")
            .into_inner()
            .sessions
    }

    async fn destroy(&mut self, session_id: &str) -> Result<(), tonic::Status> {
        let r = self.request(DestroySessionRequest {
            session_id: session_id.to_owned(),
        });
        self.inner.destroy_session(r).await.map(|_| ())
    }
}

async fn start(env: &[(&str, &str)]) -> Stack {
    require_root();
    Stack::start(env).await
}

/// Sessions the agent holds (every direct session is one of them).
async fn agent_sessions(stack: &Stack) -> usize {
    let mut agent = Sandbox::connect(&stack.agent_address).await;
    agent
        .client
        .list_sessions(AgentListSessions::default())
        .await
        .expect("agent ListSessions")
        .into_inner()
        .sessions
        .len()
}

fn expect_code(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "the message must mention {needle:?}: {status:?}"
    );
}

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn state_persists_across_execute_calls_until_destroyed() {
    let stack = start(&[]).await;
    let mut client = Client::new(&stack, None).await;
    let created = client
        .create(CreateSessionRequest {
            limits: Some(SandboxLimits {
                memory_bytes: 256 << 20,
                ..Default::default()
            }),
            idle_ttl: seconds(120),
        })
        .await
        .expect("CreateSession");
    let id = created.session_id.clone();
    assert_eq!(created.idle_ttl, seconds(120));
    assert_eq!(
        created.limits.expect("limits in force").memory_bytes,
        256 << 20
    );

    let first = client.execute(&id, "x = 41\nprint('set')").await;
    assert_eq!(first.stdout, "set\n");
    assert_eq!(first.result, None);
    assert!(first.error.is_none() && !first.timed_out && !first.session_ended);

    let second = client
        .execute(
            &id,
            "import sys\nprint(x + 1)\nprint('warn', file=sys.stderr)\nFINAL(x + 1)",
        )
        .await;
    assert_eq!(second.stdout, "42\n", "{second:?}");
    assert_eq!(second.stderr, "warn\n");
    assert_eq!(second.result.as_deref(), Some("42"));

    // An exception is a result, not an RPC error; the state survives it.
    let failed = client.execute(&id, "1 / 0").await;
    let error = failed.error.expect("the exception");
    assert_eq!(error.exception_type, "ZeroDivisionError");
    assert!(error.traceback.contains("ZeroDivisionError"), "{error:?}");

    // No model here: sub-calls are refused with a clear text.
    let refused = client.execute(&id, "print(llm_query('hello'))").await;
    assert!(
        refused.stdout.starts_with("Error: ")
            && refused.stdout.contains("not available in a direct session"),
        "{refused:?}"
    );

    // A timeout interrupts the code; the REPL keeps its state.
    let slow = client
        .execute_with(&id, "while True:\n    pass", seconds(1))
        .await
        .expect("Execute");
    assert!(slow.timed_out && !slow.session_ended, "{slow:?}");
    assert_eq!(client.execute(&id, "print(x)").await.stdout, "41\n");

    let listed = client.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, id);
    assert_eq!(listed[0].executions, 6);
    assert!(!listed[0].executing);
    assert_eq!(agent_sessions(&stack).await, 1);

    client.destroy(&id).await.expect("DestroySession");
    assert!(client.list().await.is_empty());
    assert_eq!(agent_sessions(&stack).await, 0, "destroyed on the agent");
    expect_code(
        client.execute_with(&id, "print(x)", None).await,
        Code::NotFound,
        "session_id",
    );
    expect_code(client.destroy(&id).await, Code::NotFound, "session_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_dies_is_reported_and_forgotten() {
    let stack = start(&[]).await;
    let mut client = Client::new(&stack, None).await;
    let id = client.session().await;
    let died = client.execute(&id, "import os\nos._exit(3)").await;
    assert!(died.session_ended, "{died:?}");
    assert!(!died.end_detail.is_empty(), "{died:?}");
    assert!(client.list().await.is_empty());
    expect_code(
        client.execute_with(&id, "1", None).await,
        Code::NotFound,
        "session_id",
    );
    assert_eq!(agent_sessions(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_invalid_argument_naming_the_field() {
    let stack = start(&[]).await;
    let mut client = Client::new(&stack, None).await;
    let id = client.session().await;
    expect_code(
        client.execute_with(&id, "  \n", None).await,
        Code::InvalidArgument,
        "code:",
    );
    expect_code(
        client.execute_with(&id, "1", seconds(2 * 3600)).await,
        Code::InvalidArgument,
        "timeout:",
    );
    expect_code(
        client.execute_with(&id, "1", seconds(-5)).await,
        Code::InvalidArgument,
        "timeout:",
    );
    expect_code(
        client.execute_with("not-a-session", "1", None).await,
        Code::InvalidArgument,
        "session_id:",
    );
    expect_code(
        client.execute_with("", "1", None).await,
        Code::InvalidArgument,
        "session_id:",
    );
    expect_code(
        client.destroy("../../etc").await,
        Code::InvalidArgument,
        "session_id:",
    );
    expect_code(
        client.execute_with(&uuid_like(), "1", None).await,
        Code::NotFound,
        "session_id:",
    );
    for ttl in [seconds(100_000), seconds(-1)] {
        expect_code(
            client
                .create(CreateSessionRequest {
                    idle_ttl: ttl,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "idle_ttl:",
        );
    }
    expect_code(
        client
            .create(CreateSessionRequest {
                limits: Some(SandboxLimits {
                    memory_bytes: 1 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "limits.memory_bytes",
    );
    expect_code(
        client
            .create(CreateSessionRequest {
                limits: Some(SandboxLimits {
                    network: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "limits.network",
    );
    // The failed requests left nothing behind.
    assert_eq!(client.list().await.len(), 1);
    assert_eq!(agent_sessions(&stack).await, 1);
}

fn uuid_like() -> String {
    "0b7f3c52-6f1e-4a43-9b8e-2d6c1f0a9e11".to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_belong_to_their_api_key_and_are_capped() {
    let keys = format!("alice:{ALICE},bob:{BOB}");
    let stack = start(&[
        ("RLM_API_KEYS", keys.as_str()),
        ("RLM_MAX_SESSIONS", "3"),
        ("RLM_API_KEY_MAX_SESSIONS", "2"),
    ])
    .await;
    let mut alice = Client::new(&stack, Some(ALICE)).await;
    let mut bob = Client::new(&stack, Some(BOB)).await;
    let mut nobody = Client::new(&stack, None).await;

    let a1 = alice.session().await;
    let a2 = alice.session().await;
    alice.execute(&a1, "secret = 'alice'").await;
    expect_code(
        alice.create(CreateSessionRequest::default()).await,
        Code::ResourceExhausted,
        "RLM_API_KEY_MAX_SESSIONS",
    );

    // Bob sees none of Alice's sessions, and her ids are unknown to him.
    assert!(bob.list().await.is_empty());
    expect_code(
        bob.execute_with(&a1, "print(secret)", None).await,
        Code::NotFound,
        "session_id",
    );
    expect_code(bob.destroy(&a1).await, Code::NotFound, "session_id");
    assert_eq!(alice.execute(&a1, "print(secret)").await.stdout, "alice\n");

    let b1 = bob.session().await;
    expect_code(
        bob.create(CreateSessionRequest::default()).await,
        Code::ResourceExhausted,
        "RLM_MAX_SESSIONS",
    );
    let listed: Vec<String> = alice
        .list()
        .await
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(listed, vec![a1.clone(), a2.clone()]);
    assert_eq!(bob.list().await.len(), 1);

    let status = nobody.create(CreateSessionRequest::default()).await;
    expect_code(status, Code::Unauthenticated, "");

    // Destroying frees a place under both caps.
    alice.destroy(&a2).await.expect("destroy");
    let b2 = bob.session().await;
    bob.destroy(&b1).await.expect("destroy");
    bob.destroy(&b2).await.expect("destroy");
    alice.destroy(&a1).await.expect("destroy");
    assert_eq!(agent_sessions(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_sessions_expire_and_busy_ones_do_not() {
    let stack = start(&[]).await;
    let mut client = Client::new(&stack, None).await;
    let idle = client
        .create(CreateSessionRequest {
            idle_ttl: seconds(1),
            ..Default::default()
        })
        .await
        .expect("CreateSession")
        .session_id;
    let busy = client
        .create(CreateSessionRequest {
            idle_ttl: seconds(1),
            ..Default::default()
        })
        .await
        .expect("CreateSession")
        .session_id;
    // Runs for longer than its TTL: a running cell is not idle.
    let running = {
        let mut client = client.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            client
                .execute(&busy, "import time\ntime.sleep(4)\nFINAL('survived')")
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.list().await.iter().any(|s| s.session_id == idle) {
        assert!(Instant::now() < deadline, "the idle session never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_code(
        client.execute_with(&idle, "1", None).await,
        Code::NotFound,
        "session_id",
    );
    let done = running.await.expect("task");
    assert_eq!(done.result.as_deref(), Some("survived"), "{done:?}");
    // Once idle, it expires too, and the agent no longer holds either.
    while !client.list().await.is_empty() {
        assert!(Instant::now() < deadline, "the busy session never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(agent_sessions(&stack).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_destroys_every_session_and_disabled_service_refuses() {
    let mut stack = start(&[]).await;
    let health = channel(&stack.grpc_address).await.expect("connect");
    assert_eq!(
        health_status(health, "rlm.v1.SessionService")
            .await
            .expect("health"),
        ServingStatus::Serving
    );
    let mut client = Client::new(&stack, None).await;
    for _ in 0..2 {
        let id = client.session().await;
        client.execute(&id, "x = 1").await;
    }
    assert_eq!(agent_sessions(&stack).await, 2);
    assert!(stack.orchestrator.stop().success());
    assert_eq!(
        agent_sessions(&stack).await,
        0,
        "the orchestrator destroys its sessions on the agent before it exits"
    );
    drop(stack);

    let stack = start(&[("RLM_MAX_SESSIONS", "0")]).await;
    let mut client = Client::new(&stack, None).await;
    expect_code(
        client.create(CreateSessionRequest::default()).await,
        Code::FailedPrecondition,
        "RLM_MAX_SESSIONS=0",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn destroying_a_busy_session_stops_its_code() {
    let stack = start(&[]).await;
    let mut client = Client::new(&stack, None).await;
    let id = client.session().await;
    let running = {
        let mut client = client.clone();
        let id = id.clone();
        tokio::spawn(async move {
            client
                .execute_with(&id, "import time\ntime.sleep(600)", seconds(900))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.list().await.iter().any(|s| s.executing) {
        assert!(Instant::now() < deadline, "the cell never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    expect_code(
        client.execute_with(&id, "1", None).await,
        Code::FailedPrecondition,
        "already running",
    );
    client.destroy(&id).await.expect("DestroySession");
    // The sleeping cell ends with its session, long before its 600 s.
    let outcome = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the cell of a destroyed session must stop")
        .expect("task");
    match outcome {
        Ok(response) => assert!(response.session_ended, "{response:?}"),
        Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
    }
    assert_eq!(agent_sessions(&stack).await, 0);
}
