//! The `CompletionSpec` of `rlm run`: flags not given stay unset, so the
//! server's defaults apply (the server validates every value).

use std::time::Duration;

use rlm_proto::rlm::v1::{CompletionLimits, CompletionSpec, ContextInput};

use crate::args::RunArgs;

fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

pub fn build(args: &RunArgs, contexts: Vec<ContextInput>) -> CompletionSpec {
    CompletionSpec {
        prompt: args.prompt.clone(),
        contexts,
        root_model: args.model.clone().unwrap_or_default(),
        sub_model: args.sub_model.clone().unwrap_or_default(),
        limits: Some(CompletionLimits {
            max_depth: args.max_depth,
            max_iterations: args.max_iterations.unwrap_or(0),
            token_budget: args.token_budget.unwrap_or(0),
            cost_budget_usd: args.cost_budget.unwrap_or(0.0),
            max_parallel: args.max_parallel.unwrap_or(0),
            max_subcalls: args.max_subcalls,
            timeout: args.timeout.map(proto_duration),
            cell_timeout: args.cell_timeout.map(proto_duration),
        }),
        sandbox: None,
        metadata: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn run_args(argv: &[&str]) -> RunArgs {
        match Cli::try_parse_from(argv).expect("args").command {
            Command::Run(args) => args,
            _ => panic!("not run"),
        }
    }

    #[test]
    fn unset_flags_leave_server_defaults() {
        let spec = build(&run_args(&["rlm", "run", "task"]), Vec::new());
        assert_eq!(spec.prompt, "task");
        assert_eq!(spec.limits, Some(CompletionLimits::default()));
        assert!(spec.root_model.is_empty());
    }

    #[test]
    fn flags_fill_limits() {
        let args = run_args(&[
            "rlm",
            "run",
            "task",
            "--model",
            "scripted:/t",
            "--max-depth",
            "2",
            "--token-budget",
            "1000",
            "--cost-budget",
            "0.5",
            "--timeout",
            "1500ms",
        ]);
        let spec = build(&args, Vec::new());
        let limits = spec.limits.expect("limits");
        assert_eq!(spec.root_model, "scripted:/t");
        assert_eq!(limits.max_depth, Some(2));
        assert_eq!(limits.token_budget, 1000);
        assert_eq!(limits.cost_budget_usd, 0.5);
        assert_eq!(
            limits.timeout,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
    }
}
