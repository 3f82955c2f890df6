//! A `CompletionSpec` checked and resolved against the server's defaults.
//! Every rejection is an `InvalidArgument` naming the field (`spec.…`).

use std::collections::BTreeMap;
use std::time::Duration;

use rlm_proto::rlm::sandbox::v1 as sandbox;
use rlm_proto::rlm::v1::{CompletionSpec, ContextFormat, SandboxLimits, context_input::Source};
use tonic::Status;

use crate::config::LimitDefaults;
use crate::model::{ModelRef, PriceTable};

const MAX_CONTEXTS: usize = 64;
/// Largest inline context; bigger ones go through UploadContext.
pub const MAX_INLINE_BYTES: usize = 8 << 20;
const MAX_METADATA: usize = 64;
const MAX_ALLOWED_PATHS: usize = 16;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_CELL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where a context of the request comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ContextSource {
    /// Inline text, uploaded to the agent before the root session starts.
    Text(String),
    /// A content id the agent should hold.
    Id(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestContext {
    pub source: ContextSource,
    /// Bound to `json.loads(text)` in the REPL.
    pub json: bool,
}

/// Limits of a completion with the server defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_depth: u32,
    pub max_iterations: u32,
    pub token_budget: Option<u64>,
    pub cost_budget_usd: Option<f64>,
    pub max_parallel: u32,
    pub max_subcalls: Option<u32>,
    pub timeout: Duration,
    pub cell_timeout: Duration,
}

/// A valid request.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub prompt: String,
    pub contexts: Vec<RequestContext>,
    pub root_model: ModelRef,
    pub sub_model: ModelRef,
    pub limits: Limits,
    pub session_limits: sandbox::SessionLimits,
    pub metadata: BTreeMap<String, String>,
}

/// What resolution needs from the server.
pub struct ServerDefaults<'a> {
    pub root_model: Option<&'a str>,
    pub sub_model: Option<&'a str>,
    pub limits: &'a LimitDefaults,
    pub pricing: &'a PriceTable,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn model(field: &str, given: &str, fallback: Option<&str>) -> Result<Option<ModelRef>, Status> {
    let chosen = if given.trim().is_empty() {
        fallback
    } else {
        Some(given)
    };
    chosen
        .map(|m| m.parse::<ModelRef>().map_err(|e| invalid(field, e)))
        .transpose()
}

fn duration(
    field: &str,
    given: Option<&prost_types::Duration>,
    default: Duration,
    max: Duration,
) -> Result<Duration, Status> {
    let Some(d) = given else {
        return Ok(default);
    };
    if d.seconds == 0 && d.nanos == 0 {
        return Ok(default);
    }
    let d = Duration::try_from(*d).map_err(|_| invalid(field, "must be positive"))?;
    if d > max {
        return Err(invalid(field, format!("at most {}s", max.as_secs())));
    }
    Ok(d)
}

