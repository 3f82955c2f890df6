//! `rlm logs`: list trajectories, or show one as a tree or JSON.

mod fetch;
mod list;
pub mod tree;

use crate::args::LogsArgs;
use crate::exit::{self, Failure};
use crate::{connect, json};

pub async fn run(addr: &str, args: LogsArgs) -> Result<u8, Failure> {
    let mut client = connect::orchestrator(addr).await?;
    match &args.id {
        None => {
            let summaries = list::fetch(&mut client, args.limit, args.status).await?;
            if args.json {
                list::print_json(&summaries);
            } else if summaries.is_empty() && args.status.is_some() {
                eprintln!("rlm: no trajectories in that state");
            } else if summaries.is_empty() {
                eprintln!("rlm: no trajectories yet (run one with `rlm run`)");
            } else {
                for line in list::table(&summaries) {
                    println!("{line}");
                }
            }
        }
        Some(id) => {
            let trajectory = fetch::trajectory(&mut client, id).await?;
            if args.json {
                println!("{}", json::trajectory(&trajectory));
            } else {
                let detail = if args.full {
                    tree::Detail::FULL
                } else {
                    tree::Detail::SHORT
                };
                for line in tree::render(&trajectory, detail) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(exit::OK)
}
