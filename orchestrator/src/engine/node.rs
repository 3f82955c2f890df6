//! One RLM of the tree: its model turns, its REPL session, and the answers
//! to the sub-calls its code makes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, join_all};
use rlm_proto::rlm::sandbox::v1::{
    SubcallContext, SubcallKind, SubcallRequest, SubcallResult, subcall_context, subcall_result,
};
use rlm_proto::rlm::v1::TerminationReason;
use tracing::Instrument;

use super::setup;
use super::tree::{PermitSlot, Tree, UsageTally, lock};
use crate::budget::{Budget, Exhausted};
use crate::engine::parse::{FinalAnswer, code_blocks, final_answer};
use crate::engine::prompt::{
    self, BudgetLeft, ContextMeta, ExecutionReport, PromptOptions, observation,
};
use crate::model::{ChatMessage, ChatRequest, ModelClient, ModelError, ModelRef};
use crate::remote_session::{CellRun, RemoteSession};
use crate::trajectory::{
    CodeRecord, EventBody, Kind, ModelCallRecord, OutcomeRecord, Purpose, SubcallFinishedRecord,
    SubcallStartedRecord, UsageRecord,
};

/// How an RLM ended.
#[derive(Debug, Clone)]
pub enum NodeEnd {
    /// FINAL / FINAL_VAR / a FINAL(...) line: the answer.
    Final(String),
    /// Stopped before an answer: why, and the best partial answer.
    Stopped {
        reason: TerminationReason,
        detail: String,
        partial: String,
    },
}

/// A context of a node: a content id on the agent, maybe JSON.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub id: String,
    pub json: bool,
}

/// What a node is made of (see the fields of [`Node`]).
pub struct NodeSpec {
    pub tree: Arc<Tree>,
    pub id: String,
    pub depth: u32,
    pub budget: Budget,
    pub model: ModelRef,
    pub task: String,
    pub contexts: Vec<NodeContext>,
    pub tallies: Vec<Arc<UsageTally>>,
    pub permit: PermitSlot,
}

pub struct Node {
    pub tree: Arc<Tree>,
    pub id: String,
    pub depth: u32,
    pub budget: Budget,
    pub model: ModelRef,
    pub task: String,
    pub contexts: Vec<NodeContext>,
    /// Tallies of the ancestors' sub-call requests this node works for.
    pub tallies: Vec<Arc<UsageTally>>,
    pub permit: PermitSlot,
    iteration: AtomicU32,
    next_subcall: AtomicU64,
    next_child: AtomicU32,
}

enum CallError {
    Budget(Exhausted),
    Model(String),
}

impl CallError {
    fn message(&self) -> String {
        match self {
            CallError::Budget(e) => e.detail.clone(),
            CallError::Model(m) => m.clone(),
        }
    }
}

/// Keeps a sandbox session of this node together with what it knows about
/// its contexts.
pub struct Repl {
    pub session: RemoteSession,
    pub contexts: Vec<ContextMeta>,
    /// The contexts are described (by the agent) but not yet bound in the
    /// session: the bind runs alongside the first model call, or before the
    /// first cell, whichever comes first.
    pub bind_pending: bool,
}

fn stopped(e: Exhausted, partial: &str) -> NodeEnd {
    NodeEnd::Stopped {
        reason: e.reason,
        detail: e.detail,
        partial: partial.to_owned(),
    }
}

