//! The isolated spawn on its own: a Python child in fresh namespaces, on a
//! read-only minimal root, as an unprivileged uid. Needs root.

use std::io::Read;
use std::os::fd::OwnedFd;

use rlm_sandbox_agent::isolation::rootfs::{self, RootfsSpec, Step};
use rlm_sandbox_agent::isolation::spawn::{SpawnError, SpawnSpec, spawn};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (namespaces, mounts, setuid): run it as root, as CI does"
    );
}

fn read_all(fd: OwnedFd) -> String {
    let mut text = String::new();
    std::fs::File::from(fd)
        .read_to_string(&mut text)
        .expect("read");
    text
}

/// An isolated `python3 -I -c code` as uid 201000 on a root mounted over `root`.
fn python_spec(root: &std::path::Path, code: &str) -> SpawnSpec {
    let steps = rootfs::plan(&RootfsSpec {
        uid: 201_000,
        gid: 201_000,
        tmpfs_bytes: 8 << 20,
        python_prefix: None,
        allowed_paths: Vec::new(),
        network: false,
        driver: None,
        thp_pmd_size: Some(2 << 20),
    });
    SpawnSpec {
        isolate: true,
        share_network: false,
        root_mount: root.to_owned(),
        steps,
        uid: 201_000,
        gid: 201_000,
        rlimits: vec![(libc::RLIMIT_CORE, 0)],
        program: "/usr/bin/python3".into(),
        args: vec!["-I".into(), "-c".into(), code.into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/work".into(),
        seccomp: None,
    }
}

/// Whether `pid` is gone (exited and reaped).
fn is_gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn python_runs_isolated_as_an_unprivileged_uid() {
    require_root();
    let root = tempfile::tempdir().expect("root mount dir");
    let code = r#"
import os, socket
print(os.getuid(), os.getgid(), os.getpid(), socket.gethostname())
print(sorted(os.listdir('/')))
print(sorted(os.listdir('/dev')))
print(len([p for p in os.listdir('/proc') if p.isdigit()]))
try:
    open('/usr/evil', 'w')
except OSError as e:
    print('usr', e.errno)
print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])
"#;
    let spec = python_spec(root.path(), code);
    let started = std::time::Instant::now();
    let child = spawn(&spec, |_| Ok(())).expect("spawn");
    let spawn_time = started.elapsed();
    let stdout = read_all(child.stdout);
    let stderr = read_all(child.stderr);
    // Reap the child (test code; the agent reaps its sessions the same way).
    nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid), None).expect("wait");
    eprintln!("spawn to exec: {spawn_time:?}\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("201000 201000 1 sandbox"),
        "{stdout}{stderr}"
    );
    // Only the planned entries: no sysfs (/sys holds two generated files),
    // no /home, /root, /var, /run...
    let allowed = [
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys", "tmp",
        "usr", "work",
    ];
    let listed: Vec<&str> = lines[1]
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|s| s.trim_matches('\''))
        .collect();
    assert!(
        listed.iter().all(|name| allowed.contains(name)),
        "{listed:?}"
    );
    assert!(listed.contains(&"work"), "{listed:?}");
    assert!(
        lines[2].contains("'null'") && !lines[2].contains("'sda'") && !lines[2].contains("'mem'"),
        "{stdout}"
    );
    assert_eq!(lines[3], "1", "only the session's own process is visible");
    assert_eq!(lines[4], "usr 30", "read-only /usr: EROFS");
    assert_eq!(lines[5], "0000000000000000", "no effective capabilities");
}

/// A mount step fails in the child: the error names the step, its path and errno.
#[test]
fn a_failing_mount_step_is_reported_with_its_path() {
    require_root();
    let root = tempfile::tempdir().expect("root mount dir");
    let mut spec = python_spec(root.path(), "print('never runs')");
    spec.steps.push(Step::Bind {
        source: "/nonexistent/rlm-spawn-test".into(),
        target: "opt/missing".into(),
        writable: false,
        is_dir: true,
    });
    let mut placed = None;
    let err = match spawn(&spec, |pid| {
        placed = Some(pid);
        Ok(())
    }) {
        Ok(child) => panic!("spawned pid {} with a missing bind source", child.pid),
        Err(err) => err,
    };
    let SpawnError::Child {
        step,
        detail,
        source,
    } = &err
    else {
        panic!("expected the child's own error, got: {err}");
    };
    assert_eq!(*step, "bind mount", "{err}");
    assert_eq!(detail, "/opt/missing", "{err}");
    assert_eq!(source.raw_os_error(), Some(libc::ENOENT), "{err}");
    let pid = placed.expect("place ran");
    assert!(is_gone(pid), "the failed child {pid} is reaped");
}

/// `place` failing (no cgroup for the session) kills the child before it execs.
#[test]
fn a_failing_place_kills_the_child() {
    require_root();
    let root = tempfile::tempdir().expect("root mount dir");
    let spec = python_spec(root.path(), "print('never runs')");
    let mut placed = None;
    let err = match spawn(&spec, |pid| {
        placed = Some(pid);
        Err("no cgroup for you".to_owned())
    }) {
        Ok(child) => panic!("spawned pid {} although place failed", child.pid),
        Err(err) => err,
    };
    assert!(
        matches!(&err, SpawnError::Cgroup(reason) if reason == "no cgroup for you"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "placing the session process in its cgroup: no cgroup for you"
    );
    let pid = placed.expect("place ran");
    assert!(is_gone(pid), "the child {pid} is killed and reaped");
}
