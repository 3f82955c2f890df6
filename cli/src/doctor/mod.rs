//! `rlm doctor`: one line per check (ok / warn / fail, with a fix hint), or
//! one JSON object; exits 1 when any check failed, so it works as an exec probe.
//!
//! Service checks (orchestrator, agent) can fail; host checks only warn, since
//! the agent's own report (GetInfo) is what decides the isolation in force.

mod agent;
mod host;
mod orchestrator;

use std::io::IsTerminal;

use serde_json::{Value, json};

use crate::args::{CheckGroup, DoctorArgs};
use crate::exit::{self, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub group: &'static str,
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(group: &'static str, name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            group,
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(
        group: &'static str,
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Warn,
            fix: Some(fix.into()),
            ..Self::ok(group, name, detail)
        }
    }

    pub fn fail(
        group: &'static str,
        name: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Fail,
            fix: Some(fix.into()),
            ..Self::ok(group, name, detail)
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "group": self.group,
            "name": self.name,
            "status": self.level.as_str(),
            "detail": self.detail,
            "fix": self.fix,
        })
    }
}

pub async fn run(addr: &str, args: DoctorArgs) -> Result<u8, Failure> {
    let wants = |g: CheckGroup| !args.skip.contains(&g);
    let mut checks = Vec::new();
    let mut report = serde_json::Map::new();
    if wants(CheckGroup::Orchestrator) {
        let (found, health) = orchestrator::checks(addr, &args.http_addr).await;
        checks.extend(found);
        report.insert("health".into(), health.unwrap_or(Value::Null));
    }
    if wants(CheckGroup::Agent) {
        let address = agent::address(args.agent_addr.as_deref());
        let (found, info) = agent::checks(&address).await;
        checks.extend(found);
        report.insert("agent".into(), info.unwrap_or(Value::Null));
    }
    if wants(CheckGroup::Host) {
        checks.extend(host::checks());
    }
    let ok = checks.iter().all(|c| c.level != Level::Fail);
    if args.json {
        report.insert("ok".into(), json!(ok));
        report.insert(
            "checks".into(),
            checks.iter().map(Check::to_json).collect::<Vec<_>>().into(),
        );
        println!("{}", Value::Object(report));
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        for check in &checks {
            println!("{}", line(check, color));
            if let Some(fix) = &check.fix {
                println!("      fix: {fix}");
            }
        }
    }
    Ok(if ok { exit::OK } else { exit::OTHER })
}

fn line(check: &Check, color: bool) -> String {
    let label = format!("{:<4}", check.level.as_str());
    let label = match (color, check.level) {
        (false, _) => label,
        (true, Level::Ok) => format!("\x1b[32m{label}\x1b[0m"),
        (true, Level::Warn) => format!("\x1b[33m{label}\x1b[0m"),
        (true, Level::Fail) => format!("\x1b[31m{label}\x1b[0m"),
    };
    format!("{label}  {:<22}  {}", check.name, check.detail)
}
