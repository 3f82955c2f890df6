//! The sandbox agent: its gRPC health and `GetInfo` (isolation in force,
//! cgroup version, warnings, warm pool).

use std::path::Path;
use std::time::Duration;

use rlm_proto::rlm::sandbox::v1::sandbox_service_client::SandboxServiceClient;
use rlm_proto::rlm::sandbox::v1::{CgroupVersion, GetInfoRequest, GetInfoResponse, IsolationMode};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Check;
use crate::{connect, names};

const GROUP: &str = "agent";
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT: &str = "unix:///run/rlm/sandbox.sock";
/// Where `rlm up` puts the socket (relative to the working directory).
const LOCAL: &str = ".rlm/run/sandbox.sock";

/// The agent address: the flag or RLM_SANDBOX_ENDPOINT, else the default
/// socket, else the socket of an `rlm up` started in this directory.
pub fn address(given: Option<&str>) -> String {
    if let Some(address) = given.filter(|a| !a.trim().is_empty()) {
        return address.to_owned();
    }
    let default_path = DEFAULT.trim_start_matches("unix://");
    if !Path::new(default_path).exists()
        && let Ok(local) = std::path::absolute(LOCAL)
        && local.exists()
    {
        return format!("unix://{}", local.display());
    }
    DEFAULT.to_owned()
}

fn reach_hint(address: &str) -> String {
    let mut hint = "start the agent (`rlm up` starts both services), or point --agent-addr / RLM_SANDBOX_ENDPOINT at it".to_owned();
    if address.starts_with("unix://") && !nix::unistd::geteuid().is_root() {
        hint.push_str("; the socket is mode 600 by default: run as root or as the agent's user");
    }
    hint
}

pub async fn checks(address: &str) -> (Vec<Check>, Option<Value>) {
    let channel = match connect::channel(address, "the sandbox agent").await {
        Ok(channel) => channel,
        Err(f) => {
            return (
                vec![Check::fail(
                    GROUP,
                    "agent gRPC",
                    f.message,
                    reach_hint(address),
                )],
                None,
            );
        }
    };
    let mut health_client = HealthClient::new(channel.clone());
    let health = health_client.check(HealthCheckRequest {
        service: String::new(),
    });
    let mut checks = vec![match tokio::time::timeout(RPC_TIMEOUT, health).await {
        Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving => {
            Check::ok(GROUP, "agent gRPC", format!("{address}: SERVING"))
        }
        Ok(Ok(r)) => Check::fail(
            GROUP,
            "agent gRPC",
            format!("{address}: {}", r.get_ref().status().as_str_name()),
            "the agent is shutting down or not ready; restart it",
        ),
        Ok(Err(status)) => Check::fail(
            GROUP,
            "agent gRPC",
            format!("{address}: {}", status.message()),
            reach_hint(address),
        ),
        Err(_) => Check::fail(
            GROUP,
            "agent gRPC",
            format!("{address}: no answer in time"),
            reach_hint(address),
        ),
    }];
    let mut sandbox = SandboxServiceClient::new(channel);
    let info = sandbox.get_info(GetInfoRequest {});
    match tokio::time::timeout(RPC_TIMEOUT, info).await {
        Ok(Ok(response)) => {
            let info = response.into_inner();
            checks.extend(info_checks(&info));
            (checks, Some(info_json(&info)))
        }
        Ok(Err(status)) => {
            checks.push(Check::fail(
                GROUP,
                "agent isolation",
                format!("GetInfo: {}", status.message()),
                "check the agent's log",
            ));
            (checks, None)
        }
        Err(_) => {
            checks.push(Check::fail(
                GROUP,
                "agent isolation",
                "GetInfo: no answer in time",
                "check the agent's log",
            ));
            (checks, None)
        }
    }
}

