//! Isolation of session processes: the filesystem plan, the spawn that applies
//! namespaces, identity, limits and seccomp, and the per-session cgroup.

pub mod rootfs;
pub mod spawn;
pub mod uids;