fn contexts(spec: &CompletionSpec) -> Result<Vec<RequestContext>, Status> {
    if spec.contexts.len() > MAX_CONTEXTS {
        return Err(invalid(
            "spec.contexts",
            format!("at most {MAX_CONTEXTS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(spec.contexts.len());
    for (i, c) in spec.contexts.iter().enumerate() {
        let field = format!("spec.contexts[{i}]");
        let json = match ContextFormat::try_from(c.format) {
            Ok(ContextFormat::Unspecified | ContextFormat::Text) => false,
            Ok(ContextFormat::Json) => true,
            Err(_) => {
                return Err(invalid(
                    &format!("{field}.format"),
                    format!("unknown value {}", c.format),
                ));
            }
        };
        let source = match &c.source {
            None => {
                return Err(invalid(
                    &field,
                    "exactly one of text or context_id must be set",
                ));
            }
            Some(Source::Text(text)) => {
                if text.len() > MAX_INLINE_BYTES {
                    return Err(invalid(
                        &format!("{field}.text"),
                        format!(
                            "{} bytes inline, the limit is {MAX_INLINE_BYTES}; upload large \
                             contexts with UploadContext and pass context_id",
                            text.len()
                        ),
                    ));
                }
                if json && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    return Err(invalid(
                        &format!("{field}.text"),
                        format!("not valid JSON: {e}"),
                    ));
                }
                ContextSource::Text(text.clone())
            }
            Some(Source::ContextId(id)) => {
                let hex = id.strip_prefix("sha256:").unwrap_or_default();
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(invalid(
                        &format!("{field}.context_id"),
                        format!("{id:?} is not sha256:<64 lowercase hex>"),
                    ));
                }
                ContextSource::Id(id.clone())
            }
        };
        out.push(RequestContext { source, json });
    }
    Ok(out)
}

fn session_limits(spec: &CompletionSpec) -> Result<sandbox::SessionLimits, Status> {
    let Some(s) = &spec.sandbox else {
        return Ok(sandbox::SessionLimits::default());
    };
    if s.memory_bytes != 0 && s.memory_bytes < 32 << 20 {
        return Err(invalid(
            "spec.sandbox.memory_bytes",
            "at least 32 MiB (33554432)",
        ));
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if s.cpu_millicores != 0 && !(10..=1000 * cpus).contains(&s.cpu_millicores) {
        return Err(invalid(
            "spec.sandbox.cpu_millicores",
            format!("between 10 and {}", 1000 * cpus),
        ));
    }
    if s.max_pids != 0 && !(8..=4096).contains(&s.max_pids) {
        return Err(invalid("spec.sandbox.max_pids", "between 8 and 4096"));
    }
    if s.allowed_paths.len() > MAX_ALLOWED_PATHS {
        return Err(invalid(
            "spec.sandbox.allowed_paths",
            format!("at most {MAX_ALLOWED_PATHS} entries"),
        ));
    }
    Ok(agent_limits(s))
}

/// The public sandbox limits as the agent's session limits (unchecked).
pub fn agent_limits(s: &SandboxLimits) -> sandbox::SessionLimits {
    sandbox::SessionLimits {
        memory_bytes: s.memory_bytes,
        cpu_millicores: s.cpu_millicores,
        max_pids: s.max_pids,
        network: s.network,
        allowed_paths: s
            .allowed_paths
            .iter()
            .map(|p| sandbox::AllowedPath {
                host_path: p.host_path.clone(),
                read_write: p.read_write,
            })
            .collect(),
        ..Default::default()
    }
}

fn metadata(spec: &CompletionSpec) -> Result<BTreeMap<String, String>, Status> {
    if spec.metadata.len() > MAX_METADATA {
        return Err(invalid(
            "spec.metadata",
            format!("at most {MAX_METADATA} entries"),
        ));
    }
    for (k, v) in &spec.metadata {
        if k.is_empty() || k.len() > 128 {
            return Err(invalid(
                "spec.metadata",
                format!("key {k:?} must be 1-128 bytes"),
            ));
        }
        if v.len() > 1024 {
            return Err(invalid(
                &format!("spec.metadata[{k:?}]"),
                "value longer than 1024 bytes",
            ));
        }
    }
    Ok(spec.metadata.clone().into_iter().collect())
}

fn require_price(pricing: &PriceTable, field: &str, model: &ModelRef) -> Result<(), Status> {
    if pricing.get(&model.to_string()).is_none() {
        return Err(invalid(
            field,
            format!(
                "{model} has no known price, so a cost budget cannot be enforced \
                 (add it to RLM_PRICES_FILE or drop cost_budget_usd)"
            ),
        ));
    }
    Ok(())
}

/// Checks `spec` and fills in the server defaults.
pub fn resolve(
    spec: Option<CompletionSpec>,
    server: &ServerDefaults<'_>,
) -> Result<Resolved, Status> {
    let spec = spec.ok_or_else(|| invalid("spec", "required"))?;
    if spec.prompt.trim().is_empty() {
        return Err(invalid("spec.prompt", "must not be empty"));
    }
    let root_model =
        model("spec.root_model", &spec.root_model, server.root_model)?.ok_or_else(|| {
            invalid(
                "spec.root_model",
                "no model given and the server has no default (RLM_MODEL)",
            )
        })?;
    let sub_model = model("spec.sub_model", &spec.sub_model, server.sub_model)?
        .unwrap_or_else(|| root_model.clone());

    let l = spec.limits.unwrap_or_default();
    let d = server.limits;
    let max_depth = l.max_depth.unwrap_or(d.max_depth);
    if max_depth > 16 {
        return Err(invalid("spec.limits.max_depth", "between 0 and 16"));
    }
    if l.max_iterations > 1000 {
        return Err(invalid("spec.limits.max_iterations", "between 1 and 1000"));
    }
    if l.max_parallel > 256 {
        return Err(invalid("spec.limits.max_parallel", "between 1 and 256"));
    }
    if l.max_subcalls.is_some_and(|n| n > 1_000_000) {
        return Err(invalid("spec.limits.max_subcalls", "between 0 and 1000000"));
    }
    if !l.cost_budget_usd.is_finite() || l.cost_budget_usd < 0.0 {
        return Err(invalid(
            "spec.limits.cost_budget_usd",
            "must be finite and >= 0",
        ));
    }
    let cost_budget_usd = (l.cost_budget_usd > 0.0).then_some(l.cost_budget_usd);
    if cost_budget_usd.is_some() {
        require_price(server.pricing, "spec.root_model", &root_model)?;
        require_price(server.pricing, "spec.sub_model", &sub_model)?;
    }
    let limits = Limits {
        max_depth,
        max_iterations: if l.max_iterations == 0 {
            d.max_iterations
        } else {
            l.max_iterations
        },
        token_budget: (l.token_budget > 0).then_some(l.token_budget),
        cost_budget_usd,
        max_parallel: if l.max_parallel == 0 {
            d.max_parallel
        } else {
            l.max_parallel
        },
        max_subcalls: l.max_subcalls,
        timeout: duration(
            "spec.limits.timeout",
            l.timeout.as_ref(),
            d.timeout,
            MAX_TIMEOUT,
        )?,
        cell_timeout: duration(
            "spec.limits.cell_timeout",
            l.cell_timeout.as_ref(),
            d.cell_timeout,
            MAX_CELL_TIMEOUT,
        )?,
    };
    Ok(Resolved {
        contexts: contexts(&spec)?,
        session_limits: session_limits(&spec)?,
        metadata: metadata(&spec)?,
        prompt: spec.prompt,
        root_model,
        sub_model,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{CompletionLimits, ContextInput};

    fn defaults() -> LimitDefaults {
        LimitDefaults {
            max_depth: 1,
            max_iterations: 30,
            max_parallel: 8,
            timeout: Duration::from_secs(600),
            cell_timeout: Duration::from_secs(60),
        }
    }

    fn check(spec: CompletionSpec) -> Result<Resolved, Status> {
        let limits = defaults();
        let pricing = PriceTable::builtin();
        resolve(
            Some(spec),
            &ServerDefaults {
                root_model: Some("openai/gpt-4o"),
                sub_model: None,
                limits: &limits,
                pricing: &pricing,
            },
        )
    }

    fn spec() -> CompletionSpec {
        CompletionSpec {
            prompt: "task".into(),
            ..Default::default()
        }
    }

    fn field_of(result: Result<Resolved, Status>) -> String {
        let status = result.expect_err("must be rejected");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        status
            .message()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn defaults_fill_in() {
        let r = check(spec()).expect("valid");
        assert_eq!(r.root_model.to_string(), "openai/gpt-4o");
        assert_eq!(r.sub_model, r.root_model);
        assert_eq!(r.limits.max_depth, 1);
        assert_eq!(r.limits.max_iterations, 30);
        assert_eq!(r.limits.max_parallel, 8);
        assert_eq!(r.limits.token_budget, None);
        assert_eq!(r.limits.timeout, Duration::from_secs(600));
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(check(CompletionSpec {
                prompt: "  ".into(),
                ..spec()
            })),
            "spec.prompt"
        );
        assert_eq!(
            field_of(check(CompletionSpec {
                root_model: "mistral/large".into(),
                ..spec()
            })),
            "spec.root_model"
        );
        let limits = |l: CompletionLimits| CompletionSpec {
            limits: Some(l),
            ..spec()
        };
        for (l, field) in [
            (
                CompletionLimits {
                    max_iterations: 5000,
                    ..Default::default()
                },
                "spec.limits.max_iterations",
            ),
            (
                CompletionLimits {
                    max_depth: Some(17),
                    ..Default::default()
                },
                "spec.limits.max_depth",
            ),
            (
                CompletionLimits {
                    cost_budget_usd: -1.0,
                    ..Default::default()
                },
                "spec.limits.cost_budget_usd",
            ),
            (
                CompletionLimits {
                    cost_budget_usd: f64::NAN,
                    ..Default::default()
                },
                "spec.limits.cost_budget_usd",
            ),
            (
                CompletionLimits {
                    timeout: Some(prost_types::Duration {
                        seconds: -5,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                "spec.limits.timeout",
            ),
            (
                CompletionLimits {
                    timeout: Some(prost_types::Duration {
                        seconds: 100_000,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
                "spec.limits.timeout",
            ),
        ] {
            assert_eq!(field_of(check(limits(l))), field);
        }
        assert_eq!(
            field_of(check(CompletionSpec {
                contexts: vec![ContextInput {
                    source: Some(Source::Text("[1, 2".into())),
                    format: ContextFormat::Json as i32,
                }],
                ..spec()
            })),
            "spec.contexts[0].text"
        );
        assert_eq!(
            field_of(check(CompletionSpec {
                contexts: vec![ContextInput {
                    source: Some(Source::ContextId("sha256:ABC".into())),
                    format: 0,
                }],
                ..spec()
            })),
            "spec.contexts[0].context_id"
        );
        assert_eq!(
            field_of(check(CompletionSpec {
                contexts: vec![ContextInput {
                    source: None,
                    format: 0
                }],
                ..spec()
            })),
            "spec.contexts[0]"
        );
        assert_eq!(
            field_of(check(CompletionSpec {
                sandbox: Some(SandboxLimits {
                    memory_bytes: 1 << 20,
                    ..Default::default()
                }),
                ..spec()
            })),
            "spec.sandbox.memory_bytes"
        );
    }

    #[test]
    fn cost_budget_needs_known_prices() {
        let with_cost = |root: &str| CompletionSpec {
            root_model: root.into(),
            limits: Some(CompletionLimits {
                cost_budget_usd: 1.0,
                ..Default::default()
            }),
            ..spec()
        };
        assert!(check(with_cost("openai/gpt-4o")).is_ok());
        assert_eq!(
            field_of(check(with_cost("openai/unknown-model"))),
            "spec.root_model"
        );
    }
}

/// Property tests: any request is either resolved or rejected with
/// INVALID_ARGUMENT naming a `spec` field; never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use rlm_proto::rlm::v1::{CompletionLimits, ContextInput};

    fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
        proptest::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        )
    }

    fn spec() -> impl Strategy<Value = CompletionSpec> {
        let limits = (
            proptest::option::of(any::<u32>()),
            any::<u32>(),
            any::<u64>(),
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(-0.0)
            ],
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            duration(),
            duration(),
        )
            .prop_map(|(d, i, t, c, p, s, timeout, cell)| CompletionLimits {
                max_depth: d,
                max_iterations: i,
                token_budget: t,
                cost_budget_usd: c,
                max_parallel: p,
                max_subcalls: s,
                timeout,
                cell_timeout: cell,
            });
        let context = (
            proptest::option::of(prop_oneof![
                "\\PC{0,40}".prop_map(Source::Text),
                "(sha256:)?[0-9a-fA-F]{0,70}".prop_map(Source::ContextId),
            ]),
            -2i32..5,
        )
            .prop_map(|(source, format)| ContextInput { source, format });
        (
            "\\PC{0,20}",
            proptest::collection::vec(context, 0..4),
            "[a-z:/._-]{0,20}",
            proptest::option::of(limits),
            proptest::option::of((any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
                |(memory_bytes, cpu_millicores, max_pids)| SandboxLimits {
                    memory_bytes,
                    cpu_millicores,
                    max_pids,
                    ..Default::default()
                },
            )),
            proptest::collection::hash_map("\\PC{0,130}", "\\PC{0,8}", 0..3),
        )
            .prop_map(
                |(prompt, contexts, root_model, limits, sandbox, metadata)| CompletionSpec {
                    prompt,
                    contexts,
                    root_model,
                    limits,
                    sandbox,
                    metadata,
                    ..Default::default()
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn resolve_is_total(spec in spec()) {
            let limits = LimitDefaults {
                max_depth: 1,
                max_iterations: 30,
                max_parallel: 8,
                timeout: Duration::from_secs(600),
                cell_timeout: Duration::from_secs(60),
            };
            let pricing = PriceTable::builtin();
            let server = ServerDefaults {
                root_model: Some("openai/gpt-4o"),
                sub_model: None,
                limits: &limits,
                pricing: &pricing,
            };
            match resolve(Some(spec), &server) {
                Ok(r) => {
                    prop_assert!(r.limits.max_iterations >= 1 && r.limits.max_iterations <= 1000);
                    prop_assert!(r.limits.max_parallel >= 1 && r.limits.max_parallel <= 256);
                    prop_assert!(r.limits.max_depth <= 16);
                    prop_assert!(!r.limits.timeout.is_zero());
                    prop_assert!(r.limits.cost_budget_usd.is_none_or(|c| c.is_finite() && c > 0.0));
                }
                Err(status) => {
                    prop_assert_eq!(status.code(), tonic::Code::InvalidArgument);
                    prop_assert!(status.message().starts_with("spec"), "{}", status.message());
                }
            }
        }
    }
}
