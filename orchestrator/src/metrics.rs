//! Prometheus metrics served on `/metrics`.
//!
//! Names follow the deployment guide (`rlm_requests_total`,
//! `rlm_request_duration_seconds`, `rlm_tokens_used_total`, `rlm_cost_usd_total`);
//! tokens are a counter split by model and direction rather than the guide's
//! per-request histogram, which cannot be summed into a spend rate.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub model: String,
    /// `input` or `output`.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<MethodLabels, Histogram>,
    pub tokens: Family<TokenLabels, Counter>,
    pub cost_usd: Family<ModelLabels, Counter<f64, AtomicU64>>,
    pub errors: Family<ErrorLabels, Counter>,
    pub sandbox_calls: Family<RequestLabels, Counter>,
    pub sandbox_up: Gauge,
    pub completions: Family<ReasonLabels, Counter>,
    pub completions_running: Gauge,
    pub queue_depth: Gauge,
    pub queue_jobs: Family<OutcomeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened to a queued completion: `submitted`, `rejected`,
    /// `finished`, `cancelled`, `failed`, `retried`, `handed_back`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Termination reason, e.g. `FINAL`, `TOKEN_BUDGET`.
    pub reason: String,
}

impl Metrics {
    /// Series for `default_model` start at zero, so dashboards and `rate()` see
    /// them before the first completion.
    pub fn new(default_model: Option<&str>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rlm_requests",
            "gRPC requests by method and status code",
            requests.clone(),
        );
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.5, 14))
        });
        registry.register(
            "rlm_request_duration_seconds",
            "gRPC request latency in seconds, by method",
            request_duration.clone(),
        );
        let tokens = Family::<TokenLabels, Counter>::default();
        registry.register(
            "rlm_tokens_used",
            "Model tokens used, by model and direction (input/output)",
            tokens.clone(),
        );
        let cost_usd = Family::<ModelLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "rlm_cost_usd",
            "Model spend in US dollars, by model (known prices only)",
            cost_usd.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("rlm_errors", "Errors by kind", errors.clone());
        let sandbox_calls = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rlm_sandbox_calls",
            "Calls to the sandbox agent by method and status code",
            sandbox_calls.clone(),
        );
        let sandbox_up = Gauge::default();
        registry.register(
            "rlm_sandbox_up",
            "1 when the sandbox agent answered its last health check, else 0",
            sandbox_up.clone(),
        );
        let completions = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "rlm_completions",
            "Completions ended, by termination reason",
            completions.clone(),
        );
        let completions_running = Gauge::default();
        registry.register(
            "rlm_completions_running",
            "Completions running now",
            completions_running.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "rlm_queue_depth",
            "Queued completions waiting to start (fleet: across the fleet, as last seen)",
            queue_depth.clone(),
        );
        let queue_jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "rlm_queue_jobs",
            "Queued completions by outcome, as seen by this replica",
            queue_jobs.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: rlm_common::VERSION.to_owned(),
            })
            .set(1);
        registry.register("rlm_build_info", "Build information; always 1", build);
        if let Some(model) = default_model {
            for direction in ["input", "output"] {
                tokens
                    .get_or_create(&TokenLabels {
                        model: model.to_owned(),
                        direction: direction.to_owned(),
                    })
                    .inc_by(0);
            }
            cost_usd
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                })
                .inc_by(0.0);
        }
        Self {
            registry,
            requests,
            request_duration,
            tokens,
            cost_usd,
            errors,
            sandbox_calls,
            sandbox_up,
            completions,
            completions_running,
            queue_depth,
            queue_jobs,
        }
    }

    /// Counts one queued completion reaching `outcome`.
    pub fn count_job(&self, outcome: &str) {
        self.queue_jobs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records one finished gRPC call of `method` that started at `started`.
    pub fn record_request<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, tonic::Status>,
    ) -> Result<T, tonic::Status> {
        let code = result
            .as_ref()
            .map_or_else(|status| status.code(), |_| tonic::Code::Ok);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.request_duration
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    pub fn observe_sandbox_call(&self, method: &str, code: tonic::Code) {
        self.sandbox_calls
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
    }

    /// Adds one model call's usage to the token and cost series.
    pub fn record_model_call(&self, model: &str, input: u64, output: u64, cost: Option<f64>) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.tokens
                .get_or_create(&TokenLabels {
                    model: model.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(n);
        }
        if let Some(cost) = cost {
            self.cost_usd
                .get_or_create(&ModelLabels {
                    model: model.to_owned(),
                })
                .inc_by(cost);
        }
    }

    pub fn count_error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_guide_metrics() {
        let metrics = Metrics::new(Some("openai/gpt-4o"));
        let _ = metrics.record_request("Complete", Instant::now(), Ok(()));
        metrics
            .tokens
            .get_or_create(&TokenLabels {
                model: "m".into(),
                direction: "input".into(),
            })
            .inc_by(7);
        let text = metrics.render();
        for name in [
            "rlm_requests_total{method=\"Complete\",code=\"Ok\"} 1",
            "rlm_request_duration_seconds_bucket",
            "rlm_tokens_used_total{model=\"m\",direction=\"input\"} 7",
            "rlm_cost_usd_total{model=\"openai/gpt-4o\"} 0",
            "rlm_build_info",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
