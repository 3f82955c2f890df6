//! Starting a session process: the one place with raw syscalls.
//!
//! The parent prepares everything that needs memory (C strings, the mount plan,
//! file contents, the seccomp program) *before* `clone`. The child — a copy of a
//! multi-threaded process — then only makes raw syscalls on that prepared data
//! until `execve`: no allocation, no locks (async-signal-safe). A failing step
//! writes `(step, errno)` to a close-on-exec pipe and exits; an empty read of
//! that pipe in the parent means `execve` succeeded.
//!
//! Full isolation, in the child, in order: wait until the parent has put the
//! process into its cgroup; private mount propagation; a tmpfs as the new root
//! with the planned binds, tmpfs and files; hostname; loopback up; `pivot_root`
//! and detach the old root; root remounted read-only; rlimits; capability
//! bounding set and ambient set cleared; groups, gid, uid set to the session's
//! unprivileged identity (which drops every capability); no_new_privs; the
//! protocol fds placed at 0–3 and every other fd marked close-on-exec; seccomp;
//! `execve`.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::rootfs::Step;

/// What to start and how to confine it.
pub struct SpawnSpec {
    /// Namespaces, new root, identity, rlimits and seccomp; `false` is the
    /// unprivileged development mode (a plain child process).
    pub isolate: bool,
    /// Keep the host network namespace (explicit, unsafe opt-in).
    pub share_network: bool,
    /// Empty host directory the new root is mounted over (in the child's namespace only).
    pub root_mount: PathBuf,
    pub steps: Vec<Step>,
    pub uid: u32,
    pub gid: u32,
    /// (resource, limit) applied as both soft and hard limit.
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: PathBuf,
    pub seccomp: Option<std::sync::Arc<seccompiler::BpfProgram>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("preparing the session process: {0}")]
    Prepare(String),
    #[error("{call} failed: {source}")]
    Parent {
        call: &'static str,
        source: std::io::Error,
    },
    #[error("session setup failed at `{step}` ({detail}): {source}")]
    Child {
        step: &'static str,
        detail: String,
        source: std::io::Error,
    },
    #[error("the session process did not finish its setup within {0:?}")]
    SetupTimeout(Duration),
    #[error("the session process did not finish its setup within {timeout:?} ({stuck_in})")]
    Stuck { timeout: Duration, stuck_in: String },
    #[error("placing the session process in its cgroup: {0}")]
    Cgroup(String),
}

/// A started session process and the agent's ends of its channels.
pub struct Spawned {
    pub pid: i32,
    /// The control socket (the child has the other end as fd 3).
    pub control: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

// Step codes reported through the error pipe (index into STEP_NAMES).
const STEP_NAMES: &[&str] = &[
    "wait for parent",
    "mount propagation",
    "mount root tmpfs",
    "mkdir",
    "mount tmpfs",
    "bind mount",
    "remount read-only",
    "symlink",
    "mount proc",
    "write file",
    "sethostname",
    "loopback up",
    "pivot_root",
    "detach old root",
    "remount root read-only",
    "setrlimit",
    "drop capabilities",
    "setgroups",
    "setresgid",
    "setresuid",
    "no_new_privs",
    "place fds",
    "close fds",
    "seccomp",
    "execve",
    "chdir",
    "create file",
    "unshare cgroup namespace",
];

fn step_code(name: &str) -> u32 {
    STEP_NAMES.iter().position(|n| *n == name).unwrap_or(0) as u32
}

/// A step ready for the child: every path absolute and NUL-terminated.
enum Prepared {
    Mkdir {
        path: CString,
        mode: u32,
    },
    Tmpfs {
        target: CString,
        data: CString,
        flags: libc::c_ulong,
    },
    Bind {
        source: CString,
        target: CString,
        readonly: bool,
        is_dir: bool,
    },
    Symlink {
        link: CString,
        points_to: CString,
    },
    Proc {
        target: CString,
    },
    File {
        path: CString,
        contents: Vec<u8>,
        mode: u32,
    },
}

fn cstring(bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::Prepare(format!("NUL byte in {:?}", String::from_utf8_lossy(bytes)))
    })
}

