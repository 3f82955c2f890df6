//! API keys on the orchestrator: no key or a wrong key is UNAUTHENTICATED,
//! health stays open for probes, the key file is reloaded when it changes,
//! each key has its own concurrency limit, and no key ever reaches the logs.

use std::time::{Duration, Instant};

use rlm_e2e::{Stack, channel, health_status};
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{CompleteRequest, CompletionSpec, ListTrajectoriesRequest};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const ALICE: &str = "alice-key-0123456789abcdef";
const BOB: &str = "bob-key-0123456789abcdef";
const CAROL: &str = "carol-key-0123456789abcdef";

fn with_key<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii"),
        );
    }
    request
}

async fn list(channel: Channel, key: Option<&str>) -> Result<(), tonic::Status> {
    RlmServiceClient::new(channel)
        .list_trajectories(with_key(ListTrajectoriesRequest::default(), key))
        .await
        .map(|_| ())
}

fn slow_spec(turns: &std::path::Path) -> CompletionSpec {
    CompletionSpec {
        prompt: "wait a little".into(),
        root_model: format!("scripted:{}", turns.display()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_guard_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::write(&keys, format!("alice:{ALICE}\nbob:{BOB}\n")).expect("keys");
    let turns = dir.path().join("turns.txt");
    std::fs::write(
        &turns,
        "```repl\nimport time\ntime.sleep(2)\n```\n---\nFINAL(done)\n",
    )
    .expect("turns");
    let keys_path = keys.display().to_string();
    let stack = Stack::start(&[
        ("RLM_API_KEYS_FILE", keys_path.as_str()),
        ("RLM_API_KEY_MAX_CONCURRENT", "1"),
    ])
    .await;
    let ch = channel(&stack.grpc_address).await.expect("connect");

    // Probes need no key.
    assert_eq!(
        health_status(ch.clone(), "").await.expect("health"),
        ServingStatus::Serving
    );
    for key in [None, Some(CAROL), Some("")] {
        let status = list(ch.clone(), key).await.expect_err("refused");
        assert_eq!(status.code(), Code::Unauthenticated, "{key:?}: {status:?}");
    }
    list(ch.clone(), Some(ALICE))
        .await
        .expect("alice is allowed");

    // One completion per key at a time.
    let running = {
        let mut client = RlmServiceClient::new(ch.clone());
        let spec = slow_spec(&turns);
        tokio::spawn(async move {
            client
                .complete(with_key(CompleteRequest { spec: Some(spec) }, Some(ALICE)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = RlmServiceClient::new(ch.clone())
        .complete(with_key(
            CompleteRequest {
                spec: Some(slow_spec(&turns)),
            },
            Some(ALICE),
        ))
        .await
        .expect_err("alice's slot is taken");
    assert_eq!(second.code(), Code::ResourceExhausted, "{second:?}");
    assert!(second.message().contains("alice"), "{second:?}");
    let bob = RlmServiceClient::new(ch.clone())
        .complete(with_key(
            CompleteRequest {
                spec: Some(slow_spec(&turns)),
            },
            Some(BOB),
        ))
        .await
        .expect("bob has his own slot")
        .into_inner();
    assert_eq!(bob.result.expect("result").answer, "done");
    let first = running
        .await
        .expect("join")
        .expect("alice's first completion");
    assert_eq!(first.into_inner().result.expect("result").answer, "done");

    // The file is reloaded: carol in, alice out.
    std::fs::write(&keys, format!("carol:{CAROL}\nbob:{BOB}\n")).expect("rewrite keys");
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(ch.clone(), Some(CAROL)).await.is_err() {
        assert!(Instant::now() < deadline, "the new key was never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let revoked = list(ch.clone(), Some(ALICE)).await.expect_err("revoked");
    assert_eq!(revoked.code(), Code::Unauthenticated);

    let logs = stack.orchestrator.log_text();
    for key in [ALICE, BOB, CAROL] {
        assert!(!logs.contains(key), "a key reached the log:\n{logs}");
    }
    assert!(logs.contains("API keys reloaded"), "{logs}");
}
