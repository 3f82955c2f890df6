//! `rlm logs`: the most recent trajectories as a table (or JSON).

use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{ListTrajectoriesRequest, TrajectoryStatus, TrajectorySummary};
use serde_json::json;
use tonic::transport::Channel;

use crate::args::StatusFilter;
use crate::exit::Failure;
use crate::{format, json, names};

/// Up to `limit` summaries, most recent first, following pages.
pub async fn fetch(
    client: &mut RlmServiceClient<Channel>,
    limit: u32,
    status: Option<StatusFilter>,
) -> Result<Vec<TrajectorySummary>, Failure> {
    let status = match status {
        None => TrajectoryStatus::Unspecified,
        Some(StatusFilter::Running) => TrajectoryStatus::Running,
        Some(StatusFilter::Finished) => TrajectoryStatus::Finished,
        Some(StatusFilter::Incomplete) => TrajectoryStatus::Incomplete,
    } as i32;
    let mut out = Vec::new();
    let mut page_token = String::new();
    while out.len() < limit as usize {
        let page = client
            .list_trajectories(ListTrajectoriesRequest {
                page_size: (limit - out.len() as u32).min(1000),
                page_token: page_token.clone(),
                status,
                metadata: Default::default(),
            })
            .await
            .map_err(|s| Failure::from_status(&s, "ListTrajectories"))?
            .into_inner();
        out.extend(page.trajectories);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    out.truncate(limit as usize);
    Ok(out)
}

pub fn print_json(summaries: &[TrajectorySummary]) {
    let list: Vec<_> = summaries.iter().map(json::summary).collect();
    println!("{}", json!({ "trajectories": list }));
}

pub fn table(summaries: &[TrajectorySummary]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<36}  {:<19}  {:<10}  {:<14}  {:>4}  {:>7}  {:>7}  PROMPT",
        "TRAJECTORY", "STARTED (UTC)", "STATUS", "REASON", "ITER", "TOKENS", "TIME"
    )];
    for s in summaries {
        let usage = s.total_usage.unwrap_or_default();
        let reason = if s.status == TrajectoryStatus::Finished as i32 {
            names::reason(s.termination_reason)
        } else {
            "-".to_owned()
        };
        lines.push(format!(
            "{:<36}  {:<19}  {:<10}  {:<14}  {:>4}  {:>7}  {:>7}  {}",
            s.trajectory_id,
            format::when(s.started_at.as_ref()),
            names::status(s.status),
            reason,
            s.iterations,
            format::count(usage.input_tokens + usage.output_tokens),
            format::duration(s.duration.as_ref()),
            format::one_line(&s.prompt_preview, 60),
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_proto::rlm::v1::{TerminationReason, Usage};

    #[test]
    fn table_has_one_row_per_trajectory() {
        let rows = table(&[TrajectorySummary {
            trajectory_id: "abc".into(),
            prompt_preview: "find\nthe needle".into(),
            status: TrajectoryStatus::Finished as i32,
            termination_reason: TerminationReason::Final as i32,
            iterations: 2,
            total_usage: Some(Usage {
                input_tokens: 1500,
                output_tokens: 20,
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(rows.len(), 2);
        assert!(rows[1].starts_with("abc "), "{}", rows[1]);
        for part in ["finished", "final", "1.5k", "find⏎the needle"] {
            assert!(rows[1].contains(part), "{part}: {}", rows[1]);
        }
    }
}
