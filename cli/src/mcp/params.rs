//! The tools' inputs and outputs; their doc comments become the JSON schema
//! descriptions the MCP client shows to its model.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteParams {
    /// The task for the root RLM. It can see the context as the Python variable `context`
    /// and solve the task by writing code, calling sub-models (llm_query) and child RLMs
    /// (rlm_query).
    pub prompt: String,
    /// Path of a local file to give the RLM as `context` (read by this server; large files are
    /// uploaded to the runtime first). At most one of context_file and context.
    pub context_file: Option<String>,
    /// Context given inline as text, bound to `context`. At most one of context_file and
    /// context.
    pub context: Option<String>,
    /// Root model, e.g. `openai/gpt-4o` or `anthropic/claude-sonnet-4-5`. Default: the server's.
    pub model: Option<String>,
    /// Model of llm_query and of child RLMs. Default: the server's.
    pub sub_model: Option<String>,
    /// Maximum iterations (model turns) of each RLM, 1-1000. Default: the server's (30).
    #[schemars(range(min = 1, max = 1000))]
    pub max_iterations: Option<u32>,
    /// Maximum depth of child RLMs, 0-16 (0: rlm_query degrades to a plain model call).
    /// Default: the server's (1).
    #[schemars(range(max = 16))]
    pub max_depth: Option<u32>,
    /// Wall-clock limit of the whole completion, in seconds. Default: the server's (600).
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: Option<f64>,
    /// Maximum tokens (input + output) over the whole recursion tree. Default: no limit.
    #[schemars(range(min = 1))]
    pub token_budget: Option<u64>,
    /// Maximum cost in US dollars over the whole tree (needs priced models). Default: no
    /// limit.
    pub cost_budget_usd: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UsageOut {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Model calls made.
    pub calls: u64,
    /// Cost in US dollars; a lower bound when cost_known is false.
    pub cost_usd: f64,
    /// Whether every model used had a price.
    pub cost_known: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CompleteOutput {
    /// The answer (FINAL), or the best partial answer when the completion stopped early.
    pub answer: String,
    /// Why it ended: `final` (answered), or a limit (`max_iterations`, `timeout`,
    /// `token_budget`, ...), `cancelled`, or an error (`model_error`, `sandbox_error`,
    /// `error`).
    pub termination_reason: String,
    /// True when `answer` is partial (the completion did not reach FINAL).
    pub partial: bool,
    /// Details of how it ended (empty for `final`).
    pub detail: String,
    /// Id of the completion.
    pub completion_id: String,
    /// Id of its trajectory: pass it to get_trajectory to see every step.
    pub trajectory_id: String,
    /// Tokens and cost of the whole tree.
    pub usage: UsageOut,
    /// Iterations of the root RLM.
    pub iterations: u32,
    /// Wall-clock duration in seconds.
    pub duration_seconds: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteParams {
    /// Python code to run. Globals persist between calls on the same session. Call
    /// FINAL(value) to return a value in `result`; print() output comes back in `stdout`.
    pub code: String,
    /// Session to run in (from an earlier execute_python call). Omit it to create a new
    /// session; its id is returned, pass it again to keep the state.
    pub session_id: Option<String>,
    /// Time limit of this code in seconds (the code is interrupted after it; the session
    /// keeps its state). Default: the server's cell timeout (60). At most 3600.
    #[schemars(range(min = 0.001, max = 3600))]
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PythonError {
    /// Exception class, e.g. `NameError`.
    pub exception_type: String,
    /// The exception's message.
    pub message: String,
    /// The formatted traceback.
    pub traceback: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecuteOutput {
    /// The session the code ran in; pass it to the next execute_python call.
    pub session_id: String,
    /// True when this call created the session.
    pub created_session: bool,
    /// What the code printed to stdout.
    pub stdout: String,
    /// What the code wrote to stderr.
    pub stderr: String,
    /// The value passed to FINAL(...) / FINAL_VAR(...), as a string; null if not called.
    pub result: Option<String>,
    /// The uncaught exception, if the code raised one.
    pub error: Option<PythonError>,
    /// True when the time limit interrupted the code.
    pub timed_out: bool,
    /// True when the session died (out of memory, killed, exited): its state is lost and
    /// its id no longer works; omit session_id next time to start a new one.
    pub session_ended: bool,
    /// Why the session ended; empty unless session_ended.
    pub end_detail: String,
    /// True when output went over the session's cap and the rest was dropped.
    pub truncated: bool,
    /// Wall-clock duration of the code in seconds.
    pub duration_seconds: f64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionParams {
    /// Id of the session (from execute_python or list_sessions).
    pub session_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionOut {
    /// Id of the session.
    pub session_id: String,
    /// When it was created (RFC 3339, UTC).
    pub created_at: String,
    /// When its last code run ended (RFC 3339, UTC).
    pub last_used_at: String,
    /// It is destroyed after being idle this many seconds.
    pub idle_ttl_seconds: f64,
    /// Code runs so far.
    pub executions: u64,
    /// True while code runs in it.
    pub executing: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionList {
    /// Your open sessions, oldest first.
    pub sessions: Vec<SessionOut>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Destroyed {
    /// The session that was destroyed.
    pub session_id: String,
    /// Always true (failures are tool errors).
    pub destroyed: bool,
}

/// How get_trajectory shows a trajectory.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrajectoryFormat {
    /// An indented, readable tree of every RLM, iteration, code block and sub-call (long
    /// code and outputs shortened).
    #[default]
    Summary,
    /// The same tree with code and outputs in full.
    Full,
    /// The whole trajectory as JSON.
    Json,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrajectoryParams {
    /// Trajectory id (rlm_complete's trajectory_id).
    pub trajectory_id: String,
    /// `summary` (default), `full` or `json`.
    #[serde(default)]
    pub format: TrajectoryFormat,
}
