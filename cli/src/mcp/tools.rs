//! The MCP tools: each one gRPC call (or two) to the orchestrator. Failures
//! are tool results with `isError` and a message saying what went wrong
//! (rmcp reports arguments that do not fit a schema the same way).

use std::time::Duration;

use rlm_proto::rlm::v1::context_input::Source;
use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::session_service_client::SessionServiceClient;
use rlm_proto::rlm::v1::{
    CompleteRequest, CompletionLimits, CompletionResult, CompletionSpec, ContextFormat,
    ContextInput, CreateSessionRequest, DestroySessionRequest, ExecuteRequest, ExecuteResponse,
    GetTrajectoryRequest, ListSessionsRequest, Session,
};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{Json, ServerHandler, tool, tool_handler, tool_router};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::params::*;
use crate::connect::BearerAuth;
use crate::exit::code_name;
use crate::logs::tree;
use crate::run::contexts::INLINE_MAX;
use crate::run::upload;
use crate::{format, json, names};

type Authed = InterceptedService<Channel, BearerAuth>;

/// Largest trajectory text returned (MCP clients hold results in memory).
const MAX_TRAJECTORY_TEXT: usize = 4 << 20;

#[derive(Clone)]
pub struct RlmTools {
    addr: String,
    rlm: RlmServiceClient<Authed>,
    sessions: SessionServiceClient<Authed>,
    tool_router: ToolRouter<Self>,
}

fn secs(d: Option<&prost_types::Duration>) -> f64 {
    format::secs(d)
}

fn proto_duration(field: &str, seconds: f64) -> Result<prost_types::Duration, String> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{field}: must be a positive number of seconds"));
    }
    prost_types::Duration::try_from(Duration::from_secs_f64(seconds.min(1e9)))
        .map_err(|e| format!("{field}: {e}"))
}

fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map(format::rfc3339).unwrap_or_default()
}

fn session_out(s: &Session) -> SessionOut {
    SessionOut {
        session_id: s.session_id.clone(),
        created_at: rfc3339(s.created_at.as_ref()),
        last_used_at: rfc3339(s.last_used_at.as_ref()),
        idle_ttl_seconds: secs(s.idle_ttl.as_ref()),
        executions: s.executions,
        executing: s.executing,
    }
}

fn complete_out(r: CompletionResult) -> CompleteOutput {
    let usage = r.total_usage.unwrap_or_default();
    CompleteOutput {
        termination_reason: names::reason(r.termination_reason),
        answer: r.answer,
        partial: r.partial,
        detail: r.detail,
        completion_id: r.completion_id,
        trajectory_id: r.trajectory_id,
        usage: UsageOut {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            calls: usage.calls,
            cost_usd: usage.cost_usd,
            cost_known: usage.cost_known,
        },
        iterations: r.iterations,
        duration_seconds: secs(r.duration.as_ref()),
    }
}

fn execute_out(session_id: String, created_session: bool, r: ExecuteResponse) -> ExecuteOutput {
    ExecuteOutput {
        session_id,
        created_session,
        stdout: r.stdout,
        stderr: r.stderr,
        result: r.result,
        error: r.error.map(|e| PythonError {
            exception_type: e.exception_type,
            message: e.message,
            traceback: e.traceback,
        }),
        timed_out: r.timed_out,
        session_ended: r.session_ended,
        end_detail: r.end_detail,
        truncated: r.truncated,
        duration_seconds: secs(r.duration.as_ref()),
    }
}

fn limits(p: &CompleteParams) -> Result<CompletionLimits, String> {
    Ok(CompletionLimits {
        max_depth: p.max_depth,
        max_iterations: p.max_iterations.unwrap_or(0),
        token_budget: p.token_budget.unwrap_or(0),
        cost_budget_usd: match p.cost_budget_usd {
            Some(usd) if !(usd.is_finite() && usd > 0.0) => {
                return Err("cost_budget_usd: must be a positive number".to_owned());
            }
            Some(usd) => usd,
            None => 0.0,
        },
        timeout: p
            .timeout_seconds
            .map(|s| proto_duration("timeout_seconds", s))
            .transpose()?,
        ..Default::default()
    })
}

