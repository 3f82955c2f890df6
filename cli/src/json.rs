//! Proto messages as JSON, for `--json` output. The proto crate has no serde,
//! so the fields are mapped here: proto field names, enums as short lowercase
//! names (`final`, `rlm_query`), durations as seconds (float), timestamps as
//! RFC 3339 UTC strings, unset messages as `null`.

use prost_types::{Duration, Timestamp};
use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::subcall_outcome::Outcome;
use rlm_proto::rlm::v1::{
    CompletionEvent, CompletionLimits, CompletionResult, CompletionSpec, ContextInput, Trajectory,
    TrajectorySummary, Usage,
};
use serde_json::{Value, json};

use crate::{format, names};

pub fn duration(d: Option<&Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(format::secs(Some(d))))
}

pub fn timestamp(ts: Option<&Timestamp>) -> Value {
    ts.map_or(Value::Null, |ts| json!(format::rfc3339(ts)))
}

/// Usage; `cost_usd` is a lower bound when `cost_known` is false.
pub fn usage(u: Option<&Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "calls": u.calls,
        "cost_usd": u.cost_usd,
        "cost_known": u.cost_known,
    })
}

pub fn result(r: &CompletionResult) -> Value {
    json!({
        "completion_id": r.completion_id,
        "trajectory_id": r.trajectory_id,
        "answer": r.answer,
        "termination_reason": names::reason(r.termination_reason),
        "partial": r.partial,
        "detail": r.detail,
        "usage": usage(r.total_usage.as_ref()),
        "model_usage": r.model_usage.iter().map(|m| json!({
            "model": m.model,
            "usage": usage(m.usage.as_ref()),
        })).collect::<Vec<_>>(),
        "iterations": r.iterations,
        "total_iterations": r.total_iterations,
        "depth_reached": r.depth_reached,
        "subcalls": r.subcalls,
        "child_rlms": r.child_rlms,
        "started_at": timestamp(r.started_at.as_ref()),
        "duration": duration(r.duration.as_ref()),
    })
}

pub fn summary(s: &TrajectorySummary) -> Value {
    json!({
        "trajectory_id": s.trajectory_id,
        "completion_id": s.completion_id,
        "prompt_preview": s.prompt_preview,
        "status": names::status(s.status),
        "termination_reason": names::reason(s.termination_reason),
        "started_at": timestamp(s.started_at.as_ref()),
        "duration": duration(s.duration.as_ref()),
        "usage": usage(s.total_usage.as_ref()),
        "iterations": s.iterations,
        "root_model": s.root_model,
        "metadata": s.metadata,
    })
}

fn context(c: &ContextInput) -> Value {
    let (key, value) = match &c.source {
        Some(Source::Text(text)) => ("text_bytes", json!(text.len())),
        Some(Source::ContextId(id)) => ("context_id", json!(id)),
        None => ("source", Value::Null),
    };
    json!({ key: value, "format": names::context_format(c.format) })
}

fn limits(l: &CompletionLimits) -> Value {
    json!({
        "max_depth": l.max_depth,
        "max_iterations": l.max_iterations,
        "token_budget": l.token_budget,
        "cost_budget_usd": l.cost_budget_usd,
        "max_parallel": l.max_parallel,
        "max_subcalls": l.max_subcalls,
        "timeout": duration(l.timeout.as_ref()),
        "cell_timeout": duration(l.cell_timeout.as_ref()),
    })
}

pub fn spec(s: &CompletionSpec) -> Value {
    json!({
        "prompt": s.prompt,
        "contexts": s.contexts.iter().map(context).collect::<Vec<_>>(),
        "root_model": s.root_model,
        "sub_model": s.sub_model,
        "limits": s.limits.as_ref().map_or(Value::Null, limits),
        "metadata": s.metadata,
    })
}

