//! The command line: every subcommand, flag and environment variable, and the
//! exit statuses `rlm --help` documents.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit statuses, shown by `rlm --help` (and in docs/cli.md).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0    success; for `rlm run`, the completion answered (FINAL)
  1    any other error; for `rlm doctor`, at least one check failed
  2    invalid input: a bad flag or argument, a context file that cannot be read or is
       not JSON with --json-context, a request the server rejected as INVALID_ARGUMENT
       (the message names the field), an unknown context or trajectory id
  3    a budget or limit ended the completion (token or cost budget, max iterations,
       max sub-calls, timeout); the partial answer is printed
  4    the completion was cancelled (Ctrl-C, or CancelCompletion from elsewhere); the
       partial answer is printed
  5    the completion ended on a model, sandbox or internal error; the partial answer
       is printed
  69   service unavailable: the orchestrator cannot be reached, or it reports
       UNAVAILABLE (e.g. the sandbox agent is down) (EX_UNAVAILABLE)
  130  interrupted twice during `rlm run` (stopped waiting for the cancelled completion)";

/// rlm: run recursive language-model completions against an RLM Runtime
/// orchestrator, browse their trajectories, check an installation, and start
/// one locally.
#[derive(Debug, Parser)]
#[command(name = "rlm", version, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// gRPC address of the orchestrator: http://HOST:PORT, HOST:PORT or unix:///PATH.
    #[arg(
        long,
        global = true,
        env = "RLM_ADDR",
        value_name = "ADDRESS",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one completion and print its answer (live progress on stderr).
    #[command(after_help = EXIT_STATUS_HELP)]
    Run(RunArgs),
    /// List recorded trajectories, or show one as a tree.
    #[command(after_help = EXIT_STATUS_HELP)]
    Logs(LogsArgs),
    /// Check the orchestrator, the sandbox agent, the model configuration and this host.
    Doctor(DoctorArgs),
    /// Start the sandbox agent and the orchestrator locally, in the foreground.
    Up(UpArgs),
    /// Serve the runtime as MCP tools over stdio (rlm_complete, execute_python, ...).
    #[command(name = "mcp-serve")]
    McpServe(McpServeArgs),
}

#[derive(Debug, Args)]
pub struct McpServeArgs {
    /// API key sent to the orchestrator as `authorization: Bearer <key>`.
    #[arg(long, env = "RLM_API_KEY", hide_env_values = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// Serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio
    /// (loopback addresses only: MCP has no authentication of its own here).
    #[arg(long, env = "RLM_MCP_HTTP", value_name = "HOST:PORT")]
    pub http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task given to the root RLM.
    pub prompt: String,

    /// A context file (`-` = stdin); repeat for several (context_0, context_1, ...).
    /// Contexts over 1 MiB, or not UTF-8, are uploaded with UploadContext.
    #[arg(long, short = 'c', value_name = "FILE|-")]
    pub context: Vec<String>,

    /// Present every context to the REPL as parsed JSON instead of a str.
    #[arg(long)]
    pub json_context: bool,

    /// Root model, e.g. openai/gpt-4o or scripted:/abs/path/turns.txt [default: the server's].
    #[arg(long, short = 'm', value_name = "MODEL")]
    pub model: Option<String>,

    /// Model of llm_query and of child RLMs [default: the server's].
    #[arg(long, value_name = "MODEL")]
    pub sub_model: Option<String>,

    /// Maximum depth of child RLMs (0 = none) [default: the server's, built-in 1].
    #[arg(long, value_name = "N")]
    pub max_depth: Option<u32>,

    /// Maximum iterations of each RLM [default: the server's, built-in 30].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_iterations: Option<u32>,

    /// Maximum sub-calls in the whole tree (0 = none allowed) [default: no limit].
    #[arg(long, value_name = "N")]
    pub max_subcalls: Option<u32>,

    /// Maximum tokens (input + output, whole tree) [default: no limit].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub token_budget: Option<u64>,

