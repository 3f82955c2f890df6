//! The filesystem a session sees, as a plan of steps: what is bind-mounted
//! read-only from the host, what is a size-limited tmpfs, which device nodes
//! exist. Pure policy, computed from host facts; `spawn` executes it inside the
//! session's fresh mount namespace before `pivot_root`.

use std::path::{Path, PathBuf};

/// One step, with `target` relative to the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mkdir {
        target: PathBuf,
        mode: u32,
    },
    /// A tmpfs; `options` is the mount data (`size=…,nr_inodes=…,mode=…,uid=…`).
    Tmpfs {
        target: PathBuf,
        options: String,
        noexec: bool,
    },
    /// A bind mount of a host path, read-only unless `writable`; the target is
    /// created as a directory or an empty file to match the source.
    Bind {
        source: PathBuf,
        target: PathBuf,
        writable: bool,
        is_dir: bool,
    },
    Symlink {
        target: PathBuf,
        points_to: PathBuf,
    },
    /// A fresh procfs (shows only the session's PID namespace).
    Proc {
        target: PathBuf,
    },
    /// A file written with `contents` (e.g. the generated /etc/passwd).
    File {
        target: PathBuf,
        contents: Vec<u8>,
        mode: u32,
    },
}

/// What a session's filesystem depends on.
#[derive(Debug, Clone)]
pub struct RootfsSpec {
    pub uid: u32,
    pub gid: u32,
    /// Size of each of /tmp, /work and /dev/shm.
    pub tmpfs_bytes: u64,
    /// Host directory of the Python installation when it is outside `/usr`.
    pub python_prefix: Option<PathBuf>,
    /// Host paths exposed at the same path: (path, writable).
    pub allowed_paths: Vec<(PathBuf, bool)>,
    /// Adds what name resolution and TLS need (only with the network opt-in).
    pub network: bool,
    /// Host file with the precompiled REPL driver, exposed at [`DRIVER_PATH`].
    pub driver: Option<PathBuf>,
    /// The host's transparent huge page size ([`host_thp_pmd_size`]), if any.
    pub thp_pmd_size: Option<u64>,
}

/// The host's PMD-sized transparent huge page, read once per agent.
pub fn host_thp_pmd_size() -> Option<u64> {
    static SIZE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
            .ok()?
            .trim()
            .parse()
            .ok()
    })
}

/// Where a session finds the precompiled driver.
pub const DRIVER_PATH: &str = "/rlm/driver.bin";

/// Top-level host entries the sandbox gets (read-only): a directory is
/// bind-mounted, a symlink (merged-/usr systems) is recreated as a symlink.
const SYSTEM_ENTRIES: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Device nodes bind-mounted from the host; nothing else exists under /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// procfs files that leak host-wide information even to an unprivileged reader.
const MASKED_PROC_FILES: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "sysrq-trigger",
    "latency_stats",
];

/// How a host top-level entry looks, as needed by the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    Missing,
    Directory,
    Symlink(PathBuf),
}

fn inspect(path: &Path) -> HostEntry {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::read_link(path).map_or(HostEntry::Missing, HostEntry::Symlink)
        }
        Ok(meta) if meta.is_dir() => HostEntry::Directory,
        _ => HostEntry::Missing,
    }
}

/// The plan for this host.
pub fn plan(spec: &RootfsSpec) -> Vec<Step> {
    plan_with(
        spec,
        |name| inspect(&Path::new("/").join(name)),
        |path| path.exists(),
    )
}