impl RlmTools {
    pub fn new(addr: &str, channel: Channel, auth: BearerAuth) -> Self {
        Self {
            addr: addr.to_owned(),
            rlm: RlmServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(16 << 20),
            sessions: SessionServiceClient::with_interceptor(channel, auth)
                .max_decoding_message_size(64 << 20),
            tool_router: Self::tool_router(),
        }
    }

    /// A failed RPC as a tool error text.
    fn rpc_error(&self, call: &str, status: &tonic::Status) -> String {
        let mut text = format!(
            "{call} failed: {}: {}",
            code_name(status.code()),
            status.message()
        );
        match status.code() {
            tonic::Code::Unavailable => text.push_str(&format!(
                " (is the orchestrator running at {}? `rlm doctor` checks it)",
                self.addr
            )),
            tonic::Code::Unauthenticated => text.push_str(
                " (set RLM_API_KEY for `rlm mcp-serve` to a key the orchestrator accepts)",
            ),
            _ => {}
        }
        text
    }

    async fn context_input(&self, p: &CompleteParams) -> Result<Option<ContextInput>, String> {
        let source = match (&p.context_file, &p.context) {
            (Some(_), Some(_)) => {
                return Err("give at most one of context_file and context".to_owned());
            }
            (None, None) => return Ok(None),
            (None, Some(text)) => Source::Text(text.clone()),
            (Some(path), None) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| format!("context_file {path:?}: {e}"))?;
                match String::from_utf8(bytes) {
                    Ok(text) if text.len() <= INLINE_MAX => Source::Text(text),
                    Ok(text) => Source::ContextId(self.upload(text.into_bytes()).await?),
                    Err(not_utf8) => Source::ContextId(self.upload(not_utf8.into_bytes()).await?),
                }
            }
        };
        Ok(Some(ContextInput {
            source: Some(source),
            format: ContextFormat::Text as i32,
        }))
    }

    async fn upload(&self, bytes: Vec<u8>) -> Result<String, String> {
        let mut client = self.rlm.clone();
        let response = client
            .upload_context(tokio_stream::iter(upload::requests(bytes)))
            .await
            .map_err(|s| self.rpc_error("UploadContext", &s))?;
        Ok(response.into_inner().context_id)
    }

    async fn new_session(&self) -> Result<String, String> {
        let mut client = self.sessions.clone();
        let response = client
            .create_session(CreateSessionRequest::default())
            .await
            .map_err(|s| self.rpc_error("CreateSession", &s))?;
        response
            .into_inner()
            .session
            .map(|s| s.session_id)
            .ok_or_else(|| "CreateSession returned no session".to_owned())
    }
}