fn cpath(path: &Path) -> Result<CString, SpawnError> {
    cstring(path.as_os_str().as_bytes())
}

/// The absolute path of `target` under the new root, and its missing ancestors.
fn under_root(
    root: &Path,
    target: &Path,
    ancestors: &mut Vec<Prepared>,
) -> Result<CString, SpawnError> {
    let full = root.join(target);
    let mut partial = root.to_path_buf();
    if let Some(parent) = target.parent() {
        for component in parent.components() {
            partial.push(component);
            ancestors.push(Prepared::Mkdir {
                path: cpath(&partial)?,
                mode: 0o755,
            });
        }
    }
    cpath(&full)
}

fn prepare_steps(root: &Path, steps: &[Step]) -> Result<Vec<Prepared>, SpawnError> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Mkdir { target, mode } => {
                let path = under_root(root, target, &mut out)?;
                out.push(Prepared::Mkdir { path, mode: *mode });
            }
            Step::Tmpfs {
                target,
                options,
                noexec,
            } => {
                let path = under_root(root, target, &mut out)?;
                out.push(Prepared::Mkdir {
                    path: path.clone(),
                    mode: 0o755,
                });
                let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                if *noexec {
                    flags |= libc::MS_NOEXEC;
                }
                out.push(Prepared::Tmpfs {
                    target: path,
                    data: cstring(options.as_bytes())?,
                    flags,
                });
            }
            Step::Bind {
                source,
                target,
                writable,
                is_dir,
            } => {
                let path = under_root(root, target, &mut out)?;
                out.push(Prepared::Bind {
                    source: cpath(source)?,
                    target: path,
                    readonly: !writable,
                    is_dir: *is_dir,
                });
            }
            Step::Symlink { target, points_to } => {
                let link = under_root(root, target, &mut out)?;
                out.push(Prepared::Symlink {
                    link,
                    points_to: cpath(points_to)?,
                });
            }
            Step::Proc { target } => {
                let path = under_root(root, target, &mut out)?;
                out.push(Prepared::Mkdir {
                    path: path.clone(),
                    mode: 0o555,
                });
                out.push(Prepared::Proc { target: path });
            }
            Step::File {
                target,
                contents,
                mode,
            } => {
                let path = under_root(root, target, &mut out)?;
                out.push(Prepared::File {
                    path,
                    contents: contents.clone(),
                    mode: *mode,
                });
            }
        }
    }
    Ok(out)
}

fn last_os_error(call: &'static str) -> SpawnError {
    SpawnError::Parent {
        call,
        source: std::io::Error::last_os_error(),
    }
}

/// A close-on-exec pipe as (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_os_error("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates `fd` to a number ≥ 10 (close-on-exec), so placing the child's fds
/// at 0–3 can never overwrite one of them.
fn high_fd(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    // SAFETY: F_DUPFD_CLOEXEC on an open fd returns a new fd or -1.
    let duplicated = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if duplicated < 0 {
        return Err(last_os_error("fcntl(F_DUPFD_CLOEXEC)"));
    }
    // SAFETY: `duplicated` is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(duplicated) })
}

/// Everything the child reads, prepared in the parent.
struct ChildPlan<'a> {
    isolate: bool,
    root: CString,
    steps: Vec<Prepared>,
    uid: libc::uid_t,
    gid: libc::gid_t,
    rlimits: &'a [(libc::__rlimit_resource_t, u64)],
    program: CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    cwd: CString,
    seccomp: Option<&'a seccompiler::BpfProgram>,
    // fds the child places at 0, 1, 2, 3
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    control: RawFd,
    sync_read: RawFd,
    error_write: RawFd,
}

