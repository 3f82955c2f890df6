//! `/metrics` is valid Prometheus text with the deployment guide's names;
//! `/health` has the guide's JSON shape and follows the agent's liveness.

use std::time::Duration;

use rlm_e2e::{Service, Stack, channel, wait_serving};
use rlm_proto::rlm::v1::UploadContextRequest;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;

/// Checks every line against the text exposition format; returns the sample names.
fn parse_prometheus(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let kind = words.next().unwrap_or_default();
            assert!(
                kind == "HELP" || kind == "TYPE",
                "bad comment line {line:?}"
            );
            if kind == "TYPE" {
                let ty = rest.rsplit(' ').next().unwrap_or_default();
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "untyped",
                        "info",
                        "stateset",
                        "unknown"
                    ]
                    .contains(&ty),
                    "bad TYPE in {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in {line:?}"
            );
        }
        names.push(name.to_owned());
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_carry_the_guide_names() {
    let stack = Stack::start(&[("RLM_MODEL", "openai/gpt-4o")]).await;
    let mut client = RlmServiceClient::new(channel(&stack.grpc_address).await.expect("connect"));
    let chunk = UploadContextRequest {
        chunk: b"count me".to_vec(),
        ..Default::default()
    };
    client
        .upload_context(futures::stream::iter([chunk]))
        .await
        .expect("upload");

    let (status, text) = stack.http_get("/metrics").await;
    assert_eq!(status, 200);
    let names = parse_prometheus(&text);
    for wanted in [
        "rlm_requests_total",
        "rlm_request_duration_seconds_bucket",
        "rlm_request_duration_seconds_count",
        "rlm_tokens_used_total",
        "rlm_cost_usd_total",
        "rlm_sandbox_calls_total",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from\n{text}"
        );
    }
    assert!(
        text.contains(r#"rlm_requests_total{method="UploadContext",code="Ok"} 1"#),
        "the upload is counted:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_follows_the_agent() {
    let mut stack = Stack::start(&[]).await;
    let (status, body) = stack.http_get("/health").await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(status, 200, "{body}");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(report["components"]["sandbox"], "healthy", "{body}");
    assert_eq!(report["components"]["storage"], "healthy", "{body}");
    assert_eq!(
        report["components"]["llm"], "unconfigured",
        "no RLM_MODEL: {body}"
    );
    assert_eq!(report["status"], "degraded", "{body}");

    stack.agent.kill();
    let (status, body) = stack.http_get("/health").await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
    assert_eq!(status, 503, "{body}");
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["components"]["sandbox"], "unhealthy");
    assert!(
        report["details"]["sandbox"]
            .as_str()
            .unwrap_or_default()
            .contains("sandbox.sock"),
        "{body}"
    );
    let (_, metrics) = stack.http_get("/metrics").await;
    assert!(metrics.contains("rlm_sandbox_up 0"), "{metrics}");

    // A new agent on the same socket: the orchestrator reconnects on its own.
    let env = std::collections::HashMap::from([
        ("RLM_AGENT_LISTEN".to_owned(), stack.agent_address.clone()),
        (
            "RLM_AGENT_DATA_DIR".to_owned(),
            stack.dir.path().join("agent").display().to_string(),
        ),
    ]);
    let agent = Service::start("rlm-sandbox-agent", stack.dir.path(), &env, &[]);
    wait_serving(&stack.agent_address, &agent).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = stack.http_get("/health").await;
        let report: serde_json::Value = serde_json::from_str(&body).expect("health is JSON");
        if report["components"]["sandbox"] == "healthy" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sandbox never healthy again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
