//! `rlm run`: read the contexts, upload the large ones, stream the
//! completion with live progress, print the answer, exit by termination reason.

pub mod contexts;
mod output;
mod progress;
mod spec;
mod stream;
pub mod upload;
mod view;

use crate::args::RunArgs;
use crate::connect;
use crate::exit::{self, Failure};

pub async fn run(addr: &str, args: RunArgs) -> Result<u8, Failure> {
    let local = contexts::read_all(&args.context, args.json_context)?;
    let mut view = view::View::new(args.quiet);
    let mut client = connect::orchestrator(addr).await?;
    let inputs = contexts::prepare(&mut client, local, &mut view).await?;
    let spec = spec::build(&args, inputs);
    let result = stream::complete(&mut client, spec, &mut view).await?;
    output::print(&result, args.json, &mut view)
        .map_err(|e| Failure::other(format!("writing the answer: {e}")))?;
    Ok(exit::code_for_reason(result.termination_reason()))
}
