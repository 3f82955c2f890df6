//! The fleet queue: jobs in Redis, so any replica can run any job and
//! GetCompletion / WatchCompletion / CancelCompletion work from any replica.
//!
//! Delivery is at least once, made safe by a lease: a worker runs a job only
//! while it holds `rlm:job:<id>:lease` (SET NX PX, renewed every second or
//! so), and every write it makes checks the lease first (see
//! [`super::scripts`]). A worker that stops renewing (crashed, partitioned)
//! loses the job: after a lease of silence another replica claims its stream
//! entry (XAUTOCLAIM) and runs it again, up to `max_attempts` runs, after
//! which the job is failed with the reason. A worker that finds its lease
//! gone stops its run without writing anything more.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use prost::Message;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script, Value};
use rlm_proto::rlm::v1::{
    CompletionEvent, CompletionResult, CompletionSpec, CompletionState, GetCompletionResponse,
    SubmitCompletionResponse, TerminationReason, Usage, WatchCompletionResponse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::job::{self, Attempt, Progress};
use super::{MAX_KEPT_EVENTS, QUEUE_FULL_RETRY, QueueSettings, WatchStream, scripts, spawn_stream};
use crate::engine::Engine;
use crate::metrics::Metrics;

const JOBS: &str = "rlm:jobs";
const GROUP: &str = "rlm-workers";
const QUEUED: &str = "rlm:queued";
/// How long a blocking read waits before looking around again.
const BLOCK_MS: u64 = 2000;
/// Redis commands other than blocking reads.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to "unknown context" failures: ids name contexts in one agent.
const FLEET_CONTEXT_HINT: &str = " (fleet queue: a context_id names a context stored in one \
     replica's sandbox agent; give queued completions inline contexts, or upload the context to \
     every replica's agent)";

fn job_key(id: &str) -> String {
    format!("rlm:job:{id}")
}
fn events_key(id: &str) -> String {
    format!("rlm:job:{id}:events")
}
fn lease_key(id: &str) -> String {
    format!("rlm:job:{id}:lease")
}

/// This process's name as a queue consumer: host, pid and a random suffix.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..6])
}

