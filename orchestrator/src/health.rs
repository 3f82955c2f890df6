//! The `/health` report: real checks of the model endpoint, the sandbox agent
//! and trajectory storage, in the deployment guide's JSON shape.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::sandbox_client::SandboxConnection;
use crate::trajectory::TrajectoryStore;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentStatus {
    Healthy,
    Unhealthy,
    /// Nothing to check: e.g. no default model configured.
    Unconfigured,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    Healthy,
    /// Serving, but the model endpoint is unreachable or unconfigured.
    Degraded,
    /// Cannot run completions: the sandbox or storage is down, or shutting down.
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct Components {
    pub llm: ComponentStatus,
    pub sandbox: ComponentStatus,
    pub storage: ComponentStatus,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: OverallStatus,
    pub version: &'static str,
    pub components: Components,
    /// Why each component that is not healthy is so.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<&'static str, String>,
}

/// What the checks need.
pub struct HealthChecks {
    pub sandbox: SandboxConnection,
    /// The trajectory store (a directory or a bucket).
    pub storage: TrajectoryStore,
    pub model: Option<String>,
    pub llm_base_url: String,
    pub http: reqwest::Client,
}

fn verdict(
    result: Result<(), String>,
    name: &'static str,
    details: &mut BTreeMap<&'static str, String>,
) -> ComponentStatus {
    match result {
        Ok(()) => ComponentStatus::Healthy,
        Err(reason) => {
            details.insert(name, reason);
            ComponentStatus::Unhealthy
        }
    }
}

impl HealthChecks {
    pub async fn report(&self, shutting_down: bool) -> HealthReport {
        let (sandbox, storage, llm) = tokio::join!(
            self.sandbox.check_health(CHECK_TIMEOUT),
            check_storage(&self.storage),
            self.check_llm(),
        );
        let mut details = BTreeMap::new();
        let components = Components {
            sandbox: verdict(sandbox, "sandbox", &mut details),
            storage: verdict(storage, "storage", &mut details),
            llm: match llm {
                None => {
                    details.insert("llm", "no default model (set RLM_MODEL)".to_owned());
                    ComponentStatus::Unconfigured
                }
                Some(result) => verdict(result, "llm", &mut details),
            },
        };
        let status = if shutting_down {
            details.insert("server", "shutting down".to_owned());
            OverallStatus::Unhealthy
        } else if components.sandbox != ComponentStatus::Healthy
            || components.storage != ComponentStatus::Healthy
        {
            OverallStatus::Unhealthy
        } else if components.llm != ComponentStatus::Healthy {
            OverallStatus::Degraded
        } else {
            OverallStatus::Healthy
        };
        HealthReport {
            status,
            version: rlm_common::VERSION,
            components,
            details,
        }
    }

    /// `None` when no default model is configured. A scripted model must be a
    /// readable file; an HTTP provider must answer at all (any status: a 401
    /// still proves the endpoint is reachable).
    async fn check_llm(&self) -> Option<Result<(), String>> {
        let model = self.model.as_deref()?;
        if let Some(path) = model.strip_prefix("scripted:") {
            return Some(
                tokio::fs::metadata(path)
                    .await
                    .map(|_| ())
                    .map_err(|err| format!("scripted model file {path}: {err}")),
            );
        }
        let url = format!("{}/models", self.llm_base_url);
        Some(
            self.http
                .get(&url)
                .timeout(CHECK_TIMEOUT)
                .send()
                .await
                .map(|_| ())
                .map_err(|err| format!("{url}: {err}")),
        )
    }
}

/// The trajectory store accepts a write (and the delete of the probe), in
/// time: a bucket that hangs is as unhealthy as one that refuses.
async fn check_storage(store: &TrajectoryStore) -> Result<(), String> {
    tokio::time::timeout(CHECK_TIMEOUT, store.check_writable())
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: no answer within {CHECK_TIMEOUT:?}",
                store.describe()
            ))
        })
}