/// Isolation, cgroups and the warm pool, from `GetInfo`.
pub fn info_checks(info: &GetInfoResponse) -> Vec<Check> {
    let features: Vec<String> = info
        .isolation_features
        .iter()
        .map(|f| names::isolation_feature(*f))
        .collect();
    let features = if features.is_empty() {
        "no isolation features".to_owned()
    } else {
        format!("{} features: {}", features.len(), features.join(", "))
    };
    let mut detail = format!(
        "{} ({features})",
        names::isolation_mode(info.isolation_mode)
    );
    if !info.warnings.is_empty() {
        detail.push_str("; the agent warns: ");
        detail.push_str(&info.warnings.join("; "));
    }
    let root_hint = "run the agent as root on a host with cgroup v2 and RLM_AGENT_ISOLATION=full";
    let isolation = match info.isolation_mode() {
        IsolationMode::Full => Check::ok(GROUP, "agent isolation", detail),
        IsolationMode::None if info.warnings.is_empty() => Check::warn(
            GROUP,
            "agent isolation",
            format!("{detail}: model code runs with the agent's privileges (development only)"),
            root_hint,
        ),
        _ => Check::warn(GROUP, "agent isolation", detail, root_hint),
    };
    let cgroup = match info.cgroup_version() {
        CgroupVersion::V1 | CgroupVersion::V2 => Check::ok(
            GROUP,
            "agent cgroups",
            format!(
                "{} (memory, pids and cpu limits per session)",
                names::cgroup_version(info.cgroup_version)
            ),
        ),
        _ => Check::warn(
            GROUP,
            "agent cgroups",
            "none: sessions have no memory, pids or cpu limits",
            root_hint,
        ),
    };
    let pools: Vec<String> = info
        .pools
        .iter()
        .map(|p| format!("{} ready/{} target ({})", p.ready, p.target_size, p.profile))
        .collect();
    let runtime = Check::ok(
        GROUP,
        "agent runtime",
        format!(
            "agent {}, Python {}, {} live session(s), warm pool: {}",
            info.agent_version,
            info.python_version,
            info.live_sessions,
            if pools.is_empty() {
                "none".to_owned()
            } else {
                pools.join(", ")
            }
        ),
    );
    vec![isolation, cgroup, runtime]
}

fn info_json(info: &GetInfoResponse) -> Value {
    json!({
        "agent_version": info.agent_version,
        "python_version": info.python_version,
        "isolation_mode": names::isolation_mode(info.isolation_mode),
        "isolation_features": info.isolation_features.iter().map(|f| names::isolation_feature(*f)).collect::<Vec<_>>(),
        "cgroup_version": names::cgroup_version(info.cgroup_version),
        "warnings": info.warnings,
        "live_sessions": info.live_sessions,
        "pools": info.pools.iter().map(|p| json!({
            "profile": p.profile,
            "target_size": p.target_size,
            "ready": p.ready,
            "starting": p.starting,
            "hits": p.hits,
            "misses": p.misses,
        })).collect::<Vec<_>>(),
        "started_at": crate::json::timestamp(info.started_at.as_ref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;
    use rlm_proto::rlm::sandbox::v1::IsolationFeature;

    #[test]
    fn isolation_none_warns_and_full_is_ok() {
        let none = GetInfoResponse {
            isolation_mode: IsolationMode::None as i32,
            cgroup_version: CgroupVersion::None as i32,
            ..Default::default()
        };
        let checks = info_checks(&none);
        assert_eq!(checks[0].level, Level::Warn);
        assert_eq!(checks[1].level, Level::Warn);
        let full = GetInfoResponse {
            isolation_mode: IsolationMode::Full as i32,
            isolation_features: vec![IsolationFeature::Seccomp as i32],
            cgroup_version: CgroupVersion::V2 as i32,
            ..Default::default()
        };
        let checks = info_checks(&full);
        assert_eq!(checks[0].level, Level::Ok);
        assert!(checks[0].detail.contains("seccomp"), "{}", checks[0].detail);
        assert_eq!(
            checks[1].detail,
            "v2 (memory, pids and cpu limits per session)"
        );
    }

    #[test]
    fn explicit_address_wins() {
        assert_eq!(address(Some("unix:///x.sock")), "unix:///x.sock");
    }
}
