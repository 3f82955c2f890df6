//! Trajectories: one append-only JSONL file per root completion.
//!
//! `<dir>/<id>.jsonl` holds one JSON object per line. Line 1 (`seq` 0) is the
//! header (`kind: "completion_started"`); every later line is one event, with
//! `seq` equal to the `CompletionEvent.sequence` StreamComplete emits (1, 2,
//! ...). Each line carries only its own event — never history, never the
//! full context, never secrets:
//!
//! ```json
//! {"seq":0,"ts":"2025-01-01T00:00:00.1Z","node":"0","depth":0,"kind":"completion_started","completion_id":"c1","prompt_preview":"...","root_model":"openai/gpt-4o","sub_model":"","context_ids":[],"limits":{...},"metadata":{}}
//! {"seq":1,"ts":"...","node":"0","depth":0,"kind":"iteration_started","iteration":1,"tree_usage":{...}}
//! {"seq":2,"ts":"...","node":"0.1","depth":1,"kind":"model_call","model":"m","purpose":"iteration","input_tokens":10,"output_tokens":5,"cost_usd":0.001,"latency_ms":12,...}
//! ```
//!
//! The line format is this module's own serde types (proto messages have no
//! serde); [`TrajectoryStore::read`] converts them to the proto `Trajectory`.
//!
//! Two backends store the lines: a directory (`RLM_LOG_DIR`, the default),
//! one `<id>.jsonl` file per trajectory appended line by line, and an
//! S3-compatible bucket (`RLM_TRAJECTORY_STORE=s3://bucket/prefix`, see
//! [`object`]) shared by every replica. The API is the same on both.

mod object;

pub use object::{ObjectBackend, ObjectSettings};

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rlm_proto::rlm::v1::{
    CodeExecutedEvent, CompletionEvent, CompletionLimits, CompletionResult, CompletionSpec,
    ContextFormat, ContextInput, IterationStartedEvent, ModelCallFinishedEvent, ModelCallPurpose,
    ModelUsage, SubcallFinishedEvent, SubcallKind, SubcallOutcome, SubcallStartedEvent,
    TerminationReason, Trajectory, TrajectoryStatus, TrajectorySummary, Usage,
    completion_event::Event, context_input::Source, subcall_outcome::Outcome,
};
use serde::{Deserialize, Serialize};

/// Length of `TrajectorySummary.prompt_preview`, in characters.
pub const PROMPT_PREVIEW_CHARS: usize = 200;
/// Default cap of each long text (code, output, prompts, replies) in a line.
pub const DEFAULT_MAX_TEXT_BYTES: usize = 64 * 1024;
/// Files larger than this are summarised from a tail read, not a full read.
const TAIL_BYTES: u64 = 1024 * 1024;

/// Called once per trajectory whose background upload failed (the object
/// backend; the file backend returns its errors from the append instead).
pub type WriteErrorHook = Arc<dyn Fn() + Send + Sync>;

/// Where trajectories are stored (`RLM_TRAJECTORY_STORE`, else `RLM_LOG_DIR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory: `file:///abs/path`, or `RLM_LOG_DIR`.
    Dir(PathBuf),
    /// An S3-compatible bucket: `s3://bucket/prefix`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl StoreLocation {
    /// Parses `file:///abs/path` or `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err("file:// needs an absolute path (file:///var/log/rlm)".to_owned());
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(format!(
                    "bucket {bucket:?}: 3 to 63 lowercase letters, digits, '-' or '.'"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..")
                || prefix.contains("//")
                || prefix.chars().any(char::is_control)
            {
                return Err(format!("prefix {prefix:?}: not a clean key prefix"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        Err("file:///abs/path or s3://bucket/prefix".to_owned())
    }
}

impl std::fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "file://{}", dir.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Errors of the trajectory store.
#[derive(Debug, thiserror::Error)]
pub enum TrajectoryError {
    /// The id is not `[A-Za-z0-9_-]{1,64}`.
    #[error("invalid trajectory id {0:?}")]
    InvalidId(String),
    /// No trajectory with this id.
    #[error("trajectory {0:?} not found")]
    NotFound(String),
    /// A trajectory with this id already exists.
    #[error("trajectory {0:?} already exists")]
    AlreadyExists(String),
    /// The path is not a regular file (symlink, directory...).
    #[error("trajectory {0:?} is not a regular file")]
    NotRegular(String),
    /// A line other than the last one does not parse, or the header is missing.
    #[error("trajectory {id:?} is corrupt at line {line}: {message}")]
    Corrupt {
        /// Trajectory id.
        id: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Bad page token.
    #[error("invalid page token")]
    InvalidPageToken,
    /// Writing event `seq` failed; the writer is now disabled.
    #[error("writing trajectory event {seq} failed: {source}")]
    Write {
        /// Sequence number of the event that was lost.
        seq: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// Other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// True for ids matching `[A-Za-z0-9_-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Cuts `text` to at most `max` bytes (on a char boundary) and appends a
/// visible marker. Returns true when it cut.
pub fn cap_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("\n…[truncated {cut} bytes]"));
    true
}

/// First [`PROMPT_PREVIEW_CHARS`] characters of a prompt.
pub fn prompt_preview(prompt: &str) -> String {
    prompt.chars().take(PROMPT_PREVIEW_CHARS).collect()
}

fn rfc3339(t: SystemTime) -> String {
    // prost-types' Timestamp formats RFC 3339; reached through a proto field
    // because the orchestrator does not depend on prost-types directly.
    let ev = CompletionEvent {
        timestamp: Some(t.into()),
        ..Default::default()
    };
    ev.timestamp.map(|t| t.to_string()).unwrap_or_default()
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ev = CompletionEvent {
        timestamp: s.parse().ok(),
        ..Default::default()
    };
    ev.timestamp.and_then(|t| SystemTime::try_from(t).ok())
}

/// Milliseconds as the proto Duration (type inferred from the field, so
/// no direct prost-types dependency is needed).
fn ms<T: TryFrom<Duration>>(ms: u64) -> Option<T> {
    Duration::from_millis(ms).try_into().ok()
}

/// Usage as recorded in a line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Model calls.
    pub calls: u64,
    /// Known cost in USD.
    pub cost_usd: f64,
    /// False when some call's price was unknown.
    pub cost_known: bool,
}

impl From<&Usage> for UsageRecord {
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            calls: u.calls,
            cost_usd: u.cost_usd,
            cost_known: u.cost_known,
        }
    }
}

impl From<&UsageRecord> for Usage {
    fn from(u: &UsageRecord) -> Self {
        Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            calls: u.calls,
            cost_usd: u.cost_usd,
            cost_known: u.cost_known,
        }
    }
}

/// Limits as recorded in the header (server defaults filled in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsRecord {
    /// Maximum depth.
    pub max_depth: Option<u32>,
    /// Maximum iterations per RLM.
    pub max_iterations: u32,
    /// Token budget, 0 = none.
    pub token_budget: u64,
    /// Cost budget, 0 = none.
    pub cost_budget_usd: f64,
    /// Sub-calls in flight.
    pub max_parallel: u32,
    /// Maximum sub-calls.
    pub max_subcalls: Option<u32>,
    /// Completion timeout in milliseconds.
    pub timeout_ms: u64,
    /// Cell timeout in milliseconds.
    pub cell_timeout_ms: u64,
}

