//! What both queue backends share: how an attempt is launched on the engine,
//! what a job's progress is, the results the queue itself writes (cancelled
//! before start, failed), and the "queue full" status.

use std::time::{Duration, SystemTime};

use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::{
    CompletionEvent, CompletionResult, CompletionSpec, CompletionState, ModelCallPurpose,
    TerminationReason, Usage,
};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tonic::Status;

use crate::engine::{CompletionIds, Engine, Launch, Started};

/// Best answer and usage of a running job, folded from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The root model's last reply.
    pub partial_answer: String,
    pub usage: Usage,
    /// Events recorded (the sequence of the last one).
    pub event_count: u64,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            usage: Usage {
                cost_known: true,
                ..Usage::default()
            },
            ..Self::default()
        }
    }

    pub fn observe(&mut self, event: &CompletionEvent) {
        self.event_count = event.sequence;
        match &event.event {
            Some(Event::ModelCallFinished(call)) => {
                let u = call.usage.unwrap_or_default();
                self.usage.input_tokens += u.input_tokens;
                self.usage.output_tokens += u.output_tokens;
                self.usage.calls += u.calls;
                self.usage.cost_usd += u.cost_usd;
                self.usage.cost_known &= u.cost_known;
                if event.depth == 0
                    && call.purpose == ModelCallPurpose::Iteration as i32
                    && call.error.is_empty()
                {
                    call.response_text.clone_into(&mut self.partial_answer);
                }
            }
            Some(Event::Result(result)) => {
                self.usage = result.total_usage.unwrap_or_default();
                result.answer.clone_into(&mut self.partial_answer);
            }
            _ => {}
        }
    }
}

/// The result the queue records for a job the engine never finished:
/// cancelled before it started, or failed.
pub fn queue_result(
    completion_id: &str,
    reason: TerminationReason,
    detail: String,
    submitted_at: SystemTime,
    progress: &Progress,
) -> CompletionResult {
    CompletionResult {
        completion_id: completion_id.to_owned(),
        answer: progress.partial_answer.clone(),
        termination_reason: reason as i32,
        partial: true,
        detail,
        total_usage: Some(progress.usage),
        started_at: Some(submitted_at.into()),
        duration: SystemTime::now()
            .duration_since(submitted_at)
            .ok()
            .and_then(|d| d.try_into().ok()),
        ..CompletionResult::default()
    }
}

/// The result event with the next sequence.
pub fn result_event(result: CompletionResult, sequence: u64) -> CompletionEvent {
    CompletionEvent {
        sequence,
        completion_id: result.completion_id.clone(),
        depth: 0,
        node_id: "0".to_owned(),
        timestamp: Some(SystemTime::now().into()),
        event: Some(Event::Result(result)),
    }
}

/// The result carried by `event`, if it is the last one.
pub fn result_of(event: &CompletionEvent) -> Option<&CompletionResult> {
    match &event.event {
        Some(Event::Result(result)) => Some(result),
        _ => None,
    }
}

/// Trajectory id of attempt `attempt`: the completion id for the first one,
/// so GetTrajectory and the viewer take the job id; `<id>-a<n>` for re-runs,
/// which may land on a replica (or a shared log directory) that holds an
/// earlier attempt's file.
pub fn attempt_ids(completion_id: &str, attempt: u32) -> CompletionIds {
    CompletionIds {
        completion_id: completion_id.to_owned(),
        trajectory_id: if attempt <= 1 {
            completion_id.to_owned()
        } else {
            format!("{completion_id}-a{attempt}")
        },
    }
}

/// One attempt started on the engine: its events (the result last), and the
/// completion to keep alive while they are consumed. A start error is an
/// `Err` after the events the engine emitted (it may have recorded a result).
pub struct Attempt {
    pub events: mpsc::UnboundedReceiver<CompletionEvent>,
    pub started: Result<Started, Status>,
}

pub async fn launch(
    engine: &Engine,
    spec: CompletionSpec,
    ids: CompletionIds,
    slot: OwnedSemaphorePermit,
    caller_slot: Option<OwnedSemaphorePermit>,
) -> Attempt {
    let (sender, events) = mpsc::unbounded_channel();
    let started = engine
        .start_with(
            Some(spec),
            Launch {
                events: Some(sender),
                caller_slot,
                ids: Some(ids),
                slot: Some(slot),
                ..Launch::default()
            },
        )
        .await;
    Attempt { events, started }
}

/// Detail of a job whose start failed.
pub fn not_started(status: &Status) -> (TerminationReason, String) {
    let reason = match status.code() {
        tonic::Code::Unavailable => TerminationReason::SandboxError,
        _ => TerminationReason::Error,
    };
    (reason, format!("not started: {}", status.message()))
}

/// The state a job ends in, given how its attempt went.
pub fn end_state(start_failed: bool) -> CompletionState {
    if start_failed {
        CompletionState::Failed
    } else {
        CompletionState::Finished
    }
}

/// RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail.
pub fn queue_full(message: String, retry_after: Duration) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details = ErrorDetails::with_retry_info(Some(retry_after));
    Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!(
            "{message}; retry in {}s",
            retry_after.as_secs_f64().ceil() as u64
        ),
        details,
    )
}

/// Checks an idempotency key; empty = none.
pub fn idempotency_key(key: &str) -> Result<Option<String>, Status> {
    if key.len() > 128 {
        return Err(Status::invalid_argument(
            "idempotency_key: at most 128 bytes",
        ));
    }
    Ok(Some(key.to_owned()).filter(|k| !k.is_empty()))
}

/// Checks a completion id given to GetCompletion / WatchCompletion.
pub fn check_id(id: &str) -> Result<(), Status> {
    if crate::trajectory::valid_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "completion_id: {id:?} is not a completion id"
        )))
    }
}

pub fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "completion_id: no queued completion {id:?} (unknown, or its retention expired)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::ModelCallFinishedEvent;

    fn call(depth: u32, seq: u64, text: &str, tokens: u64) -> CompletionEvent {
        CompletionEvent {
            sequence: seq,
            depth,
            event: Some(Event::ModelCallFinished(ModelCallFinishedEvent {
                purpose: ModelCallPurpose::Iteration as i32,
                response_text: text.to_owned(),
                usage: Some(Usage {
                    input_tokens: tokens,
                    output_tokens: 1,
                    calls: 1,
                    cost_known: true,
                    ..Usage::default()
                }),
                ..ModelCallFinishedEvent::default()
            })),
            ..CompletionEvent::default()
        }
    }

    #[test]
    fn progress_keeps_the_root_reply_and_sums_usage() {
        let mut p = Progress::new();
        p.observe(&call(0, 1, "root says", 10));
        p.observe(&call(1, 2, "child says", 5));
        assert_eq!(p.partial_answer, "root says");
        assert_eq!(p.usage.input_tokens, 15);
        assert_eq!(p.usage.calls, 2);
        assert_eq!(p.event_count, 2);
    }

    #[test]
    fn queue_full_carries_retry_info() {
        use tonic_types::StatusExt;
        let status = queue_full("full".into(), Duration::from_secs(3));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn re_runs_get_their_own_trajectory() {
        assert_eq!(attempt_ids("j", 1).trajectory_id, "j");
        assert_eq!(attempt_ids("j", 2).trajectory_id, "j-a2");
    }
}