fn estimate_tokens(messages: &[ChatMessage]) -> u64 {
    messages
        .iter()
        .map(|m| m.content.len() as u64 / 4 + 4)
        .sum()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Node {
    pub fn new(spec: NodeSpec) -> Self {
        Self {
            tree: spec.tree,
            id: spec.id,
            depth: spec.depth,
            budget: spec.budget,
            model: spec.model,
            task: spec.task,
            contexts: spec.contexts,
            tallies: spec.tallies,
            permit: spec.permit,
            iteration: AtomicU32::new(0),
            next_subcall: AtomicU64::new(1),
            next_child: AtomicU32::new(0),
        }
    }

    fn emit(&self, body: EventBody) {
        self.tree.events.emit(&self.id, self.depth, body);
    }

    fn is_root(&self) -> bool {
        self.depth == 0
    }

    /// Opens this node's REPL: a session whose contexts are described, and
    /// bound unless the agent described them (then `bind_pending`).
    pub async fn open_repl(&self) -> Result<Repl, setup::SetupError> {
        let ids = self.contexts.iter().map(|c| c.id.clone()).collect();
        let json = (0u32..)
            .zip(&self.contexts)
            .filter(|(_, c)| c.json)
            .map(|(i, _)| i)
            .collect();
        let mut session = self
            .tree
            .create_session(&self.id, self.depth, ids, json)
            .await
            .map_err(setup::SetupError::Sandbox)?;
        if let Some(contexts) = setup::described_by_agent(&self.contexts, &session.created.contexts)
        {
            return Ok(Repl {
                session,
                bind_pending: !contexts.is_empty(),
                contexts,
            });
        }
        match self.bind(&mut session).await {
            Ok(contexts) => Ok(Repl {
                session,
                contexts,
                bind_pending: false,
            }),
            Err(e) => {
                self.tree.destroy_session(session);
                Err(e)
            }
        }
    }

    async fn bind(
        &self,
        session: &mut RemoteSession,
    ) -> Result<Vec<ContextMeta>, setup::SetupError> {
        setup::bind_contexts(session, &self.contexts, self.tree.spec.limits.cell_timeout).await
    }

    /// Binds the contexts of `repl` if that is still to do.
    async fn finish_bind(&self, repl: &mut Repl) -> Result<(), NodeEnd> {
        if !std::mem::take(&mut repl.bind_pending) {
            return Ok(());
        }
        self.bind(&mut repl.session).await.map(drop).map_err(|e| {
            let reason = match e {
                setup::SetupError::Context { .. } => TerminationReason::Error,
                _ => TerminationReason::SandboxError,
            };
            NodeEnd::Stopped {
                reason,
                detail: e.to_string(),
                partial: String::new(),
            }
        })
    }

    fn prompt_options(&self) -> PromptOptions {
        let limits = &self.tree.spec.limits;
        PromptOptions {
            depth: self.depth,
            max_depth: limits.max_depth,
            max_iterations: limits.max_iterations,
            subcalls_allowed: limits.max_subcalls != Some(0),
            child_rlms_allowed: limits.max_subcalls != Some(0) && self.depth < limits.max_depth,
        }
    }

    fn budget_left(&self) -> BudgetLeft {
        let limits = &self.tree.spec.limits;
        let used = self.budget.usage();
        BudgetLeft {
            iterations: limits
                .max_iterations
                .saturating_sub(self.budget.node_iterations()),
            tokens: limits
                .token_budget
                .map(|b| b.saturating_sub(used.input_tokens + used.output_tokens)),
            cost_usd: limits.cost_budget_usd.map(|b| (b - used.cost_usd).max(0.0)),
            seconds: Some(
                self.tree
                    .deadline
                    .saturating_duration_since(Instant::now())
                    .as_secs(),
            ),
        }
    }

    /// Runs the RLM to its end, in `repl` (which it destroys).
    pub async fn run(self: Arc<Self>, repl: Repl) -> NodeEnd {
        let mut repl = repl;
        let span = tracing::info_span!("rlm.node", node = %self.id, depth = self.depth);
        let end = self.turns(&mut repl).instrument(span).await;
        self.tree.destroy_session(repl.session);
        end
    }

    async fn turns(self: &Arc<Self>, repl: &mut Repl) -> NodeEnd {
        let max_iterations = self.tree.spec.limits.max_iterations;
        let mut messages = vec![
            ChatMessage::system(prompt::system_prompt(&self.prompt_options())),
            ChatMessage::user(prompt::first_user_message(&self.task, &repl.contexts)),
        ];
        let mut last_reply = String::new();
        loop {
            // An iteration is a model call: check the call can be made before
            // counting (and announcing) one.
            if let Err(e) = self
                .budget
                .check_model_call(estimate_tokens(&messages), None)
                .and_then(|_| self.budget.start_iteration())
            {
                return stopped(e, &last_reply);
            }
            let iteration = self.budget.node_iterations();
            self.iteration.store(iteration, Ordering::Release);
            self.emit(EventBody::IterationStarted {
                iteration,
                tree_usage: UsageRecord::from(&self.budget.usage()),
            });
            let call = self.call_model(
                &self.model,
                messages.clone(),
                Purpose::Iteration,
                iteration,
                0,
                0,
                None,
            );
            // Binding the contexts (decoding, parsing JSON) overlaps the
            // first model call: the model is waited for anyway.
            let (reply, bound) = tokio::join!(call, self.finish_bind(repl));
            if let Err(end) = bound {
                return end.with_partial(&last_reply);
            }
            let reply = match reply {
                Ok(text) => text,
                Err(CallError::Budget(e)) => return stopped(e, &last_reply),
                Err(CallError::Model(message)) => {
                    return NodeEnd::Stopped {
                        reason: TerminationReason::ModelError,
                        detail: format!("model {}: {message}", self.model),
                        partial: last_reply,
                    };
                }
            };
            last_reply.clone_from(&reply);
            if self.is_root() {
                lock(&self.tree.root_last_reply).clone_from(&reply);
            }
            messages.push(ChatMessage::assistant(reply.clone()));

            let mut reports = Vec::new();
            for (index, block) in code_blocks(&reply).into_iter().enumerate() {
                let (report, end) = self
                    .run_block(repl, iteration, index as u32, &block.code)
                    .await;
                reports.push(report);
                if let Some(end) = end {
                    return end.with_partial(&last_reply);
                }
                if let Some(e) = self.budget.exhausted() {
                    return stopped(e, &last_reply);
                }
            }
            if let Some(answer) = final_answer(&reply) {
                match answer {
                    FinalAnswer::Value(value) => return NodeEnd::Final(value),
                    FinalAnswer::Var(name) => {
                        let code = format!("FINAL_VAR({name:?})");
                        let (report, end) = self
                            .run_block(repl, iteration, reports.len() as u32, &code)
                            .await;
                        reports.push(report);
                        if let Some(end) = end {
                            return end.with_partial(&last_reply);
                        }
                    }
                }
            }
            if let Some(e) = self.budget.exhausted() {
                return stopped(e, &last_reply);
            }
            messages.push(ChatMessage::user(observation(
                iteration,
                max_iterations,
                &reports,
                &self.budget_left(),
            )));
        }
    }

    /// Runs one block; returns what the model is shown and, when the node
    /// must end (FINAL, or a sandbox failure), how.
    async fn run_block(
        self: &Arc<Self>,
        repl: &mut Repl,
        iteration: u32,
        block_index: u32,
        code: &str,
    ) -> (ExecutionReport, Option<NodeEnd>) {
        // A replacement session (after the previous one died) binds here.
        if let Err(end) = self.finish_bind(repl).await {
            let stderr = match &end {
                NodeEnd::Stopped { detail, .. } => detail.clone(),
                NodeEnd::Final(_) => String::new(),
            };
            let report = ExecutionReport {
                stdout: String::new(),
                stderr,
                error: None,
                truncated: false,
                final_value: None,
            };
            return (report, Some(end));
        }
        let started = Instant::now();
        let node = Arc::clone(self);
        let answer = move |request: SubcallRequest| Arc::clone(&node).answer(request, iteration);
        let span = tracing::info_span!("rlm.execute", iteration, block = block_index);
        let run = repl
            .session
            .run(code, self.tree.spec.limits.cell_timeout, answer)
            .instrument(span)
            .await;
        let run = match run {
            Ok(run) => run,
            Err(status) => {
                let detail = format!(
                    "sandbox agent {}: {}",
                    self.tree.shared.sandbox.address(),
                    status.message()
                );
                let report = ExecutionReport {
                    stdout: String::new(),
                    stderr: detail.clone(),
                    error: None,
                    truncated: false,
                    final_value: None,
                };
                self.record_block(
                    iteration,
                    block_index,
                    code,
                    &report,
                    &CellRun::default(),
                    started,
                    true,
                );
                let end = NodeEnd::Stopped {
                    reason: TerminationReason::SandboxError,
                    detail,
                    partial: String::new(),
                };
                return (report, Some(end));
            }
        };
        let r = &run.result;
        let mut stderr = lossy(&run.stderr);
        if r.timed_out {
            stderr.push_str(&format!(
                "\n[the code ran longer than the cell timeout ({}s) and was interrupted]",
                self.tree.spec.limits.cell_timeout.as_secs()
            ));
        }
        if r.session_ended {
            stderr.push_str(&format!(
                "\n[the sandbox session ended ({}); REPL state was lost and a fresh session was started]",
                r.end_detail
            ));
        }
        let report = ExecutionReport {
            stdout: lossy(&run.stdout),
            stderr,
            error: r.error.as_ref().map(|e| {
                (
                    e.exception_type.clone(),
                    e.message.clone(),
                    e.traceback.clone(),
                )
            }),
            truncated: r.truncated,
            final_value: if r.final_called {
                r.final_value.clone()
            } else {
                None
            },
        };
        self.record_block(
            iteration,
            block_index,
            code,
            &report,
            &run,
            started,
            r.session_ended,
        );
        if r.final_called {
            let value = r.final_value.clone().unwrap_or_default();
            return (report, Some(NodeEnd::Final(value)));
        }
        if r.session_ended {
            match self.open_repl().await {
                Ok(fresh) => {
                    let old = std::mem::replace(repl, fresh);
                    self.tree.destroy_session(old.session);
                }
                Err(e) => {
                    let end = NodeEnd::Stopped {
                        reason: TerminationReason::SandboxError,
                        detail: format!("the sandbox session died and could not be replaced: {e}"),
                        partial: String::new(),
                    };
                    return (report, Some(end));
                }
            }
        }
        (report, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_block(
        &self,
        iteration: u32,
        block_index: u32,
        code: &str,
        report: &ExecutionReport,
        run: &CellRun,
        started: Instant,
        session_ended: bool,
    ) {
        let mut output = report.stdout.clone();
        if !report.stderr.is_empty() {
            if !output.is_empty() && !output.ends_with('\n') {
                output.push('\n');
            }
            output.push_str(&report.stderr);
        }
        let (output, cut) =
            prompt::truncate_output(&output, prompt::STDOUT_CHARS + prompt::STDERR_CHARS);
        self.emit(EventBody::CodeExecuted(CodeRecord {
            iteration,
            block_index,
            code: code.to_owned(),
            output,
            output_truncated: cut || report.truncated,
            error: report
                .error
                .as_ref()
                .map(|(t, m, _)| format!("{t}: {m}"))
                .unwrap_or_default(),
            final_called: run.result.final_called,
            timed_out: run.result.timed_out,
            session_ended,
            duration_ms: millis(started.elapsed()),
            cpu_ms: run.result.cpu_ms,
        }));
    }

    /// One model call, checked against the budget first and recorded after.
    #[allow(clippy::too_many_arguments)]
    async fn call_model(
        &self,
        model: &ModelRef,
        messages: Vec<ChatMessage>,
        purpose: Purpose,
        iteration: u32,
        subcall_id: u64,
        item_index: u32,
        request_tally: Option<&UsageTally>,
    ) -> Result<String, CallError> {
        let max_tokens = self
            .budget
            .check_model_call(estimate_tokens(&messages), None)
            .map_err(CallError::Budget)?;
        let request = ChatRequest {
            model: model.clone(),
            messages,
            max_tokens: Some(max_tokens),
            temperature: None,
        };
        let started = Instant::now();
        let span =
            tracing::info_span!("rlm.model_call", model = %model, purpose = ?purpose, iteration);
        let result = self
            .tree
            .shared
            .models
            .chat(request, self.tree.deadline)
            .instrument(span)
            .await;
        let model_name = model.to_string();
        let (input, output, cost, text, error) = match &result {
            Ok(r) => (
                r.usage.input_tokens,
                r.usage.output_tokens,
                r.cost_usd,
                r.text.clone(),
                String::new(),
            ),
            Err(e) => (0, 0, Some(0.0), String::new(), e.to_string()),
        };
        self.budget
            .record_model_call(&model_name, input, output, cost);
        self.tree
            .shared
            .metrics
            .record_model_call(&model_name, input, output, cost);
        for tally in self.tallies.iter().map(Arc::as_ref).chain(request_tally) {
            tally.add(input, output, cost);
        }
        self.emit(EventBody::ModelCall(ModelCallRecord {
            model: model_name,
            purpose,
            iteration,
            subcall_id,
            item_index,
            input_tokens: input,
            output_tokens: output,
            cost_usd: cost,
            latency_ms: millis(started.elapsed()),
            response_text: text.clone(),
            error: error.clone(),
        }));
        match result {
            Ok(_) => Ok(text),
            // No time was left for the call: that is the completion's timeout.
            Err(ModelError::DeadlineExceeded { .. })
                if Instant::now() + super::DEADLINE_SLACK >= self.tree.deadline =>
            {
                Err(CallError::Budget(
                    self.budget
                        .exhausted()
                        .unwrap_or_else(|| Exhausted::timeout(error)),
                ))
            }
            // Time is left, but the retry the server asked for (a long
            // Retry-After) or the back-off would end past the deadline: the
            // model failed, the completion did not time out.
            Err(_) => {
                self.tree.shared.metrics.count_error("model");
                Err(CallError::Model(error))
            }
        }
    }

    /// Answers one sub-call request of this node's code.
    fn answer(
        self: Arc<Self>,
        request: SubcallRequest,
        iteration: u32,
    ) -> BoxFuture<'static, Vec<SubcallResult>> {
        async move {
            let started = Instant::now();
            let subcall_id = self.next_subcall.fetch_add(1, Ordering::Relaxed);
            let rlm = request.kind() == SubcallKind::RlmQuery;
            let degraded = rlm && self.depth >= self.tree.spec.limits.max_depth;
            let n = request.prompts.len();
            let model = if request.model.trim().is_empty() {
                Ok(self.tree.spec.sub_model.clone())
            } else {
                request
                    .model
                    .parse::<ModelRef>()
                    .map_err(|e| format!("model {:?}: {e}", request.model))
            };
            let child_ids: Vec<String> = if rlm && !degraded {
                (0..n)
                    .map(|_| {
                        format!(
                            "{}.{}",
                            self.id,
                            self.next_child.fetch_add(1, Ordering::Relaxed)
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let kind = if rlm { Kind::RlmQuery } else { Kind::LlmQuery };
            self.emit(EventBody::SubcallStarted(SubcallStartedRecord {
                subcall_id,
                kind,
                batched: request.batched,
                iteration,
                prompts: request.prompts.clone(),
                model: model
                    .as_ref()
                    .map_or_else(|_| request.model.clone(), ToString::to_string),
                degraded,
                child_node_ids: child_ids.clone(),
            }));
            let tally = Arc::new(UsageTally::default());
            let outcomes: Vec<Result<String, String>> = match (
                model,
                self.budget
                    .start_subcalls(u32::try_from(n).unwrap_or(u32::MAX)),
            ) {
                (Err(e), _) => vec![Err(e); n],
                (_, Err(e)) => vec![Err(e.detail); n],
                (Ok(model), Ok(())) => {
                    self.permit.lend();
                    let items = request.prompts.iter().enumerate().map(|(i, prompt)| {
                        let context = request.contexts.get(i).cloned();
                        let child_id = child_ids.get(i).cloned();
                        self.clone().run_subcall(
                            model.clone(),
                            prompt.clone(),
                            context,
                            child_id,
                            subcall_id,
                            i as u32,
                            iteration,
                            Arc::clone(&tally),
                        )
                    });
                    let outcomes = join_all(items).await;
                    self.permit.restore().await;
                    outcomes
                }
            };
            self.emit(EventBody::SubcallFinished(SubcallFinishedRecord {
                subcall_id,
                kind,
                outcomes: outcomes
                    .iter()
                    .map(|o| match o {
                        Ok(t) => OutcomeRecord::Text(t.clone()),
                        Err(e) => OutcomeRecord::Error(e.clone()),
                    })
                    .collect(),
                usage: UsageRecord::from(&tally.get()),
                duration_ms: millis(started.elapsed()),
            }));
            outcomes
                .into_iter()
                .map(|o| SubcallResult {
                    outcome: Some(match o {
                        Ok(text) => subcall_result::Outcome::Text(text),
                        Err(error) => subcall_result::Outcome::Error(error),
                    }),
                })
                .collect()
        }
        .boxed()
    }

    /// One prompt of a request: a plain model call, or a child RLM when
    /// `child_id` is set.
    #[allow(clippy::too_many_arguments)]
    fn run_subcall(
        self: Arc<Self>,
        model: ModelRef,
        prompt: String,
        context: Option<SubcallContext>,
        child_id: Option<String>,
        subcall_id: u64,
        item_index: u32,
        iteration: u32,
        tally: Arc<UsageTally>,
    ) -> BoxFuture<'static, Result<String, String>> {
        async move {
            if self.tree.spec.limits.cost_budget_usd.is_some()
                && self
                    .tree
                    .shared
                    .models
                    .pricing()
                    .get(&model.to_string())
                    .is_none()
            {
                return Err(format!(
                    "{model} has no known price and a cost budget is in force"
                ));
            }
            let permit = Arc::clone(&self.tree.parallel)
                .acquire_owned()
                .await
                .map_err(|_| "the completion is stopping".to_owned())?;
            match child_id {
                None => {
                    // A degraded rlm_query sends its context along as text.
                    let text = match context.and_then(|c| c.source) {
                        Some(subcall_context::Source::Text(context)) if !context.is_empty() => {
                            format!("{prompt}\n\nContext:\n{context}")
                        }
                        _ => prompt,
                    };
                    let result = self
                        .call_model(
                            &model,
                            vec![ChatMessage::user(text)],
                            Purpose::LlmQuery,
                            iteration,
                            subcall_id,
                            item_index,
                            Some(&tally),
                        )
                        .await;
                    drop(permit);
                    result.map_err(|e| e.message())
                }
                Some(child_id) => {
                    self.run_child(model, prompt, context, child_id, tally, permit)
                        .await
                }
            }
        }
        .boxed()
    }

    async fn run_child(
        self: Arc<Self>,
        model: ModelRef,
        prompt: String,
        context: Option<SubcallContext>,
        child_id: String,
        tally: Arc<UsageTally>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<String, String> {
        let tree = Arc::clone(&self.tree);
        let id = match context.and_then(|c| c.source) {
            None => None,
            Some(subcall_context::Source::ContextId(id)) => Some(id),
            Some(subcall_context::Source::Text(text)) => Some(
                tree.shared
                    .put_context(text.into_bytes())
                    .await
                    .map_err(|s| format!("storing the child's context: {}", s.message()))?,
            ),
        };
        // A context passed on unchanged keeps the parent's presentation.
        let contexts = id
            .map(|id| {
                let json = self.contexts.iter().any(|c| c.id == id && c.json);
                NodeContext { id, json }
            })
            .into_iter()
            .collect();
        let mut tallies = self.tallies.clone();
        tallies.push(tally);
        let depth = self.depth + 1;
        let child = Arc::new(Node::new(NodeSpec {
            tree: Arc::clone(&tree),
            id: child_id.clone(),
            depth,
            budget: self.budget.child(),
            model,
            task: prompt,
            contexts,
            tallies,
            permit: PermitSlot::new(Arc::clone(&tree.parallel), Some(permit)),
        }));
        tree.child_rlms.fetch_add(1, Ordering::AcqRel);
        tree.note_depth(depth);
        let repl = child
            .open_repl()
            .await
            .map_err(|e| format!("child RLM {child_id} could not start: {e}"))?;
        match child.run(repl).await {
            NodeEnd::Final(answer) => Ok(answer),
            NodeEnd::Stopped {
                reason,
                detail,
                partial,
            } => {
                let mut message = format!(
                    "child RLM {child_id} stopped without FINAL ({}): {detail}",
                    reason.as_str_name()
                );
                if !partial.is_empty() {
                    let (head, _) = prompt::truncate_output(&partial, 2_000);
                    message.push_str("; its last reply was: ");
                    message.push_str(&head);
                }
                Err(message)
            }
        }
    }
}

impl NodeEnd {
    fn with_partial(self, partial: &str) -> NodeEnd {
        match self {
            NodeEnd::Stopped {
                reason,
                detail,
                partial: p,
            } if p.is_empty() => NodeEnd::Stopped {
                reason,
                detail,
                partial: partial.to_owned(),
            },
            other => other,
        }
    }
}
