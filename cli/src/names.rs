//! Short lowercase names of the proto enums (`final`, `token_budget`,
//! `rlm_query`...), used in tables, trees and JSON output.

use rlm_proto::rlm::sandbox::v1::{CgroupVersion, IsolationFeature, IsolationMode};
use rlm_proto::rlm::v1::{
    ContextFormat, ModelCallPurpose, SubcallKind, TerminationReason, TrajectoryStatus,
};

/// `TERMINATION_REASON_TOKEN_BUDGET` with prefix `TERMINATION_REASON_` -> `token_budget`.
fn short(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

fn unknown(value: i32) -> String {
    format!("unknown({value})")
}

pub fn reason(value: i32) -> String {
    TerminationReason::try_from(value).map_or_else(
        |_| unknown(value),
        |r| short(r.as_str_name(), "TERMINATION_REASON_"),
    )
}

pub fn status(value: i32) -> String {
    TrajectoryStatus::try_from(value).map_or_else(
        |_| unknown(value),
        |s| short(s.as_str_name(), "TRAJECTORY_STATUS_"),
    )
}

pub fn purpose(value: i32) -> String {
    ModelCallPurpose::try_from(value).map_or_else(
        |_| unknown(value),
        |p| short(p.as_str_name(), "MODEL_CALL_PURPOSE_"),
    )
}

pub fn subcall_kind(value: i32) -> String {
    SubcallKind::try_from(value).map_or_else(
        |_| unknown(value),
        |k| short(k.as_str_name(), "SUBCALL_KIND_"),
    )
}

pub fn context_format(value: i32) -> String {
    ContextFormat::try_from(value).map_or_else(
        |_| unknown(value),
        |f| short(f.as_str_name(), "CONTEXT_FORMAT_"),
    )
}

pub fn isolation_mode(value: i32) -> String {
    IsolationMode::try_from(value).map_or_else(
        |_| unknown(value),
        |m| short(m.as_str_name(), "ISOLATION_MODE_"),
    )
}

pub fn isolation_feature(value: i32) -> String {
    IsolationFeature::try_from(value).map_or_else(
        |_| unknown(value),
        |f| short(f.as_str_name(), "ISOLATION_FEATURE_"),
    )
}

pub fn cgroup_version(value: i32) -> String {
    CgroupVersion::try_from(value).map_or_else(
        |_| unknown(value),
        |v| short(v.as_str_name(), "CGROUP_VERSION_"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(
            reason(TerminationReason::TokenBudget as i32),
            "token_budget"
        );
        assert_eq!(reason(99), "unknown(99)");
        assert_eq!(status(TrajectoryStatus::Finished as i32), "finished");
        assert_eq!(subcall_kind(SubcallKind::RlmQuery as i32), "rlm_query");
        assert_eq!(
            isolation_feature(IsolationFeature::CgroupMemory as i32),
            "cgroup_memory"
        );
    }
}