/// Sets the nice value of process `pid` (of its main thread: a session's
/// interpreter runs no other thread before it runs code).
pub fn set_nice(pid: i32, nice: i32) -> std::io::Result<()> {
    let who =
        libc::id_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Starts the process. `place` runs in the parent after the child exists and
/// before it proceeds (used to put it into its cgroup); an error there kills it.
pub fn spawn(
    spec: &SpawnSpec,
    place: impl FnOnce(i32) -> Result<(), String>,
) -> Result<Spawned, SpawnError> {
    let (agent_control, child_control) = socketpair()?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let (sync_read, sync_write) = pipe()?;
    let (error_read, error_write) = pipe()?;
    let devnull = std::fs::File::open("/dev/null").map_err(|source| SpawnError::Parent {
        call: "open /dev/null",
        source,
    })?;
    let child_control = high_fd(child_control)?;
    let stdout_write = high_fd(stdout_write)?;
    let stderr_write = high_fd(stderr_write)?;
    let devnull = high_fd(devnull.into())?;
    let sync_read = high_fd(sync_read)?;
    let error_write = high_fd(error_write)?;

    let args: Vec<CString> = std::iter::once(cpath(&spec.program))
        .chain(spec.args.iter().map(|a| cstring(a.as_bytes())))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = spec
        .env
        .iter()
        .map(|e| cstring(e.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let seccomp = spec.seccomp.as_deref();
    let plan = ChildPlan {
        isolate: spec.isolate,
        root: cpath(&spec.root_mount)?,
        steps: if spec.isolate {
            prepare_steps(&spec.root_mount, &spec.steps)?
        } else {
            Vec::new()
        },
        uid: spec.uid,
        gid: spec.gid,
        rlimits: &spec.rlimits,
        program: cpath(&spec.program)?,
        argv,
        envp,
        cwd: cpath(&spec.cwd)?,
        seccomp,
        stdin: devnull.as_raw_fd(),
        stdout: stdout_write.as_raw_fd(),
        stderr: stderr_write.as_raw_fd(),
        control: child_control.as_raw_fd(),
        sync_read: sync_read.as_raw_fd(),
        error_write: error_write.as_raw_fd(),
    };

    let mut flags = libc::SIGCHLD as libc::c_long;
    if spec.isolate {
        // CLONE_NEWCGROUP comes later, in the child, once the parent has moved
        // it into its session cgroup: a cgroup namespace is rooted where it is made.
        flags |= (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
            as libc::c_long;
        if !spec.share_network {
            flags |= libc::CLONE_NEWNET as libc::c_long;
        }
    }
    // SAFETY: a raw clone without CLONE_VM and with a NULL stack behaves like
    // fork: the child gets a copy of the address space and returns 0 here. The
    // child only runs `child_main`, which makes raw syscalls on `plan` (already
    // allocated) and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(last_os_error("clone"));
    }
    if pid == 0 {
        child_main(&plan);
    }
    let pid = pid as i32;
    drop((
        child_control,
        stdout_write,
        stderr_write,
        devnull,
        sync_read,
        error_write,
    ));
    drop(plan);

    let kill_and_reap = |pid: i32| {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    };
    if let Err(reason) = place(pid) {
        kill_and_reap(pid);
        return Err(SpawnError::Cgroup(reason));
    }
    // Release the child.
    let released = [1u8];
    // SAFETY: writing one byte from a valid buffer to our pipe end.
    if unsafe { libc::write(sync_write.as_raw_fd(), released.as_ptr().cast(), 1) } != 1 {
        let err = last_os_error("write(sync pipe)");
        kill_and_reap(pid);
        return Err(err);
    }
    drop(sync_write);

    match read_child_error(&error_read, Duration::from_secs(10)) {
        Ok(None) => Ok(Spawned {
            pid,
            control: agent_control,
            stdout: stdout_read,
            stderr: stderr_read,
        }),
        Ok(Some((step, errno, index))) => {
            kill_and_reap(pid);
            let detail = describe_step(spec, &plan_detail(spec, index));
            Err(SpawnError::Child {
                step: STEP_NAMES.get(step as usize).copied().unwrap_or("unknown"),
                detail,
                source: std::io::Error::from_raw_os_error(errno),
            })
        }
        Err(SpawnError::SetupTimeout(timeout)) => {
            let stuck_in = describe_stuck(pid);
            kill_and_reap(pid);
            Err(SpawnError::Stuck { timeout, stuck_in })
        }
        Err(err) => {
            kill_and_reap(pid);
            Err(err)
        }
    }
}

/// Where a child that did not finish its setup is stuck, for the error.
fn describe_stuck(pid: i32) -> String {
    let read =
        |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    let state = read("status")
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_default()
        .to_owned();
    let syscall = read("syscall");
    let pc = syscall
        .split_whitespace()
        .last()
        .and_then(|pc| u64::from_str_radix(pc.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default();
    let mapping = read("maps")
        .lines()
        .find(|line| {
            let range = line.split_whitespace().next().unwrap_or_default();
            let (start, end) = range.split_once('-').unwrap_or_default();
            let parse = |v: &str| u64::from_str_radix(v, 16).unwrap_or_default();
            parse(start) <= pc && pc < parse(end)
        })
        .unwrap_or_default()
        .to_owned();
    format!(
        "{state}; pc in {mapping}; syscall {}; wchan {}; stack {}",
        syscall.trim(),
        read("wchan").trim(),
        read("stack")
            .lines()
            .take(6)
            .collect::<Vec<_>>()
            .join(" <- ")
    )
}

fn plan_detail(spec: &SpawnSpec, index: u32) -> Option<PathBuf> {
    if index == u32::MAX {
        return None;
    }
    prepare_steps(&spec.root_mount, &spec.steps)
        .ok()?
        .get(index as usize)
        .map(|step| match step {
            Prepared::Mkdir { path, .. }
            | Prepared::Tmpfs { target: path, .. }
            | Prepared::Bind { target: path, .. }
            | Prepared::Symlink { link: path, .. }
            | Prepared::Proc { target: path }
            | Prepared::File { path, .. } => PathBuf::from(path.to_string_lossy().into_owned()),
        })
}

fn describe_step(spec: &SpawnSpec, path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => path
            .strip_prefix(&spec.root_mount)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_else(|_| path.display().to_string()),
        None => spec.program.display().to_string(),
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(last_os_error("socketpair"));
    }
    // SAFETY: both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `Ok(None)` when the pipe closed empty (execve succeeded).
fn read_child_error(
    pipe: &OwnedFd,
    timeout: Duration,
) -> Result<Option<(u32, i32, u32)>, SpawnError> {
    let mut report = [0u8; 12];
    let mut filled = 0;
    let deadline = std::time::Instant::now() + timeout;
    while filled < report.len() {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            return Err(SpawnError::SetupTimeout(timeout));
        }
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe {
            libc::poll(
                &mut poll,
                1,
                remaining.as_millis().min(i32::MAX as u128) as i32,
            )
        };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SpawnError::Parent {
                call: "poll",
                source: err,
            });
        }
        if ready == 0 {
            continue;
        }
        // SAFETY: reading into the unfilled tail of `report`.
        let n = unsafe {
            libc::read(
                pipe.as_raw_fd(),
                report[filled..].as_mut_ptr().cast(),
                report.len() - filled,
            )
        };
        match n {
            0 if filled == 0 => return Ok(None),
            0 => break,
            n if n < 0 => {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(SpawnError::Parent {
                        call: "read",
                        source: err,
                    });
                }
            }
            n => filled += n as usize,
        }
    }
    let word =
        |i: usize| u32::from_ne_bytes([report[i], report[i + 1], report[i + 2], report[i + 3]]);
    Ok(Some((word(0), word(4) as i32, word(8))))
}

// ---------------------------------------------------------------------------
// The child. Everything below runs between clone and execve: raw syscalls on
// prepared data only.

/// Reports `(step, errno, plan index)` to the parent and exits.
fn fail(plan: &ChildPlan, step: &str, index: u32) -> ! {
    // SAFETY: errno location is thread-local and valid; write/_exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let mut report = [0u8; 12];
        report[..4].copy_from_slice(&step_code(step).to_ne_bytes());
        report[4..8].copy_from_slice(&errno.to_ne_bytes());
        report[8..].copy_from_slice(&index.to_ne_bytes());
        libc::write(plan.error_write, report.as_ptr().cast(), report.len());
        libc::_exit(127);
    }
}