    /// Maximum cost in US dollars (whole tree; needs priced models) [default: no limit].
    #[arg(long, value_name = "USD", value_parser = positive_usd)]
    pub cost_budget: Option<f64>,

    /// Maximum sub-calls in flight at once [default: the server's, built-in 8].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_parallel: Option<u32>,

    /// Wall-clock limit of the completion: seconds, or 500ms, 30s, 5m [default: the server's, built-in 10m].
    #[arg(long, value_name = "S", value_parser = positive_duration)]
    pub timeout: Option<Duration>,

    /// Limit of one code block running on its own [default: the server's, built-in 60s].
    #[arg(long, value_name = "S", value_parser = positive_duration)]
    pub cell_timeout: Option<Duration>,

    /// Print one JSON object with the result on stdout instead of the answer.
    #[arg(long)]
    pub json: bool,

    /// No progress on stderr (errors and partial-answer notes are still shown).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Trajectory id (or a unique prefix of a trajectory or completion id) to show.
    pub id: Option<String>,

    /// How many trajectories to list, most recent first.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: u32,

    /// Only trajectories in this state.
    #[arg(long, value_name = "STATE")]
    pub status: Option<StatusFilter>,

    /// Show code and outputs in full instead of their first lines.
    #[arg(long)]
    pub full: bool,

    /// Print JSON instead of a table or tree.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFilter {
    Running,
    Finished,
    Incomplete,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The orchestrator's HTTP address (/health).
    #[arg(
        long,
        env = "RLM_HTTP_ADDR",
        value_name = "URL",
        default_value = "http://127.0.0.1:9464"
    )]
    pub http_addr: String,

    /// The sandbox agent [default: unix:///run/rlm/sandbox.sock, or ./.rlm/run/sandbox.sock
    /// when only that one exists].
    #[arg(long, env = "RLM_SANDBOX_ENDPOINT", value_name = "ADDRESS")]
    pub agent_addr: Option<String>,

    /// Skip a group of checks (repeatable).
    #[arg(long, value_name = "GROUP")]
    pub skip: Vec<CheckGroup>,

    /// Print one JSON object instead of one line per check.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckGroup {
    /// The orchestrator's gRPC health and HTTP /health (with the model configuration).
    Orchestrator,
    /// The sandbox agent's health and isolation.
    Agent,
    /// cgroups, namespaces, seccomp, user and Python on this host.
    Host,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// State directory: agent socket in run/, stored contexts in agent/, trajectories in trajectories/.
    #[arg(
        long,
        env = "RLM_STATE_DIR",
        value_name = "DIR",
        default_value = ".rlm"
    )]
    pub state_dir: String,

    /// Session isolation of the agent: full (needs root) or none (development only, UNSAFE).
    #[arg(
        long,
        env = "RLM_AGENT_ISOLATION",
        value_name = "MODE",
        default_value = "full"
    )]
    pub isolation: Isolation,

    /// Default root model of the orchestrator (sets RLM_MODEL).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,

    /// Default sub-model of the orchestrator (sets RLM_SUB_MODEL).
    #[arg(long, value_name = "MODEL")]
    pub sub_model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    Full,
    None,
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = rlm_common::config::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

fn positive_usd(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("must be a positive number of US dollars, e.g. 0.50".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn zero_limits_that_would_mean_default_are_refused() {
        for flag in [
            "--max-iterations",
            "--token-budget",
            "--max-parallel",
            "--timeout",
        ] {
            let err = Cli::try_parse_from(["rlm", "run", "p", flag, "0"]).expect_err(flag);
            assert_eq!(err.exit_code(), 2, "{flag}");
        }
        assert!(Cli::try_parse_from(["rlm", "run", "p", "--cost-budget", "0"]).is_err());
        let cli = Cli::try_parse_from(["rlm", "run", "p", "--max-depth", "0", "--timeout", "2m"])
            .expect("valid");
        let Command::Run(run) = cli.command else {
            panic!("run")
        };
        assert_eq!(run.max_depth, Some(0));
        assert_eq!(run.timeout, Some(Duration::from_secs(120)));
    }
}
