//! Session limits: defaults, validation of what a client asks for, and the
//! warm-pool profile a set of limits belongs to.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rlm_proto::rlm::sandbox::v1 as pb;

const MIB: u64 = 1 << 20;

/// Resolved limits of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_millicores: u32,
    pub max_pids: u32,
    pub network: bool,
    pub tmpfs_bytes: u64,
    pub output_cap_bytes: u64,
    pub idle_ttl: Duration,
    pub allowed_paths: Vec<(PathBuf, bool)>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 * MIB,
            cpu_millicores: 1000,
            max_pids: 64,
            network: false,
            tmpfs_bytes: 64 * MIB,
            output_cap_bytes: MIB,
            idle_ttl: Duration::from_secs(600),
            allowed_paths: Vec::new(),
        }
    }
}

/// What decides whether a pooled process fits a request: everything set
/// when the process starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    pub memory_bytes: u64,
    pub cpu_millicores: u32,
    pub max_pids: u32,
    pub network: bool,
    pub tmpfs_bytes: u64,
    pub allowed_paths: Vec<(PathBuf, bool)>,
}

impl Profile {
    /// Whether a process started for `self` can serve `other` once its
    /// cgroup limits (memory, CPU, pids) are changed: the mounts, the
    /// network namespace and the rlimits (`RLIMIT_FSIZE` is the tmpfs size)
    /// are the same.
    pub fn relimits_to(&self, other: &Profile) -> bool {
        self.network == other.network
            && self.tmpfs_bytes == other.tmpfs_bytes
            && self.allowed_paths == other.allowed_paths
    }

    /// e.g. `mem512Mi-cpu1000m-pids64-tmp64Mi`.
    pub fn name(&self) -> String {
        let mut name = format!(
            "mem{}Mi-cpu{}m-pids{}-tmp{}Mi",
            self.memory_bytes / MIB,
            self.cpu_millicores,
            self.max_pids,
            self.tmpfs_bytes / MIB
        );
        if self.network {
            name.push_str("-net");
        }
        if !self.allowed_paths.is_empty() {
            name.push_str(&format!("-paths{}", self.allowed_paths.len()));
        }
        name
    }
}

impl Limits {
    pub fn profile(&self) -> Profile {
        Profile {
            memory_bytes: self.memory_bytes,
            cpu_millicores: self.cpu_millicores,
            max_pids: self.max_pids,
            network: self.network,
            tmpfs_bytes: self.tmpfs_bytes,
            allowed_paths: self.allowed_paths.clone(),
        }
    }

    pub fn to_proto(&self) -> pb::SessionLimits {
        pb::SessionLimits {
            memory_bytes: self.memory_bytes,
            cpu_millicores: self.cpu_millicores,
            max_pids: self.max_pids,
            network: self.network,
            allowed_paths: self
                .allowed_paths
                .iter()
                .map(|(path, rw)| pb::AllowedPath {
                    host_path: path.display().to_string(),
                    read_write: *rw,
                })
                .collect(),
            tmpfs_bytes: self.tmpfs_bytes,
            output_cap_bytes: self.output_cap_bytes,
            idle_ttl: Some(prost_types::Duration {
                seconds: self.idle_ttl.as_secs() as i64,
                nanos: 0,
            }),
        }
    }
}

/// What the agent permits beyond the defaults.
#[derive(Debug, Clone)]
pub struct Policy {
    pub host_cpus: u32,
    pub allow_network: bool,
    /// Host path prefixes under which allowed_paths may lie.
    pub allowed_path_prefixes: Vec<PathBuf>,
}