fn check(plan: &ChildPlan, result: libc::c_int, step: &str) {
    if result != 0 {
        fail(plan, step, u32::MAX);
    }
}

fn check_at(plan: &ChildPlan, result: libc::c_int, step: &str, index: usize) {
    if result != 0 {
        fail(plan, step, index as u32);
    }
}

fn child_main(plan: &ChildPlan) -> ! {
    // SAFETY: see the module comment: raw syscalls on memory prepared before
    // clone; every pointer passed is a valid NUL-terminated string or buffer.
    unsafe {
        let mut byte = 0u8;
        if libc::read(plan.sync_read, (&mut byte as *mut u8).cast(), 1) != 1 {
            fail(plan, "wait for parent", u32::MAX);
        }
        if plan.isolate {
            check(
                plan,
                libc::unshare(libc::CLONE_NEWCGROUP),
                "unshare cgroup namespace",
            );
            isolate(plan);
        }
        for (resource, limit) in plan.rlimits {
            let value = libc::rlimit {
                rlim_cur: *limit,
                rlim_max: *limit,
            };
            check(plan, libc::setrlimit(*resource, &value), "setrlimit");
        }
        if plan.isolate {
            drop_privileges(plan);
        }
        place_fds(plan);
        if let Some(program) = plan.seccomp {
            // Allocation-free: no_new_privs check and seccomp(2) on the prebuilt program.
            if let Err(err) = super::seccomp::apply(program) {
                *libc::__errno_location() = err.raw_os_error().unwrap_or(libc::EINVAL);
                fail(plan, "seccomp", u32::MAX);
            }
        }
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        fail(plan, "execve", u32::MAX)
    }
}