fn event_body(event: &Event) -> (&'static str, Value) {
    match event {
        Event::IterationStarted(e) => (
            "iteration_started",
            json!({ "iteration": e.iteration, "tree_usage": usage(e.tree_usage.as_ref()) }),
        ),
        Event::ModelCallFinished(e) => (
            "model_call_finished",
            json!({
                "model": e.model,
                "purpose": names::purpose(e.purpose),
                "iteration": e.iteration,
                "subcall_id": e.subcall_id,
                "item_index": e.item_index,
                "usage": usage(e.usage.as_ref()),
                "latency": duration(e.latency.as_ref()),
                "response_text": e.response_text,
                "error": e.error,
            }),
        ),
        Event::CodeExecuted(e) => (
            "code_executed",
            json!({
                "iteration": e.iteration,
                "block_index": e.block_index,
                "code": e.code,
                "output": e.output,
                "output_truncated": e.output_truncated,
                "error": e.error,
                "final_called": e.final_called,
                "timed_out": e.timed_out,
                "session_ended": e.session_ended,
                "duration": duration(e.duration.as_ref()),
                "cpu_ms": e.cpu_ms,
            }),
        ),
        Event::SubcallStarted(e) => (
            "subcall_started",
            json!({
                "subcall_id": e.subcall_id,
                "kind": names::subcall_kind(e.kind),
                "batched": e.batched,
                "iteration": e.iteration,
                "prompts": e.prompts,
                "model": e.model,
                "degraded": e.degraded,
                "child_node_ids": e.child_node_ids,
            }),
        ),
        Event::SubcallFinished(e) => (
            "subcall_finished",
            json!({
                "subcall_id": e.subcall_id,
                "kind": names::subcall_kind(e.kind),
                "outcomes": e.outcomes.iter().map(|o| match &o.outcome {
                    Some(Outcome::Text(t)) => json!({ "text": t }),
                    Some(Outcome::Error(err)) => json!({ "error": err }),
                    None => Value::Null,
                }).collect::<Vec<_>>(),
                "error_count": e.error_count,
                "usage": usage(e.usage.as_ref()),
                "duration": duration(e.duration.as_ref()),
            }),
        ),
        Event::Result(r) => ("result", result(r)),
    }
}

pub fn event(e: &CompletionEvent) -> Value {
    let mut value = json!({
        "sequence": e.sequence,
        "node_id": e.node_id,
        "depth": e.depth,
        "timestamp": timestamp(e.timestamp.as_ref()),
    });
    if let (Some(body), Value::Object(map)) = (&e.event, &mut value) {
        let (kind, body) = event_body(body);
        map.insert("kind".to_owned(), json!(kind));
        map.insert(kind.to_owned(), body);
    }
    value
}

pub fn trajectory(t: &Trajectory) -> Value {
    json!({
        "summary": t.summary.as_ref().map_or(Value::Null, summary),
        "spec": t.spec.as_ref().map_or(Value::Null, spec),
        "events": t.events.iter().map(event).collect::<Vec<_>>(),
        "result": t.result.as_ref().map_or(Value::Null, result),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{IterationStartedEvent, TerminationReason};

    #[test]
    fn result_has_the_documented_keys() {
        let r = CompletionResult {
            completion_id: "c".into(),
            trajectory_id: "t".into(),
            answer: "42".into(),
            termination_reason: TerminationReason::Final as i32,
            duration: Some(Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
            ..Default::default()
        };
        let v = result(&r);
        assert_eq!(v["answer"], "42");
        assert_eq!(v["termination_reason"], "final");
        assert_eq!(v["duration"], 1.5);
        assert_eq!(v["usage"]["cost_known"], false);
        assert!(v["started_at"].is_null());
    }

    #[test]
    fn event_names_its_kind() {
        let e = CompletionEvent {
            sequence: 3,
            node_id: "0.1".into(),
            depth: 1,
            event: Some(Event::IterationStarted(IterationStartedEvent {
                iteration: 2,
                tree_usage: None,
            })),
            ..Default::default()
        };
        let v = event(&e);
        assert_eq!(v["kind"], "iteration_started");
        assert_eq!(v["iteration_started"]["iteration"], 2);
        assert_eq!(v["node_id"], "0.1");
    }
}
