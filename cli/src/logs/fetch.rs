//! `GetTrajectory` by id, or by a unique prefix of a trajectory or completion id.

use rlm_proto::rlm::v1::rlm_service_client::RlmServiceClient;
use rlm_proto::rlm::v1::{GetTrajectoryRequest, Trajectory};
use tonic::Code;
use tonic::transport::Channel;

use super::list;
use crate::exit::Failure;

/// How many recent trajectories a prefix is matched against.
const PREFIX_SCAN: u32 = 1000;

pub async fn trajectory(
    client: &mut RlmServiceClient<Channel>,
    id: &str,
) -> Result<Trajectory, Failure> {
    match get(client, id).await {
        Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
            let recent = list::fetch(client, PREFIX_SCAN, None).await?;
            let matches: Vec<_> = recent
                .iter()
                .filter(|s| s.trajectory_id.starts_with(id) || s.completion_id.starts_with(id))
                .collect();
            match matches.as_slice() {
                [one] => get(client, &one.trajectory_id)
                    .await
                    .map_err(|s| Failure::from_status(&s, "GetTrajectory")),
                [] => Err(Failure::from_status(&status, "GetTrajectory")),
                many => Err(Failure::invalid(format!(
                    "{id:?} matches {} trajectories ({}...); give more of the id",
                    many.len(),
                    many.iter()
                        .take(3)
                        .map(|s| s.trajectory_id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        Err(status) => Err(Failure::from_status(&status, "GetTrajectory")),
        Ok(t) => Ok(t),
    }
}

async fn get(
    client: &mut RlmServiceClient<Channel>,
    id: &str,
) -> Result<Trajectory, tonic::Status> {
    let response = client
        .get_trajectory(GetTrajectoryRequest {
            trajectory_id: id.to_owned(),
        })
        .await?
        .into_inner();
    response
        .trajectory
        .ok_or_else(|| tonic::Status::internal("GetTrajectoryResponse.trajectory is unset"))
}
