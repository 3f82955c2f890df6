//! One orchestrator request that reaches the agent is one trace: a fake OTLP
//! collector receives spans from both processes with the same trace id, and the
//! agent's span is a child of an orchestrator span.

use std::time::{Duration, Instant};

use rlm_e2e::otlp_collector::Collector;
use rlm_e2e::{Stack, channel};
use rlm_proto::rlm::v1::UploadContextRequest;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;

#[tokio::test(flavor = "multi_thread")]
async fn spans_from_both_processes_share_one_trace() {
    let (collector, endpoint) = Collector::start().await;
    let stack = Stack::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;

    let mut client = RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"));
    let chunk = UploadContextRequest {
        chunk: b"trace me".to_vec(),
        ..Default::default()
    };
    client
        .upload_context(futures::stream::iter([chunk]))
        .await
        .expect("upload");

    let deadline = Instant::now() + Duration::from_secs(15);
    let (orchestrator_span, agent_span) = loop {
        let spans = collector.spans();
        let upload = spans.iter().find(|s| {
            s.service_name == "rlm-orchestrator" && s.name == "rlm.v1.RLMService/UploadContext"
        });
        let put = spans.iter().find(|s| {
            s.service_name == "rlm-sandbox-agent"
                && s.name == "rlm.sandbox.v1.SandboxService/PutContext"
        });
        if let (Some(upload), Some(put)) = (upload, put) {
            break (upload.clone(), put.clone());
        }
        assert!(
            Instant::now() < deadline,
            "spans never arrived; got {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(orchestrator_span.trace_id.len(), 16);
    assert_eq!(
        orchestrator_span.trace_id, agent_span.trace_id,
        "one request, one trace"
    );
    let spans = collector.spans();
    let agent_parent = spans
        .iter()
        .find(|s| s.span_id == agent_span.parent_span_id)
        .expect("the agent span's parent was exported too");
    assert_eq!(agent_parent.service_name, "rlm-orchestrator");
    assert!(
        spans.iter().all(|s| !s.name.starts_with("grpc.health")),
        "probes are not traced"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_exported_without_an_endpoint() {
    // No OTEL_* variables: the services start, and the log says tracing is off.
    let stack = Stack::start(&[]).await;
    assert!(
        stack.orchestrator.log_text().contains("tracing=false"),
        "{}",
        stack.orchestrator.log_text()
    );
    assert!(
        stack.agent.log_text().contains("tracing=false"),
        "{}",
        stack.agent.log_text()
    );
}
