//! Server reflection v1 and v1alpha list the service and the health service on both binaries.

use futures::StreamExt;
use rlm_e2e::{Stack, channel};

async fn list_v1(address: &str) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel(address).await.expect("connect"))
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    match responses
        .next()
        .await
        .expect("response")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1 response {other:?}"),
    }
}

async fn list_v1alpha(address: &str) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel(address).await.expect("connect"))
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    match responses
        .next()
        .await
        .expect("response")
        .expect("ok")
        .message_response
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected v1alpha response {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_v1_and_v1alpha_list_services_on_both_binaries() {
    let stack = Stack::start(&[]).await;
    for (address, service) in [
        (&stack.grpc_address, "rlm.v1.RLMService"),
        (&stack.grpc_address, "rlm.v1.SessionService"),
        (&stack.agent_address, "rlm.sandbox.v1.SandboxService"),
    ] {
        for listed in [list_v1(address).await, list_v1alpha(address).await] {
            assert!(
                listed.iter().any(|s| s == service),
                "{service} missing from {listed:?}"
            );
            assert!(
                listed.iter().any(|s| s == "grpc.health.v1.Health"),
                "health missing from {listed:?}"
            );
        }
    }
}
