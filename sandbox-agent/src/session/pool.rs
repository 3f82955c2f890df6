//! The warm pool: session processes started ahead of demand for a profile, so
//! `CreateSession` costs a hand-over, not a Python start. Refilled in the
//! background, one start at a time, and bounded. A request for other limits
//! may take a process too (the manager re-limits its cgroup).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{Mutex, Notify};

use super::launcher::{Launched, Launcher, Priority};
use super::limits::Profile;

pub struct Pool {
    profile: Profile,
    target: usize,
    ready: Mutex<VecDeque<Launched>>,
    starting: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    wake: Notify,
    counter: AtomicU64,
}

pub struct PoolStats {
    pub profile: String,
    pub target: usize,
    pub ready: usize,
    pub starting: usize,
    pub hits: u64,
    pub misses: u64,
}

impl Pool {
    pub fn new(profile: Profile, target: usize) -> Arc<Self> {
        Arc::new(Self {
            profile,
            target,
            ready: Mutex::new(VecDeque::new()),
            starting: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            wake: Notify::new(),
            counter: AtomicU64::new(0),
        })
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// A ready process of this pool's profile, if it has one.
    pub async fn take(&self) -> Option<Launched> {
        if self.target == 0 {
            return None;
        }
        let taken = self.ready.lock().await.pop_front();
        match taken {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => self.misses.fetch_add(1, Ordering::Relaxed),
        };
        self.wake.notify_one();
        taken
    }

    /// A ready process, if there is one, for a request of another profile
    /// (a miss here is not this pool's).
    pub async fn take_for_other(&self) -> Option<Launched> {
        let taken = self.ready.lock().await.pop_front()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Some(taken)
    }

    /// Keeps the pool at its target until `stop` resolves; then empties it.
    pub async fn run(
        self: Arc<Self>,
        launcher: Arc<Launcher>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut failures = 0u32;
        loop {
            let ready = self.ready.lock().await.len();
            if ready < self.target {
                self.starting.store(1, Ordering::Relaxed);
                let name = format!(
                    "pool-{}-{}",
                    std::process::id(),
                    self.counter.fetch_add(1, Ordering::Relaxed)
                );
                let launched = tokio::select! {
                    launched = launcher.launch(&name, &self.profile, Priority::Background) => launched,
                    () = &mut stop => break,
                };
                self.starting.store(0, Ordering::Relaxed);
                match launched {
                    Ok(launched) => {
                        failures = 0;
                        self.ready.lock().await.push_back(launched);
                    }
                    Err(err) => {
                        failures += 1;
                        tracing::warn!(profile = %self.profile.name(), "warm pool start failed: {err}");
                        // Back off so a broken host does not spin.
                        let delay =
                            std::time::Duration::from_millis(100 * u64::from(failures.min(50)));
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {},
                            () = &mut stop => break,
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                () = self.wake.notified() => {},
                () = &mut stop => break,
            }
        }
        self.starting.store(0, Ordering::Relaxed);
        let drained: Vec<Launched> = self.ready.lock().await.drain(..).collect();
        let _ =
            tokio::task::spawn_blocking(move || drained.into_iter().for_each(Launched::terminate))
                .await;
    }

    pub async fn stats(&self) -> PoolStats {
        PoolStats {
            profile: self.profile.name(),
            target: self.target,
            ready: self.ready.lock().await.len(),
            starting: self.starting.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}
