//! `rlm`: the command-line client of the RLM Runtime.

mod args;
mod connect;
mod doctor;
mod exit;
mod format;
mod json;
mod logs;
mod mcp;
mod names;
mod run;
mod up;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help / --version.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rlm: error: starting the async runtime: {e}");
            return ExitCode::from(exit::OTHER);
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(&cli.addr, args).await,
            Command::Logs(args) => logs::run(&cli.addr, args).await,
            Command::Doctor(args) => doctor::run(&cli.addr, args).await,
            Command::Up(args) => up::run(args).await,
            Command::McpServe(args) => mcp::run(&cli.addr, args).await,
        }
    });
    // Leftover tasks (log forwarders, cancelled streams) must not hold the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("rlm: error: {failure}");
            ExitCode::from(failure.code)
        }
    }
}
