//! Starting session processes: turns limits into a spawn (filesystem plan,
//! identity, rlimits, seccomp, cgroup) and waits for the driver's READY.

use std::path::PathBuf;
use std::sync::Arc;

use crate::isolation::cgroup::{CgroupLimits, CgroupRoot, SessionCgroup, Usage};
use crate::isolation::rootfs::{self, RootfsSpec};
use crate::isolation::spawn::{SpawnError, SpawnSpec, set_nice, spawn};
use crate::isolation::uids::{UidError, UidLease, UidPool};
use crate::session::limits::Profile;
use crate::session::process::{ProcessError, SessionProcess};

/// The REPL driver, shipped inside the binary.
pub const DRIVER_SOURCE: &str = include_str!("../../driver/rlm_driver.py");

/// How sessions are isolated.
pub enum Isolation {
    /// Namespaces, pivot_root, dedicated uid, cgroup, rlimits, seccomp.
    Full {
        cgroups: CgroupRoot,
        seccomp: Arc<seccompiler::BpfProgram>,
        uids: UidPool,
    },
    /// A plain child process of the agent, same user. Development only.
    None,
}

pub struct Launcher {
    pub isolation: Isolation,
    pub python: PathBuf,
    /// Host directory of the Python installation when it is outside /usr.
    pub python_prefix: Option<PathBuf>,
    /// Empty directory each session mounts its root over (in its own namespace).
    pub root_mount: PathBuf,
    /// Working directory of sessions in `--isolation=none` mode.
    pub scratch_dir: PathBuf,
    /// The driver precompiled by the session Python (see [`compile_driver`]);
    /// `None` runs it from source, about 10 ms slower per start.
    pub driver: Option<PreparedDriver>,
}

/// What [`compile_driver`] prepares once per agent.
#[derive(Debug, Clone)]
pub struct PreparedDriver {
    /// Host path of the marshalled driver.
    pub bin: PathBuf,
    /// Modules the driver imports right after READY (`RLM_AGENT_PRELOAD`),
    /// so their import cost is paid while the session waits in the pool or
    /// for its first cell, not by the cell that needs them.
    pub preload: Vec<String>,
    /// `sys.path` as the interpreter computes it with `site` (`.pth` files
    /// included). Sessions start with `-S` and this path, which saves the
    /// `site` import (~4 ms a start); executable lines of `.pth` files are not run.
    pub sys_path: Vec<String>,
}

