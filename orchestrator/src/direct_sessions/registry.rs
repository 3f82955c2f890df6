//! Who owns which direct session, the caps, and the idle clocks.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use rlm_proto::rlm::v1::{SandboxLimits, Session};
use tokio::sync::Mutex as AsyncMutex;
use tonic::Status;

use super::{Repl, SessionSettings, proto_duration, timestamp};
use crate::remote_session::RemoteSession;

/// The label of the API key that created a session; `None` without keys.
pub type Owner = Option<String>;

pub fn not_found(id: &str) -> Status {
    Status::not_found(format!(
        "session_id: no session {id} (never created, destroyed, ended, expired after its idle TTL, or another API key's)"
    ))
}

struct Activity {
    last_used: Instant,
    last_used_at: SystemTime,
    executions: u64,
    executing: bool,
}

/// One open direct session.
pub struct Entry {
    pub id: String,
    pub owner: Owner,
    /// The agent's id of the session (never shown to clients).
    pub agent_id: String,
    pub idle_ttl: Duration,
    pub created_at: SystemTime,
    pub limits: SandboxLimits,
    /// Locked by the cell running in it.
    pub repl: Repl,
    /// Set once removed from the registry: a cell waiting for the lock must not run.
    pub gone: AtomicBool,
    activity: Mutex<Activity>,
}

impl Entry {
    pub fn new(
        id: String,
        owner: Owner,
        agent_id: String,
        idle_ttl: Duration,
        limits: SandboxLimits,
        session: RemoteSession,
    ) -> Self {
        let now = SystemTime::now();
        Self {
            id,
            owner,
            agent_id,
            idle_ttl,
            created_at: now,
            limits,
            repl: Arc::new(AsyncMutex::new(session)),
            gone: AtomicBool::new(false),
            activity: Mutex::new(Activity {
                last_used: Instant::now(),
                last_used_at: now,
                executions: 0,
                executing: false,
            }),
        }
    }

    fn activity(&self) -> MutexGuard<'_, Activity> {
        self.activity.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn started(&self) {
        self.activity().executing = true;
    }

    pub fn finished(&self) {
        let mut a = self.activity();
        a.executing = false;
        a.executions += 1;
        a.last_used = Instant::now();
        a.last_used_at = SystemTime::now();
    }

    fn idle_expired(&self, now: Instant) -> bool {
        let a = self.activity();
        !a.executing && now.saturating_duration_since(a.last_used) > self.idle_ttl
    }

    pub fn describe(&self) -> Session {
        let a = self.activity();
        Session {
            session_id: self.id.clone(),
            created_at: Some(timestamp(self.created_at)),
            last_used_at: Some(timestamp(a.last_used_at)),
            idle_ttl: proto_duration(self.idle_ttl),
            executions: a.executions,
            executing: a.executing,
            limits: Some(self.limits.clone()),
        }
    }
}

#[derive(Default)]
struct State {
    /// By public session id; insertion order is kept by `created_at`.
    sessions: HashMap<String, Arc<Entry>>,
    /// Sessions being created, per owner (they count against the caps).
    pending: HashMap<Owner, u32>,
}

impl State {
    fn count(&self, owner: &Owner) -> u32 {
        let open = self.sessions.values().filter(|e| &e.owner == owner).count() as u32;
        open + self.pending.get(owner).copied().unwrap_or(0)
    }

    fn total(&self) -> u32 {
        self.sessions.len() as u32 + self.pending.values().sum::<u32>()
    }

    fn release(&mut self, owner: &Owner) {
        if let Some(n) = self.pending.get_mut(owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending.remove(owner);
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    state: Mutex<State>,
}

/// A place under the caps, held while the agent creates the session;
/// released on drop unless the session was inserted.
pub struct Reservation<'a> {
    registry: &'a Registry,
    owner: Owner,
    used: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.registry.lock().release(&self.owner);
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for one more session of `owner`, or says which cap is full.
    pub fn reserve(
        &self,
        owner: &Owner,
        settings: &SessionSettings,
    ) -> Result<Reservation<'_>, Status> {
        let mut state = self.lock();
        if state.total() >= settings.max_sessions {
            return Err(Status::resource_exhausted(format!(
                "the server already has its maximum of {} direct sessions open (RLM_MAX_SESSIONS); destroy one or retry later",
                settings.max_sessions
            )));
        }
        match owner {
            Some(label) if state.count(owner) >= settings.max_per_key => {
                return Err(Status::resource_exhausted(format!(
                    "API key {label:?} already has its maximum of {} direct sessions open (RLM_API_KEY_MAX_SESSIONS); destroy one first",
                    settings.max_per_key
                )));
            }
            _ => {}
        }
        *state.pending.entry(owner.clone()).or_insert(0) += 1;
        Ok(Reservation {
            registry: self,
            owner: owner.clone(),
            used: false,
        })
    }

    pub fn insert(&self, mut reservation: Reservation<'_>, entry: Arc<Entry>) {
        let mut state = self.lock();
        state.release(&reservation.owner);
        reservation.used = true;
        state.sessions.insert(entry.id.clone(), entry);
    }

    /// `owner`'s session `id`; NOT_FOUND for anyone else's.
    pub fn get(&self, owner: &Owner, id: &str) -> Result<Arc<Entry>, Status> {
        self.lock()
            .sessions
            .get(id)
            .filter(|e| &e.owner == owner)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// Removes `entry` if it is still registered; true when this call did.
    pub fn remove(&self, entry: &Arc<Entry>) -> bool {
        let mut state = self.lock();
        match state.sessions.get(&entry.id) {
            Some(current) if Arc::ptr_eq(current, entry) => {
                state.sessions.remove(&entry.id);
                true
            }
            _ => false,
        }
    }

    /// Removes session `id` whoever owns it.
    pub fn remove_any(&self, id: &str) -> Option<Arc<Entry>> {
        self.lock().sessions.remove(id)
    }

    /// `owner`'s sessions, oldest first.
    pub fn owned_by(&self, owner: &Owner) -> Vec<Arc<Entry>> {
        let mut owned: Vec<_> = self
            .lock()
            .sessions
            .values()
            .filter(|e| &e.owner == owner)
            .cloned()
            .collect();
        owned.sort_by_key(|e| e.created_at);
        owned
    }

    /// Removes and returns the sessions idle past their TTL. A session whose
    /// REPL is locked (a cell starting) is left alone.
    pub fn take_idle(&self, now: Instant) -> Vec<Arc<Entry>> {
        let mut state = self.lock();
        let expired: Vec<String> = state
            .sessions
            .values()
            .filter(|e| e.idle_expired(now) && e.repl.try_lock().is_ok())
            .map(|e| e.id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| state.sessions.remove(id))
            .inspect(|e| e.gone.store(true, std::sync::atomic::Ordering::Release))
            .collect()
    }

    pub fn take_all(&self) -> Vec<Arc<Entry>> {
        self.lock().sessions.drain().map(|(_, e)| e).collect()
    }
}