/// First line of a trajectory: what the completion is. Holds a prompt
/// preview and context ids only — never the full context or any secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryHeader {
    /// Completion id.
    pub completion_id: String,
    /// First 200 characters of the prompt (see [`prompt_preview`]).
    pub prompt_preview: String,
    /// Root model as resolved.
    pub root_model: String,
    /// Sub-model as resolved.
    pub sub_model: String,
    /// Content ids of the contexts.
    #[serde(default)]
    pub context_ids: Vec<String>,
    /// Indices (into `context_ids`) of the contexts given as JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_contexts: Vec<u32>,
    /// Limits in force.
    pub limits: LimitsRecord,
    /// User labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Why a model was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// The RLM's own turn.
    #[default]
    Iteration,
    /// llm_query (or degraded rlm_query).
    LlmQuery,
}

/// Kind of a sub-call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// llm_query.
    #[default]
    LlmQuery,
    /// rlm_query.
    RlmQuery,
}

impl Kind {
    fn proto(self) -> i32 {
        match self {
            Kind::LlmQuery => SubcallKind::LlmQuery as i32,
            Kind::RlmQuery => SubcallKind::RlmQuery as i32,
        }
    }
}

/// A model call returned or failed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelCallRecord {
    /// Model as resolved.
    pub model: String,
    /// Why it was called.
    pub purpose: Purpose,
    /// Iteration of the emitting RLM.
    pub iteration: u32,
    /// Sub-call request id (llm_query only).
    #[serde(default)]
    pub subcall_id: u64,
    /// Index in the request (llm_query only).
    #[serde(default)]
    pub item_index: u32,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in USD; `None` = unknown price.
    pub cost_usd: Option<f64>,
    /// Latency in milliseconds.
    pub latency_ms: u64,
    /// Reply text (capped).
    #[serde(default)]
    pub response_text: String,
    /// Error after retries; empty on success.
    #[serde(default)]
    pub error: String,
}

/// A code block ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeRecord {
    /// Iteration.
    pub iteration: u32,
    /// Index of the block in the reply.
    pub block_index: u32,
    /// The code (capped).
    pub code: String,
    /// Interleaved stdout/stderr as shown to the model (capped).
    pub output: String,
    /// True when `output` was cut.
    pub output_truncated: bool,
    /// Uncaught exception; empty when none.
    #[serde(default)]
    pub error: String,
    /// FINAL called.
    #[serde(default)]
    pub final_called: bool,
    /// Cell timeout expired.
    #[serde(default)]
    pub timed_out: bool,
    /// Session died.
    #[serde(default)]
    pub session_ended: bool,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// CPU time in milliseconds.
    #[serde(default)]
    pub cpu_ms: u64,
}

/// Code issued a sub-call request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubcallStartedRecord {
    /// Request id, unique in the emitting RLM.
    pub subcall_id: u64,
    /// Kind (JSON key `subcall_kind`: `kind` is the line's tag).
    #[serde(rename = "subcall_kind")]
    pub kind: Kind,
    /// Issued through a `_batched` function.
    pub batched: bool,
    /// Iteration.
    pub iteration: u32,
    /// Prompts (each capped).
    pub prompts: Vec<String>,
    /// Model as resolved.
    pub model: String,
    /// rlm_query run as plain calls at max_depth.
    #[serde(default)]
    pub degraded: bool,
    /// Node ids of the child RLMs, index-aligned with `prompts`.
    #[serde(default)]
    pub child_node_ids: Vec<String>,
}

/// Outcome of one sub-call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeRecord {
    /// Answer.
    Text(String),
    /// Error string.
    Error(String),
}

/// A sub-call request finished.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubcallFinishedRecord {
    /// Request id.
    pub subcall_id: u64,
    /// Kind (JSON key `subcall_kind`: `kind` is the line's tag).
    #[serde(rename = "subcall_kind")]
    pub kind: Kind,
    /// Outcomes, index-aligned with the prompts (each capped).
    pub outcomes: Vec<OutcomeRecord>,
    /// Usage of the request, descendants included.
    pub usage: UsageRecord,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// The completion ended (always the last line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinishedRecord {
    /// Answer (capped).
    pub answer: String,
    /// Why it ended.
    #[serde(with = "reason_serde")]
    pub termination_reason: TerminationReason,
    /// Detail for non-FINAL reasons.
    #[serde(default)]
    pub detail: String,
    /// Tree totals.
    pub total_usage: UsageRecord,
    /// Per model, sorted by name.
    #[serde(default)]
    pub model_usage: BTreeMap<String, UsageRecord>,
    /// Root iterations.
    pub iterations: u32,
    /// Tree iterations.
    pub total_iterations: u32,
    /// Deepest depth reached.
    pub depth_reached: u32,
    /// Sub-calls of the tree.
    pub subcalls: u32,
    /// Sub-calls that ran as child RLMs.
    pub child_rlms: u32,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

mod reason_serde {
    use rlm_proto::rlm::v1::TerminationReason;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &TerminationReason, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            r.as_str_name()
                .trim_start_matches("TERMINATION_REASON_")
                .to_ascii_lowercase()
                .as_str(),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TerminationReason, D::Error> {
        let s = String::deserialize(d)?;
        let name = format!("TERMINATION_REASON_{}", s.to_ascii_uppercase());
        Ok(TerminationReason::from_str_name(&name).unwrap_or(TerminationReason::Unspecified))
    }
}

/// What a line records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    /// Header (line 1 only).
    CompletionStarted(TrajectoryHeader),
    /// An RLM starts an iteration.
    IterationStarted {
        /// Iteration number in the RLM, from 1.
        iteration: u32,
        /// Tree usage before this iteration's model call.
        tree_usage: UsageRecord,
    },
    /// A model call returned or failed.
    ModelCall(ModelCallRecord),
    /// A code block ran.
    CodeExecuted(CodeRecord),
    /// A sub-call request started.
    SubcallStarted(SubcallStartedRecord),
    /// A sub-call request finished.
    SubcallFinished(SubcallFinishedRecord),
    /// The completion ended.
    CompletionFinished(FinishedRecord),
}

impl EventBody {
    fn cap(&mut self, max: usize) {
        match self {
            EventBody::CompletionStarted(_) | EventBody::IterationStarted { .. } => {}
            EventBody::ModelCall(m) => {
                cap_text(&mut m.response_text, max);
                cap_text(&mut m.error, max);
            }
            EventBody::CodeExecuted(c) => {
                cap_text(&mut c.code, max);
                if cap_text(&mut c.output, max) {
                    c.output_truncated = true;
                }
                cap_text(&mut c.error, max);
            }
            EventBody::SubcallStarted(s) => {
                for p in &mut s.prompts {
                    cap_text(p, max);
                }
            }
            EventBody::SubcallFinished(f) => {
                for o in &mut f.outcomes {
                    match o {
                        OutcomeRecord::Text(t) | OutcomeRecord::Error(t) => cap_text(t, max),
                    };
                }
            }
            EventBody::CompletionFinished(f) => {
                cap_text(&mut f.answer, max);
            }
        }
    }
}

