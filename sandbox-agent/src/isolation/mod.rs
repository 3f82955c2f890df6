//! Isolation of session processes: the filesystem plan, the spawn that applies
//! namespaces, identity, limits and seccomp, the per-session cgroup, the uid
//! pool, and the host checks.

pub mod cgroup;
pub mod preflight;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod uids;
