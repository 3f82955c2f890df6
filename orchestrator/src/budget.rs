//! One budget for a whole completion tree.
//!
//! A [`Budget`] is shared by the root RLM and every descendant (child RLMs and
//! plain sub-calls): tokens, cost, sub-calls and wall time are tree-wide, so a
//! child's spending counts against the root's limits. Iterations are counted
//! per RLM (each node gets its own handle through [`Budget::child`]) and also
//! as a tree total.
//!
//! Limits are checked *before* each model call ([`Budget::check_model_call`]
//! clamps `max_tokens` to what the token budget still allows) and spending is
//! recorded after it ([`Budget::record_model_call`]). Because check and record
//! are separate steps, concurrent calls can together overshoot the token or
//! cost budget by at most what the calls already in flight spend; the next
//! check then fails.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rlm_proto::rlm::v1::{ModelUsage, TerminationReason, Usage};

/// Limits of one completion tree, server defaults already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetLimits {
    /// Maximum input + output tokens of the whole tree; `None` = no limit.
    pub token_budget: Option<u64>,
    /// Maximum cost in USD of the whole tree; `None` = no limit.
    pub cost_budget_usd: Option<f64>,
    /// Maximum iterations of each RLM (per node); `None` = no limit.
    pub max_iterations: Option<u32>,
    /// Maximum sub-calls of the whole tree; `None` = no limit, `Some(0)` = none allowed.
    pub max_subcalls: Option<u32>,
    /// Wall-clock deadline of the whole completion; `None` = none.
    pub deadline: Option<Instant>,
    /// `max_tokens` sent when the caller requests none.
    pub default_max_tokens: u32,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        Self {
            token_budget: None,
            cost_budget_usd: None,
            max_iterations: None,
            max_subcalls: None,
            deadline: None,
            default_max_tokens: 4096,
        }
    }
}

/// A limit was reached: the completion (or node) must stop with this reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct Exhausted {
    /// Matching termination reason (never `Unspecified` or `Final`).
    pub reason: TerminationReason,
    /// Human-readable detail: which limit, the values involved.
    pub detail: String,
}

impl Exhausted {
    fn new(reason: TerminationReason, detail: String) -> Self {
        Self { reason, detail }
    }

    /// The deadline left no room for what was about to start.
    pub fn timeout(detail: String) -> Self {
        Self::new(TerminationReason::Timeout, format!("timeout: {detail}"))
    }
}

#[derive(Debug, Default, Clone)]
struct Acc {
    input_tokens: u64,
    output_tokens: u64,
    calls: u64,
    cost_usd: f64,
    unknown_price_calls: u64,
}

impl Acc {
    fn add(&mut self, input: u64, output: u64, cost: Option<f64>) {
        self.input_tokens = self.input_tokens.saturating_add(input);
        self.output_tokens = self.output_tokens.saturating_add(output);
        self.calls = self.calls.saturating_add(1);
        match cost {
            Some(c) if c.is_finite() && c >= 0.0 => self.cost_usd += c,
            _ => self.unknown_price_calls = self.unknown_price_calls.saturating_add(1),
        }
    }

    fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    fn to_proto(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            calls: self.calls,
            cost_usd: self.cost_usd,
            cost_known: self.unknown_price_calls == 0,
        }
    }
}

#[derive(Debug, Default)]
struct Spend {
    total: Acc,
    per_model: BTreeMap<String, Acc>,
}

#[derive(Debug)]
struct Shared {
    limits: BudgetLimits,
    started: Instant,
    spend: Mutex<Spend>,
    subcalls: AtomicU32,
    total_iterations: AtomicU32,
    /// First tree-wide limit that stopped something; sticky.
    tripped: Mutex<Option<Exhausted>>,
}

