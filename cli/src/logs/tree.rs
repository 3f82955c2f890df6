//! One trajectory as an indented tree: a header, then each RLM (node) with its
//! iterations, model calls, code blocks and outputs, and every child RLM
//! nested under the sub-call that started it.

use std::collections::{BTreeMap, HashSet};

use rlm_proto::rlm::v1::completion_event::Event;
use rlm_proto::rlm::v1::subcall_outcome::Outcome;
use rlm_proto::rlm::v1::{
    CodeExecutedEvent, CompletionEvent, ModelCallFinishedEvent, ModelCallPurpose,
    SubcallFinishedEvent, SubcallStartedEvent, Trajectory, Usage,
};

use crate::{format, names};

/// How much of long texts to show.
#[derive(Debug, Clone, Copy)]
pub struct Detail {
    /// Lines of code / output shown (0 = all).
    pub lines: usize,
    /// Characters per line and per one-line excerpt (0 = all).
    pub width: usize,
}

impl Detail {
    pub const SHORT: Detail = Detail {
        lines: 6,
        width: 160,
    };
    pub const FULL: Detail = Detail { lines: 0, width: 0 };

    fn excerpt(&self, text: &str) -> String {
        if self.width == 0 {
            text.trim().to_owned()
        } else {
            format::one_line(text, self.width.min(100))
        }
    }
}

pub fn render(t: &Trajectory, detail: Detail) -> Vec<String> {
    let mut out = header(t);
    let mut by_node: BTreeMap<&str, Vec<&CompletionEvent>> = BTreeMap::new();
    for e in &t.events {
        if !matches!(e.event, Some(Event::Result(_))) {
            by_node.entry(e.node_id.as_str()).or_default().push(e);
        }
    }
    let mut renderer = Renderer {
        by_node: &by_node,
        visited: HashSet::new(),
        detail,
        out: &mut out,
    };
    renderer.node("0", 0, 0);
    let orphans: Vec<&str> = by_node
        .keys()
        .copied()
        .filter(|n| !renderer.visited.contains(n))
        .collect();
    for node in orphans {
        let depth = by_node[node].first().map_or(0, |e| e.depth);
        renderer.node(node, depth, 0);
    }
    if let Some(r) = &t.result {
        out.push(String::new());
        out.push(format!(
            "answer ({}{}):",
            names::reason(r.termination_reason),
            if r.partial { ", partial" } else { "" }
        ));
        push_block(&mut out, 2, &r.answer, detail);
        if !r.detail.is_empty() {
            out.push(format!("detail: {}", r.detail));
        }
    }
    out
}

fn header(t: &Trajectory) -> Vec<String> {
    let mut out = Vec::new();
    let s = t.summary.clone().unwrap_or_default();
    out.push(format!(
        "trajectory {}  (completion {})",
        s.trajectory_id, s.completion_id
    ));
    out.push(format!(
        "status {}{}, started {} UTC, took {}",
        names::status(s.status),
        if s.termination_reason != 0 {
            format!(" ({})", names::reason(s.termination_reason))
        } else {
            String::new()
        },
        format::when(s.started_at.as_ref()),
        format::duration(s.duration.as_ref()),
    ));
    if let Some(spec) = &t.spec {
        out.push(format!(
            "model {}, sub-model {}",
            spec.root_model,
            if spec.sub_model.is_empty() {
                "(root model)"
            } else {
                &spec.sub_model
            }
        ));
        if let Some(l) = &spec.limits {
            out.push(format!(
                "limits: max_depth {}, max_iterations {}, max_parallel {}, token_budget {}, cost_budget {}, timeout {}",
                l.max_depth.map_or("-".to_owned(), |d| d.to_string()),
                l.max_iterations,
                l.max_parallel,
                if l.token_budget == 0 { "-".to_owned() } else { l.token_budget.to_string() },
                if l.cost_budget_usd == 0.0 { "-".to_owned() } else { format!("${}", l.cost_budget_usd) },
                format::duration(l.timeout.as_ref()),
            ));
        }
        out.push(format!("prompt: {}", format::one_line(&spec.prompt, 200)));
    }
    out.push(format!(
        "usage: {}",
        format::usage(&s.total_usage.unwrap_or_default())
    ));
    if let Some(r) = &t.result {
        out.push(format!(
            "iterations {} ({} in the tree), sub-calls {} ({} child RLMs), depth reached {}",
            r.iterations, r.total_iterations, r.subcalls, r.child_rlms, r.depth_reached
        ));
    }
    out
}