/// Usage and root iterations of the lines seen so far (what a running
/// trajectory's summary shows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Usage of the model calls recorded.
    pub usage: UsageRecord,
    /// Iterations of the root RLM started.
    pub iterations: u32,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            usage: UsageRecord {
                cost_known: true,
                ..Default::default()
            },
            iterations: 0,
        }
    }
}

impl Progress {
    /// Counts `line` in.
    pub fn observe(&mut self, line: &TrajectoryLine) {
        match &line.body {
            EventBody::ModelCall(m) => {
                self.usage.input_tokens += m.input_tokens;
                self.usage.output_tokens += m.output_tokens;
                self.usage.calls += 1;
                self.usage.cost_usd += m.cost_usd.unwrap_or(0.0);
                self.usage.cost_known &= m.cost_usd.is_some();
            }
            EventBody::IterationStarted { .. } if line.node == "0" => self.iterations += 1,
            _ => {}
        }
    }
}

/// One line of a trajectory file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryLine {
    /// 0 for the header, then the event sequence (1, 2, ...).
    pub seq: u64,
    /// RFC 3339 UTC time.
    pub ts: String,
    /// Node id (`0`, `0.1`, ...).
    pub node: String,
    /// Depth of the node.
    pub depth: u32,
    /// The event.
    #[serde(flatten)]
    pub body: EventBody,
}

type Active = Arc<Mutex<HashSet<String>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the lines go.
#[derive(Clone)]
enum Backend {
    /// One `<id>.jsonl` file per trajectory in this directory.
    Dir(PathBuf),
    /// Objects in a bucket (see [`object`]).
    Object(Arc<ObjectBackend>),
}

/// The trajectory store: a directory (`RLM_LOG_DIR`) or an S3-compatible
/// bucket (`RLM_TRAJECTORY_STORE`). Clones share the record of which
/// trajectories this process is writing.
#[derive(Clone)]
pub struct TrajectoryStore {
    backend: Backend,
    max_text_bytes: usize,
    active: Active,
    on_write_error: Option<WriteErrorHook>,
}

impl std::fmt::Debug for TrajectoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrajectoryStore")
            .field("location", &self.describe())
            .finish_non_exhaustive()
    }
}

/// Where a writer's lines go.
enum Output {
    /// Written through at once (a file, or a sink that discards).
    File(Box<dyn Write + Send>),
    /// Buffered for the upload task of the object backend.
    Object(object::ObjectSink),
}

struct WriterState {
    output: Output,
    next_seq: u64,
    failed: bool,
}

/// Appends the events of one running completion. Shareable across tasks
/// (`Arc<TrajectoryWriter>`): appends are serialised by a mutex, one
/// `write` of a whole line each, so lines never interleave.
pub struct TrajectoryWriter {
    id: String,
    /// The header and its timestamp, once written.
    header: Option<(TrajectoryHeader, String)>,
    max_text_bytes: usize,
    state: Mutex<WriterState>,
    active: Option<Active>,
}

impl std::fmt::Debug for TrajectoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrajectoryWriter")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TrajectoryWriter {
    fn new(id: String, file: File, max_text_bytes: usize, active: Option<Active>) -> Self {
        Self::with_output(id, Output::File(Box::new(file)), max_text_bytes, active)
    }

    fn with_output(
        id: String,
        output: Output,
        max_text_bytes: usize,
        active: Option<Active>,
    ) -> Self {
        Self {
            id,
            header: None,
            max_text_bytes,
            state: Mutex::new(WriterState {
                output,
                next_seq: 0,
                failed: false,
            }),
            active,
        }
    }

    /// A writer that records nothing (its file could not be created) but
    /// still numbers and converts events, so the completion runs unchanged.
    pub fn detached(id: &str, header: TrajectoryHeader) -> Self {
        let mut writer = Self::with_output(
            id.to_owned(),
            Output::File(Box::new(io::sink())),
            usize::MAX,
            None,
        );
        let started = rfc3339(SystemTime::now());
        lock(&writer.state).failed = true;
        lock(&writer.state).next_seq = 1;
        writer.header = Some((header, started));
        writer
    }

    /// The trajectory id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// True once a write failed (later appends are dropped).
    pub fn failed(&self) -> bool {
        lock(&self.state).failed
    }

    /// Appends one event and returns its sequence number. Long texts are
    /// capped. The first write error is returned (with the lost `seq`);
    /// after it the writer is disabled and appends return `Ok(seq)` without
    /// writing, so a broken disk never fails the completion. Sequence
    /// numbers keep counting either way (they match the streamed events).
    pub fn append(&self, node: &str, depth: u32, body: EventBody) -> Result<u64, TrajectoryError> {
        let (line, error) = self.record(node, depth, body);
        error.map_or(Ok(line.seq), Err)
    }

    /// Like [`append`](Self::append), but returns the line as recorded (texts
    /// capped, `seq` and `ts` assigned) together with the write error, if
    /// this append is the one that failed.
    pub fn record(
        &self,
        node: &str,
        depth: u32,
        mut body: EventBody,
    ) -> (TrajectoryLine, Option<TrajectoryError>) {
        body.cap(self.max_text_bytes);
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        st.next_seq += 1;
        let line = TrajectoryLine {
            seq,
            ts: rfc3339(SystemTime::now()),
            node: node.to_owned(),
            depth,
            body,
        };
        if st.failed {
            return (line, None);
        }
        let result = serde_json::to_vec(&line)
            .map_err(io::Error::other)
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                match &mut st.output {
                    Output::File(file) => {
                        file.write_all(&bytes)?;
                        file.flush()
                    }
                    Output::Object(sink) => sink.push(&line, &bytes),
                }
            });
        match result {
            Ok(()) => (line, None),
            Err(source) => {
                st.failed = true;
                // Returned to the caller, who reports it (once per trajectory).
                tracing::debug!(trajectory = %self.id, seq, error = %source, "trajectory write failed; recording disabled");
                (line, Some(TrajectoryError::Write { seq, source }))
            }
        }
    }

    /// The event a recorded line stands for, as StreamComplete and
    /// GetTrajectory present it (`None` for the header).
    pub fn event(&self, line: &TrajectoryLine) -> Option<CompletionEvent> {
        let (header, started) = self.header.as_ref()?;
        let event = to_event(&self.id, header, started, line)?;
        Some(CompletionEvent {
            sequence: line.seq,
            completion_id: header.completion_id.clone(),
            depth: line.depth,
            node_id: line.node.clone(),
            timestamp: parse_rfc3339(&line.ts).map(Into::into),
            event: Some(event),
        })
    }
}

impl TrajectoryWriter {
    /// Marks the trajectory as no longer running (its last event is
    /// written, or lost): readers then see FINISHED or INCOMPLETE. On the
    /// object backend, the upload task then stores what is left and ends.
    pub fn close(&self) {
        if let Some(active) = &self.active {
            lock(active).remove(&self.id);
        }
        if let Output::Object(sink) = &lock(&self.state).output {
            sink.close();
        }
    }