#[tool_router(router = tool_router)]
impl RlmTools {
    #[tool(
        description = "Run a Recursive Language Model completion on the RLM Runtime: a model \
            solves the prompt by writing Python in a sandboxed REPL where the (possibly huge) \
            context is the variable `context`, calling sub-models and child RLMs, and answering \
            with FINAL(...). Returns the answer, why it ended, the trajectory id and token usage.",
        annotations(
            title = "Run an RLM completion",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = true
        )
    )]
    async fn rlm_complete(
        &self,
        Parameters(p): Parameters<CompleteParams>,
    ) -> Result<Json<CompleteOutput>, String> {
        if p.prompt.trim().is_empty() {
            return Err("prompt: must not be empty".to_owned());
        }
        let limits = limits(&p)?;
        let context = self.context_input(&p).await?;
        let spec = CompletionSpec {
            prompt: p.prompt,
            contexts: context.into_iter().collect(),
            root_model: p.model.unwrap_or_default(),
            sub_model: p.sub_model.unwrap_or_default(),
            limits: Some(limits),
            ..Default::default()
        };
        let mut client = self.rlm.clone();
        let response = client
            .complete(CompleteRequest { spec: Some(spec) })
            .await
            .map_err(|s| self.rpc_error("Complete", &s))?;
        let result = response
            .into_inner()
            .result
            .ok_or_else(|| "Complete returned no result".to_owned())?;
        Ok(Json(complete_out(result)))
    }

    #[tool(
        description = "Run Python code in a persistent, isolated sandbox session (no network). \
            Variables, imports and functions persist between calls that pass the same \
            session_id; omit session_id to start a new session (its id is returned). Returns \
            stdout, stderr, the FINAL(value) result if the code called FINAL, and any exception \
            with its traceback.",
        annotations(
            title = "Execute Python in a sandbox",
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn execute_python(
        &self,
        Parameters(p): Parameters<ExecuteParams>,
    ) -> Result<Json<ExecuteOutput>, String> {
        if p.code.trim().is_empty() {
            return Err("code: must not be empty".to_owned());
        }
        let timeout = p
            .timeout_seconds
            .map(|s| proto_duration("timeout_seconds", s))
            .transpose()?;
        let (session_id, created) = match p.session_id {
            Some(id) if !id.trim().is_empty() => (id.trim().to_owned(), false),
            _ => (self.new_session().await?, true),
        };
        let mut client = self.sessions.clone();
        let outcome = client
            .execute(ExecuteRequest {
                session_id: session_id.clone(),
                code: p.code,
                timeout,
            })
            .await;
        match outcome {
            Ok(response) => Ok(Json(execute_out(
                session_id,
                created,
                response.into_inner(),
            ))),
            Err(status) => {
                if created {
                    // Nobody will use it: do not leave it until its idle TTL.
                    let _ = client
                        .destroy_session(DestroySessionRequest {
                            session_id: session_id.clone(),
                        })
                        .await;
                }
                Err(self.rpc_error("Execute", &status))
            }
        }
    }

    #[tool(
        description = "List your open sandbox sessions (from execute_python), oldest first.",
        annotations(
            title = "List sandbox sessions",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_sessions(&self) -> Result<Json<SessionList>, String> {
        let mut client = self.sessions.clone();
        let response = client
            .list_sessions(ListSessionsRequest {})
            .await
            .map_err(|s| self.rpc_error("ListSessions", &s))?;
        Ok(Json(SessionList {
            sessions: response
                .into_inner()
                .sessions
                .iter()
                .map(session_out)
                .collect(),
        }))
    }

    #[tool(
        description = "Destroy a sandbox session: its Python state is lost and its resources \
            freed. Sessions idle for a while are destroyed by the server anyway.",
        annotations(
            title = "Destroy a sandbox session",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn destroy_session(
        &self,
        Parameters(p): Parameters<SessionParams>,
    ) -> Result<Json<Destroyed>, String> {
        let mut client = self.sessions.clone();
        client
            .destroy_session(DestroySessionRequest {
                session_id: p.session_id.clone(),
            })
            .await
            .map_err(|s| self.rpc_error("DestroySession", &s))?;
        Ok(Json(Destroyed {
            session_id: p.session_id,
            destroyed: true,
        }))
    }

    #[tool(
        description = "Show the trajectory of an rlm_complete run: every RLM, model call, code \
            block, output and sub-call, as a readable tree (format `summary` or `full`) or as \
            JSON (`json`).",
        annotations(
            title = "Show a completion's trajectory",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn get_trajectory(
        &self,
        Parameters(p): Parameters<TrajectoryParams>,
    ) -> Result<CallToolResult, String> {
        let mut client = self.rlm.clone();
        let response = client
            .get_trajectory(GetTrajectoryRequest {
                trajectory_id: p.trajectory_id.trim().to_owned(),
            })
            .await
            .map_err(|s| self.rpc_error("GetTrajectory", &s))?;
        let trajectory = response
            .into_inner()
            .trajectory
            .ok_or_else(|| "GetTrajectory returned no trajectory".to_owned())?;
        let mut text = match p.format {
            TrajectoryFormat::Summary => tree::render(&trajectory, tree::Detail::SHORT).join("\n"),
            TrajectoryFormat::Full => tree::render(&trajectory, tree::Detail::FULL).join("\n"),
            TrajectoryFormat::Json => json::trajectory(&trajectory).to_string(),
        };
        if text.len() > MAX_TRAJECTORY_TEXT {
            let cut = (0..=MAX_TRAJECTORY_TEXT)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push_str(
                "\n[... cut: the trajectory is larger than 4 MiB; use `rlm logs ID --json`]",
            );
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "rlm",
    instructions = "RLM Runtime tools. rlm_complete runs a Recursive Language Model completion \
        (a model that works through Python in a sandbox; good for long contexts given as a file). \
        execute_python runs code in persistent sandbox sessions: keep the returned session_id \
        to reuse state, destroy_session when done. get_trajectory shows how a completion went."
)]
impl ServerHandler for RlmTools {}