unsafe fn isolate(plan: &ChildPlan) {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY (whole function): raw mount-namespace syscalls on prepared C strings.
    unsafe {
        check(
            plan,
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "mount propagation",
        );
        check(
            plan,
            libc::mount(
                c"tmpfs".as_ptr(),
                plan.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"size=1m,nr_inodes=1024,mode=755".as_ptr().cast(),
            ),
            "mount root tmpfs",
        );
        for (index, step) in plan.steps.iter().enumerate() {
            run_step(plan, step, index);
        }
        check(
            plan,
            libc::sethostname(c"sandbox".as_ptr(), 7),
            "sethostname",
        );
        loopback_up(plan);
        check(plan, libc::chdir(plan.root.as_ptr()), "chdir");
        // pivot_root(".", ".") stacks the old root on top of the new one; the
        // detach below then leaves only the new root.
        check(
            plan,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            "pivot_root",
        );
        check(
            plan,
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
            "detach old root",
        );
        check(plan, libc::chdir(c"/".as_ptr()), "chdir");
        check(
            plan,
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            ),
            "remount root read-only",
        );
    }
}

unsafe fn run_step(plan: &ChildPlan, step: &Prepared, index: usize) {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY (whole function): raw syscalls on prepared C strings and buffers.
    unsafe {
        match step {
            Prepared::Mkdir { path, mode } => {
                if libc::mkdir(path.as_ptr(), *mode) != 0
                    && *libc::__errno_location() != libc::EEXIST
                {
                    fail(plan, "mkdir", index as u32);
                }
            }
            Prepared::Tmpfs {
                target,
                data,
                flags,
            } => check_at(
                plan,
                libc::mount(
                    c"tmpfs".as_ptr(),
                    target.as_ptr(),
                    c"tmpfs".as_ptr(),
                    *flags,
                    data.as_ptr().cast(),
                ),
                "mount tmpfs",
                index,
            ),
            Prepared::Bind {
                source,
                target,
                readonly,
                is_dir,
            } => {
                if *is_dir {
                    if libc::mkdir(target.as_ptr(), 0o755) != 0
                        && *libc::__errno_location() != libc::EEXIST
                    {
                        fail(plan, "mkdir", index as u32);
                    }
                } else {
                    // Read-only: an existing target (a /proc file being masked)
                    // must not need CAP_DAC_OVERRIDE to be opened.
                    let fd = libc::open(
                        target.as_ptr(),
                        libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o444,
                    );
                    if fd < 0 {
                        fail(plan, "create file", index as u32);
                    }
                    libc::close(fd);
                }
                check_at(
                    plan,
                    libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ),
                    "bind mount",
                    index,
                );
                let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID;
                if *readonly {
                    flags |= libc::MS_RDONLY;
                }
                check_at(
                    plan,
                    libc::mount(none, target.as_ptr(), none, flags, std::ptr::null()),
                    "remount read-only",
                    index,
                );
            }
            Prepared::Symlink { link, points_to } => {
                check_at(
                    plan,
                    libc::symlink(points_to.as_ptr(), link.as_ptr()),
                    "symlink",
                    index,
                );
            }
            Prepared::Proc { target } => check_at(
                plan,
                libc::mount(
                    c"proc".as_ptr(),
                    target.as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
                "mount proc",
                index,
            ),
            Prepared::File {
                path,
                contents,
                mode,
            } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_CLOEXEC
                        | libc::O_NOFOLLOW,
                    *mode,
                );
                if fd < 0 {
                    fail(plan, "write file", index as u32);
                }
                if libc::write(fd, contents.as_ptr().cast(), contents.len())
                    != contents.len() as isize
                {
                    fail(plan, "write file", index as u32);
                }
                libc::close(fd);
            }
        }
    }
}

