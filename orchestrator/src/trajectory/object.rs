//! The object-store backend of [`TrajectoryStore`](super::TrajectoryStore):
//! any S3-compatible bucket (AWS S3, MinIO, GCS through its S3 API), or an
//! in-memory store in tests.
//!
//! An object store has no append, so each trajectory is a few objects under
//! `<prefix>/trajectories/<id>/`:
//!
//! | Object | What |
//! |---|---|
//! | `seg-00000000.jsonl`, `seg-00000001.jsonl`, ... | the JSONL lines, in order, as flushed while the completion runs |
//! | `trajectory.jsonl` | all the lines in one object, once the completion ended (the segments are then deleted) |
//! | `summary.json` | header, progress and result: what ListTrajectories shows; rewritten as a heartbeat |
//!
//! and one empty marker `<prefix>/index/<14 digits>.<id>` whose digits count
//! down with the start time, so a plain LIST of `index/` yields the newest
//! trajectory first and a page token is just the last marker's name.
//!
//! Appends only copy the line into the writer's buffer; one background task
//! per writer uploads the buffer as the next segment when it passes
//! `segment_bytes`, every `flush_interval` otherwise, and once more at the end.
//! It rewrites the summary at least every `heartbeat_interval`: a reader on
//! any replica sees a summary older than `stale_after` of a trajectory that
//! never ended as abandoned (INCOMPLETE), not RUNNING. After the last flush,
//! the segments are copied into `trajectory.jsonl` (a streamed multipart
//! upload, so memory stays bounded) and deleted; a reader that loses the race
//! with that deletion reads `trajectory.jsonl` instead.

use std::io;
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::task::TaskTracker;

use super::{
    EventBody, FinishedRecord, Progress, TrajectoryError, TrajectoryHeader, TrajectoryLine,
    WriteErrorHook, lock,
};

/// Name of the consolidated object.
const WHOLE: &str = "trajectory.jsonl";
/// Name of the summary object.
const SUMMARY: &str = "summary.json";
/// Segment reads in flight while reading one trajectory, and summary reads
/// while listing.
const READ_CONCURRENCY: usize = 8;
/// Consolidations running at once (each holds up to one multipart part).
const CONSOLIDATIONS: usize = 4;
/// Multipart part size of the consolidated object (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;
/// Attempts to read a trajectory whose segments vanish under the reader.
const READ_ATTEMPTS: usize = 3;

/// Tuning of the object backend.
#[derive(Debug, Clone)]
pub struct ObjectSettings {
    /// A buffer this large is uploaded at once as a segment.
    pub segment_bytes: usize,
    /// Most bytes one writer buffers while uploads lag; beyond, recording
    /// stops (reported as a write error) rather than memory growing.
    pub max_pending_bytes: usize,
    /// A non-empty buffer is uploaded at least this often.
    pub flush_interval: Duration,
    /// The summary is rewritten at least this often while running.
    pub heartbeat_interval: Duration,
    /// A running trajectory whose summary is older than this is abandoned.
    pub stale_after: Duration,
    /// How long the end of a completion waits for its last segment.
    pub final_flush_timeout: Duration,
}

impl Default for ObjectSettings {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 20,
            max_pending_bytes: 16 << 20,
            flush_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            stale_after: Duration::from_secs(30),
            final_flush_timeout: Duration::from_secs(10),
        }
    }
}

/// What `summary.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SummaryRecord {
    /// The header line's body.
    pub header: TrajectoryHeader,
    /// The header line's timestamp.
    pub started: String,
    /// Usage and root iterations so far.
    pub progress: Progress,
    /// The writer stopped (with or without a result).
    #[serde(default)]
    pub ended: bool,
    /// The result line, answer left out (listing does not show it).
    #[serde(default)]
    pub finished: Option<FinishedRecord>,
}

/// A summary as read, with its age.
pub(super) struct StoredSummary {
    pub record: SummaryRecord,
    /// Still running on some replica: not ended, heartbeat fresh.
    pub live: bool,
}