/// A rejected request: the field and why; the caller picks the status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct LimitError {
    pub field: &'static str,
    pub reason: String,
    /// Not a malformed value but something the agent does not permit.
    pub denied: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> LimitError {
    LimitError {
        field,
        reason: reason.into(),
        denied: false,
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    value: T,
    default: T,
    zero: T,
    min: T,
    max: T,
) -> Result<T, LimitError> {
    if value == zero {
        return Ok(default);
    }
    if value < min || value > max {
        return Err(invalid(field, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}

/// Resolves a request against defaults and policy.
pub fn resolve(
    requested: Option<&pb::SessionLimits>,
    policy: &Policy,
) -> Result<Limits, LimitError> {
    let defaults = Limits::default();
    let Some(r) = requested else {
        return Ok(defaults);
    };
    let memory_bytes = in_range(
        "limits.memory_bytes",
        r.memory_bytes,
        defaults.memory_bytes,
        0,
        32 * MIB,
        1 << 40,
    )?;
    let cpu_millicores = in_range(
        "limits.cpu_millicores",
        r.cpu_millicores,
        defaults.cpu_millicores,
        0,
        10,
        1000 * policy.host_cpus.max(1),
    )?;
    let max_pids = in_range("limits.max_pids", r.max_pids, defaults.max_pids, 0, 8, 4096)?;
    let tmpfs_default = defaults.tmpfs_bytes.min(memory_bytes);
    let tmpfs_bytes = in_range(
        "limits.tmpfs_bytes",
        r.tmpfs_bytes,
        tmpfs_default,
        0,
        MIB,
        memory_bytes,
    )?;
    let output_cap_bytes = in_range(
        "limits.output_cap_bytes",
        r.output_cap_bytes,
        defaults.output_cap_bytes,
        0,
        1024,
        64 * MIB,
    )?;
    let idle_ttl = match &r.idle_ttl {
        None => defaults.idle_ttl,
        Some(d) if d.seconds == 0 && d.nanos == 0 => defaults.idle_ttl,
        Some(d) if d.seconds < 1 || d.seconds > 86_400 || d.nanos < 0 => {
            return Err(invalid("limits.idle_ttl", "must be between 1 s and 24 h"));
        }
        Some(d) => Duration::new(d.seconds as u64, d.nanos as u32),
    };
    if r.network && !policy.allow_network {
        return Err(LimitError {
            field: "limits.network",
            reason: "this agent does not allow network access for sessions".into(),
            denied: true,
        });
    }
    if r.allowed_paths.len() > 16 {
        return Err(invalid("limits.allowed_paths", "at most 16 paths"));
    }
    let mut allowed_paths = Vec::new();
    for entry in &r.allowed_paths {
        let path = normalized_absolute(&entry.host_path).ok_or_else(|| {
            invalid(
                "limits.allowed_paths",
                format!("{:?} is not an absolute, normalised path", entry.host_path),
            )
        })?;
        if !policy
            .allowed_path_prefixes
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Err(LimitError {
                field: "limits.allowed_paths",
                reason: format!("{} is not under a permitted prefix", path.display()),
                denied: true,
            });
        }
        // No symlink anywhere on the way: the canonical form must be the path itself.
        match std::fs::canonicalize(&path) {
            Ok(real) if real == path => {}
            Ok(_) => {
                return Err(invalid(
                    "limits.allowed_paths",
                    format!("{} goes through a symlink", path.display()),
                ));
            }
            Err(err) => {
                return Err(invalid(
                    "limits.allowed_paths",
                    format!("{}: {err}", path.display()),
                ));
            }
        }
        allowed_paths.push((path, entry.read_write));
    }
    Ok(Limits {
        memory_bytes,
        cpu_millicores,
        max_pids,
        network: r.network,
        tmpfs_bytes,
        output_cap_bytes,
        idle_ttl,
        allowed_paths,
    })
}

fn normalized_absolute(text: &str) -> Option<PathBuf> {
    let path = Path::new(text);
    if !path.is_absolute() || text.len() > 1 && text.ends_with('/') {
        return None;
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || text.contains("//")
    {
        return None;
    }
    Some(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            host_cpus: 2,
            allow_network: false,
            allowed_path_prefixes: vec!["/tmp".into()],
        }
    }

    #[test]
    fn zero_means_default_and_ranges_name_the_field() {
        let limits = resolve(Some(&pb::SessionLimits::default()), &policy()).expect("defaults");
        assert_eq!(limits, Limits::default());
        let bad = pb::SessionLimits {
            max_pids: 5,
            ..Default::default()
        };
        let err = resolve(Some(&bad), &policy()).expect_err("pids");
        assert_eq!(err.field, "limits.max_pids");
        let cpu = pb::SessionLimits {
            cpu_millicores: 2001,
            ..Default::default()
        };
        assert_eq!(
            resolve(Some(&cpu), &policy()).expect_err("cpu").field,
            "limits.cpu_millicores"
        );
        let tmpfs = pb::SessionLimits {
            memory_bytes: 64 * MIB,
            tmpfs_bytes: 65 * MIB,
            ..Default::default()
        };
        assert_eq!(
            resolve(Some(&tmpfs), &policy()).expect_err("tmpfs").field,
            "limits.tmpfs_bytes"
        );
    }

    #[test]
    fn network_and_paths_follow_policy() {
        let net = pb::SessionLimits {
            network: true,
            ..Default::default()
        };
        assert!(resolve(Some(&net), &policy()).expect_err("net").denied);
        let path = |p: &str| pb::SessionLimits {
            allowed_paths: vec![pb::AllowedPath {
                host_path: p.into(),
                read_write: false,
            }],
            ..Default::default()
        };
        assert!(
            resolve(Some(&path("/etc")), &policy())
                .expect_err("prefix")
                .denied
        );
        assert!(
            !resolve(Some(&path("/tmp/../etc")), &policy())
                .expect_err("dots")
                .denied
        );
        let dir = tempfile::tempdir_in("/tmp").expect("dir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).expect("symlink");
        let err =
            resolve(Some(&path(link.to_str().expect("utf8"))), &policy()).expect_err("symlink");
        assert!(err.reason.contains("symlink"), "{err}");
        let ok =
            resolve(Some(&path(dir.path().to_str().expect("utf8"))), &policy()).expect("plain dir");
        assert_eq!(ok.allowed_paths.len(), 1);
    }

    #[test]
    fn profile_names_are_stable() {
        assert_eq!(
            Limits::default().profile().name(),
            "mem512Mi-cpu1000m-pids64-tmp64Mi"
        );
    }
}