    /// After [`close`](Self::close): waits until the last line is stored
    /// (immediately on the file backend; on the object backend until the
    /// last segment is uploaded, or its bounded wait ends), so every
    /// replica reads the result once the caller has it.
    pub async fn settled(&self) {
        let wait = match &lock(&self.state).output {
            Output::Object(sink) => Some(sink.settled()),
            Output::File(_) => None,
        };
        if let Some(wait) = wait {
            wait.await;
        }
    }
}

impl Drop for TrajectoryWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens `path` for reading without following a symlink: the file opened
/// must be the regular file `lstat` sees (same device and inode).
fn open_nofollow(path: &Path, id: &str) -> Result<File, TrajectoryError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TrajectoryError::NotFound(id.to_owned()));
        }
        Err(e) => return Err(e.into()),
    };
    if !meta.file_type().is_file() {
        return Err(TrajectoryError::NotRegular(id.to_owned()));
    }
    let file = File::open(path)?;
    let opened = file.metadata()?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(TrajectoryError::NotRegular(id.to_owned()));
    }
    Ok(file)
}

fn parse_lines(id: &str, text: &str) -> Result<Vec<TrajectoryLine>, TrajectoryError> {
    let raw: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).collect();
    let mut lines = Vec::with_capacity(raw.len());
    for (i, l) in raw.iter().enumerate() {
        match serde_json::from_str::<TrajectoryLine>(l) {
            Ok(line) => lines.push(line),
            // A crash (or a concurrent writer) can leave the last line cut.
            Err(_) if i + 1 == raw.len() => break,
            Err(e) => {
                return Err(TrajectoryError::Corrupt {
                    id: id.to_owned(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(lines)
}

fn header_of(
    id: &str,
    lines: &[TrajectoryLine],
) -> Result<(TrajectoryHeader, String), TrajectoryError> {
    match lines.first() {
        Some(TrajectoryLine {
            ts,
            body: EventBody::CompletionStarted(h),
            ..
        }) => Ok((h.clone(), ts.clone())),
        _ => Err(TrajectoryError::Corrupt {
            id: id.to_owned(),
            line: 1,
            message: "missing completion_started header".to_owned(),
        }),
    }
}

fn model_usage(map: &BTreeMap<String, UsageRecord>) -> Vec<ModelUsage> {
    map.iter()
        .map(|(m, u)| ModelUsage {
            model: m.clone(),
            usage: Some(u.into()),
        })
        .collect()
}

fn result_of(
    id: &str,
    header: &TrajectoryHeader,
    started: &str,
    f: &FinishedRecord,
) -> CompletionResult {
    CompletionResult {
        completion_id: header.completion_id.clone(),
        trajectory_id: id.to_owned(),
        answer: f.answer.clone(),
        termination_reason: f.termination_reason as i32,
        partial: f.termination_reason != TerminationReason::Final,
        detail: f.detail.clone(),
        total_usage: Some((&f.total_usage).into()),
        model_usage: model_usage(&f.model_usage),
        iterations: f.iterations,
        total_iterations: f.total_iterations,
        depth_reached: f.depth_reached,
        subcalls: f.subcalls,
        child_rlms: f.child_rlms,
        started_at: parse_rfc3339(started).map(Into::into),
        duration: ms(f.duration_ms),
    }
}

fn call_usage(m: &ModelCallRecord) -> Usage {
    Usage {
        input_tokens: m.input_tokens,
        output_tokens: m.output_tokens,
        calls: 1,
        cost_usd: m.cost_usd.unwrap_or(0.0),
        cost_known: m.cost_usd.is_some(),
    }
}

fn to_event(
    id: &str,
    header: &TrajectoryHeader,
    started: &str,
    line: &TrajectoryLine,
) -> Option<Event> {
    Some(match &line.body {
        EventBody::CompletionStarted(_) => return None,
        EventBody::IterationStarted {
            iteration,
            tree_usage,
        } => Event::IterationStarted(IterationStartedEvent {
            iteration: *iteration,
            tree_usage: Some(tree_usage.into()),
        }),
        EventBody::ModelCall(m) => Event::ModelCallFinished(ModelCallFinishedEvent {
            model: m.model.clone(),
            purpose: match m.purpose {
                Purpose::Iteration => ModelCallPurpose::Iteration as i32,
                Purpose::LlmQuery => ModelCallPurpose::LlmQuery as i32,
            },
            iteration: m.iteration,
            subcall_id: m.subcall_id,
            item_index: m.item_index,
            usage: Some(call_usage(m)),
            latency: ms(m.latency_ms),
            response_text: m.response_text.clone(),
            error: m.error.clone(),
        }),
        EventBody::CodeExecuted(c) => Event::CodeExecuted(CodeExecutedEvent {
            iteration: c.iteration,
            block_index: c.block_index,
            code: c.code.clone(),
            output: c.output.clone(),
            output_truncated: c.output_truncated,
            error: c.error.clone(),
            final_called: c.final_called,
            timed_out: c.timed_out,
            session_ended: c.session_ended,
            duration: ms(c.duration_ms),
            cpu_ms: c.cpu_ms,
        }),
        EventBody::SubcallStarted(s) => Event::SubcallStarted(SubcallStartedEvent {
            subcall_id: s.subcall_id,
            kind: s.kind.proto(),
            batched: s.batched,
            iteration: s.iteration,
            prompts: s.prompts.clone(),
            model: s.model.clone(),
            degraded: s.degraded,
            child_node_ids: s.child_node_ids.clone(),
        }),
        EventBody::SubcallFinished(f) => Event::SubcallFinished(SubcallFinishedEvent {
            subcall_id: f.subcall_id,
            kind: f.kind.proto(),
            error_count: f
                .outcomes
                .iter()
                .filter(|o| matches!(o, OutcomeRecord::Error(_)))
                .count()
                .try_into()
                .unwrap_or(u32::MAX),
            outcomes: f
                .outcomes
                .iter()
                .map(|o| SubcallOutcome {
                    outcome: Some(match o {
                        OutcomeRecord::Text(t) => Outcome::Text(t.clone()),
                        OutcomeRecord::Error(e) => Outcome::Error(e.clone()),
                    }),
                })
                .collect(),
            usage: Some((&f.usage).into()),
            duration: ms(f.duration_ms),
        }),
        EventBody::CompletionFinished(f) => Event::Result(result_of(id, header, started, f)),
    })
}

fn spec_of(header: &TrajectoryHeader) -> CompletionSpec {
    let l = &header.limits;
    CompletionSpec {
        // Only the preview is recorded, never the full prompt.
        prompt: header.prompt_preview.clone(),
        contexts: header
            .context_ids
            .iter()
            .zip(0u32..)
            .map(|(c, i)| ContextInput {
                source: Some(Source::ContextId(c.clone())),
                format: if header.json_contexts.contains(&i) {
                    ContextFormat::Json as i32
                } else {
                    ContextFormat::Text as i32
                },
            })
            .collect(),
        root_model: header.root_model.clone(),
        sub_model: header.sub_model.clone(),
        limits: Some(CompletionLimits {
            max_depth: l.max_depth,
            max_iterations: l.max_iterations,
            token_budget: l.token_budget,
            cost_budget_usd: l.cost_budget_usd,
            max_parallel: l.max_parallel,
            max_subcalls: l.max_subcalls,
            timeout: ms(l.timeout_ms),
            cell_timeout: ms(l.cell_timeout_ms),
        }),
        sandbox: None,
        metadata: header.metadata.clone().into_iter().collect(),
    }
}

/// A summary; `usage_so_far` and `iterations_so_far` count when there is
/// no result yet.
fn summary(
    id: &str,
    header: &TrajectoryHeader,
    started_at: Option<SystemTime>,
    result: Option<&CompletionResult>,
    usage_so_far: Usage,
    iterations_so_far: u32,
    status: TrajectoryStatus,
) -> TrajectorySummary {
    let elapsed = started_at
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .unwrap_or_default();
    TrajectorySummary {
        trajectory_id: id.to_owned(),
        completion_id: header.completion_id.clone(),
        prompt_preview: header.prompt_preview.clone(),
        status: status as i32,
        termination_reason: result.map_or(0, |r| r.termination_reason),
        started_at: started_at.map(Into::into),
        duration: match result {
            Some(r) => r.duration,
            None => elapsed.try_into().ok(),
        },
        total_usage: Some(match result {
            Some(r) => r.total_usage.unwrap_or_default(),
            None => usage_so_far,
        }),
        iterations: result.map_or(iterations_so_far, |r| r.iterations),
        root_model: header.root_model.clone(),
        metadata: header.metadata.clone().into_iter().collect(),
    }
}

impl TrajectoryStore {
    /// A store rooted at `dir` (created if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, TrajectoryError> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Self::with_backend(Backend::Dir(dir)))
    }

    /// A store in a bucket or in-memory object store.
    pub fn with_objects(backend: ObjectBackend) -> Self {
        Self::with_backend(Backend::Object(Arc::new(backend)))
    }

    /// The store at `location` (an S3 bucket is configured from the
    /// standard AWS environment).
    pub fn open_location(location: &StoreLocation) -> Result<Self, TrajectoryError> {
        match location {
            StoreLocation::Dir(dir) => Self::open(dir.clone()),
            StoreLocation::S3 { bucket, prefix } => {
                Ok(Self::with_objects(ObjectBackend::s3(bucket, prefix)?))
            }
        }
    }

    fn with_backend(backend: Backend) -> Self {
        Self {
            backend,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            active: Arc::default(),
            on_write_error: None,
        }
    }

    /// Calls `hook` once for each trajectory whose background upload fails
    /// (the object backend); file write errors come back from the appends.
    pub fn on_write_error(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_write_error = Some(Arc::new(hook));
        self
    }

    /// Sets the per-text cap applied to appended events.
    pub fn with_max_text_bytes(mut self, max: usize) -> Self {
        self.max_text_bytes = max.max(1);
        self
    }

    /// Where it stores, for messages.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Dir(dir) => dir.display().to_string(),
            Backend::Object(objects) => objects.describe(),
        }
    }

    fn path(&self, id: &str) -> Result<PathBuf, TrajectoryError> {
        if !valid_id(id) {
            return Err(TrajectoryError::InvalidId(id.to_owned()));
        }
        match &self.backend {
            Backend::Dir(dir) => Ok(dir.join(format!("{id}.jsonl"))),
            Backend::Object(_) => Err(TrajectoryError::Io(io::Error::other(
                "no file path: the store is an object store",
            ))),
        }
    }

    /// Starts the trajectory `id` with its header line (`seq` 0). A
    /// directory gets `<dir>/<id>.jsonl`, created exclusively (an existing
    /// file or symlink at that path is refused); an object store gets the
    /// header buffered for the writer's upload task (ids are fresh UUIDs,
    /// so no existence check is made: that would cost a request here).
    pub fn create(
        &self,
        id: &str,
        header: TrajectoryHeader,
    ) -> Result<TrajectoryWriter, TrajectoryError> {
        match &self.backend {
            Backend::Dir(_) => self.create_file(id, header),
            Backend::Object(objects) => self.create_object(objects, id, header),
        }
    }

    fn create_object(
        &self,
        objects: &Arc<ObjectBackend>,
        id: &str,
        header: TrajectoryHeader,
    ) -> Result<TrajectoryWriter, TrajectoryError> {
        if !valid_id(id) {
            return Err(TrajectoryError::InvalidId(id.to_owned()));
        }
        let line = TrajectoryLine {
            seq: 0,
            ts: rfc3339(SystemTime::now()),
            node: "0".to_owned(),
            depth: 0,
            body: EventBody::CompletionStarted(header.clone()),
        };
        let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
        bytes.push(b'\n');
        let sink = objects.start_writer(id, &header, &line.ts, bytes, self.on_write_error.clone());
        lock(&self.active).insert(id.to_owned());
        let mut writer = TrajectoryWriter::with_output(
            id.to_owned(),
            Output::Object(sink),
            self.max_text_bytes,
            Some(Arc::clone(&self.active)),
        );
        lock(&writer.state).next_seq = 1;
        writer.header = Some((header, line.ts));
        Ok(writer)
    }

    fn create_file(
        &self,
        id: &str,
        header: TrajectoryHeader,
    ) -> Result<TrajectoryWriter, TrajectoryError> {
        let path = self.path(id)?;
        // create_new = O_CREAT|O_EXCL, which never follows a symlink.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => TrajectoryError::AlreadyExists(id.to_owned()),
                _ => TrajectoryError::Io(e),
            })?;
        lock(&self.active).insert(id.to_owned());
        let mut writer = TrajectoryWriter::new(
            id.to_owned(),
            file,
            self.max_text_bytes,
            Some(Arc::clone(&self.active)),
        );
        let (line, error) = writer.record("0", 0, EventBody::CompletionStarted(header.clone()));
        if let Some(error) = error {
            // No header, no trajectory: an empty or torn file would read as
            // corrupt instead of missing.
            drop(writer);
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        writer.header = Some((header, line.ts));
        Ok(writer)
    }

    /// `live`: another replica's writer is known to be running it (a
    /// fresh heartbeat in the object store).
    fn status(&self, id: &str, finished: bool, live: bool) -> TrajectoryStatus {
        if finished {
            TrajectoryStatus::Finished
        } else if live || lock(&self.active).contains(id) {
            TrajectoryStatus::Running
        } else {
            TrajectoryStatus::Incomplete
        }
    }

    fn build(
        &self,
        id: &str,
        lines: &[TrajectoryLine],
        live: bool,
    ) -> Result<Trajectory, TrajectoryError> {
        let (header, started) = header_of(id, lines)?;
        let completion_id = header.completion_id.clone();
        let mut events = Vec::with_capacity(lines.len());
        let mut result = None;
        let mut progress = Progress::default();
        for line in lines.iter().skip(1) {
            progress.observe(line);
            let Some(event) = to_event(id, &header, &started, line) else {
                continue;
            };
            if let Event::Result(r) = &event {
                result = Some(r.clone());
            }
            events.push(CompletionEvent {
                sequence: line.seq,
                completion_id: completion_id.clone(),
                depth: line.depth,
                node_id: line.node.clone(),
                timestamp: parse_rfc3339(&line.ts).map(Into::into),
                event: Some(event),
            });
        }
        let started_at = parse_rfc3339(&started);
        let status = self.status(id, result.is_some(), live);
        let summary = match &result {
            Some(r) => summary(
                id,
                &header,
                started_at,
                Some(r),
                Usage::default(),
                0,
                status,
            ),
            None => summary(
                id,
                &header,
                started_at,
                None,
                (&progress.usage).into(),
                progress.iterations,
                status,
            ),
        };
        Ok(Trajectory {
            summary: Some(summary),
            spec: Some(spec_of(&header)),
            events,
            result,
        })
    }

    /// The summary of an object-store trajectory, from its summary object.
    fn summary_of_stored(&self, id: &str, stored: object::StoredSummary) -> TrajectorySummary {
        let r = &stored.record;
        let result = r
            .finished
            .as_ref()
            .map(|f| result_of(id, &r.header, &r.started, f));
        summary(
            id,
            &r.header,
            parse_rfc3339(&r.started),
            result.as_ref(),
            (&r.progress.usage).into(),
            r.progress.iterations,
            self.status(id, result.is_some(), stored.live),
        )
    }

    /// Reads a trajectory (also while it is being written, on this or, with
    /// an object store, another replica). A cut last line is ignored.
    pub async fn read(&self, id: &str) -> Result<Trajectory, TrajectoryError> {
        match &self.backend {
            Backend::Dir(_) => {
                let (store, id) = (self.clone(), id.to_owned());
                blocking(move || store.read_file(&id)).await
            }
            Backend::Object(objects) => {
                let (lines, live) = self.load_object(objects, id).await?;
                self.build(id, &lines, live)
            }
        }
    }

    /// The recorded lines of a trajectory as written (header first; a cut
    /// last line is ignored) and its status. Same id checks and symlink
    /// guard as [`read`](Self::read). Used by the HTTP trajectory viewer.
    pub async fn read_lines(
        &self,
        id: &str,
    ) -> Result<(Vec<TrajectoryLine>, TrajectoryStatus), TrajectoryError> {
        let (lines, live) = match &self.backend {
            Backend::Dir(_) => {
                let (store, id) = (self.clone(), id.to_owned());
                blocking(move || store.lines_file(&id)).await?
            }
            Backend::Object(objects) => self.load_object(objects, id).await?,
        };
        header_of(id, &lines)?;
        let finished = lines
            .iter()
            .any(|l| matches!(l.body, EventBody::CompletionFinished(_)));
        let status = self.status(id, finished, live);
        Ok((lines, status))
    }

    /// The lines of an object-store trajectory, and whether a replica is
    /// still writing it.
    async fn load_object(
        &self,
        objects: &ObjectBackend,
        id: &str,
    ) -> Result<(Vec<TrajectoryLine>, bool), TrajectoryError> {
        if !valid_id(id) {
            return Err(TrajectoryError::InvalidId(id.to_owned()));
        }
        let loaded = objects.load(id).await?;
        Ok((parse_lines(id, &loaded.text)?, loaded.summary.live))
    }

    fn lines_file(&self, id: &str) -> Result<(Vec<TrajectoryLine>, bool), TrajectoryError> {
        let path = self.path(id)?;
        let mut bytes = Vec::new();
        open_nofollow(&path, id)?.read_to_end(&mut bytes)?;
        Ok((parse_lines(id, &String::from_utf8_lossy(&bytes))?, false))
    }

    fn read_file(&self, id: &str) -> Result<Trajectory, TrajectoryError> {
        let (lines, live) = self.lines_file(id)?;
        self.build(id, &lines, live)
    }

    /// Lists summaries, newest first: by modification time in a directory,
    /// by start time in an object store (whose index keeps that order, so a
    /// page costs one LIST and a summary read per entry). `page_token` is
    /// empty for the first page, else the token returned by the previous
    /// call; the returned token is empty on the last page. Unreadable or
    /// corrupt entries are skipped.
    pub async fn list(
        &self,
        page_size: usize,
        page_token: &str,
    ) -> Result<(Vec<TrajectorySummary>, String), TrajectoryError> {
        self.list_matching(page_size, page_token, |_| true).await
    }

    /// [`list`](Self::list) keeping only the summaries `keep` accepts.
    pub async fn list_matching(
        &self,
        page_size: usize,
        page_token: &str,
        keep: impl Fn(&TrajectorySummary) -> bool + Send + 'static,
    ) -> Result<(Vec<TrajectorySummary>, String), TrajectoryError> {
        let page_size = page_size.clamp(1, 1000);
        match &self.backend {
            Backend::Dir(_) => {
                let (store, token) = (self.clone(), page_token.to_owned());
                blocking(move || store.list_file(page_size, &token, keep)).await
            }
            Backend::Object(objects) => {
                let after = match page_token {
                    "" => None,
                    t if object::index_id(t).is_some() => Some(t),
                    _ => return Err(TrajectoryError::InvalidPageToken),
                };
                let (page, next) = objects
                    .list(after, page_size, |id, stored| {
                        let s = self.summary_of_stored(id, stored);
                        keep(&s).then_some(s)
                    })
                    .await?;
                Ok((page, next.unwrap_or_default()))
            }
        }
    }

    /// The `/health` storage check: the directory exists (or can be
    /// created) and accepts a write; the bucket accepts a put and a delete.
    pub async fn check_writable(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Dir(dir) => {
                let probe = dir.join(format!(".health-{}", std::process::id()));
                let result = async {
                    tokio::fs::create_dir_all(dir).await?;
                    tokio::fs::write(&probe, b"ok").await?;
                    tokio::fs::remove_file(&probe).await
                }
                .await;
                result.map_err(|err| format!("{}: {err}", dir.display()))
            }
            Backend::Object(objects) => objects
                .check_writable()
                .await
                .map_err(|err| format!("{}: {err}", objects.describe())),
        }
    }

    /// At shutdown: waits up to `deadline` for background uploads to end
    /// (false when some did not). Nothing to wait for in a directory.
    pub async fn drain(&self, deadline: Duration) -> bool {
        match &self.backend {
            Backend::Dir(_) => true,
            Backend::Object(objects) => objects.drain(deadline).await,
        }
    }

    /// Summary of one trajectory: from the first and last lines when the
    /// last line is the result, else from a full read (running/incomplete).
    fn summarize_file(&self, id: &str) -> Result<TrajectorySummary, TrajectoryError> {
        let path = self.path(id)?;
        let mut file = open_nofollow(&path, id)?;
        let len = file.metadata()?.len();
        if len > TAIL_BYTES {
            let mut head = Vec::new();
            (&mut file).take(TAIL_BYTES).read_to_end(&mut head)?;
            let first = String::from_utf8_lossy(&head);
            let first = first.split('\n').next().unwrap_or_default();
            file.seek(SeekFrom::Start(len - TAIL_BYTES))?;
            let mut tail = Vec::new();
            file.read_to_end(&mut tail)?;
            let tail = String::from_utf8_lossy(&tail);
            let last = tail
                .trim_end_matches('\n')
                .rsplit('\n')
                .next()
                .unwrap_or_default();
            let h = serde_json::from_str::<TrajectoryLine>(first);
            let l = serde_json::from_str::<TrajectoryLine>(last);
            if let (
                Ok(TrajectoryLine {
                    ts,
                    body: EventBody::CompletionStarted(header),
                    ..
                }),
                Ok(TrajectoryLine {
                    body: EventBody::CompletionFinished(f),
                    ..
                }),
            ) = (h, l)
            {
                let r = result_of(id, &header, &ts, &f);
                let started = parse_rfc3339(&ts);
                let status = self.status(id, true, false);
                return Ok(summary(
                    id,
                    &header,
                    started,
                    Some(&r),
                    Usage::default(),
                    0,
                    status,
                ));
            }
        }
        let t = self.read_file(id)?;
        Ok(t.summary.unwrap_or_default())
    }

    /// [`list_matching`](Self::list_matching) in a directory: most recently
    /// modified first.
    fn list_file(
        &self,
        page_size: usize,
        page_token: &str,
        keep: impl Fn(&TrajectorySummary) -> bool,
    ) -> Result<(Vec<TrajectorySummary>, String), TrajectoryError> {
        let Backend::Dir(dir) = &self.backend else {
            return Err(TrajectoryError::Io(io::Error::other(
                "not a directory store",
            )));
        };
        let cursor = if page_token.is_empty() {
            None
        } else {
            let (nanos, id) = page_token
                .split_once('.')
                .ok_or(TrajectoryError::InvalidPageToken)?;
            let nanos: u128 = nanos
                .parse()
                .map_err(|_| TrajectoryError::InvalidPageToken)?;
            if !valid_id(id) {
                return Err(TrajectoryError::InvalidPageToken);
            }
            Some((nanos, id.to_owned()))
        };
        let mut entries: Vec<(u128, String)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".jsonl")) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !valid_id(id) || !meta.file_type().is_file() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            entries.push((mtime, id.to_owned()));
        }
        // Newest first; ties by id for a total order the cursor can resume.
        entries.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let start = match &cursor {
            None => 0,
            Some((nanos, id)) => {
                entries.partition_point(|(m, i)| m > nanos || (m == nanos && i <= id))
            }
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut idx = start;
        while idx < entries.len() && out.len() < page_size {
            let (mtime, id) = &entries[idx];
            match self.summarize_file(id) {
                Ok(s) if keep(&s) => out.push(s),
                Ok(_) => {}
                Err(e) => tracing::debug!(trajectory = %id, error = %e, "skipping trajectory"),
            }
            last = Some(format!("{mtime}.{id}"));
            idx += 1;
        }
        let next = if idx < entries.len() {
            last.unwrap_or_default()
        } else {
            String::new()
        };
        Ok((out, next))
    }
}