/// Compiles the driver once with the session interpreter into a marshalled code
/// object under `dir`, so each session start skips compiling ~1,000 lines of
/// Python. The file is tied to that exact interpreter build, so its name
/// carries the interpreter's version and the driver's hash.
pub fn compile_driver(
    python: &std::path::Path,
    dir: &std::path::Path,
) -> Result<PreparedDriver, String> {
    use sha2::Digest;
    use std::io::Write;
    const COMPILE: &str = "import marshal, sys\n\
        sys.stdout.buffer.write(marshal.dumps(compile(sys.stdin.read(), 'rlm_driver.py', 'exec')))";
    let version = std::process::Command::new(python)
        .args([
            "-I",
            "-c",
            "import json, sys; print(sys.version); print(json.dumps(sys.path))",
        ])
        .output()
        .map_err(|err| format!("running {}: {err}", python.display()))?;
    let printed = String::from_utf8_lossy(&version.stdout);
    let sys_path: Vec<String> = printed
        .lines()
        .nth(1)
        .and_then(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| format!("{} did not report its sys.path", python.display()))?;
    let sys_path: Vec<String> = sys_path
        .into_iter()
        .filter(|p| p.starts_with('/'))
        .collect();
    let mut hasher = sha2::Sha256::new();
    hasher.update(&version.stdout);
    hasher.update(DRIVER_SOURCE.as_bytes());
    let path = dir.join(format!(
        "driver-{}.bin",
        &hex::encode(hasher.finalize())[..16]
    ));
    if path.is_file() {
        return Ok(PreparedDriver {
            bin: path,
            sys_path,
            preload: Vec::new(),
        });
    }
    let mut child = std::process::Command::new(python)
        .args(["-I", "-c", COMPILE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("running {}: {err}", python.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(DRIVER_SOURCE.as_bytes())
            .map_err(|err| err.to_string())?;
    }
    let output = child.wait_with_output().map_err(|err| err.to_string())?;
    if !output.status.success() || output.stdout.is_empty() {
        return Err(format!("compiling the driver failed: {}", output.status));
    }
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let staging = dir.join(format!(".driver-{}.tmp", std::process::id()));
    std::fs::write(&staging, &output.stdout)
        .map_err(|err| format!("{}: {err}", staging.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o444))
        .map_err(|err| err.to_string())?;
    std::fs::rename(&staging, &path).map_err(|err| format!("{}: {err}", path.display()))?;
    Ok(PreparedDriver {
        bin: path,
        sys_path,
        preload: Vec::new(),
    })
}

/// The `-c` program that sets `sys.path` and loads the precompiled driver from `path`.
fn bootstrap(path: &std::path::Path, sys_path: &[String], preload: &[String]) -> String {
    // A JSON list of strings is a valid Python list literal.
    let paths = serde_json::to_string(sys_path).unwrap_or_else(|_| "[]".to_owned());
    let modules = serde_json::to_string(preload).unwrap_or_else(|_| "[]".to_owned());
    format!(
        "import sys, marshal\nsys.path[:] = {paths}\n_rlm_preload = {modules}\nwith open({:?}, 'rb') as f: code = marshal.loads(f.read())\nexec(code)",
        path.display().to_string()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Uid(#[from] UidError),
    #[error("session cgroup: {0}")]
    Cgroup(String),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("session process: {0}")]
    Process(#[from] ProcessError),
    #[error("session start was cancelled")]
    Cancelled,
}

/// A started session and everything that must live exactly as long as it.
pub struct Launched {
    pub process: SessionProcess,
    pub cgroup: Option<SessionCgroup>,
    pub uid: Option<UidLease>,
    pub python_version: String,
    pub profile: Profile,
    /// The cgroup's usage when last read (at start, then after each cell).
    pub last_usage: Option<Usage>,
    /// Started in the background, still at [`BACKGROUND_NICE`].
    niced: bool,
}

/// Who waits for a session start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A request: normal CPU priority.
    Request,
    /// The warm pool: the lowest priority until handed out.
    Background,
}

const BACKGROUND_NICE: i32 = 19;

impl Launched {
    /// Gives a session that has not run code yet the cgroup limits of
    /// `profile`, which [`Profile::relimits_to`] must accept: a warm session
    /// handed out for other limits.
    pub fn relimit(&mut self, profile: &Profile) -> Result<(), String> {
        debug_assert!(self.profile.relimits_to(profile));
        if let Some(cgroup) = &self.cgroup {
            cgroup
                .set_limits(&cgroup_limits(profile))
                .map_err(|err| err.to_string())?;
        }
        self.profile = profile.clone();
        Ok(())
    }

    /// Back to normal CPU priority, when a background start is handed out.
    pub fn to_foreground(&mut self) {
        if std::mem::take(&mut self.niced)
            && let Err(err) = set_nice(self.process.pid, 0)
        {
            tracing::warn!(
                pid = self.process.pid,
                "restoring a session's CPU priority: {err}"
            );
        }
    }

    /// Kills the whole process tree, removes the cgroup, reaps, and only then
    /// frees the uid. Blocking; call from a blocking thread.
    pub fn terminate(self) {
        let pid = nix::unistd::Pid::from_raw(self.process.pid);
        // The driver is PID 1 of its namespace: killing it kills every process
        // in the namespace. The cgroup kill catches anything else in the tree.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        if let Some(cgroup) = &self.cgroup
            && let Err(err) = cgroup.remove()
        {
            tracing::warn!(cgroup = cgroup.name(), "removing session cgroup: {err}");
        }
        let _ = nix::sys::wait::waitpid(pid, None);
        drop(self.uid);
    }
}

/// The whole environment of a session (nothing of the agent's leaks).
/// `glibc.malloc.hugetlb=1` lets malloc ask for transparent huge pages
/// (`madvise`) on its large blocks (see the /sys files in `rootfs::plan`):
/// decoding a 10 MB context faults in five 2 MiB pages instead of 2,560
/// small ones (9 → 3.5 ms here). Idle sessions are unchanged: small objects
/// come from pymalloc's arenas.
const ENV: &[&str] = &[
    "GLIBC_TUNABLES=glibc.malloc.hugetlb=1",
    "PATH=/usr/local/bin:/usr/bin:/bin",
    "HOME=/work",
    "USER=sandbox",
    "LANG=C.UTF-8",
    "TMPDIR=/tmp",
];

impl Launcher {
    /// Removes the agent's (now empty) cgroup parent directories at shutdown.
    pub fn remove_cgroup_parents(&self) {
        if let Isolation::Full { cgroups, .. } = &self.isolation {
            for dir in cgroups.parent_dirs() {
                if let Err(err) = std::fs::remove_dir(&dir) {
                    tracing::debug!(dir = %dir.display(), "keeping cgroup parent: {err}");
                }
            }
        }
    }

    pub fn isolated(&self) -> bool {
        matches!(self.isolation, Isolation::Full { .. })
    }

    /// Starts a session process for `profile` named `name` and waits for READY.
    /// A `Background` start (the warm pool refilling) runs at the lowest CPU
    /// priority until [`Launched::to_foreground`]: starting an interpreter is
    /// ~15 ms of CPU that must not be taken from the requests being served.
    pub async fn launch(
        &self,
        name: &str,
        profile: &Profile,
        priority: Priority,
    ) -> Result<Launched, LaunchError> {
        let (uid, cgroup, spec) = self.prepare(name, profile)?;
        let cgroup = cgroup.map(Arc::new);
        let placing = cgroup.clone();
        // Lowering a priority back needs privileges: isolated agents only.
        let nice = if priority == Priority::Background && self.isolated() {
            BACKGROUND_NICE
        } else {
            0
        };
        let spawned = tokio::task::spawn_blocking(move || {
            spawn(&spec, |pid| {
                if nice != 0 {
                    set_nice(pid, nice).map_err(|err| format!("setpriority: {err}"))?;
                }
                match &placing {
                    Some(cgroup) => cgroup.add_process(pid).map_err(|err| err.to_string()),
                    None => Ok(()),
                }
            })
        })
        .await
        .map_err(|_| LaunchError::Cancelled)?;
        let cgroup = cgroup.and_then(|arc| Arc::try_unwrap(arc).ok());
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(err) => {
                if let Some(cgroup) = &cgroup {
                    let _ = cgroup.remove();
                }
                return Err(err.into());
            }
        };
        let mut launched = Launched {
            process: SessionProcess::new(spawned)?,
            cgroup,
            uid,
            python_version: String::new(),
            profile: profile.clone(),
            last_usage: None,
            niced: nice != 0,
        };
        match launched.process.ready().await {
            Ok(ready) => {
                launched.python_version = ready.python;
                launched.last_usage = launched.cgroup.as_ref().and_then(|c| c.usage().ok());
                Ok(launched)
            }
            Err(err) => {
                tokio::task::spawn_blocking(move || launched.terminate());
                Err(err.into())
            }
        }
    }

    fn prepare(
        &self,
        name: &str,
        profile: &Profile,
    ) -> Result<(Option<UidLease>, Option<SessionCgroup>, SpawnSpec), LaunchError> {
        let (flags, program) = match (&self.driver, &self.isolation) {
            (None, _) => ("-IB", DRIVER_SOURCE.to_owned()),
            (Some(driver), Isolation::Full { .. }) => (
                "-IBS",
                bootstrap(
                    std::path::Path::new(rootfs::DRIVER_PATH),
                    &driver.sys_path,
                    &driver.preload,
                ),
            ),
            (Some(driver), Isolation::None) => (
                "-IBS",
                bootstrap(&driver.bin, &driver.sys_path, &driver.preload),
            ),
        };
        let args = vec![flags.to_owned(), "-c".to_owned(), program];
        let env = ENV.iter().map(|s| (*s).to_owned()).collect();
        let rlimits = vec![
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_NOFILE, 1024),
            (libc::RLIMIT_FSIZE, profile.tmpfs_bytes),
        ];
        match &self.isolation {
            Isolation::None => Ok((
                None,
                None,
                SpawnSpec {
                    isolate: false,
                    share_network: true,
                    root_mount: self.root_mount.clone(),
                    steps: Vec::new(),
                    uid: 0,
                    gid: 0,
                    rlimits,
                    program: self.python.clone(),
                    args,
                    env,
                    cwd: self.scratch_dir.clone(),
                    seccomp: None,
                },
            )),
            Isolation::Full {
                cgroups,
                seccomp,
                uids,
            } => {
                let lease = uids.lease()?;
                let uid = lease.uid();
                let cgroup = cgroups
                    .create(name, &cgroup_limits(profile))
                    .map_err(|err| LaunchError::Cgroup(err.to_string()))?;
                let steps = rootfs::plan(&RootfsSpec {
                    uid,
                    gid: uid,
                    tmpfs_bytes: profile.tmpfs_bytes,
                    python_prefix: self.python_prefix.clone(),
                    allowed_paths: profile.allowed_paths.clone(),
                    network: profile.network,
                    driver: self.driver.as_ref().map(|d| d.bin.clone()),
                    thp_pmd_size: rootfs::host_thp_pmd_size(),
                });
                Ok((
                    Some(lease),
                    Some(cgroup),
                    SpawnSpec {
                        isolate: true,
                        share_network: profile.network,
                        root_mount: self.root_mount.clone(),
                        steps,
                        uid,
                        gid: uid,
                        rlimits,
                        program: self.python.clone(),
                        args,
                        env,
                        cwd: "/work".into(),
                        seccomp: Some(seccomp.clone()),
                    },
                ))
            }
        }
    }
}

fn cgroup_limits(profile: &Profile) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: profile.memory_bytes,
        cpu_millicores: profile.cpu_millicores,
        max_pids: profile.max_pids,
    }
}
