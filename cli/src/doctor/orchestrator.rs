//! The orchestrator's gRPC health and its HTTP `/health` report (which also
//! says whether it reaches the agent, can write trajectories, and has a
//! reachable default model).

use std::time::Duration;

use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Check;
use crate::connect;

const GROUP: &str = "orchestrator";
/// The orchestrator's own checks take up to 2 s.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const START_HINT: &str = "start the services with `rlm up` (or `make up`), or point --addr / RLM_ADDR at the orchestrator";

pub async fn checks(addr: &str, http_addr: &str) -> (Vec<Check>, Option<Value>) {
    let mut checks = vec![grpc(addr).await];
    match http_health(http_addr).await {
        Ok(report) => {
            checks.extend(components(http_addr, &report));
            (checks, Some(report))
        }
        Err(detail) => {
            checks.push(Check::fail(
                GROUP,
                "orchestrator /health",
                detail,
                "check --http-addr / RLM_HTTP_ADDR (the orchestrator's RLM_HTTP_LISTEN, default 127.0.0.1:9464)",
            ));
            (checks, None)
        }
    }
}

async fn grpc(addr: &str) -> Check {
    let name = "orchestrator gRPC";
    let channel = match connect::channel(addr, "the orchestrator").await {
        Ok(channel) => channel,
        Err(f) => return Check::fail(GROUP, name, f.message, START_HINT),
    };
    let mut client = HealthClient::new(channel);
    let mut statuses = Vec::new();
    for service in ["", "rlm.v1.RLMService"] {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let status = match tokio::time::timeout(RPC_TIMEOUT, client.check(request)).await {
            Ok(Ok(response)) => response.into_inner().status(),
            Ok(Err(status)) => {
                return Check::fail(
                    GROUP,
                    name,
                    format!("{addr}: health check of {service:?}: {}", status.message()),
                    START_HINT,
                );
            }
            Err(_) => {
                return Check::fail(
                    GROUP,
                    name,
                    format!("{addr}: no answer in time"),
                    START_HINT,
                );
            }
        };
        statuses.push((service, status));
    }
    let all_serving = statuses.iter().all(|(_, s)| *s == ServingStatus::Serving);
    let detail = format!(
        "{addr}: {}",
        statuses
            .iter()
            .map(|(service, status)| format!(
                "{} {}",
                if service.is_empty() {
                    "overall"
                } else {
                    service
                },
                status.as_str_name()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if all_serving {
        Check::ok(GROUP, name, detail)
    } else {
        Check::fail(
            GROUP,
            name,
            detail,
            "the orchestrator is shutting down or not ready; restart it",
        )
    }
}

async fn http_health(http_addr: &str) -> Result<Value, String> {
    let base = if http_addr.contains("://") {
        http_addr.trim_end_matches('/').to_owned()
    } else {
        format!("http://{}", http_addr.trim_end_matches('/'))
    };
    let url = format!("{base}/health");
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", crate::exit::error_chain(&e)))?;
    let code = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    serde_json::from_str(&body)
        .map_err(|e| format!("GET {url}: HTTP {code}, not the /health JSON ({e})"))
}

/// The overall status and one check per component of a `/health` report.
pub fn components(http_addr: &str, report: &Value) -> Vec<Check> {
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let status = text(&report["status"]);
    let version = text(&report["version"]);
    let detail_of = |key: &str| report["details"][key].as_str().map(str::to_owned);
    let overall_detail = format!("{http_addr}/health: {status} (version {version})");
    let mut checks = vec![match status.as_str() {
        "healthy" => Check::ok(GROUP, "orchestrator /health", overall_detail),
        "degraded" => Check::warn(
            GROUP,
            "orchestrator /health",
            overall_detail,
            "serving, but the model endpoint is unconfigured or unreachable (see below)",
        ),
        _ => Check::fail(
            GROUP,
            "orchestrator /health",
            format!(
                "{overall_detail}{}",
                detail_of("server").map_or(String::new(), |d| format!(": {d}"))
            ),
            "see the failing components below",
        ),
    }];
    let component = |key: &str| text(&report["components"][key]);
    checks.push(match component("sandbox").as_str() {
        "healthy" => Check::ok(
            GROUP,
            "sandbox from orch.",
            "the orchestrator reaches the agent",
        ),
        other => Check::fail(
            GROUP,
            "sandbox from orch.",
            detail_of("sandbox").unwrap_or_else(|| other.to_owned()),
            "start the agent and set the orchestrator's RLM_SANDBOX_ENDPOINT to its address",
        ),
    });
    checks.push(match component("storage").as_str() {
        "healthy" => Check::ok(GROUP, "trajectory storage", "the trajectory store accepts writes"),
        other => Check::fail(
            GROUP,
            "trajectory storage",
            detail_of("storage").unwrap_or_else(|| other.to_owned()),
            "make the orchestrator's RLM_LOG_DIR a writable directory, or give RLM_TRAJECTORY_STORE's bucket access (AWS_* settings)",
        ),
    });
    checks.push(match component("llm").as_str() {
        "healthy" => Check::ok(GROUP, "model endpoint", "the default model (RLM_MODEL) is reachable"),
        "unconfigured" => Check::warn(
            GROUP,
            "model endpoint",
            detail_of("llm").unwrap_or_else(|| "no default model".to_owned()),
            "set RLM_MODEL on the orchestrator (e.g. openai/gpt-4o with OPENAI_API_KEY), or pass --model to `rlm run`",
        ),
        other => Check::fail(
            GROUP,
            "model endpoint",
            detail_of("llm").unwrap_or_else(|| other.to_owned()),
            "check RLM_LLM_BASE_URL / RLM_ANTHROPIC_BASE_URL, the network, or the scripted turns file",
        ),
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;
    use serde_json::json;

    #[test]
    fn components_map_to_levels() {
        let report = json!({
            "status": "degraded",
            "version": "0.1.0",
            "components": {"llm": "unconfigured", "sandbox": "healthy", "storage": "unhealthy"},
            "details": {"llm": "no default model (set RLM_MODEL)", "storage": "/x: denied"}
        });
        let checks = components("http://h:1", &report);
        let levels: Vec<_> = checks.iter().map(|c| (c.name, c.level)).collect();
        assert_eq!(
            levels,
            [
                ("orchestrator /health", Level::Warn),
                ("sandbox from orch.", Level::Ok),
                ("trajectory storage", Level::Fail),
                ("model endpoint", Level::Warn),
            ]
        );
        assert_eq!(checks[2].detail, "/x: denied");
    }
}