struct Renderer<'a> {
    by_node: &'a BTreeMap<&'a str, Vec<&'a CompletionEvent>>,
    visited: HashSet<&'a str>,
    detail: Detail,
    out: &'a mut Vec<String>,
}

impl<'a> Renderer<'a> {
    fn line(&mut self, indent: usize, text: String) {
        self.out.push(format!("{:indent$}{text}", ""));
    }

    fn node(&mut self, node: &'a str, depth: u32, indent: usize) {
        if !self.visited.insert(node) {
            return;
        }
        if indent == 0 {
            self.out.push(String::new());
        }
        self.line(indent, format!("node {node} (depth {depth})"));
        let Some(events) = self.by_node.get(node) else {
            self.line(indent + 2, "(no events)".to_owned());
            return;
        };
        for e in events.iter().copied() {
            match &e.event {
                Some(Event::IterationStarted(i)) => {
                    self.line(indent + 2, format!("iteration {}", i.iteration));
                }
                Some(Event::ModelCallFinished(m)) => self.model_call(indent + 4, m),
                Some(Event::CodeExecuted(c)) => self.code(indent + 4, c),
                Some(Event::SubcallStarted(s)) => self.subcall_started(indent + 4, s),
                Some(Event::SubcallFinished(f)) => self.subcall_finished(indent + 4, f),
                Some(Event::Result(_)) | None => {}
            }
        }
    }

    fn model_call(&mut self, indent: usize, m: &ModelCallFinishedEvent) {
        let llm_query = m.purpose == ModelCallPurpose::LlmQuery as i32;
        let (indent, what) = if llm_query {
            (
                indent + 2,
                format!("llm_query #{}[{}]", m.subcall_id, m.item_index),
            )
        } else {
            (indent, "model".to_owned())
        };
        self.line(
            indent,
            format!(
                "{what} {} · {} · {}",
                m.model,
                usage_short(m.usage.as_ref()),
                format::duration(m.latency.as_ref())
            ),
        );
        if !m.error.is_empty() {
            self.line(
                indent + 2,
                format!("error: {}", self.detail.excerpt(&m.error)),
            );
        } else if llm_query {
            let answer = self.detail.excerpt(&m.response_text);
            self.line(indent + 2, format!("-> {answer}"));
        } else {
            // The code blocks show up as `code [i]` below; the rest is prose.
            let prose = prose(&m.response_text);
            if !prose.is_empty() {
                let detail = self.detail;
                self.line(indent + 2, "says:".to_owned());
                push_block(self.out, indent + 4, &prose, detail);
            }
        }
    }

    fn code(&mut self, indent: usize, c: &CodeExecutedEvent) {
        let mut flags = Vec::new();
        for (on, name) in [
            (c.final_called, "FINAL"),
            (c.timed_out, "timed out"),
            (c.session_ended, "session ended"),
            (c.output_truncated, "output truncated"),
        ] {
            if on {
                flags.push(name);
            }
        }
        self.line(
            indent,
            format!(
                "code [{}] ran {} (cpu {}ms){}",
                c.block_index,
                format::duration(c.duration.as_ref()),
                c.cpu_ms,
                if flags.is_empty() {
                    String::new()
                } else {
                    format!(" · {}", flags.join(", "))
                }
            ),
        );
        let detail = self.detail;
        push_block(self.out, indent + 2, &c.code, detail);
        if !c.output.trim().is_empty() {
            self.line(indent + 2, "output:".to_owned());
            push_block(self.out, indent + 4, &c.output, detail);
        }
        if !c.error.is_empty() {
            self.line(
                indent + 2,
                format!("error: {}", self.detail.excerpt(&c.error)),
            );
        }
    }

    fn subcall_started(&mut self, indent: usize, s: &'a SubcallStartedEvent) {
        self.line(
            indent,
            format!(
                "sub-call #{} {}{} x{} · {}{}",
                s.subcall_id,
                names::subcall_kind(s.kind),
                if s.batched { "_batched" } else { "" },
                s.prompts.len(),
                s.model,
                if s.degraded {
                    " · degraded to llm_query (max depth)"
                } else {
                    ""
                }
            ),
        );
        for (i, prompt) in s.prompts.iter().enumerate() {
            let prompt = self.detail.excerpt(prompt);
            self.line(indent + 2, format!("prompt[{i}]: {prompt}"));
            if let Some(child) = s.child_node_ids.get(i) {
                let depth = child.matches('.').count() as u32;
                self.node(child, depth, indent + 4);
            }
        }
    }

