//! Dedicated unprivileged identities: each live session gets its own uid (and a
//! gid of the same number), never 0 and never shared by two live sessions. A
//! lease returns its uid only when dropped, which the session does after its
//! last process is gone, so a uid is never reused while something still runs as it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("all {0} sandbox uids are in use")]
    Exhausted(u32),
    #[error("uid range {start}+{count} is invalid: it must not include 0 and must fit in 32 bits")]
    InvalidRange { start: u32, count: u32 },
}

#[derive(Debug)]
struct Inner {
    start: u32,
    count: u32,
    in_use: BTreeSet<u32>,
    next: u32,
}

#[derive(Debug, Clone)]
pub struct UidPool {
    inner: Arc<Mutex<Inner>>,
}

/// A uid held by one session.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    pool: UidPool,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.pool.inner.lock() {
            inner.in_use.remove(&self.uid);
        }
    }
}

impl UidPool {
    pub fn new(start: u32, count: u32) -> Result<Self, UidError> {
        if start == 0 || count == 0 || start.checked_add(count).is_none() {
            return Err(UidError::InvalidRange { start, count });
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                start,
                count,
                in_use: BTreeSet::new(),
                next: 0,
            })),
        })
    }

    /// Leases a free uid, rotating through the range so a just-freed uid is
    /// the last to be handed out again.
    pub fn lease(&self) -> Result<UidLease, UidError> {
        let mut inner = self.inner.lock().map_err(|_| UidError::Exhausted(0))?;
        for _ in 0..inner.count {
            let uid = inner.start + inner.next;
            inner.next = (inner.next + 1) % inner.count;
            if inner.in_use.insert(uid) {
                return Ok(UidLease {
                    uid,
                    pool: self.clone(),
                });
            }
        }
        Err(UidError::Exhausted(inner.count))
    }

    pub fn in_use(&self) -> usize {
        self.inner
            .lock()
            .map(|inner| inner.in_use.len())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_unique_while_leased_and_rotate() {
        assert!(UidPool::new(0, 10).is_err());
        assert!(UidPool::new(u32::MAX, 2).is_err());
        let pool = UidPool::new(1000, 3).expect("pool");
        let a = pool.lease().expect("a");
        let b = pool.lease().expect("b");
        let c = pool.lease().expect("c");
        assert_eq!([a.uid(), b.uid(), c.uid()], [1000, 1001, 1002]);
        assert!(matches!(pool.lease(), Err(UidError::Exhausted(3))));
        drop(b);
        assert_eq!(pool.in_use(), 2);
        assert_eq!(pool.lease().expect("reuse").uid(), 1001);
    }
}
