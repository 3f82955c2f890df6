//! Progress of `rlm run` on stderr: a live status line on a terminal, plain
//! lines otherwise, nothing with `--quiet` (warnings are always shown).

use std::io::{IsTerminal, Write};
use std::time::Instant;

use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::{CompletionEvent, ModelCallPurpose};

use super::progress::Tally;
use crate::{format, names};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A status line redrawn in place (stderr is a terminal).
    Live,
    /// One line per notable event.
    Plain,
    Quiet,
}

pub struct View {
    mode: Mode,
    started: Instant,
    frame: usize,
    line_shown: bool,
    width: usize,
}

impl View {
    pub fn new(quiet: bool) -> Self {
        let terminal =
            std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let mode = match (quiet, terminal) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Live,
            (false, false) => Mode::Plain,
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(80);
        Self {
            mode,
            started: Instant::now(),
            frame: 0,
            line_shown: false,
            width: width.max(20) - 1,
        }
    }

    /// A progress message (not shown with `--quiet`).
    pub fn note(&mut self, text: &str) {
        if self.mode != Mode::Quiet {
            self.print(text);
        }
    }

    /// A message shown whatever the mode.
    pub fn warn(&mut self, text: &str) {
        self.print(text);
    }

    fn print(&mut self, text: &str) {
        self.clear();
        eprintln!("rlm: {text}");
    }

    pub fn event(&mut self, tally: &Tally, event: &CompletionEvent) {
        match self.mode {
            Mode::Live => self.draw(tally),
            Mode::Plain => {
                if let Some(line) = describe(event) {
                    eprintln!("rlm: [{}] {line}", event.node_id);
                }
            }
            Mode::Quiet => {}
        }
    }

    pub fn tick(&mut self, tally: &Tally) {
        if self.mode == Mode::Live {
            self.frame += 1;
            self.draw(tally);
        }
    }

    /// Removes the status line (before the answer or an error is printed).
    pub fn clear(&mut self) {
        if self.line_shown {
            eprint!("\r\x1b[2K");
            let _ = std::io::stderr().flush();
            self.line_shown = false;
        }
    }

    fn draw(&mut self, tally: &Tally) {
        let line = status_line(
            tally,
            SPINNER[self.frame % SPINNER.len()],
            self.started.elapsed().as_secs_f64(),
        );
        eprint!("\r\x1b[2K{}", format::cut(&line, self.width));
        let _ = std::io::stderr().flush();
        self.line_shown = true;
    }
}

/// The live status line (kept under 80 columns in the usual cases; the
/// sub-call counts come last, as they are the first to be cut).
pub fn status_line(tally: &Tally, spinner: char, elapsed: f64) -> String {
    format!(
        "{spinner} {} · iter {} · depth {} · {} tokens · cost {} · sub-calls {} running, {} done",
        format::elapsed(elapsed),
        tally.root_iteration,
        tally.depth,
        format::count(tally.tokens()),
        tally.cost(),
        tally.subcalls_in_flight,
        tally.subcalls_done,
    )
}

/// The plain progress line of an event, if it deserves one.
pub fn describe(event: &CompletionEvent) -> Option<String> {
    match event.event.as_ref()? {
        Event::IterationStarted(e) => {
            let used = e.tree_usage.unwrap_or_default();
            Some(format!(
                "iteration {} (depth {}, {} tokens so far)",
                e.iteration,
                event.depth,
                format::count(used.input_tokens + used.output_tokens)
            ))
        }
        Event::ModelCallFinished(e) if !e.error.is_empty() => Some(format!(
            "model call to {} failed: {}",
            e.model,
            format::one_line(&e.error, 200)
        )),
        Event::ModelCallFinished(e) if e.purpose == ModelCallPurpose::Iteration as i32 => {
            let u = e.usage.unwrap_or_default();
            Some(format!(
                "model {} replied in {} ({} tokens)",
                e.model,
                format::duration(e.latency.as_ref()),
                format::count(u.input_tokens + u.output_tokens)
            ))
        }
        Event::ModelCallFinished(_) => None,
        Event::CodeExecuted(e) => {
            let mut line = format!(
                "code block {} ran in {}",
                e.block_index,
                format::duration(e.duration.as_ref())
            );
            if !e.error.is_empty() {
                line.push_str(&format!(", raised {}", format::one_line(&e.error, 120)));
            }
            for (flag, text) in [
                (e.timed_out, ", timed out"),
                (e.session_ended, ", session ended"),
                (e.final_called, ", called FINAL"),
            ] {
                if flag {
                    line.push_str(text);
                }
            }
            Some(line)
        }
        Event::SubcallStarted(e) => {
            let mut line = format!(
                "sub-call #{}: {}{} x{} ({})",
                e.subcall_id,
                names::subcall_kind(e.kind),
                if e.batched { "_batched" } else { "" },
                e.prompts.len(),
                e.model
            );
            if e.degraded {
                line.push_str(", degraded to llm_query at max depth");
            }
            if !e.child_node_ids.is_empty() {
                line.push_str(&format!(", child RLMs {}", e.child_node_ids.join(" ")));
            }
            Some(line)
        }
        Event::SubcallFinished(e) => Some(format!(
            "sub-call #{} done: {} answers, {} errors, {}",
            e.subcall_id,
            e.outcomes.len() as u32 - e.error_count.min(e.outcomes.len() as u32),
            e.error_count,
            format::duration(e.duration.as_ref())
        )),
        Event::Result(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{SubcallKind, SubcallStartedEvent};

    #[test]
    fn status_line_shows_unknown_cost_as_question_mark() {
        let mut tally = Tally::default();
        tally.root_iteration = 3;
        tally.depth = 1;
        tally.subcalls_in_flight = 2;
        tally.subcalls_done = 5;
        tally.input_tokens = 12_000;
        tally.output_tokens = 345;
        tally.cost_unknown = true;
        let line = status_line(&tally, '⠋', 3.4);
        assert_eq!(
            line,
            "⠋ 3.40s · iter 3 · depth 1 · 12.3k tokens · cost ? · sub-calls 2 running, 5 done"
        );
    }

    #[test]
    fn describes_subcalls() {
        let event = CompletionEvent {
            node_id: "0".into(),
            event: Some(Event::SubcallStarted(SubcallStartedEvent {
                subcall_id: 1,
                kind: SubcallKind::RlmQuery as i32,
                batched: true,
                prompts: vec!["a".into(), "b".into()],
                model: "m".into(),
                child_node_ids: vec!["0.0".into(), "0.1".into()],
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            describe(&event).expect("line"),
            "sub-call #1: rlm_query_batched x2 (m), child RLMs 0.0 0.1"
        );
    }
}
