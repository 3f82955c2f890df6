//! What this host offers an isolated agent: root, cgroups, namespaces,
//! seccomp and Python. Advisory only (warn at most): a remote or
//! containerised agent reports its own isolation through GetInfo.

use std::path::Path;

use super::Check;

const GROUP: &str = "host";
const NAMESPACES: [&str; 6] = ["mnt", "pid", "net", "ipc", "uts", "cgroup"];
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

pub fn checks() -> Vec<Check> {
    vec![
        user(),
        cgroups(
            &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            &std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default(),
        ),
        namespaces(),
        seccomp(&std::fs::read_to_string("/proc/self/status").unwrap_or_default()),
        python(),
    ]
}

fn user() -> Check {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Check::ok(GROUP, "user", "root: `rlm up` can start the isolated agent")
    } else {
        Check::warn(
            GROUP,
            "user",
            format!("uid {euid}, not root: the agent needs root for full isolation"),
            "`sudo rlm up`, or `rlm up --isolation none` for unprivileged development (UNSAFE: model code runs as you)",
        )
    }
}

/// The cgroup hierarchy from `/proc/self/mountinfo` and, for v2, the
/// controllers enabled at the root.
pub fn cgroups(mountinfo: &str, controllers: &str) -> Check {
    let hint = "the agent needs a writable cgroup v2 hierarchy (memory, pids, cpu) at /sys/fs/cgroup for session limits";
    let mut v1 = false;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let fstype = right.split(' ').next().unwrap_or_default();
        let (Some(mount_point), Some(options)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let read_only = options.split(',').any(|o| o == "ro");
        if fstype == "cgroup2" && *mount_point == "/sys/fs/cgroup" {
            let enabled: Vec<&str> = controllers.split_whitespace().collect();
            let missing: Vec<&str> = CONTROLLERS
                .iter()
                .copied()
                .filter(|c| !enabled.contains(c))
                .collect();
            return if read_only {
                Check::warn(
                    GROUP,
                    "cgroups",
                    "cgroup v2 at /sys/fs/cgroup is mounted read-only (a container?)",
                    hint,
                )
            } else if missing.is_empty() {
                Check::ok(
                    GROUP,
                    "cgroups",
                    format!(
                        "cgroup v2 at /sys/fs/cgroup, controllers: {}",
                        enabled.join(" ")
                    ),
                )
            } else {
                Check::warn(
                    GROUP,
                    "cgroups",
                    format!("cgroup v2 without controller(s) {}", missing.join(", ")),
                    hint,
                )
            };
        }
        v1 |= fstype == "cgroup" && mount_point.starts_with("/sys/fs/cgroup");
    }
    if v1 {
        Check::ok(
            GROUP,
            "cgroups",
            "cgroup v1 hierarchies under /sys/fs/cgroup",
        )
    } else {
        Check::warn(
            GROUP,
            "cgroups",
            "no cgroup hierarchy mounted at /sys/fs/cgroup",
            hint,
        )
    }
}

fn namespaces() -> Check {
    let missing: Vec<&str> = NAMESPACES
        .iter()
        .copied()
        .filter(|ns| !Path::new("/proc/self/ns").join(ns).exists())
        .collect();
    if missing.is_empty() {
        Check::ok(
            GROUP,
            "namespaces",
            format!("available: {}", NAMESPACES.join(" ")),
        )
    } else {
        Check::warn(
            GROUP,
            "namespaces",
            format!("missing from /proc/self/ns: {}", missing.join(" ")),
            "use a kernel with namespaces enabled (CONFIG_*_NS)",
        )
    }
}

/// Seccomp support from `/proc/self/status`.
pub fn seccomp(status: &str) -> Check {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    match field("Seccomp:") {
        None => Check::warn(
            GROUP,
            "seccomp",
            "the kernel does not report seccomp (no Seccomp: in /proc/self/status)",
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        ),
        Some("0") => Check::ok(GROUP, "seccomp", "available"),
        Some(mode) => Check::ok(
            GROUP,
            "seccomp",
            format!(
                "available; this process already runs under a filter (mode {mode}, e.g. a container's); the agent's filter stacks on it"
            ),
        ),
    }
}

fn python() -> Check {
    let path = std::env::var("RLM_AGENT_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned());
    match std::process::Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => Check::ok(
            GROUP,
            "python",
            format!(
                "{path}: {}",
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .trim_start_matches("Python ")
            ),
        ),
        Ok(out) => Check::warn(
            GROUP,
            "python",
            format!("{path} --version exited with {}", out.status),
            "install Python 3 or set RLM_AGENT_PYTHON for the agent",
        ),
        Err(e) => Check::warn(
            GROUP,
            "python",
            format!("{path}: {e}"),
            "install Python 3 (sessions run /usr/bin/python3) or set RLM_AGENT_PYTHON",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Level;

    const V2: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn cgroup_hierarchies() {
        let ok = cgroups(V2, "cpuset cpu io memory pids\n");
        assert_eq!(ok.level, Level::Ok, "{}", ok.detail);
        let missing = cgroups(V2, "cpu io\n");
        assert_eq!(missing.level, Level::Warn);
        assert!(
            missing.detail.contains("memory, pids"),
            "{}",
            missing.detail
        );
        let ro = cgroups(&V2.replace("rw,nosuid", "ro,nosuid"), "cpu memory pids");
        assert!(ro.detail.contains("read-only"), "{}", ro.detail);
        let v1 = "31 23 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n";
        assert_eq!(cgroups(v1, "").level, Level::Ok);
        assert_eq!(cgroups("", "").level, Level::Warn);
    }

    #[test]
    fn seccomp_modes() {
        assert_eq!(seccomp("Name:\tx\nSeccomp:\t0\n").detail, "available");
        assert!(seccomp("Seccomp:\t2\n").detail.contains("mode 2"));
        assert_eq!(seccomp("Name:\tx\n").level, Level::Warn);
    }
}
