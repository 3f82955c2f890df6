//! The result of `rlm run`: the answer (or one JSON object) on stdout, a
//! summary and any partial-answer note on stderr.

use std::io::Write;

use rlm_proto::rlm::v1::{CompletionResult, TerminationReason};

use super::view::View;
use crate::{format, json, names};

pub fn print(result: &CompletionResult, as_json: bool, view: &mut View) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if as_json {
        writeln!(stdout, "{}", json::result(result))?;
    } else {
        stdout.write_all(result.answer.as_bytes())?;
        if !result.answer.ends_with('\n') {
            stdout.write_all(b"\n")?;
        }
    }
    stdout.flush()?;
    if result.termination_reason() != TerminationReason::Final {
        view.warn(&partial_note(result));
    }
    view.note(&summary(result));
    Ok(())
}

/// Why the answer is partial.
pub fn partial_note(result: &CompletionResult) -> String {
    let mut note = format!(
        "partial answer: the completion ended with {}",
        names::reason(result.termination_reason)
    );
    if !result.detail.is_empty() {
        note.push_str(": ");
        note.push_str(&result.detail);
    }
    note
}

/// One line: reason, iterations, sub-calls, depth, usage, time, where the trajectory is.
pub fn summary(r: &CompletionResult) -> String {
    let usage = r.total_usage.unwrap_or_default();
    format!(
        "{} after {} iteration(s) ({} in the tree), {} sub-call(s) ({} child RLMs, depth {}), {} tokens, cost {}, {}; trajectory: rlm logs {}",
        names::reason(r.termination_reason),
        r.iterations,
        r.total_iterations,
        r.subcalls,
        r.child_rlms,
        r.depth_reached,
        format::count(usage.input_tokens + usage.output_tokens),
        format::cost(usage.cost_usd, usage.cost_known),
        format::duration(r.duration.as_ref()),
        r.trajectory_id
    )
}