    fn subcall_finished(&mut self, indent: usize, f: &SubcallFinishedEvent) {
        self.line(
            indent,
            format!(
                "sub-call #{} done in {} · {} errors · {}",
                f.subcall_id,
                format::duration(f.duration.as_ref()),
                f.error_count,
                usage_short(f.usage.as_ref())
            ),
        );
        for (i, o) in f.outcomes.iter().enumerate() {
            let text = match &o.outcome {
                Some(Outcome::Text(t)) => self.detail.excerpt(t),
                Some(Outcome::Error(e)) => format!("error: {}", self.detail.excerpt(e)),
                None => "-".to_owned(),
            };
            self.line(indent + 2, format!("answer[{i}]: {text}"));
        }
    }
}

/// A model reply without its fenced code blocks.
fn prose(reply: &str) -> String {
    let mut out = Vec::new();
    let mut in_fence = false;
    for line in reply.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            out.push(line);
        }
    }
    out.join("\n").trim().to_owned()
}

fn usage_short(u: Option<&Usage>) -> String {
    let u = u.cloned().unwrap_or_default();
    format!(
        "{} in / {} out tokens · cost {}",
        format::count(u.input_tokens),
        format::count(u.output_tokens),
        format::cost(u.cost_usd, u.cost_known)
    )
}

/// `text`, indented with a `│ ` gutter, cut per `detail`.
fn push_block(out: &mut Vec<String>, indent: usize, text: &str, detail: Detail) {
    let (lines, more) = format::head(text, detail.lines, detail.width);
    for l in lines {
        out.push(format!("{:indent$}│ {l}", ""));
    }
    if more > 0 {
        out.push(format!(
            "{:indent$}│ … {more} more line(s) (--full shows all)",
            ""
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{
        CompletionResult, IterationStartedEvent, SubcallOutcome, TerminationReason,
        TrajectorySummary,
    };

    fn ev(seq: u64, node: &str, depth: u32, event: Event) -> CompletionEvent {
        CompletionEvent {
            sequence: seq,
            node_id: node.into(),
            depth,
            event: Some(event),
            ..Default::default()
        }
    }

    #[test]
    fn children_nest_under_their_subcall() {
        let t = Trajectory {
            summary: Some(TrajectorySummary {
                trajectory_id: "t1".into(),
                ..Default::default()
            }),
            events: vec![
                ev(
                    1,
                    "0",
                    0,
                    Event::IterationStarted(IterationStartedEvent {
                        iteration: 1,
                        tree_usage: None,
                    }),
                ),
                ev(
                    2,
                    "0",
                    0,
                    Event::SubcallStarted(SubcallStartedEvent {
                        subcall_id: 1,
                        kind: 2,
                        prompts: vec!["count".into()],
                        child_node_ids: vec!["0.0".into()],
                        ..Default::default()
                    }),
                ),
                ev(
                    3,
                    "0.0",
                    1,
                    Event::CodeExecuted(CodeExecutedEvent {
                        code: "a\nb\nc\nd\ne\nf\ng\nh".into(),
                        output: "7".into(),
                        final_called: true,
                        ..Default::default()
                    }),
                ),
                ev(
                    4,
                    "0",
                    0,
                    Event::SubcallFinished(SubcallFinishedEvent {
                        subcall_id: 1,
                        outcomes: vec![SubcallOutcome {
                            outcome: Some(Outcome::Text("7".into())),
                        }],
                        ..Default::default()
                    }),
                ),
            ],
            result: Some(CompletionResult {
                answer: "seven".into(),
                termination_reason: TerminationReason::Final as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&t, Detail::SHORT).join("\n");
        let child = text.find("node 0.0 (depth 1)").expect("child node");
        let started = text.find("sub-call #1 rlm_query x1").expect("subcall");
        let done = text.find("sub-call #1 done").expect("done");
        assert!(started < child && child < done, "{text}");
        assert!(text.contains("FINAL"), "{text}");
        assert!(text.contains("… 2 more line(s)"), "{text}");
        assert!(text.contains("answer[0]: 7"), "{text}");
        assert!(text.ends_with("answer (final):\n  │ seven"), "{text}");
        assert_eq!(prose("intro\n```repl\nx = 1\n```\noutro"), "intro\noutro");
        let full = render(&t, Detail::FULL).join("\n");
        assert!(
            full.contains("│ h") && !full.contains("more line"),
            "{full}"
        );
    }
}
