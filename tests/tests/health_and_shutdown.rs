//! Both binaries report SERVING overall and per service, flip to NOT_SERVING on
//! SIGTERM while still answering, and exit 0.

use std::time::Duration;

use futures::StreamExt;
use rlm_e2e::{Stack, channel, health_status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const RLM_SERVICE: &str = "rlm.v1.RLMService";
const SANDBOX_SERVICE: &str = "rlm.sandbox.v1.SandboxService";

#[tokio::test(flavor = "multi_thread")]
async fn both_services_serve_then_drain_on_sigterm_and_exit_zero() {
    let mut stack = Stack::start(&[]).await;
    let targets = [
        (stack.grpc_address.clone(), RLM_SERVICE),
        (stack.agent_address.clone(), SANDBOX_SERVICE),
    ];
    for (address, service) in &targets {
        let channel = channel(address).await.expect("connect");
        assert_eq!(
            health_status(channel.clone(), "").await.expect("overall"),
            ServingStatus::Serving
        );
        assert_eq!(
            health_status(channel.clone(), service)
                .await
                .expect("per service"),
            ServingStatus::Serving
        );
        let unknown = health_status(channel, "no.such.Service")
            .await
            .expect_err("unknown service");
        assert_eq!(
            unknown.downcast_ref::<tonic::Status>().map(|s| s.code()),
            Some(tonic::Code::NotFound)
        );
    }

    for (service, (address, name)) in [&mut stack.orchestrator, &mut stack.agent]
        .into_iter()
        .zip(&targets)
    {
        let mut watch = HealthClient::new(channel(address).await.expect("connect"))
            .watch(HealthCheckRequest {
                service: (*name).to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.next().await.expect("first status").expect("ok");
        assert_eq!(first.status(), ServingStatus::Serving);

        service.signal(nix::sys::signal::Signal::SIGTERM);
        let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("status change within 5 s")
            .expect("stream open")
            .expect("ok");
        assert_eq!(
            next.status(),
            ServingStatus::NotServing,
            "{name} announces NOT_SERVING first"
        );
        // Still answering during the announcement window.
        let overall = health_status(channel(address).await.expect("connect"), "")
            .await
            .expect("check");
        assert_eq!(overall, ServingStatus::NotServing);
        drop(watch);

        let status = service.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(
            status.code(),
            Some(0),
            "{} exit status; log:\n{}",
            service.name,
            service.log_text()
        );
    }
    assert!(
        !stack.agent_socket().exists(),
        "agent removes its socket on exit"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_socket_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start(&[]).await;
    let mode = std::fs::metadata(stack.agent_socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