/// The lines of a trajectory as stored, with its summary.
pub(super) struct Loaded {
    pub text: String,
    pub summary: StoredSummary,
}

/// A bucket (or in-memory store) and the prefix trajectories live under.
#[derive(Debug)]
pub struct ObjectBackend {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    settings: ObjectSettings,
    tasks: TaskTracker,
    consolidations: Arc<Semaphore>,
}

impl ObjectBackend {
    /// `s3://bucket/prefix`, configured from the standard AWS environment
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, ...).
    pub fn s3(bucket: &str, prefix: &str) -> Result<Self, TrajectoryError> {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            // Fail an upload within seconds, not minutes: a trajectory write
            // never holds up a completion for long.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            })
            .build()
            .map_err(|e| TrajectoryError::Io(io::Error::other(e)))?;
        Ok(Self::new(
            Arc::new(store),
            prefix,
            ObjectSettings::default(),
        ))
    }

    /// A backend on `store` under `prefix` (may be empty).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, settings: ObjectSettings) -> Self {
        Self {
            store,
            prefix: Path::from(prefix.trim_matches('/')),
            settings,
            tasks: TaskTracker::new(),
            consolidations: Arc::new(Semaphore::new(CONSOLIDATIONS)),
        }
    }

    /// Where it stores, for messages.
    pub fn describe(&self) -> String {
        format!("{} under {:?}", self.store, self.prefix.as_ref())
    }

    fn dir(&self, id: &str) -> Path {
        self.prefix.clone().join("trajectories").join(id)
    }

    fn segment(&self, id: &str, n: u64) -> Path {
        self.dir(id).join(format!("seg-{n:08}.jsonl"))
    }

    fn index_dir(&self) -> Path {
        self.prefix.clone().join("index")
    }

    /// Starts the upload task of a new trajectory whose header line is
    /// `header_line` (already serialised, newline included).
    pub(super) fn start_writer(
        self: &Arc<Self>,
        id: &str,
        header: &TrajectoryHeader,
        started: &str,
        header_line: Vec<u8>,
        on_error: Option<WriteErrorHook>,
    ) -> ObjectSink {
        let shared = Arc::new(SinkShared {
            id: id.to_owned(),
            state: Mutex::new(Pending {
                buf: header_line,
                summary: SummaryRecord {
                    header: header.clone(),
                    started: started.to_owned(),
                    progress: Progress::default(),
                    ended: false,
                    finished: None,
                },
                closed: false,
                failed: false,
            }),
            wake: Notify::new(),
            settled: watch::channel(false).0,
            max_pending: self.settings.max_pending_bytes,
            segment_bytes: self.settings.segment_bytes,
        });
        let backend = Arc::clone(self);
        let task_shared = Arc::clone(&shared);
        let started_at = super::parse_rfc3339(started).unwrap_or_else(SystemTime::now);
        self.tasks.spawn(async move {
            Upload {
                backend,
                shared: task_shared,
                on_error,
                segments: 0,
                started_at,
            }
            .run()
            .await;
        });
        ObjectSink {
            shared,
            final_flush_timeout: self.settings.final_flush_timeout,
        }
    }

    /// Waits (up to `deadline`) for every writer's uploads to end.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }

    async fn get(&self, path: &Path) -> Result<Option<(Vec<u8>, SystemTime)>, TrajectoryError> {
        match self.store.get(path).await {
            Ok(result) => {
                let modified = SystemTime::from(result.meta.last_modified);
                let bytes = result.bytes().await.map_err(store_error)?;
                Ok(Some((bytes.to_vec(), modified)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The summary of `id`, or `None` when there is none.
    pub(super) async fn summary(&self, id: &str) -> Result<Option<StoredSummary>, TrajectoryError> {
        let Some((bytes, modified)) = self.get(&self.dir(id).join(SUMMARY)).await? else {
            return Ok(None);
        };
        let record: SummaryRecord =
            serde_json::from_slice(&bytes).map_err(|e| TrajectoryError::Corrupt {
                id: id.to_owned(),
                line: 0,
                message: format!("summary: {e}"),
            })?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        let live = !record.ended && age < self.settings.stale_after;
        Ok(Some(StoredSummary { record, live }))
    }

    /// Every line stored for `id`: the consolidated object when there is
    /// one, else the segments in order.
    pub(super) async fn load(&self, id: &str) -> Result<Loaded, TrajectoryError> {
        // The summary first: whatever it says was flushed is in the lines
        // read after it.
        let summary = self
            .summary(id)
            .await?
            .ok_or_else(|| TrajectoryError::NotFound(id.to_owned()))?;
        for _ in 0..READ_ATTEMPTS {
            if let Some(text) = self.read_objects(id).await? {
                return Ok(Loaded { text, summary });
            }
        }
        Err(TrajectoryError::Io(io::Error::other(format!(
            "trajectory {id:?} kept changing while it was read"
        ))))
    }

    /// `None` when a segment vanished (consolidated meanwhile): read again.
    async fn read_objects(&self, id: &str) -> Result<Option<String>, TrajectoryError> {
        let dir = self.dir(id);
        let mut segments = Vec::new();
        let mut whole = false;
        let mut listing = self.store.list(Some(&dir));
        while let Some(meta) = listing.try_next().await.map_err(store_error)? {
            match meta.location.filename() {
                Some(WHOLE) => whole = true,
                Some(name) if name.starts_with("seg-") && name.ends_with(".jsonl") => {
                    segments.push(meta.location)
                }
                _ => {}
            }
        }
        if whole {
            return match self.get(&dir.clone().join(WHOLE)).await? {
                Some((bytes, _)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
                None => Ok(None),
            };
        }
        // Zero-padded numbers: name order is write order.
        segments.sort();
        let parts: Vec<Option<(Vec<u8>, SystemTime)>> = futures::stream::iter(segments)
            .map(|path| async move { self.get(&path).await })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut text = String::new();
        for part in parts {
            let Some((bytes, _)) = part else {
                return Ok(None);
            };
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
        Ok(Some(text))
    }

    /// Index entries after `after` (a marker name), newest first: up to
    /// `want` of those `pick` keeps (it gets each id and summary), and the
    /// marker name to continue after when more entries follow.
    pub(super) async fn list<T>(
        &self,
        after: Option<&str>,
        want: usize,
        pick: impl Fn(&str, StoredSummary) -> Option<T>,
    ) -> Result<(Vec<T>, Option<String>), TrajectoryError> {
        let index = self.index_dir();
        let listing = match after {
            None => self.store.list(Some(&index)),
            Some(after) => self
                .store
                .list_with_offset(Some(&index), &index.clone().join(after)),
        };
        let mut entries = listing
            .map_err(store_error)
            .map_ok(|meta| async move {
                let name = meta.location.filename().unwrap_or_default().to_owned();
                let summary = match index_id(&name) {
                    // A corrupt summary is skipped, as a corrupt file is in a
                    // directory; a failing store fails the listing.
                    Some(id) => match self.summary(id).await {
                        Err(e @ TrajectoryError::Corrupt { .. }) => {
                            tracing::debug!(trajectory = %id, error = %e, "skipping trajectory");
                            None
                        }
                        other => other?,
                    },
                    None => None,
                };
                Ok::<_, TrajectoryError>((name, summary))
            })
            .try_buffered(READ_CONCURRENCY)
            .boxed();
        let mut out = Vec::new();
        let mut last = None;
        while let Some((name, summary)) = entries.try_next().await? {
            if out.len() == want {
                // One more exists: the page ends at the previous entry.
                return Ok((out, last));
            }
            // A marker without a summary is skipped (deleted, or not ours).
            if let (Some(id), Some(summary)) = (index_id(&name), summary)
                && let Some(item) = pick(id, summary)
            {
                out.push(item);
            }
            last = Some(name);
        }
        Ok((out, None))
    }

    /// Writes and deletes a probe object (the `/health` storage check).
    pub async fn check_writable(&self) -> Result<(), String> {
        let probe = self.prefix.clone().join(".health").join(format!(
            "{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        self.store
            .put(&probe, PutPayload::from_static(b"ok"))
            .await
            .map_err(|e| e.to_string())?;
        self.store.delete(&probe).await.map_err(|e| e.to_string())
    }
}

fn store_error(e: object_store::Error) -> TrajectoryError {
    TrajectoryError::Io(io::Error::other(e))
}

/// The marker name of a trajectory started at `started`: digits that count
/// down with time, so names sort newest first.
fn index_name(started: SystemTime, id: &str) -> String {
    let millis = started
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let countdown = 99_999_999_999_999u64.saturating_sub(millis);
    format!("{countdown:014}.{id}")
}

/// The id of an index marker name, if it is one.
pub(super) fn index_id(name: &str) -> Option<&str> {
    let (digits, id) = name.split_once('.')?;
    (digits.len() == 14 && digits.bytes().all(|b| b.is_ascii_digit()) && super::valid_id(id))
        .then_some(id)
}

struct Pending {
    buf: Vec<u8>,
    summary: SummaryRecord,
    closed: bool,
    failed: bool,
}

struct SinkShared {
    id: String,
    state: Mutex<Pending>,
    wake: Notify,
    /// True once the last segment and summary are stored (or given up).
    settled: watch::Sender<bool>,
    max_pending: usize,
    segment_bytes: usize,
}

/// The writer's end: buffers lines for the upload task.
pub(super) struct ObjectSink {
    shared: Arc<SinkShared>,
    final_flush_timeout: Duration,
}

impl ObjectSink {
    /// Buffers one line (`bytes` ends with a newline). Never waits on the
    /// network; fails once when the buffer would pass its bound.
    pub(super) fn push(&self, line: &TrajectoryLine, bytes: &[u8]) -> io::Result<()> {
        let mut p = lock(&self.shared.state);
        if p.failed || p.closed {
            return Ok(());
        }
        if p.buf.len() + bytes.len() > self.shared.max_pending {
            p.failed = true;
            p.buf = Vec::new();
            return Err(io::Error::other(format!(
                "more than {} bytes wait for upload; recording stopped",
                self.shared.max_pending
            )));
        }
        p.buf.extend_from_slice(bytes);
        p.summary.progress.observe(line);
        if let EventBody::CompletionFinished(f) = &line.body {
            p.summary.finished = Some(FinishedRecord {
                answer: String::new(),
                ..f.clone()
            });
        }
        if p.buf.len() >= self.shared.segment_bytes {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// No more lines: the task uploads what is left and ends.
    pub(super) fn close(&self) {
        let mut p = lock(&self.shared.state);
        if !p.closed {
            p.closed = true;
            self.shared.wake.notify_one();
        }
    }

    /// Resolves once the last segment is stored, or the bounded wait ends.
    pub(super) fn settled(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.settled.subscribe();
        let limit = self.final_flush_timeout;
        async move {
            let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
        }
    }
}

/// The upload task of one writer.
struct Upload {
    backend: Arc<ObjectBackend>,
    shared: Arc<SinkShared>,
    on_error: Option<WriteErrorHook>,
    segments: u64,
    started_at: SystemTime,
}

impl Upload {
    async fn run(mut self) {
        let settings = self.backend.settings.clone();
        let mut tick = tokio::time::interval(settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut summary_written: Option<tokio::time::Instant> = None;
        loop {
            let (chunk, summary, closed) = {
                let mut p = lock(&self.shared.state);
                if p.failed {
                    break;
                }
                p.summary.ended = p.closed;
                (mem::take(&mut p.buf), p.summary.clone(), p.closed)
            };
            let first = summary_written.is_none();
            let write_summary = closed
                || summary_written.is_none_or(|t| t.elapsed() >= settings.heartbeat_interval);
            let summary = write_summary.then_some(summary);
            if let Err(e) = self.flush(chunk, summary.as_ref(), first).await {
                self.fail(&format!("uploading failed: {e}"));
                break;
            }
            if write_summary {
                summary_written = Some(tokio::time::Instant::now());
            }
            if closed {
                self.shared.settled.send_replace(true);
                if let Err(e) = self.consolidate().await {
                    self.fail(&format!("consolidating the segments failed: {e}"));
                }
                break;
            }
            tokio::select! {
                () = self.shared.wake.notified() => {}
                _ = tick.tick() => {}
            }
        }
        self.shared.settled.send_replace(true);
    }

    /// Uploads `chunk` as the next segment (when not empty), then `summary`,
    /// then (the `first` time) the index marker: whatever a reader finds
    /// listed or summarised is already stored.
    async fn flush(
        &mut self,
        chunk: Vec<u8>,
        summary: Option<&SummaryRecord>,
        first: bool,
    ) -> io::Result<()> {
        if !chunk.is_empty() {
            self.put(self.backend.segment(&self.shared.id, self.segments), chunk)
                .await?;
            self.segments += 1;
        }
        if let Some(summary) = summary {
            let json = serde_json::to_vec(summary).map_err(io::Error::other)?;
            self.put(self.backend.dir(&self.shared.id).join(SUMMARY), json)
                .await?;
        }
        if first {
            let name = index_name(self.started_at, &self.shared.id);
            self.put(self.backend.index_dir().join(name), Vec::new())
                .await?;
        }
        Ok(())
    }

    async fn put(&self, path: Path, bytes: Vec<u8>) -> io::Result<()> {
        self.backend
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(io::Error::other)
    }

    /// Copies the segments into the one consolidated object, then deletes
    /// them. Readers see the segments or the whole object, never neither.
    async fn consolidate(&self) -> io::Result<()> {
        let _slot = self.backend.consolidations.acquire().await;
        let dir = self.backend.dir(&self.shared.id);
        let store = Arc::clone(&self.backend.store);
        let mut whole = BufWriter::with_capacity(Arc::clone(&store), dir.join(WHOLE), PART_BYTES);
        for n in 0..self.segments {
            let segment = self.backend.segment(&self.shared.id, n);
            let copied = match store.get(&segment).await {
                Ok(got) => match got.bytes().await {
                    Ok(bytes) => whole.write_all(&bytes).await,
                    Err(e) => Err(io::Error::other(e)),
                },
                Err(e) => Err(io::Error::other(e)),
            };
            if let Err(e) = copied {
                // Nothing is left half-uploaded; the segments stay readable.
                let _ = whole.abort().await;
                return Err(e);
            }
        }
        // A failed completion may leave an unfinished multipart upload
        // behind (a bucket rule aborting those cleans it up).
        whole.shutdown().await?;
        for n in 0..self.segments {
            match store
                .delete(&self.backend.segment(&self.shared.id, n))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        Ok(())
    }

    /// Stops recording and reports the failure once.
    fn fail(&self, message: &str) {
        let mut p = lock(&self.shared.state);
        if mem::replace(&mut p.failed, true) {
            return;
        }
        p.buf = Vec::new();
        drop(p);
        tracing::warn!(trajectory = %self.shared.id, error = %message, "trajectory storage failed");
        if let Some(hook) = &self.on_error {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use object_store::memory::InMemory;
    use rlm_proto::rlm::v1::TrajectoryStatus;

    use super::super::tests::{call, finished, header, write_tree};
    use super::super::{StoreLocation, TrajectoryError, TrajectoryStore, UsageRecord};
    use super::*;

    fn quick() -> ObjectSettings {
        ObjectSettings {
            segment_bytes: 256,
            max_pending_bytes: 1 << 20,
            flush_interval: Duration::from_millis(20),
            heartbeat_interval: Duration::from_millis(50),
            stale_after: Duration::from_secs(10),
            final_flush_timeout: Duration::from_secs(10),
        }
    }

    /// Two stores on one bucket: two replicas, each with its own record of
    /// what it is writing.
    fn replicas(settings: ObjectSettings) -> (Arc<InMemory>, TrajectoryStore, TrajectoryStore) {
        let bucket = Arc::new(InMemory::new());
        let store = |s: ObjectSettings| {
            TrajectoryStore::with_objects(ObjectBackend::new(bucket.clone(), "team/a/", s))
        };
        (bucket.clone(), store(settings.clone()), store(settings))
    }

    async fn names(bucket: &InMemory, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = bucket
            .list(Some(&Path::from(prefix)))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .expect("list");
        out.sort();
        out
    }

    /// Polls `f` until it returns true (bounded).
    async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
        for _ in 0..500 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn another_replica_reads_while_running_then_the_consolidated_object() {
        let (bucket, a, b) = replicas(quick());
        let w = a.create("t1", header("t1")).expect("create");
        w.append(
            "0",
            0,
            EventBody::IterationStarted {
                iteration: 1,
                tree_usage: UsageRecord::default(),
            },
        )
        .expect("append");
        w.append("0", 0, call("m", Some(0.5))).expect("append");
        // B sees what A flushed, as RUNNING (A's heartbeat is fresh).
        eventually("B reads both events", async || {
            b.read("t1").await.is_ok_and(|t| t.events.len() == 2)
        })
        .await;
        let t = b.read("t1").await.expect("read");
        let s = t.summary.expect("summary");
        assert_eq!(s.status, TrajectoryStatus::Running as i32);
        assert_eq!((s.iterations, s.total_usage.map(|u| u.calls)), (1, Some(1)));
        let (listed, _) = b.list(10, "").await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, TrajectoryStatus::Running as i32);
        assert_eq!(
            listed[0].metadata.get("team").map(String::as_str),
            Some("a")
        );
        let seg_count = names(&bucket, "team/a/trajectories/t1")
            .await
            .iter()
            .filter(|n| n.contains("/seg-"))
            .count();
        assert!(seg_count >= 1);

        w.append("0", 0, finished()).expect("append");
        w.close();
        w.settled().await;
        // Once settled, B reads the result at once.
        let t = b.read("t1").await.expect("read");
        assert_eq!(
            t.summary.map(|s| s.status),
            Some(TrajectoryStatus::Finished as i32)
        );
        assert_eq!(t.result.map(|r| r.answer).as_deref(), Some("42"));
        assert_eq!(t.events.len(), 3);
        // Then the segments become one object.
        eventually("segments consolidated", async || {
            names(&bucket, "team/a/trajectories/t1").await
                == [
                    "team/a/trajectories/t1/summary.json",
                    "team/a/trajectories/t1/trajectory.jsonl",
                ]
        })
        .await;
        let (lines, status) = b.read_lines("t1").await.expect("lines");
        assert_eq!(status, TrajectoryStatus::Finished);
        let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [0, 1, 2, 3]);
        assert_eq!(
            b.read("t1").await.expect("read"),
            a.read("t1").await.expect("read")
        );
        assert!(a.drain(Duration::from_secs(10)).await);
    }

    #[tokio::test]
    async fn a_whole_tree_reads_the_same_on_both_replicas() {
        let (bucket, a, b) = replicas(quick());
        write_tree(&a, "tree");
        assert!(a.drain(Duration::from_secs(10)).await);
        let t = b.read("tree").await.expect("read");
        assert_eq!(t.events.len(), 10);
        assert_eq!(t, a.read("tree").await.expect("read"));
        let listed = names(&bucket, "team/a").await;
        assert!(listed.iter().all(|n| !n.contains("/seg-")), "{listed:?}");
        assert!(matches!(
            b.read("missing").await,
            Err(TrajectoryError::NotFound(_))
        ));
        assert!(matches!(
            b.read("../x").await,
            Err(TrajectoryError::InvalidId(_))
        ));
    }

    #[tokio::test]
    async fn a_stale_heartbeat_reads_as_incomplete_elsewhere() {
        let settings = ObjectSettings {
            // A never refreshes its summary within the test: it looks dead.
            heartbeat_interval: Duration::from_secs(3600),
            stale_after: Duration::from_millis(100),
            ..quick()
        };
        let (_bucket, a, b) = replicas(settings);
        let w = a.create("gone", header("gone")).expect("create");
        w.append("0", 0, call("m", None)).expect("append");
        eventually("B reads the event", async || {
            b.read("gone").await.is_ok_and(|t| t.events.len() == 1)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = |t: super::super::Trajectory| t.summary.map(|s| s.status);
        assert_eq!(
            status(b.read("gone").await.expect("read")),
            Some(TrajectoryStatus::Incomplete as i32)
        );
        let (listed, _) = b.list(10, "").await.expect("list");
        assert_eq!(listed[0].status, TrajectoryStatus::Incomplete as i32);
        // The replica writing it knows better.
        assert_eq!(
            status(a.read("gone").await.expect("read")),
            Some(TrajectoryStatus::Running as i32)
        );
        // Ended without a result: INCOMPLETE everywhere.
        drop(w);
        assert!(a.drain(Duration::from_secs(10)).await);
        assert_eq!(
            status(a.read("gone").await.expect("read")),
            Some(TrajectoryStatus::Incomplete as i32)
        );
    }

    #[tokio::test]
    async fn a_fresh_heartbeat_keeps_a_quiet_completion_running() {
        let settings = ObjectSettings {
            stale_after: Duration::from_millis(500),
            ..quick()
        };
        let (_bucket, a, b) = replicas(settings);
        let _w = a.create("slow", header("slow")).expect("create");
        // Nothing new is written for several times stale_after.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (_, status) = b.read_lines("slow").await.expect("lines");
        assert_eq!(status, TrajectoryStatus::Running);
    }

    #[tokio::test]
    async fn listing_pages_newest_first_with_filters() {
        let (bucket, a, b) = replicas(quick());
        for i in 0..5 {
            let mut h = header(&format!("t{i}"));
            h.metadata.insert("parity".to_owned(), (i % 2).to_string());
            let w = a.create(&format!("t{i}"), h).expect("create");
            w.append("0", 0, finished()).expect("append");
            drop(w);
            // Distinct start times (the index has millisecond resolution).
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        assert!(a.drain(Duration::from_secs(10)).await);
        // A corrupt summary (listed newest) is skipped, not fatal.
        let put = |path: &str, bytes: &'static [u8]| {
            let bucket = bucket.clone();
            let path = Path::from(path);
            async move {
                bucket
                    .put(&path, PutPayload::from_static(bytes))
                    .await
                    .expect("put");
            }
        };
        put("team/a/trajectories/bad/summary.json", b"not json").await;
        let marker = index_name(SystemTime::now(), "bad");
        put(&format!("team/a/index/{marker}"), b"").await;
        let mut ids = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let (page, next) = b.list(2, &token).await.expect("list");
            pages += 1;
            assert!(page.len() <= 2);
            ids.extend(page.iter().map(|s| s.trajectory_id.clone()));
            assert!(
                page.iter()
                    .all(|s| s.status == TrajectoryStatus::Finished as i32)
            );
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(pages, 3);
        assert_eq!(ids, ["t4", "t3", "t2", "t1", "t0"]);
        let (odd, next) = b
            .list_matching(10, "", |s| {
                s.metadata.get("parity").map(String::as_str) == Some("1")
            })
            .await
            .expect("list");
        let odd: Vec<_> = odd.iter().map(|s| s.trajectory_id.as_str()).collect();
        assert_eq!((odd, next.as_str()), (vec!["t3", "t1"], ""));
        for bad in ["garbage", "123.t1", "00000000000000.a/b"] {
            assert!(matches!(
                b.list(2, bad).await,
                Err(TrajectoryError::InvalidPageToken)
            ));
        }
    }

    #[tokio::test]
    async fn the_write_buffer_is_bounded_and_its_overflow_reported_once() {
        let settings = ObjectSettings {
            segment_bytes: usize::MAX,
            max_pending_bytes: 4096,
            flush_interval: Duration::from_secs(3600),
            ..quick()
        };
        let (_bucket, a, _b) = replicas(settings);
        let w = a.create("full", header("full")).expect("create");
        let mut errors = 0;
        for _ in 0..100 {
            if let Err(e) = w.append("0", 0, call("m", None)) {
                assert!(matches!(e, TrajectoryError::Write { .. }), "{e}");
                errors += 1;
            }
        }
        assert_eq!(errors, 1);
        assert!(w.failed());
    }

    #[tokio::test]
    async fn a_failed_upload_is_reported_once_and_the_writer_goes_on() {
        // A real S3 client towards a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let s3 = AmazonS3Builder::new()
            .with_bucket_name("nowhere")
            .with_region("us-east-1")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_retry(RetryConfig {
                max_retries: 1,
                retry_timeout: Duration::from_secs(2),
                ..RetryConfig::default()
            })
            .build()
            .expect("s3 client");
        let reported = Arc::new(AtomicUsize::new(0));
        let store = TrajectoryStore::with_objects(ObjectBackend::new(Arc::new(s3), "p", quick()))
            .on_write_error({
                let reported = reported.clone();
                move || {
                    reported.fetch_add(1, Ordering::SeqCst);
                }
            });
        let w = store.create("lost", header("lost")).expect("create");
        for _ in 0..20 {
            w.append("0", 0, call("m", None))
                .expect("appends never fail here");
        }
        w.append("0", 0, finished()).expect("append");
        w.close();
        w.settled().await;
        assert!(store.drain(Duration::from_secs(30)).await);
        assert_eq!(reported.load(Ordering::SeqCst), 1);
        assert!(store.check_writable().await.is_err());
    }

    #[tokio::test]
    async fn health_probe_writes_and_deletes() {
        let (bucket, a, _b) = replicas(quick());
        a.check_writable().await.expect("writable");
        assert!(names(&bucket, "").await.is_empty());
    }

    #[test]
    fn index_names_sort_newest_first() {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let older = index_name(t, "b");
        let newer = index_name(t + Duration::from_millis(1), "a");
        assert!(newer < older);
        assert_eq!(index_id(&older), Some("b"));
        for bad in ["", "x", "1.a", "0000000000000a.b", "00000000000000.a.b"] {
            assert_eq!(index_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn store_locations_parse() {
        assert_eq!(
            StoreLocation::parse("s3://my-bucket/rlm/prod/"),
            Ok(StoreLocation::S3 {
                bucket: "my-bucket".to_owned(),
                prefix: "rlm/prod".to_owned()
            })
        );
        assert_eq!(
            StoreLocation::parse("s3://my-bucket"),
            Ok(StoreLocation::S3 {
                bucket: "my-bucket".to_owned(),
                prefix: String::new()
            })
        );
        assert_eq!(
            StoreLocation::parse("file:///var/log/rlm"),
            Ok(StoreLocation::Dir("/var/log/rlm".into()))
        );
        for bad in [
            "file://relative",
            "s3://",
            "s3://UPPER",
            "s3://b/../x",
            "s3://ok-bucket/a//b",
            "gs://x",
            "/var/log",
        ] {
            assert!(StoreLocation::parse(bad).is_err(), "{bad}");
        }
    }
}