/// Runs file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TrajectoryError> + Send + 'static,
) -> Result<T, TrajectoryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TrajectoryError::Io(io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn header(cid: &str) -> TrajectoryHeader {
        TrajectoryHeader {
            completion_id: cid.to_owned(),
            prompt_preview: prompt_preview(&"p".repeat(500)),
            root_model: "scripted:x".to_owned(),
            limits: LimitsRecord {
                max_iterations: 30,
                timeout_ms: 600_000,
                ..Default::default()
            },
            metadata: BTreeMap::from([("team".to_owned(), "a".to_owned())]),
            ..Default::default()
        }
    }

    pub(super) fn call(model: &str, cost: Option<f64>) -> EventBody {
        EventBody::ModelCall(ModelCallRecord {
            model: model.to_owned(),
            iteration: 1,
            input_tokens: 10,
            output_tokens: 5,
            cost_usd: cost,
            latency_ms: 7,
            response_text: "ok".to_owned(),
            ..Default::default()
        })
    }

    pub(super) fn finished() -> EventBody {
        EventBody::CompletionFinished(FinishedRecord {
            answer: "42".to_owned(),
            termination_reason: TerminationReason::Final,
            total_usage: UsageRecord {
                input_tokens: 30,
                output_tokens: 15,
                calls: 3,
                cost_usd: 0.3,
                cost_known: true,
            },
            iterations: 1,
            total_iterations: 3,
            depth_reached: 1,
            subcalls: 2,
            child_rlms: 2,
            duration_ms: 1500,
            ..Default::default()
        })
    }

    pub(super) fn write_tree(store: &TrajectoryStore, id: &str) {
        let w = store.create(id, header(id)).expect("create");
        let it = EventBody::IterationStarted {
            iteration: 1,
            tree_usage: UsageRecord::default(),
        };
        w.append("0", 0, it.clone()).expect("append");
        w.append("0", 0, call("m", Some(0.1))).expect("append");
        w.append(
            "0",
            0,
            EventBody::SubcallStarted(SubcallStartedRecord {
                subcall_id: 1,
                kind: Kind::RlmQuery,
                batched: true,
                iteration: 1,
                prompts: vec!["a".to_owned(), "b".to_owned()],
                model: "m".to_owned(),
                child_node_ids: vec!["0.0".to_owned(), "0.1".to_owned()],
                ..Default::default()
            }),
        )
        .expect("append");
        for child in ["0.0", "0.1"] {
            w.append(child, 1, it.clone()).expect("append");
            w.append(child, 1, call("m", Some(0.1))).expect("append");
        }
        w.append(
            "0",
            0,
            EventBody::SubcallFinished(SubcallFinishedRecord {
                subcall_id: 1,
                kind: Kind::RlmQuery,
                outcomes: vec![
                    OutcomeRecord::Text("x".to_owned()),
                    OutcomeRecord::Error("boom".to_owned()),
                ],
                ..Default::default()
            }),
        )
        .expect("append");
        w.append(
            "0",
            0,
            EventBody::CodeExecuted(CodeRecord {
                iteration: 1,
                code: "FINAL(42)".to_owned(),
                final_called: true,
                duration_ms: 3,
                ..Default::default()
            }),
        )
        .expect("append");
        w.append("0", 0, finished()).expect("append");
    }

    #[tokio::test]
    async fn tree_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        write_tree(&store, "t1");
        let t = store.read("t1").await.expect("read");
        assert_eq!(t.events.len(), 10);
        let seqs: Vec<u64> = t.events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        let nodes: Vec<(&str, u32)> = t
            .events
            .iter()
            .map(|e| (e.node_id.as_str(), e.depth))
            .collect();
        assert_eq!(nodes[3], ("0.0", 1));
        assert_eq!(nodes[5], ("0.1", 1));
        assert_eq!(nodes[9], ("0", 0));
        assert!(
            t.events
                .iter()
                .all(|e| e.completion_id == "t1" && e.timestamp.is_some())
        );
        match &t.events[7].event {
            Some(Event::SubcallFinished(f)) => assert_eq!(f.error_count, 1),
            other => panic!("unexpected {other:?}"),
        }
        let r = t.result.expect("result");
        assert_eq!(r.answer, "42");
        assert_eq!(r.termination_reason, TerminationReason::Final as i32);
        assert!(!r.partial);
        let s = t.summary.expect("summary");
        assert_eq!(s.status, TrajectoryStatus::Finished as i32);
        assert_eq!(s.prompt_preview.chars().count(), 200);
        assert_eq!(s.metadata.get("team").map(String::as_str), Some("a"));
        let spec = t.spec.expect("spec");
        assert_eq!(
            spec.limits.and_then(|l| l.timeout).map(|d| d.seconds),
            Some(600)
        );
        // Each raw line is one standalone JSON object with the common keys.
        let text = fs::read_to_string(dir.path().join("t1.jsonl")).expect("read");
        for (i, l) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            assert_eq!(v["seq"], i as u64);
            assert!(v["ts"].as_str().is_some_and(|s| s.ends_with('Z')));
            assert!(v["kind"].is_string() && v["node"].is_string());
        }
        assert!(text.contains("\"termination_reason\":\"final\""));
    }

    #[tokio::test]
    async fn running_incomplete_and_truncated_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        let w = store.create("run", header("run")).expect("create");
        w.append(
            "0",
            0,
            EventBody::IterationStarted {
                iteration: 1,
                tree_usage: UsageRecord::default(),
            },
        )
        .expect("append");
        w.append("0", 0, call("m", None)).expect("append");
        let t = store.read("run").await.expect("read");
        let s = t.summary.expect("summary");
        assert_eq!(s.status, TrajectoryStatus::Running as i32);
        assert_eq!(s.iterations, 1);
        let u = s.total_usage.expect("usage");
        assert_eq!((u.input_tokens, u.calls, u.cost_known), (10, 1, false));
        drop(w);
        // Simulate a crash mid-line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("run.jsonl"))
            .expect("open");
        f.write_all(b"{\"seq\":3,\"ts\":\"20").expect("write");
        let t = store.read("run").await.expect("read");
        assert_eq!(t.events.len(), 2);
        assert!(t.result.is_none());
        assert_eq!(
            t.summary.map(|s| s.status),
            Some(TrajectoryStatus::Incomplete as i32)
        );
    }

    #[tokio::test]
    async fn invalid_ids_and_existing_files_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        for id in ["", "../x", "a/b", "a.b", "é", &"a".repeat(65)] {
            assert!(matches!(
                store.create(id, header(id)),
                Err(TrajectoryError::InvalidId(_))
            ));
            assert!(matches!(
                store.read(id).await,
                Err(TrajectoryError::InvalidId(_))
            ));
        }
        assert!(valid_id(&"a".repeat(64)) && valid_id("A-z_09"));
        let _w = store.create("dup", header("dup")).expect("create");
        assert!(matches!(
            store.create("dup", header("dup")),
            Err(TrajectoryError::AlreadyExists(_))
        ));
        // A planted symlink is neither followed on create nor on read.
        let target = dir.path().join("target");
        fs::write(&target, b"secret").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("link.jsonl")).expect("symlink");
        assert!(store.create("link", header("link")).is_err());
        assert_eq!(fs::read(&target).expect("read"), b"secret");
        assert!(matches!(
            store.read("link").await,
            Err(TrajectoryError::NotRegular(_))
        ));
        assert!(matches!(
            store.read("missing").await,
            Err(TrajectoryError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn list_pages_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        for i in 0..5 {
            write_tree(&store, &format!("t{i}"));
            // Distinct modification times.
            let f = File::options()
                .append(true)
                .open(dir.path().join(format!("t{i}.jsonl")))
                .expect("open");
            f.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000 + i))
                .expect("set mtime");
        }
        fs::write(dir.path().join("not-a-trajectory.txt"), b"x").expect("write");
        let mut ids = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let (page, next) = store.list(2, &token).await.expect("list");
            pages += 1;
            assert!(page.len() <= 2);
            ids.extend(page.iter().map(|s| s.trajectory_id.clone()));
            for s in &page {
                assert_eq!(s.status, TrajectoryStatus::Finished as i32);
                assert_eq!(s.iterations, 1);
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(pages, 3);
        assert_eq!(ids, ["t4", "t3", "t2", "t1", "t0"]);
        assert!(matches!(
            store.list(2, "garbage").await,
            Err(TrajectoryError::InvalidPageToken)
        ));
    }

    #[test]
    fn large_file_summary_from_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path())
            .expect("store")
            .with_max_text_bytes(4 * 1024 * 1024);
        let w = store.create("big", header("big")).expect("create");
        let mut big = call("m", Some(0.1));
        if let EventBody::ModelCall(m) = &mut big {
            m.response_text = "x".repeat(2 * 1024 * 1024);
        }
        w.append("0", 0, big).expect("append");
        w.append("0", 0, finished()).expect("append");
        let s = store.summarize_file("big").expect("summary");
        assert_eq!(s.status, TrajectoryStatus::Finished as i32);
        assert_eq!(s.total_usage.map(|u| u.calls), Some(3));
    }

    #[test]
    fn texts_are_capped() {
        let mut s = "é".repeat(10);
        assert!(cap_text(&mut s, 5));
        assert!(s.starts_with("éé\n…[truncated 16 bytes]"));
        let mut body = EventBody::CodeExecuted(CodeRecord {
            output: "y".repeat(100),
            ..Default::default()
        });
        body.cap(10);
        match body {
            EventBody::CodeExecuted(c) => assert!(c.output_truncated),
            _ => panic!("kind changed"),
        }
    }

    #[test]
    fn disk_full_is_reported_once() {
        let file = OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let w = TrajectoryWriter::new("full".to_owned(), file, 1024, None);
        let first = w.append("0", 0, call("m", None));
        assert!(matches!(first, Err(TrajectoryError::Write { seq: 0, .. })));
        assert!(w.failed());
        assert_eq!(w.append("0", 0, call("m", None)).expect("no-op"), 1);
        assert_eq!(w.append("0", 0, call("m", None)).expect("no-op"), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_stay_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrajectoryStore::open(dir.path()).expect("store");
        let w = Arc::new(store.create("conc", header("conc")).expect("create"));
        let mut tasks = Vec::new();
        for t in 0..32u32 {
            let w = Arc::clone(&w);
            tasks.push(tokio::spawn(async move {
                for i in 0..20u32 {
                    let body = EventBody::CodeExecuted(CodeRecord {
                        iteration: i,
                        block_index: t,
                        code: format!("print({t})\n").repeat(200),
                        output: "z".repeat(5000),
                        ..Default::default()
                    });
                    w.append(&format!("0.{t}"), 1, body).expect("append");
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let text = fs::read_to_string(dir.path().join("conc.jsonl")).expect("read");
        let mut seqs: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<TrajectoryLine>(l)
                    .expect("valid line")
                    .seq
            })
            .collect();
        assert_eq!(seqs.len(), 1 + 32 * 20);
        seqs.sort_unstable();
        assert_eq!(seqs, (0..=640).collect::<Vec<_>>());
        let t = store.read("conc").await.expect("read");
        assert_eq!(t.events.len(), 640);
    }
}
