//! What `rlm run` knows about a running completion, folded from its events:
//! iteration, depth, sub-calls in flight and done, tokens and cost so far.

use std::collections::HashMap;

use rlm_proto::rlm::v1::CompletionEvent;
use rlm_proto::rlm::v1::completion_event::Event;

#[derive(Debug, Default)]
pub struct Tally {
    pub completion_id: Option<String>,
    /// Latest iteration of the root RLM.
    pub root_iteration: u32,
    /// Depth of the RLM that emitted the latest event.
    pub depth: u32,
    /// Deepest depth seen so far.
    pub max_depth: u32,
    /// Prompts of sub-call requests not yet answered.
    pub subcalls_in_flight: u64,
    /// Prompts of sub-call requests answered.
    pub subcalls_done: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub model_calls: u64,
    /// Cost of the calls whose price is known.
    pub cost_usd: f64,
    /// True once a call without a known price was seen.
    pub cost_unknown: bool,
    /// Prompts per outstanding request, by (node, subcall_id).
    pending: HashMap<(String, u64), u64>,
}

impl Tally {
    pub fn observe(&mut self, event: &CompletionEvent) {
        if self.completion_id.is_none() && !event.completion_id.is_empty() {
            self.completion_id = Some(event.completion_id.clone());
        }
        self.depth = event.depth;
        self.max_depth = self.max_depth.max(event.depth);
        match &event.event {
            Some(Event::IterationStarted(e)) if event.node_id == "0" => {
                self.root_iteration = e.iteration;
            }
            Some(Event::ModelCallFinished(e)) => {
                let usage = e.usage.unwrap_or_default();
                self.input_tokens += usage.input_tokens;
                self.output_tokens += usage.output_tokens;
                self.model_calls += usage.calls.max(1);
                self.cost_usd += usage.cost_usd;
                self.cost_unknown |= !usage.cost_known;
            }
            Some(Event::SubcallStarted(e)) => {
                let n = e.prompts.len() as u64;
                self.subcalls_in_flight += n;
                self.pending
                    .insert((event.node_id.clone(), e.subcall_id), n);
            }
            Some(Event::SubcallFinished(e)) => {
                let n = self
                    .pending
                    .remove(&(event.node_id.clone(), e.subcall_id))
                    .unwrap_or(e.outcomes.len() as u64);
                self.subcalls_in_flight = self.subcalls_in_flight.saturating_sub(n);
                self.subcalls_done += n;
            }
            _ => {}
        }
    }

    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Cost so far: `?` when no call had a known price (see [`crate::format::cost`]).
    pub fn cost(&self) -> String {
        crate::format::cost(self.cost_usd, !self.cost_unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{
        IterationStartedEvent, ModelCallFinishedEvent, SubcallFinishedEvent, SubcallStartedEvent,
        Usage,
    };

    fn event(node: &str, depth: u32, body: Event) -> CompletionEvent {
        CompletionEvent {
            completion_id: "c1".into(),
            node_id: node.into(),
            depth,
            event: Some(body),
            ..Default::default()
        }
    }

    #[test]
    fn folds_iterations_subcalls_and_usage() {
        let mut t = Tally::default();
        t.observe(&event(
            "0",
            0,
            Event::IterationStarted(IterationStartedEvent {
                iteration: 2,
                tree_usage: None,
            }),
        ));
        t.observe(&event(
            "0",
            0,
            Event::SubcallStarted(SubcallStartedEvent {
                subcall_id: 1,
                prompts: vec!["a".into(), "b".into(), "c".into()],
                ..Default::default()
            }),
        ));
        t.observe(&event(
            "0.1",
            1,
            Event::IterationStarted(IterationStartedEvent {
                iteration: 1,
                tree_usage: None,
            }),
        ));
        t.observe(&event(
            "0.1",
            1,
            Event::ModelCallFinished(ModelCallFinishedEvent {
                usage: Some(Usage {
                    input_tokens: 100,
                    output_tokens: 20,
                    calls: 1,
                    cost_usd: 0.0,
                    cost_known: false,
                }),
                ..Default::default()
            }),
        ));
        assert_eq!(t.completion_id.as_deref(), Some("c1"));
        assert_eq!(t.root_iteration, 2, "child iterations do not count");
        assert_eq!((t.depth, t.max_depth), (1, 1));
        assert_eq!((t.subcalls_in_flight, t.subcalls_done), (3, 0));
        assert_eq!(t.tokens(), 120);
        assert_eq!(t.cost(), "?");
        t.observe(&event(
            "0",
            0,
            Event::SubcallFinished(SubcallFinishedEvent {
                subcall_id: 1,
                ..Default::default()
            }),
        ));
        assert_eq!((t.subcalls_in_flight, t.subcalls_done), (0, 3));
    }
}