fn redis_error(error: &redis::RedisError) -> Status {
    Status::unavailable(format!("the queue's Redis (RLM_QUEUE_URL): {error}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Scripts {
    submit: Script,
    begin: Script,
    renew: Script,
    append: Script,
    finish: Script,
    cancel: Script,
    hand_back: Script,
}

pub struct FleetQueue {
    engine: Engine,
    metrics: Arc<Metrics>,
    settings: QueueSettings,
    client: redis::Client,
    redis: ConnectionManager,
    worker: String,
    workers: Arc<Semaphore>,
    scripts: Scripts,
    stopping: CancellationToken,
}

/// What BEGIN decided.
enum Begin {
    Skip,
    Busy,
    Cancelled { events: u64, reason: String },
    Exhausted { attempts: u32, events: u64 },
    Run { attempt: u32, events: u64 },
}

/// A job this worker holds the lease of.
struct Held {
    id: String,
    token: String,
    entry: String,
    submitted_at: SystemTime,
}

impl FleetQueue {
    pub async fn start(
        settings: QueueSettings,
        engine: Engine,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context;
        let url = settings.url.clone().unwrap_or_default();
        let client =
            redis::Client::open(url.as_str()).with_context(|| format!("RLM_QUEUE_URL {url:?}"))?;
        let redis = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new().set_response_timeout(Some(COMMAND_TIMEOUT)),
        )
        .await
        .with_context(|| format!("connecting to the queue's Redis at {url} (RLM_QUEUE_URL)"))?;
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg(&["CREATE", JOBS, GROUP, "0", "MKSTREAM"])
            .query_async(&mut redis.clone())
            .await;
        if let Err(error) = created
            && error.code() != Some("BUSYGROUP")
        {
            return Err(error).context("creating the queue's consumer group");
        }
        let queue = Arc::new(Self {
            engine,
            metrics,
            worker: worker_name(),
            workers: Arc::new(Semaphore::new(settings.workers as usize)),
            settings,
            client,
            redis,
            scripts: Scripts {
                submit: Script::new(scripts::SUBMIT),
                begin: Script::new(scripts::BEGIN),
                renew: Script::new(scripts::RENEW),
                append: Script::new(scripts::APPEND),
                finish: Script::new(&scripts::finish()),
                cancel: Script::new(&scripts::cancel()),
                hand_back: Script::new(scripts::HAND_BACK),
            },
            stopping: CancellationToken::new(),
        });
        tracing::info!(worker = %queue.worker, redis = %url, "fleet queue connected");
        tokio::spawn(Arc::clone(&queue).read_new_jobs());
        tokio::spawn(Arc::clone(&queue).refresh_depth());
        Ok(queue)
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// A connection of its own, for blocking reads (which would stall the
    /// shared one).
    async fn blocking_conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_millis(BLOCK_MS) + COMMAND_TIMEOUT)),
            )
            .await
    }

    pub async fn submit(
        &self,
        spec: CompletionSpec,
        idempotency_key: Option<String>,
    ) -> Result<SubmitCompletionResponse, Status> {
        if self.stopping.is_cancelled() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        self.engine.validate(Some(spec.clone()))?;
        let id = uuid::Uuid::new_v4().to_string();
        let (outcome, existing): (String, String) = self
            .scripts
            .submit
            .key(QUEUED)
            .key(job_key(&id))
            .key(JOBS)
            .arg(&id)
            .arg(spec.encode_to_vec())
            .arg(now_ms())
            .arg(self.settings.max_queued)
            .arg(idempotency_key.map_or_else(String::new, |k| format!("rlm:idem:{k}")))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| redis_error(&e))?;
        match outcome.as_str() {
            "duplicate" => Ok(SubmitCompletionResponse {
                completion_id: existing,
                duplicate: true,
            }),
            "full" => {
                self.metrics.count_job("rejected");
                Err(job::queue_full(
                    format!(
                        "the fleet's queue holds its maximum of {} completions (RLM_QUEUE_MAX)",
                        self.settings.max_queued
                    ),
                    QUEUE_FULL_RETRY,
                ))
            }
            _ => {
                self.metrics.count_job("submitted");
                tracing::info!(completion = %id, "completion queued");
                Ok(SubmitCompletionResponse {
                    completion_id: id,
                    duplicate: false,
                })
            }
        }
    }

    async fn fields(&self, id: &str) -> Result<Option<HashMap<String, Vec<u8>>>, Status> {
        let fields: HashMap<String, Vec<u8>> = redis::cmd("HGETALL")
            .arg(job_key(id))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(Some(fields).filter(|f| f.contains_key("state")))
    }

    pub async fn get(&self, id: &str) -> Result<GetCompletionResponse, Status> {
        let fields = self.fields(id).await?.ok_or_else(|| job::not_found(id))?;
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let number = |name: &str| text(name).parse::<u64>().unwrap_or(0);
        let state = parse_state(&text("state"));
        let queue_position = if state == CompletionState::Queued {
            let rank: Option<u64> = redis::cmd("ZRANK")
                .arg(QUEUED)
                .arg(id)
                .query_async(&mut self.conn())
                .await
                .map_err(|e| redis_error(&e))?;
            rank.map_or(0, |r| r as u32 + 1)
        } else {
            0
        };
        let decode_err =
            |what: &str| Status::internal(format!("job {id}: stored {what} is corrupt"));
        let result = match fields.get("result") {
            Some(bytes) => {
                Some(CompletionResult::decode(bytes.as_slice()).map_err(|_| decode_err("result"))?)
            }
            None => None,
        };
        let usage = match fields.get("usage") {
            Some(bytes) => Usage::decode(bytes.as_slice()).map_err(|_| decode_err("usage"))?,
            None => Progress::new().usage,
        };
        Ok(GetCompletionResponse {
            completion_id: id.to_owned(),
            state: state as i32,
            queue_position,
            result,
            partial_answer: text("partial"),
            usage: Some(usage),
            event_count: number("events"),
            attempts: number("attempts") as u32,
            worker: text("worker"),
            submitted_at: Some((UNIX_EPOCH + Duration::from_millis(number("submitted_ms"))).into()),
        })
    }

    /// The job's state and event count; `None` when it does not exist.
    async fn state_of(
        conn: &mut ConnectionManager,
        id: &str,
    ) -> Result<Option<(CompletionState, u64)>, Status> {
        let (state, events): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(job_key(id))
            .arg("state")
            .arg("events")
            .query_async(conn)
            .await
            .map_err(|e| redis_error(&e))?;
        Ok(state.map(|s| (parse_state(&s), events.unwrap_or(0))))
    }

    pub async fn watch(&self, id: &str, from: u64) -> Result<WatchStream, Status> {
        let mut conn = self.conn();
        Self::state_of(&mut conn, id)
            .await?
            .ok_or_else(|| job::not_found(id))?;
        let first: Vec<(String, Value)> = redis::cmd("XRANGE")
            .arg(events_key(id))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&e))?;
        if let Some(first) = first.first().and_then(|(entry, _)| sequence_of(entry))
            && from.saturating_add(1) < first
        {
            return Err(Status::out_of_range(format!(
                "from_event_index: events before {first} are no longer kept; read them with GetTrajectory"
            )));
        }
        let mut reader = self.blocking_conn().await.map_err(|e| redis_error(&e))?;
        let id = id.to_owned();
        Ok(spawn_stream(move |sender| {
            async move {
                let mut last = from;
                let key = events_key(&id);
                loop {
                    if sender.is_closed() {
                        return;
                    }
                    let read: redis::RedisResult<Option<StreamReadReply>> = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(256)
                        .arg("BLOCK")
                        .arg(BLOCK_MS)
                        .arg("STREAMS")
                        .arg(&key)
                        .arg(format!("{last}-0"))
                        .query_async(&mut reader)
                        .await;
                    let entries = match read {
                        Ok(reply) => reply
                            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                            .unwrap_or_else(Vec::new),
                        Err(error) => {
                            let _ = sender.send(Err(redis_error(&error))).await;
                            return;
                        }
                    };
                    if entries.is_empty() {
                        // Nothing new: stop when the job ended before `last`
                        // or expired.
                        match Self::state_of(&mut conn, &id).await {
                            Ok(Some((state, events))) if terminal(state) && last >= events => {
                                return;
                            }
                            Ok(Some(_)) => continue,
                            Ok(None) => {
                                let _ = sender.send(Err(job::not_found(&id))).await;
                                return;
                            }
                            Err(status) => {
                                let _ = sender.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    for entry in entries {
                        let event = entry
                            .map
                            .get("e")
                            .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok())
                            .and_then(|bytes| CompletionEvent::decode(bytes.as_slice()).ok());
                        let Some(event) = event else {
                            let _ = sender
                                .send(Err(Status::internal(format!(
                                    "job {id}: stored event {} is corrupt",
                                    entry.id
                                ))))
                                .await;
                            return;
                        };
                        last = event.sequence;
                        let ended = job::result_of(&event).is_some();
                        let message = WatchCompletionResponse { event: Some(event) };
                        if sender.send(Ok(message)).await.is_err() || ended {
                            return;
                        }
                    }
                }
            }
            .boxed()
        }))
    }

    /// `None`: no such job.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<Option<bool>, Status> {
        let mut conn = self.conn();
        for _ in 0..5 {
            let Some(fields) = self.fields(id).await? else {
                return Ok(None);
            };
            let events = fields
                .get("events")
                .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok())
                .unwrap_or(0);
            let submitted_at = fields
                .get("submitted_ms")
                .and_then(|v| String::from_utf8_lossy(v).parse::<u64>().ok())
                .map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms));
            let detail = if reason.is_empty() {
                "cancelled by CancelCompletion before it started".to_owned()
            } else {
                format!("cancelled by CancelCompletion before it started: {reason}")
            };
            let result = job::queue_result(
                id,
                TerminationReason::Cancelled,
                detail,
                submitted_at,
                &Progress::new(),
            );
            let ending = Ending::new(result, events + 1, CompletionState::Cancelled);
            let outcome: String = self
                .end_invocation(&self.scripts.cancel, id, &ending)
                .arg(events.to_string())
                .arg(reason)
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(&e))?;
            match outcome.as_str() {
                "gone" => return Ok(None),
                "ended" => return Ok(Some(false)),
                "cancelled" => {
                    self.metrics.count_job("cancelled");
                    return Ok(Some(true));
                }
                "running" => {
                    // Its worker sees the request at its next renewal; when
                    // that is this replica, cancel now.
                    let _ = self.engine.cancel_running(id, reason);
                    return Ok(Some(true));
                }
                _ => continue,
            }
        }
        Err(Status::aborted(
            "completion_id: the completion kept changing state; retry",
        ))
    }

    /// KEYS and the END arguments of the FINISH and CANCEL scripts.
    fn end_invocation<'a>(
        &self,
        script: &'a Script,
        id: &str,
        ending: &Ending,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(job_key(id))
            .key(events_key(id))
            .key(JOBS)
            .key(QUEUED)
            .arg(ending.sequence)
            .arg(ending.event.clone())
            .arg(state_name(ending.state))
            .arg(ending.result.clone())
            .arg(ending.usage.clone())
            .arg(&ending.partial)
            .arg(self.settings.retention.as_secs().max(1))
            .arg(GROUP)
            .arg(MAX_KEPT_EVENTS)
            .arg(id);
        invocation
    }

    /// Stops taking jobs and hands the running ones back (each waits at most
    /// a few seconds); call before [`Engine::shutdown`].
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        let all = Arc::clone(&self.workers).acquire_many_owned(self.settings.workers);
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("queued completions still running at exit; their leases will expire");
        }
    }

    /// How often entries of dead workers are looked for.
    fn reclaim_every(&self) -> Duration {
        (self.settings.lease / 2).max(Duration::from_millis(200))
    }

    /// The worker loop: with a free worker, first claims an entry whose
    /// worker stopped renewing it for a lease (at most every lease/2), else
    /// waits briefly for a new entry.
    async fn read_new_jobs(self: Arc<Self>) {
        let mut reader: Option<MultiplexedConnection> = None;
        let every = self.reclaim_every();
        let block_ms = (every.as_millis() as u64).min(BLOCK_MS);
        let mut last_reclaim = tokio::time::Instant::now();
        loop {
            let permit = tokio::select! {
                permit = Arc::clone(&self.workers).acquire_owned() => permit,
                () = self.stopping.cancelled() => return,
            };
            let Ok(permit) = permit else { return };
            if last_reclaim.elapsed() >= every {
                last_reclaim = tokio::time::Instant::now();
                if let Some(entry) = self.claim_lost_entry().await {
                    self.spawn_take(entry, permit);
                    continue;
                }
            }
            let mut conn = match reader.take() {
                Some(conn) => conn,
                None => match self.blocking_conn().await {
                    Ok(conn) => conn,
                    Err(error) => {
                        tracing::warn!(%error, "queue: cannot reach Redis; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let mut command = redis::cmd("XREADGROUP");
            command
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.worker)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(block_ms)
                .arg("STREAMS")
                .arg(JOBS)
                .arg(">");
            let read = command.query_async::<Option<StreamReadReply>>(&mut conn);
            let read = tokio::select! {
                read = read => read,
                () = self.stopping.cancelled() => return,
            };
            match read {
                Ok(reply) => {
                    reader = Some(conn);
                    let entry = reply.and_then(|r| r.keys.into_iter().flat_map(|k| k.ids).next());
                    if let Some(entry) = entry {
                        self.spawn_take(entry, permit);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "queue: reading new jobs failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// One entry idle for at least a lease (its worker died, or handed it
    /// back), now claimed by this worker.
    async fn claim_lost_entry(&self) -> Option<redis::streams::StreamId> {
        let claimed: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(JOBS)
            .arg(GROUP)
            .arg(&self.worker)
            .arg(self.settings.lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await;
        let entry = claimed.ok()?.claimed.into_iter().next()?;
        tracing::info!(entry = %entry.id, "queue: claimed a job whose worker stopped renewing its lease");
        Some(entry)
    }

    /// Keeps the queue depth gauge current.
    async fn refresh_depth(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.reclaim_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stopping.cancelled() => return,
            }
            if let Ok(depth) = redis::cmd("ZCARD")
                .arg(QUEUED)
                .query_async::<i64>(&mut self.conn())
                .await
            {
                self.metrics.queue_depth.set(depth);
            }
        }
    }

    fn spawn_take(self: &Arc<Self>, entry: redis::streams::StreamId, permit: OwnedSemaphorePermit) {
        let id = entry
            .map
            .get("id")
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            let _permit = permit;
            match id {
                Some(id) => queue.take(id, entry.id).await,
                None => queue.drop_entry(&entry.id).await,
            }
        });
    }

    async fn drop_entry(&self, entry: &str) {
        let _: redis::RedisResult<Value> = redis::pipe()
            .cmd("XACK")
            .arg(JOBS)
            .arg(GROUP)
            .arg(entry)
            .cmd("XDEL")
            .arg(JOBS)
            .arg(entry)
            .query_async(&mut self.conn())
            .await;
    }

    async fn begin(&self, id: &str, token: &str) -> redis::RedisResult<Begin> {
        let (outcome, attempts, events, reason): (String, u32, u64, String) = self
            .scripts
            .begin
            .key(job_key(id))
            .key(lease_key(id))
            .key(QUEUED)
            .arg(id)
            .arg(token)
            .arg(self.settings.lease.as_millis() as u64)
            .arg(self.settings.max_attempts)
            .arg(&self.worker)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match outcome.as_str() {
            "busy" => Begin::Busy,
            "cancelled" => Begin::Cancelled { events, reason },
            "exhausted" => Begin::Exhausted { attempts, events },
            "run" => Begin::Run {
                attempt: attempts,
                events,
            },
            _ => Begin::Skip,
        })
    }

    /// Runs the job of stream entry `entry` if its lease is free.
    async fn take(self: Arc<Self>, id: String, entry: String) {
        let slot = tokio::select! {
            slot = self.engine.wait_for_slot() => slot,
            () = self.stopping.cancelled() => None,
        };
        // Not taken: the entry stays pending and is claimed again later.
        let Some(slot) = slot else { return };
        let token = uuid::Uuid::new_v4().to_string();
        let begin = match self.begin(&id, &token).await {
            Ok(begin) => begin,
            Err(error) => {
                tracing::warn!(completion = %id, %error, "queue: starting a job failed");
                return;
            }
        };
        let (spec, submitted_at) = match self.spec_of(&id).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(completion = %id, %error, "queue: reading a job failed");
                return;
            }
        };
        let held = Held {
            id,
            token,
            entry,
            submitted_at,
        };
        match begin {
            Begin::Skip => self.drop_entry(&held.entry).await,
            Begin::Busy => {}
            Begin::Cancelled { events, reason } => {
                let result = job::queue_result(
                    &held.id,
                    TerminationReason::Cancelled,
                    if reason.is_empty() {
                        "cancelled by CancelCompletion".to_owned()
                    } else {
                        format!("cancelled by CancelCompletion: {reason}")
                    },
                    held.submitted_at,
                    &Progress::new(),
                );
                self.end_job(&held, result, events + 1, CompletionState::Cancelled)
                    .await;
            }
            Begin::Exhausted { attempts, events } => {
                let detail = format!(
                    "failed: its worker stopped renewing the lease during each of its {attempts} runs \
                     (RLM_QUEUE_MAX_ATTEMPTS = {}); the last run's events are kept",
                    self.settings.max_attempts
                );
                tracing::warn!(completion = %held.id, attempts, "queue: giving up on a job whose workers kept dying");
                let result = job::queue_result(
                    &held.id,
                    TerminationReason::Error,
                    detail,
                    held.submitted_at,
                    &Progress::new(),
                );
                self.end_job(&held, result, events + 1, CompletionState::Failed)
                    .await;
            }
            Begin::Run { attempt, events } => match spec {
                Some(spec) => self.run(held, spec, attempt, events, slot).await,
                None => {
                    let result = job::queue_result(
                        &held.id,
                        TerminationReason::Error,
                        "failed: the job's spec is missing from Redis".to_owned(),
                        held.submitted_at,
                        &Progress::new(),
                    );
                    self.end_job(&held, result, events + 1, CompletionState::Failed)
                        .await;
                }
            },
        }
    }

    async fn spec_of(&self, id: &str) -> redis::RedisResult<(Option<CompletionSpec>, SystemTime)> {
        let (spec, submitted): (Option<Vec<u8>>, Option<u64>) = redis::cmd("HMGET")
            .arg(job_key(id))
            .arg("spec")
            .arg("submitted_ms")
            .query_async(&mut self.conn())
            .await?;
        let spec = spec.and_then(|bytes| CompletionSpec::decode(bytes.as_slice()).ok());
        let submitted_at = UNIX_EPOCH + Duration::from_millis(submitted.unwrap_or(0));
        Ok((spec, submitted_at))
    }

    /// Writes the result and ends the job (while holding its lease).
    async fn end_job(
        &self,
        held: &Held,
        result: CompletionResult,
        sequence: u64,
        state: CompletionState,
    ) -> bool {
        let ending = Ending::new(result, sequence, state);
        let written: redis::RedisResult<i64> = self
            .end_invocation(&self.scripts.finish, &held.id, &ending)
            .key(lease_key(&held.id))
            .arg(&held.token)
            .invoke_async(&mut self.conn())
            .await;
        match written {
            Ok(1) => {
                self.metrics.count_job(match state {
                    CompletionState::Cancelled => "cancelled",
                    CompletionState::Failed => "failed",
                    _ => "finished",
                });
                tracing::info!(completion = %held.id, state = state_name(state), "queued completion ended");
                true
            }
            Ok(_) => {
                tracing::warn!(completion = %held.id, "queue: lease lost before the result was written; another worker runs the job");
                false
            }
            Err(error) => {
                tracing::warn!(completion = %held.id, %error, "queue: writing the result failed; the job will be run again");
                false
            }
        }
    }

    async fn append(&self, held: &Held, event: &CompletionEvent, progress: &Progress) -> bool {
        for _ in 0..3 {
            let written: redis::RedisResult<i64> = self
                .scripts
                .append
                .key(job_key(&held.id))
                .key(lease_key(&held.id))
                .key(events_key(&held.id))
                .arg(&held.token)
                .arg(event.sequence)
                .arg(event.encode_to_vec())
                .arg(progress.usage.encode_to_vec())
                .arg(&progress.partial_answer)
                .arg(MAX_KEPT_EVENTS)
                .invoke_async(&mut self.conn())
                .await;
            match written {
                Ok(written) => return written == 1,
                Err(error) => {
                    tracing::warn!(completion = %held.id, %error, "queue: appending an event failed; retrying");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        false
    }

    async fn hand_back(&self, held: &Held) {
        let given: redis::RedisResult<i64> = self
            .scripts
            .hand_back
            .key(lease_key(&held.id))
            .key(job_key(&held.id))
            .key(QUEUED)
            .arg(&held.token)
            .arg(&held.id)
            .invoke_async(&mut self.conn())
            .await;
        if matches!(given, Ok(1)) {
            self.metrics.count_job("handed_back");
            tracing::info!(completion = %held.id, "queue: shutting down; job handed back for another replica");
        }
    }

    /// Renews the lease until `done`; cancels the run on a CancelCompletion
    /// and `lost` when the lease is lost (or cannot be renewed for a lease).
    fn spawn_renewal(
        self: &Arc<Self>,
        held: &Held,
        done: CancellationToken,
        lost: CancellationToken,
    ) {
        let queue = Arc::clone(self);
        let (id, token, entry) = (held.id.clone(), held.token.clone(), held.entry.clone());
        let every = (self.settings.lease / 3).min(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            let mut cancelled = false;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = done.cancelled() => return,
                }
                let renewed: redis::RedisResult<(String, String)> = queue
                    .scripts
                    .renew
                    .key(lease_key(&id))
                    .key(job_key(&id))
                    .key(JOBS)
                    .arg(&token)
                    .arg(queue.settings.lease.as_millis() as u64)
                    .arg(GROUP)
                    .arg(&queue.worker)
                    .arg(&entry)
                    .invoke_async(&mut queue.conn())
                    .await;
                match renewed {
                    Ok((state, reason)) if state == "lost" => {
                        tracing::warn!(completion = %id, reason, "queue: lease lost; stopping this run");
                        lost.cancel();
                        return;
                    }
                    Ok((state, reason)) => {
                        last_ok = tokio::time::Instant::now();
                        if state == "cancel" && !cancelled {
                            cancelled = true;
                            let _ = queue.engine.cancel_running(&id, &reason);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(completion = %id, %error, "queue: renewing the lease failed");
                        if last_ok.elapsed() >= queue.settings.lease {
                            lost.cancel();
                            return;
                        }
                    }
                }
            }
        });
    }

    async fn run(
        self: Arc<Self>,
        held: Held,
        spec: CompletionSpec,
        attempt: u32,
        offset: u64,
        slot: OwnedSemaphorePermit,
    ) {
        if attempt > 1 {
            self.metrics.count_job("retried");
        }
        tracing::info!(completion = %held.id, attempt, "queued completion starting");
        let done = CancellationToken::new();
        let lost = CancellationToken::new();
        self.spawn_renewal(&held, done.clone(), lost.clone());
        let _stop_renewing = done.drop_guard();
        let Attempt {
            mut events,
            started,
        } = job::launch(
            &self.engine,
            spec,
            job::attempt_ids(&held.id, attempt),
            slot,
            None,
        )
        .await;
        let failure = started.as_ref().err().cloned();
        let mut progress = Progress::new();
        progress.event_count = offset;
        let mut result_written = false;
        loop {
            let event = tokio::select! {
                biased;
                () = lost.cancelled() => return,
                () = self.stopping.cancelled() => {
                    self.hand_back(&held).await;
                    return;
                }
                event = events.recv() => event,
            };
            let Some(mut event) = event else { break };
            event.sequence += offset;
            progress.observe(&event);
            if let Some(mut result) = job::result_of(&event).cloned() {
                if failure
                    .as_ref()
                    .is_some_and(|s| s.code() == tonic::Code::NotFound)
                {
                    result.detail.push_str(FLEET_CONTEXT_HINT);
                }
                let state = job::end_state(failure.is_some());
                result_written = self.end_job(&held, result, event.sequence, state).await;
                break;
            }
            if !self.append(&held, &event, &progress).await {
                tracing::warn!(completion = %held.id, "queue: lost the lease or Redis; stopping this run");
                return;
            }
        }
        if !result_written && !lost.is_cancelled() {
            let (reason, detail) = failure.as_ref().map_or_else(
                || {
                    (
                        TerminationReason::Error,
                        "the completion ended without a result".to_owned(),
                    )
                },
                job::not_started,
            );
            let result = job::queue_result(&held.id, reason, detail, held.submitted_at, &progress);
            self.end_job(
                &held,
                result,
                progress.event_count + 1,
                CompletionState::Failed,
            )
            .await;
        }
        if let Ok(started) = started {
            let _ = started.result().await;
        }
    }
}

/// The final writes of a job.
struct Ending {
    sequence: u64,
    event: Vec<u8>,
    state: CompletionState,
    result: Vec<u8>,
    usage: Vec<u8>,
    partial: String,
}

impl Ending {
    fn new(result: CompletionResult, sequence: u64, state: CompletionState) -> Self {
        let usage = result.total_usage.unwrap_or_default().encode_to_vec();
        let partial = result.answer.clone();
        let encoded = result.encode_to_vec();
        Self {
            sequence,
            event: job::result_event(result, sequence).encode_to_vec(),
            state,
            result: encoded,
            usage,
            partial,
        }
    }
}

fn sequence_of(entry: &str) -> Option<u64> {
    entry.split('-').next()?.parse().ok()
}

fn terminal(state: CompletionState) -> bool {
    matches!(
        state,
        CompletionState::Finished | CompletionState::Cancelled | CompletionState::Failed
    )
}

fn state_name(state: CompletionState) -> &'static str {
    match state {
        CompletionState::Queued => "QUEUED",
        CompletionState::Running => "RUNNING",
        CompletionState::Finished => "FINISHED",
        CompletionState::Cancelled => "CANCELLED",
        CompletionState::Failed => "FAILED",
        CompletionState::Unspecified => "UNSPECIFIED",
    }
}

fn parse_state(name: &str) -> CompletionState {
    match name {
        "QUEUED" => CompletionState::Queued,
        "RUNNING" => CompletionState::Running,
        "FINISHED" => CompletionState::Finished,
        "CANCELLED" => CompletionState::Cancelled,
        "FAILED" => CompletionState::Failed,
        _ => CompletionState::Unspecified,
    }
}