/// Brings up `lo` in the new network namespace (ioctl on a throwaway socket).
unsafe fn loopback_up(plan: &ChildPlan) {
    // SAFETY (whole function): ioctl on a socket we own with a zeroed ifreq.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            fail(plan, "loopback up", u32::MAX);
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) != 0 {
            fail(plan, "loopback up", u32::MAX);
        }
        request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) != 0 {
            fail(plan, "loopback up", u32::MAX);
        }
        libc::close(socket);
    }
}

unsafe fn drop_privileges(plan: &ChildPlan) {
    // SAFETY (whole function): prctl/set*id syscalls with scalar arguments.
    unsafe {
        // Clear the bounding set so nothing exec'd can ever regain a capability,
        // and the ambient set. Capabilities past the kernel's last one fail with
        // EINVAL, which ends the loop.
        for capability in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                if *libc::__errno_location() == libc::EINVAL {
                    break;
                }
                fail(plan, "drop capabilities", u32::MAX);
            }
        }
        check(
            plan,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            ),
            "drop capabilities",
        );
        // Raw syscalls, not glibc's wrappers: those broadcast the change to
        // every thread glibc believes exists (setxid) and wait for them, and the
        // parent's other threads do not exist in this child.
        check(
            plan,
            libc::syscall(libc::SYS_setgroups, 0, 0) as libc::c_int,
            "setgroups",
        );
        check(
            plan,
            libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) as libc::c_int,
            "setresgid",
        );
        // Changing every uid away from 0 clears the permitted and effective sets.
        check(
            plan,
            libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) as libc::c_int,
            "setresuid",
        );
        check(
            plan,
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            "no_new_privs",
        );
        check(plan, libc::chdir(plan.cwd.as_ptr()), "chdir");
    }
}

unsafe fn place_fds(plan: &ChildPlan) {
    // SAFETY (whole function): dup2/close_range on fds we hold; all sources are ≥ 10.
    unsafe {
        for (source, target) in [
            (plan.stdin, 0),
            (plan.stdout, 1),
            (plan.stderr, 2),
            (plan.control, 3),
        ] {
            if libc::dup2(source, target) != target {
                fail(plan, "place fds", u32::MAX);
            }
        }
        // Everything above 3 (including the error pipe, which must survive
        // until execve) closes at exec.
        if libc::syscall(
            libc::SYS_close_range,
            4u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            fail(plan, "close fds", u32::MAX);
        }
        if !plan.isolate {
            check(plan, libc::chdir(plan.cwd.as_ptr()), "chdir");
        }
    }
}