/// The plan, with host facts supplied by `entry` (top-level names) and
/// `exists` (other host paths), so the policy is testable without root.
pub fn plan_with(
    spec: &RootfsSpec,
    entry: impl Fn(&str) -> HostEntry,
    exists: impl Fn(&Path) -> bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for name in SYSTEM_ENTRIES {
        match entry(name) {
            HostEntry::Directory => steps.push(Step::Bind {
                source: Path::new("/").join(name),
                target: PathBuf::from(name),
                writable: false,
                is_dir: true,
            }),
            HostEntry::Symlink(points_to) => steps.push(Step::Symlink {
                target: PathBuf::from(name),
                points_to,
            }),
            HostEntry::Missing => {}
        }
    }
    if let Some(driver) = &spec.driver {
        steps.push(Step::Bind {
            source: driver.clone(),
            target: relative(Path::new(DRIVER_PATH)),
            writable: false,
            is_dir: false,
        });
    }
    if let Some(prefix) = &spec.python_prefix {
        steps.push(Step::Bind {
            source: prefix.clone(),
            target: relative(prefix),
            writable: false,
            is_dir: true,
        });
    }

    // /etc: only what Python needs, generated or read-only.
    steps.push(Step::Mkdir {
        target: "etc".into(),
        mode: 0o755,
    });
    steps.push(Step::File {
        target: "etc/passwd".into(),
        contents: format!(
            "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nsandbox:x:{}:{}:sandbox:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            spec.uid, spec.gid
        )
        .into_bytes(),
        mode: 0o444,
    });
    steps.push(Step::File {
        target: "etc/group".into(),
        contents: format!("root:x:0:\nsandbox:x:{}:\nnogroup:x:65534:\n", spec.gid).into_bytes(),
        mode: 0o444,
    });
    steps.push(Step::File {
        target: "etc/hosts".into(),
        contents: b"127.0.0.1 localhost sandbox\n::1 localhost sandbox\n".to_vec(),
        mode: 0o444,
    });
    let mut etc_files = vec!["etc/ld.so.cache", "etc/localtime"];
    if spec.network {
        etc_files.extend(["etc/resolv.conf", "etc/nsswitch.conf"]);
    }
    for file in etc_files {
        let source = Path::new("/").join(file);
        if exists(&source) {
            steps.push(Step::Bind {
                source,
                target: file.into(),
                writable: false,
                is_dir: false,
            });
        }
    }
    if spec.network {
        for dir in ["etc/ssl", "etc/ca-certificates"] {
            let source = Path::new("/").join(dir);
            if exists(&source) {
                steps.push(Step::Bind {
                    source,
                    target: dir.into(),
                    writable: false,
                    is_dir: true,
                });
            }
        }
    }

    // No sysfs. Two generated files say what glibc's malloc reads before it
    // asks for huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the
    // session environment): `madvise` mode and the page size. Decoding a
    // 10 MB context then takes 5 page faults instead of 2,560.
    if let Some(size) = spec.thp_pmd_size {
        let thp = Path::new("sys/kernel/mm/transparent_hugepage");
        steps.push(Step::File {
            target: thp.join("enabled"),
            contents: b"always [madvise] never\n".to_vec(),
            mode: 0o444,
        });
        steps.push(Step::File {
            target: thp.join("hpage_pmd_size"),
            contents: format!("{size}\n").into_bytes(),
            mode: 0o444,
        });
    }

    // /dev: a tiny tmpfs with the harmless devices bound in, and /dev/shm.
    steps.push(Step::Tmpfs {
        target: "dev".into(),
        options: "size=64k,nr_inodes=64,mode=755".into(),
        noexec: true,
    });
    for device in DEVICES {
        steps.push(Step::Bind {
            source: Path::new("/dev").join(device),
            target: Path::new("dev").join(device),
            writable: true,
            is_dir: false,
        });
    }
    for (link, points_to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink {
            target: Path::new("dev").join(link),
            points_to: points_to.into(),
        });
    }
    let writable_tmpfs = |mode: u32| {
        format!(
            "size={},nr_inodes={},mode={mode:o},uid={},gid={}",
            spec.tmpfs_bytes,
            inode_limit(spec.tmpfs_bytes),
            spec.uid,
            spec.gid
        )
    };
    steps.push(Step::Tmpfs {
        target: "dev/shm".into(),
        options: writable_tmpfs(0o700),
        noexec: true,
    });
    steps.push(Step::Tmpfs {
        target: "tmp".into(),
        options: writable_tmpfs(0o700),
        noexec: false,
    });
    steps.push(Step::Tmpfs {
        target: "work".into(),
        options: writable_tmpfs(0o700),
        noexec: false,
    });

    steps.push(Step::Proc {
        target: "proc".into(),
    });
    for file in MASKED_PROC_FILES {
        let host = Path::new("/proc").join(file);
        if exists(&host) {
            steps.push(Step::Bind {
                source: "/dev/null".into(),
                target: Path::new("proc").join(file),
                writable: false,
                is_dir: false,
            });
        }
    }

    for (path, writable) in &spec.allowed_paths {
        steps.push(Step::Bind {
            source: path.clone(),
            target: relative(path),
            writable: *writable,
            is_dir: true,
        });
    }
    steps
}