/// Budget of a completion tree. Cloning is cheap and shares everything,
/// including the per-node iteration counter; use [`Budget::child`] for a new
/// RLM node.
#[derive(Debug, Clone)]
pub struct Budget {
    shared: Arc<Shared>,
    node_iterations: Arc<AtomicU32>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain counters behind: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Budget {
    /// A budget for a new completion tree (the handle is the root node's).
    pub fn new(limits: &BudgetLimits, started: Instant) -> Budget {
        Budget {
            shared: Arc::new(Shared {
                limits: limits.clone(),
                started,
                spend: Mutex::new(Spend::default()),
                subcalls: AtomicU32::new(0),
                total_iterations: AtomicU32::new(0),
                tripped: Mutex::new(None),
            }),
            node_iterations: Arc::new(AtomicU32::new(0)),
        }
    }

    /// A handle for a child RLM: same tree budget, its own iteration count.
    pub fn child(&self) -> Budget {
        Budget {
            shared: Arc::clone(&self.shared),
            node_iterations: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The limits this budget enforces.
    pub fn limits(&self) -> &BudgetLimits {
        &self.shared.limits
    }

    /// When the completion started.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    fn trip(&self, e: Exhausted) -> Exhausted {
        let mut tripped = lock(&self.shared.tripped);
        if tripped.is_none() {
            *tripped = Some(e.clone());
        }
        e
    }

    fn check_deadline(&self) -> Result<(), Exhausted> {
        if let Some(deadline) = self.shared.limits.deadline {
            let now = Instant::now();
            if now >= deadline {
                let elapsed = now.saturating_duration_since(self.shared.started);
                return Err(self.trip(Exhausted::new(
                    TerminationReason::Timeout,
                    format!(
                        "timeout: deadline reached after {:.3}s",
                        elapsed.as_secs_f64()
                    ),
                )));
            }
        }
        Ok(())
    }

    fn check_cost(&self, total: &Acc) -> Result<(), Exhausted> {
        let limit = self.shared.limits.cost_budget_usd.unwrap_or(f64::INFINITY);
        if total.cost_usd >= limit {
            let note = if total.unknown_price_calls > 0 {
                format!(
                    " (lower bound: {} call(s) had an unknown price)",
                    total.unknown_price_calls
                )
            } else {
                String::new()
            };
            return Err(self.trip(Exhausted::new(
                TerminationReason::CostBudget,
                format!(
                    "cost budget reached: spent ${:.6} of ${limit:.6}{note}",
                    total.cost_usd
                ),
            )));
        }
        Ok(())
    }

    /// Call before each model call. `prompt_tokens_estimate` is the estimated
    /// size of the prompt about to be sent; `requested_max_tokens` the
    /// caller's wish (`None` = the default). Returns the `max_tokens` to send,
    /// clamped to what the token budget leaves after the prompt, or the limit
    /// that is exhausted (deadline, cost, or no token left for the output).
    pub fn check_model_call(
        &self,
        prompt_tokens_estimate: u64,
        requested_max_tokens: Option<u32>,
    ) -> Result<u32, Exhausted> {
        self.check_deadline()?;
        let total = lock(&self.shared.spend).total.clone();
        self.check_cost(&total)?;
        let wanted = requested_max_tokens.unwrap_or(self.shared.limits.default_max_tokens);
        let Some(budget) = self.shared.limits.token_budget else {
            return Ok(wanted);
        };
        let used = total.tokens();
        let remaining = budget.saturating_sub(used);
        let available = remaining.saturating_sub(prompt_tokens_estimate);
        if available == 0 {
            return Err(self.trip(Exhausted::new(
                TerminationReason::TokenBudget,
                format!(
                    "token budget reached: {used} of {budget} tokens used, \
                     {remaining} left, prompt needs about {prompt_tokens_estimate}"
                ),
            )));
        }
        Ok(u32::try_from(available).map_or(wanted, |a| wanted.min(a)))
    }

    /// Records a finished (or failed) model call. `cost_usd` is `None` when
    /// the model's price is unknown: the cost then stays a lower bound and
    /// [`Usage::cost_known`] becomes false.
    pub fn record_model_call(
        &self,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
        cost_usd: Option<f64>,
    ) {
        let mut spend = lock(&self.shared.spend);
        spend.total.add(input_tokens, output_tokens, cost_usd);
        match spend.per_model.get_mut(model) {
            Some(acc) => acc.add(input_tokens, output_tokens, cost_usd),
            None => {
                let mut acc = Acc::default();
                acc.add(input_tokens, output_tokens, cost_usd);
                spend.per_model.insert(model.to_owned(), acc);
            }
        }
    }

    /// Starts an iteration of this node: fails with `MaxIterations` when the
    /// node used all its iterations (not sticky: it ends this node only), or
    /// `Timeout` past the deadline.
    pub fn start_iteration(&self) -> Result<(), Exhausted> {
        self.check_deadline()?;
        let max = self.shared.limits.max_iterations;
        let admitted =
            self.node_iterations
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
                    Some(max) if n >= max => None,
                    _ => Some(n.saturating_add(1)),
                });
        match admitted {
            Ok(_) => {
                self.shared.total_iterations.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(n) => Err(Exhausted::new(
                TerminationReason::MaxIterations,
                format!("max_iterations reached: {n} iterations used"),
            )),
        }
    }

    /// Reserves `n` sub-calls (a batch of n prompts counts n), all or
    /// nothing: two concurrent batches can never both pass the limit.
    pub fn start_subcalls(&self, n: u32) -> Result<(), Exhausted> {
        self.check_deadline()?;
        let max = self.shared.limits.max_subcalls;
        let admitted =
            self.shared
                .subcalls
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    let next = used.checked_add(n)?;
                    match max {
                        Some(max) if next > max => None,
                        _ => Some(next),
                    }
                });
        match admitted {
            Ok(_) => Ok(()),
            Err(used) => Err(self.trip(Exhausted::new(
                TerminationReason::MaxSubcalls,
                format!(
                    "max_subcalls reached: {used} used, {n} more requested, limit {}",
                    max.map_or_else(|| "none".to_owned(), |m| m.to_string())
                ),
            ))),
        }
    }

    /// Usage totals of the whole tree.
    pub fn usage(&self) -> Usage {
        lock(&self.shared.spend).total.to_proto()
    }

    /// Usage per model, sorted by model name.
    pub fn model_usage(&self) -> Vec<ModelUsage> {
        lock(&self.shared.spend)
            .per_model
            .iter()
            .map(|(model, acc)| ModelUsage {
                model: model.clone(),
                usage: Some(acc.to_proto()),
            })
            .collect()
    }

    /// Iterations started by this node.
    pub fn node_iterations(&self) -> u32 {
        self.node_iterations.load(Ordering::Acquire)
    }

    /// Iterations started by all nodes of the tree.
    pub fn total_iterations(&self) -> u32 {
        self.shared.total_iterations.load(Ordering::Acquire)
    }

    /// Sub-calls admitted in the whole tree.
    pub fn subcalls(&self) -> u32 {
        self.shared.subcalls.load(Ordering::Acquire)
    }

    /// Final check: the first tree-wide limit that stopped something, or
    /// else a limit that is exhausted now (deadline passed, tokens or cost
    /// used up). `None` when the tree may go on.
    pub fn exhausted(&self) -> Option<Exhausted> {
        if let Some(e) = lock(&self.shared.tripped).clone() {
            return Some(e);
        }
        if let Err(e) = self.check_deadline() {
            return Some(e);
        }
        let total = lock(&self.shared.spend).total.clone();
        if let Err(e) = self.check_cost(&total) {
            return Some(e);
        }
        let budget = self.shared.limits.token_budget.unwrap_or(u64::MAX);
        if total.tokens() >= budget {
            return Some(self.trip(Exhausted::new(
                TerminationReason::TokenBudget,
                format!(
                    "token budget reached: {} of {budget} tokens used",
                    total.tokens()
                ),
            )));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> BudgetLimits {
        BudgetLimits {
            default_max_tokens: 1000,
            ..BudgetLimits::default()
        }
    }

    #[test]
    fn no_limits_passes_requested_or_default() {
        let b = Budget::new(&limits(), Instant::now());
        assert_eq!(b.check_model_call(10, None), Ok(1000));
        assert_eq!(b.check_model_call(10, Some(50)), Ok(50));
        assert!(b.exhausted().is_none());
    }

    #[test]
    fn clamps_to_remaining_tokens() {
        let l = BudgetLimits {
            token_budget: Some(1500),
            ..limits()
        };
        let b = Budget::new(&l, Instant::now());
        // 1500 left, prompt ~200 -> 1300 available, default 1000 wins.
        assert_eq!(b.check_model_call(200, None), Ok(1000));
        b.record_model_call("m", 200, 900, Some(0.0));
        // 400 left, prompt ~100 -> 300.
        assert_eq!(b.check_model_call(100, None), Ok(300));
        assert_eq!(b.check_model_call(100, Some(20)), Ok(20));
        // Prompt alone takes everything left.
        let e = b.check_model_call(400, None).expect_err("exhausted");
        assert_eq!(e.reason, TerminationReason::TokenBudget);
        b.record_model_call("m", 300, 100, Some(0.0));
        let e = b.check_model_call(0, None).expect_err("exhausted");
        assert_eq!(e.reason, TerminationReason::TokenBudget);
        assert_eq!(
            b.exhausted().map(|e| e.reason),
            Some(TerminationReason::TokenBudget)
        );
    }

    #[test]
    fn cost_budget_and_unknown_price() {
        let l = BudgetLimits {
            cost_budget_usd: Some(0.10),
            ..limits()
        };
        let b = Budget::new(&l, Instant::now());
        b.record_model_call("a", 10, 10, Some(0.06));
        assert!(b.check_model_call(0, None).is_ok());
        assert!(b.usage().cost_known);
        b.record_model_call("b", 10, 10, None);
        let u = b.usage();
        assert!(!u.cost_known);
        assert!((u.cost_usd - 0.06).abs() < 1e-12);
        assert!(b.check_model_call(0, None).is_ok());
        b.record_model_call("a", 10, 10, Some(0.05));
        let e = b.check_model_call(0, None).expect_err("cost");
        assert_eq!(e.reason, TerminationReason::CostBudget);
        assert!(e.detail.contains("lower bound"), "{}", e.detail);
        let per_model = b.model_usage();
        assert_eq!(per_model.len(), 2);
        assert_eq!(per_model[0].model, "a");
        let a = per_model[0].usage.expect("usage");
        assert!(a.cost_known);
        assert_eq!(a.calls, 2);
        assert_eq!(
            per_model[1].usage.as_ref().map(|u| u.cost_known),
            Some(false)
        );
    }

    #[test]
    fn max_iterations_is_per_node() {
        let l = BudgetLimits {
            max_iterations: Some(2),
            ..limits()
        };
        let root = Budget::new(&l, Instant::now());
        assert!(root.start_iteration().is_ok());
        assert!(root.start_iteration().is_ok());
        let e = root.start_iteration().expect_err("max");
        assert_eq!(e.reason, TerminationReason::MaxIterations);
        let child = root.child();
        assert!(child.start_iteration().is_ok());
        assert_eq!(root.node_iterations(), 2);
        assert_eq!(child.node_iterations(), 1);
        assert_eq!(root.total_iterations(), 3);
        // Per-node limit is not a tree-wide stop.
        assert!(root.exhausted().is_none());
    }

    #[test]
    fn max_subcalls_counts_batches() {
        let l = BudgetLimits {
            max_subcalls: Some(5),
            ..limits()
        };
        let b = Budget::new(&l, Instant::now());
        assert!(b.start_subcalls(3).is_ok());
        let e = b.start_subcalls(3).expect_err("over");
        assert_eq!(e.reason, TerminationReason::MaxSubcalls);
        assert_eq!(b.subcalls(), 3);
        assert!(b.start_subcalls(2).is_ok());
        assert_eq!(b.subcalls(), 5);
        assert_eq!(
            b.exhausted().map(|e| e.reason),
            Some(TerminationReason::MaxSubcalls)
        );
        let none = Budget::new(
            &BudgetLimits {
                max_subcalls: Some(0),
                ..limits()
            },
            Instant::now(),
        );
        assert!(none.start_subcalls(1).is_err());
    }

    #[test]
    fn deadline_gives_timeout() {
        let now = Instant::now();
        let l = BudgetLimits {
            deadline: Some(now),
            ..limits()
        };
        let b = Budget::new(&l, now);
        for r in [
            b.check_model_call(0, None).map(|_| ()),
            b.start_iteration(),
            b.start_subcalls(1),
        ] {
            assert_eq!(r.map_err(|e| e.reason), Err(TerminationReason::Timeout));
        }
        assert_eq!(
            b.exhausted().map(|e| e.reason),
            Some(TerminationReason::Timeout)
        );
        let later = Budget::new(
            &BudgetLimits {
                deadline: Some(now + Duration::from_secs(3600)),
                ..limits()
            },
            now,
        );
        assert!(later.check_model_call(0, None).is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_are_exact() {
        let b = Budget::new(&limits(), Instant::now());
        let mut tasks = Vec::new();
        for t in 0..64u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u64 {
                    let model = if (t + i) % 2 == 0 { "even" } else { "odd" };
                    b.record_model_call(model, 3, 2, Some(0.5));
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let u = b.usage();
        assert_eq!(u.calls, 6400);
        assert_eq!(u.input_tokens, 19_200);
        assert_eq!(u.output_tokens, 12_800);
        assert!((u.cost_usd - 3200.0).abs() < 1e-9);
        assert!(u.cost_known);
        let calls: u64 = b
            .model_usage()
            .iter()
            .filter_map(|m| m.usage.as_ref().map(|u| u.calls))
            .sum();
        assert_eq!(calls, 6400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_subcalls_never_over_admit() {
        let l = BudgetLimits {
            max_subcalls: Some(100),
            ..limits()
        };
        let b = Budget::new(&l, Instant::now());
        let mut tasks = Vec::new();
        for t in 0..64u32 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let n = t % 3 + 1;
                let mut admitted = 0u32;
                for _ in 0..10 {
                    if b.start_subcalls(n).is_ok() {
                        admitted += n;
                    }
                    tokio::task::yield_now().await;
                }
                admitted
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.expect("task");
        }
        assert!(admitted <= 100);
        assert_eq!(admitted, b.subcalls());
        // Demand (far above 100) fills the limit to within one batch.
        assert!(admitted >= 98, "{admitted}");
    }
}
