//! `rlm.v1.SessionService`: request validation and the caller's identity
//! around [`DirectSessions`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use rlm_proto::rlm::v1::session_service_server::SessionService;
use rlm_proto::rlm::v1::{
    CreateSessionRequest, CreateSessionResponse, DestroySessionRequest, DestroySessionResponse,
    ExecuteRequest, ExecuteResponse, ListSessionsRequest, ListSessionsResponse,
};
use tonic::{Request, Response, Status};

use super::registry::Owner;
use super::{DirectSessions, MAX_EXECUTE_TIMEOUT};
use crate::auth::Caller;
use crate::metrics::Metrics;

/// Largest cell source accepted.
const MAX_CODE_BYTES: usize = 1 << 20;

pub struct SessionApi {
    pub sessions: Arc<DirectSessions>,
    pub metrics: Arc<Metrics>,
}

/// The key label of the caller when keys are configured.
fn owner<T>(request: &Request<T>) -> Owner {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.label.clone())
}

/// A checked session id (the UUIDs CreateSession hands out).
fn session_id(id: &str) -> Result<String, Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(
            "session_id: required (the id CreateSession returned)",
        ));
    }
    uuid::Uuid::try_parse(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            Status::invalid_argument(format!(
                "session_id: {:?} is not a session id (a UUID from CreateSession)",
                id.chars().take(80).collect::<String>()
            ))
        })
}

/// An optional positive duration of at most `max`; `None` when unset or zero.
fn duration(
    field: &str,
    value: Option<prost_types::Duration>,
    max: Duration,
) -> Result<Option<Duration>, Status> {
    let Some(value) = value else { return Ok(None) };
    let d = Duration::try_from(value).map_err(|_| {
        Status::invalid_argument(format!("{field}: must not be negative or malformed"))
    })?;
    if d.is_zero() {
        return Ok(None);
    }
    if d > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {:.3}s is over the maximum of {}s",
            d.as_secs_f64(),
            max.as_secs()
        )));
    }
    Ok(Some(d))
}

impl SessionApi {
    async fn create(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<CreateSessionResponse, Status> {
        let owner = owner(&request);
        let r = request.into_inner();
        let settings = self.sessions.settings();
        let idle_ttl = match duration("idle_ttl", r.idle_ttl, settings.max_idle_ttl)? {
            Some(ttl) if ttl < Duration::from_secs(1) => {
                return Err(Status::invalid_argument("idle_ttl: at least 1 second"));
            }
            Some(ttl) => ttl,
            None => settings.idle_ttl,
        };
        let session = self.sessions.create(owner, r.limits, idle_ttl).await?;
        Ok(CreateSessionResponse {
            session: Some(session),
        })
    }

    async fn execute(&self, request: Request<ExecuteRequest>) -> Result<ExecuteResponse, Status> {
        let owner = owner(&request);
        let r = request.into_inner();
        let id = session_id(&r.session_id)?;
        if r.code.trim().is_empty() {
            return Err(Status::invalid_argument("code: must not be empty"));
        }
        if r.code.len() > MAX_CODE_BYTES {
            return Err(Status::invalid_argument(format!(
                "code: {} bytes is over the maximum of {MAX_CODE_BYTES}",
                r.code.len()
            )));
        }
        let timeout = duration("timeout", r.timeout, MAX_EXECUTE_TIMEOUT)?
            .unwrap_or_else(|| self.sessions.cell_timeout());
        self.sessions.execute(&owner, &id, r.code, timeout).await
    }
}

#[tonic::async_trait]
impl SessionService for SessionApi {
    #[tracing::instrument(name = "rlm.session.create", skip_all)]
    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let started = Instant::now();
        let result = self.create(request).await.map(Response::new);
        self.metrics
            .record_request("CreateSession", started, result)
    }

    #[tracing::instrument(name = "rlm.session.execute", skip_all)]
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteResponse>, Status> {
        let started = Instant::now();
        let result = SessionApi::execute(self, request).await.map(Response::new);
        self.metrics.record_request("Execute", started, result)
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let started = Instant::now();
        let sessions = self.sessions.list(&owner(&request));
        self.metrics.record_request(
            "ListSessions",
            started,
            Ok(Response::new(ListSessionsResponse { sessions })),
        )
    }

    #[tracing::instrument(name = "rlm.session.destroy", skip_all)]
    async fn destroy_session(
        &self,
        request: Request<DestroySessionRequest>,
    ) -> Result<Response<DestroySessionResponse>, Status> {
        let started = Instant::now();
        let owner = owner(&request);
        let result = async {
            let id = session_id(&request.into_inner().session_id)?;
            self.sessions.destroy(&owner, &id).await?;
            Ok(Response::new(DestroySessionResponse {}))
        }
        .await;
        self.metrics
            .record_request("DestroySession", started, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_uuids() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(session_id(&id).expect("valid"), id);
        assert_eq!(
            session_id(&id.to_uppercase()).expect("case-insensitive"),
            id
        );
        for bad in ["", "nope", "../etc", &"x".repeat(500)] {
            let status = session_id(bad).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with("session_id: "), "{status:?}");
        }
    }

    #[test]
    fn durations_are_positive_and_bounded() {
        let max = Duration::from_secs(60);
        let d = |seconds, nanos| Some(prost_types::Duration { seconds, nanos });
        assert_eq!(duration("t", None, max).expect("unset"), None);
        assert_eq!(duration("t", d(0, 0), max).expect("zero"), None);
        assert_eq!(
            duration("t", d(2, 500_000_000), max).expect("ok"),
            Some(Duration::from_millis(2500))
        );
        for bad in [d(-1, 0), d(61, 0), d(i64::MAX, 0)] {
            let status = duration("timeout", bad, max).expect_err("bad");
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with("timeout: "), "{status:?}");
        }
    }
}