/// One inode per 16 KiB of tmpfs, at least 256: enough for real work, and an
/// inode-exhaustion loop ends quickly.
fn inode_limit(bytes: u64) -> u64 {
    (bytes / 16384).max(256)
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix("/").unwrap_or(path).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RootfsSpec {
        RootfsSpec {
            uid: 200_123,
            gid: 200_123,
            tmpfs_bytes: 64 << 20,
            python_prefix: Some("/opt/python3.11".into()),
            allowed_paths: vec![("/data/ro".into(), false), ("/data/rw".into(), true)],
            network: false,
            driver: Some("/var/lib/rlm-agent/driver/abc.bin".into()),
            thp_pmd_size: Some(2 << 20),
        }
    }

    fn merged_usr(name: &str) -> HostEntry {
        match name {
            "usr" => HostEntry::Directory,
            "bin" => HostEntry::Symlink("usr/bin".into()),
            "lib" => HostEntry::Symlink("usr/lib".into()),
            "lib64" => HostEntry::Symlink("usr/lib64".into()),
            _ => HostEntry::Missing,
        }
    }

    #[test]
    fn system_dirs_are_read_only_and_symlinks_are_recreated() {
        let steps = plan_with(&spec(), merged_usr, |_| true);
        assert!(steps.contains(&Step::Bind {
            source: "/usr".into(),
            target: "usr".into(),
            writable: false,
            is_dir: true
        }));
        assert!(steps.contains(&Step::Symlink {
            target: "bin".into(),
            points_to: "usr/bin".into()
        }));
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s, Step::Bind { target, .. } if target == Path::new("sbin")))
        );
        assert!(steps.contains(&Step::Bind {
            source: "/opt/python3.11".into(),
            target: "opt/python3.11".into(),
            writable: false,
            is_dir: true
        }));
    }

    #[test]
    fn nothing_writable_but_scratch_devices_and_opted_in_paths() {
        let steps = plan_with(&spec(), merged_usr, |_| true);
        let writable_binds: Vec<&Path> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Bind {
                    source,
                    writable: true,
                    ..
                } => Some(source.as_path()),
                _ => None,
            })
            .collect();
        let mut expected: Vec<PathBuf> =
            DEVICES.iter().map(|d| Path::new("/dev").join(d)).collect();
        expected.push("/data/rw".into());
        assert_eq!(
            writable_binds,
            expected.iter().map(PathBuf::as_path).collect::<Vec<_>>()
        );
        // No /sys, no host /etc, no host /dev.
        for step in &steps {
            if let Step::Bind { source, .. } = step {
                assert!(!source.starts_with("/sys"), "{step:?}");
                assert!(
                    source != Path::new("/etc") && source != Path::new("/dev"),
                    "{step:?}"
                );
            }
        }
    }

    #[test]
    fn scratch_space_is_sized_and_owned_by_the_session() {
        let steps = plan_with(&spec(), merged_usr, |_| true);
        for target in ["tmp", "work", "dev/shm"] {
            let options = steps
                .iter()
                .find_map(|s| match s {
                    Step::Tmpfs {
                        target: t, options, ..
                    } if t == Path::new(target) => Some(options.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{target} tmpfs"));
            assert!(
                options.contains(&format!("size={}", 64u64 << 20)),
                "{options}"
            );
            assert!(
                options.contains("uid=200123") && options.contains("nr_inodes=4096"),
                "{options}"
            );
        }
        let passwd = steps
            .iter()
            .find_map(|s| match s {
                Step::File {
                    target, contents, ..
                } if target == Path::new("etc/passwd") => Some(contents.clone()),
                _ => None,
            })
            .expect("passwd");
        assert!(String::from_utf8_lossy(&passwd).contains("sandbox:x:200123:200123"));
    }

    #[test]
    fn network_opt_in_adds_resolver_files_only_then() {
        let without = plan_with(&spec(), merged_usr, |_| true);
        assert!(!without.iter().any(
            |s| matches!(s, Step::Bind { target, .. } if target == Path::new("etc/resolv.conf"))
        ));
        let with = plan_with(
            &RootfsSpec {
                network: true,
                ..spec()
            },
            merged_usr,
            |_| true,
        );
        assert!(with.iter().any(
            |s| matches!(s, Step::Bind { target, .. } if target == Path::new("etc/resolv.conf"))
        ));
    }

    #[test]
    fn sys_holds_only_the_generated_huge_page_files() {
        let under_sys = |spec: &RootfsSpec| -> Vec<(PathBuf, Vec<u8>)> {
            plan_with(spec, merged_usr, |_| true)
                .into_iter()
                .filter_map(|step| match step {
                    Step::File {
                        target, contents, ..
                    } if target.starts_with("sys") => Some((target, contents)),
                    Step::File { .. } => None,
                    other => {
                        assert!(!format!("{other:?}").contains("\"sys"), "{other:?}");
                        None
                    }
                })
                .collect()
        };
        assert_eq!(
            under_sys(&spec()),
            vec![
                (
                    PathBuf::from("sys/kernel/mm/transparent_hugepage/enabled"),
                    b"always [madvise] never\n".to_vec()
                ),
                (
                    PathBuf::from("sys/kernel/mm/transparent_hugepage/hpage_pmd_size"),
                    b"2097152\n".to_vec()
                ),
            ]
        );
        let without = RootfsSpec {
            thp_pmd_size: None,
            ..spec()
        };
        assert!(under_sys(&without).is_empty());
    }
}
