//! The escape and abuse suite: model-written code tries to break out of, or
//! wear down, its session. Each probe asserts the specific outcome (errno,
//! signal, result). Needs root, as CI runs it.

use std::time::Duration;

use rlm_e2e::sandbox::{Sandbox, processes_matching, shared_agent};
use rlm_proto::rlm::sandbox::v1::{SessionEndReason, SessionLimits};

/// Raw syscalls from Python, returning the errno name on failure.
const PRELUDE: &str = r#"
import ctypes, errno, os, socket, sys
_libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    r = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return errno.errorcode.get(ctypes.get_errno(), '?') if r == -1 else r
def err(fn, *args):
    try:
        fn(*args)
        return 'ok'
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"#;

async fn probe(code: &str) -> String {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox.run(&id, &format!("{PRELUDE}\n{code}")).await;
    sandbox.destroy(&id).await;
    assert!(
        run.result.error.is_none(),
        "probe raised: {:?}\nstdout: {}",
        run.result.error,
        run.out()
    );
    run.out().trim().to_owned()
}

macro_rules! probe {
    ($name:ident, $code:expr, $expected:expr) => {
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            assert_eq!(probe($code).await, $expected);
        }
    };
}

// --- Filesystem ---------------------------------------------------------------
probe!(
    cannot_read_etc_shadow,
    "print(err(open, '/etc/shadow'))",
    "ENOENT"
);
probe!(cannot_write_root, "print(err(open, '/evil', 'w'))", "EROFS");
probe!(
    cannot_write_usr,
    "print(err(open, '/usr/bin/evil', 'w'))",
    "EROFS"
);
probe!(
    cannot_write_etc,
    "print(err(open, '/etc/passwd', 'a'))",
    "EROFS"
);
probe!(
    no_sysfs_only_the_generated_huge_page_files,
    "print([(d, sorted(f)) for d, _, f in os.walk('/sys') if f], err(open, '/sys/kernel/mm/transparent_hugepage/enabled', 'w'), os.path.exists('/sys/fs'))",
    "[('/sys/kernel/mm/transparent_hugepage', ['enabled', 'hpage_pmd_size'])] EROFS False"
);
probe!(
    only_harmless_devices,
    "print(sorted(n for n in os.listdir('/dev') if n not in ('fd', 'stdin', 'stdout', 'stderr', 'shm')))",
    "['full', 'null', 'random', 'urandom', 'zero']"
);
probe!(
    proc_1_root_is_our_own_root,
    "print(sorted(os.listdir('/proc/1/root')) == sorted(os.listdir('/')), os.path.exists('/proc/1/root/home'))",
    "True False"
);
probe!(
    proc_sys_is_not_writable,
    "print(err(open, '/proc/sys/kernel/hostname', 'w'))",
    "EACCES"
);
probe!(
    host_info_leaks_in_proc_are_masked,
    "print([open(p).read() for p in ('/proc/timer_list', '/proc/sched_debug') if os.path.exists(p)] in ([], [''], ['', '']))",
    "True"
);
probe!(
    tmpfs_fill_ends_with_enospc,
    "r = 'ok'\ntry:\n    for i in range(10000):\n        with open(f'/tmp/fill{i}', 'wb') as f: f.write(b'x' * (4 << 20))\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r, sum(os.path.getsize('/tmp/' + n) for n in os.listdir('/tmp')) <= 64 << 20)",
    "ENOSPC True"
);
probe!(
    work_fill_ends_with_enospc,
    "r = 'ok'\ntry:\n    for i in range(10000):\n        with open(f'/work/fill{i}', 'wb') as f: f.write(b'x' * (4 << 20))\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r)",
    "ENOSPC"
);
probe!(
    dev_shm_fill_ends_with_enospc,
    "r = 'ok'\ntry:\n    for i in range(10000):\n        with open(f'/dev/shm/fill{i}', 'wb') as f: f.write(b'x' * (4 << 20))\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r)",
    "ENOSPC"
);
probe!(
    one_huge_file_hits_the_file_size_limit,
    "f = open('/tmp/big', 'wb')\nr = 'ok'\ntry:\n    while True: f.write(b'x' * (1 << 20)); f.flush()\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r)",
    "EFBIG"
);
probe!(
    inode_exhaustion_ends_with_enospc,
    "r = 'ok'\ntry:\n    for i in range(100000): open(f'/tmp/f{i}', 'w').close()\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r)",
    "ENOSPC"
);
probe!(
    no_setuid_escalation,
    "print(err(os.setuid, 0), open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])",
    "EPERM 1"
);

// --- Processes and identity ---------------------------------------------------
probe!(
    runs_as_unprivileged_uid_with_no_capabilities,
    "s = open('/proc/self/status').read()\nprint(os.getuid() >= 200000, os.getgid() == os.getuid(), s.split('CapEff:')[1].split()[0], s.split('CapBnd:')[1].split()[0], os.getgroups())",
    "True True 0000000000000000 0000000000000000 []"
);
probe!(
    hostname_is_sandbox,
    "print(socket.gethostname())",
    "sandbox"
);
probe!(
    only_own_processes_visible,
    "print([p for p in os.listdir('/proc') if p.isdigit()])",
    "['1']"
);
probe!(
    fork_bomb_is_contained,
    "pids = []\nr = 'ok'\ntry:\n    while True:\n        pid = os.fork()\n        if pid == 0:\n            import time; time.sleep(60); os._exit(0)\n        pids.append(pid)\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r, len(pids) < 64)",
    "EAGAIN True"
);
probe!(
    thread_bomb_is_contained,
    "import threading, time\nn = 0\nr = 'ok'\ntry:\n    while True:\n        threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); n += 1\nexcept RuntimeError as e: r = 'RuntimeError'\nprint(r, n < 64)",
    "RuntimeError True"
);
probe!(
    fd_exhaustion_ends_with_emfile,
    "fs = []\nr = 'ok'\ntry:\n    while True: fs.append(open('/dev/null'))\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r, len(fs) < 1024)",
    "EMFILE True"
);
probe!(
    no_leaked_fds,
    "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\nlinks = {f: os.readlink(f'/proc/self/fd/{f}') for f in fds if os.path.exists(f'/proc/self/fd/{f}')}\nprint(fds[:4], all(l.startswith(('pipe:', 'socket:', '/dev/null', '/proc')) for l in links.values()), sum(l.startswith('socket:') for l in links.values()))",
    "[0, 1, 2, 3] True 1"
);
probe!(
    environment_is_built_from_scratch,
    "print(sorted(os.environ), any('canary' in v for v in os.environ.values()), 'canary' in open('/proc/1/environ').read())",
    "['GLIBC_TUNABLES', 'HOME', 'LANG', 'PATH', 'TMPDIR', 'USER'] False False"
);
probe!(
    ptrace_is_denied,
    "print(sc(101, 0, 0, 0, 0), sc(101, 16, 1, 0, 0))",
    "EPERM EPERM"
);
probe!(
    process_vm_readv_is_denied,
    "print(sc(310, 1, 0, 0, 0, 0, 0))",
    "EPERM"
);

// --- Kernel attack surface (seccomp) -------------------------------------------
probe!(
    nested_user_namespace_is_denied,
    "print(sc(272, 0x10000000))",
    "EPERM"
);
probe!(
    new_mount_namespace_is_denied,
    "print(sc(272, 0x00020000))",
    "EPERM"
);
probe!(
    clone_with_namespace_flags_is_denied,
    "print(sc(56, 0x20000000 | 17, 0, 0, 0, 0))",
    "EPERM"
);
probe!(setns_is_denied, "print(sc(308, 0, 0))", "EPERM");
probe!(
    mount_is_denied,
    "print(err(lambda: _libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None) == 0 or (_ for _ in ()).throw(OSError(ctypes.get_errno(), ''))))",
    "EPERM"
);
probe!(
    cgroupfs_release_agent_is_unreachable,
    "print(os.path.exists('/sys/fs/cgroup'), sc(165, id(0) and 0, 0, 0, 0, 0))",
    "False EPERM"
);
probe!(chroot_is_denied, "print(sc(161, 0))", "EPERM");
probe!(pivot_root_is_denied, "print(sc(155, 0, 0))", "EPERM");
probe!(
    keyctl_is_denied,
    "print(sc(250, 0, 0, 0, 0, 0), sc(248, 0, 0, 0, 0, 0))",
    "EPERM EPERM"
);
probe!(bpf_is_denied, "print(sc(321, 0, 0, 0))", "EPERM");
probe!(
    perf_event_open_is_denied,
    "print(sc(298, 0, 0, 0, 0, 0))",
    "EPERM"
);
probe!(io_uring_is_denied, "print(sc(425, 1, 0))", "EPERM");
probe!(userfaultfd_is_denied, "print(sc(323, 0))", "EPERM");
probe!(
    module_loading_and_kexec_are_denied,
    "print(sc(175, 0, 0, 0), sc(313, 0, 0, 0), sc(246, 0, 0, 0, 0))",
    "EPERM EPERM EPERM"
);
probe!(
    vsock_and_netlink_sockets_are_denied,
    "print(err(socket.socket, 40, socket.SOCK_STREAM), err(socket.socket, 16, socket.SOCK_RAW, 0))",
    "EPERM EPERM"
);
probe!(
    tiocsti_is_denied_even_with_high_bits,
    "print(sc(16, 0, 0x5412, 0), sc(16, 0, 0x5412 | (1 << 32), 0))",
    "EPERM EPERM"
);
probe!(clone3_reports_enosys, "print(sc(435, 0, 0))", "ENOSYS");

// --- Network ------------------------------------------------------------------
probe!(
    no_tcp_egress,
    "s = socket.socket(); s.settimeout(2)\nprint(err(s.connect, ('1.1.1.1', 443)))",
    "ENETUNREACH"
);
probe!(
    no_udp_egress,
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nprint(err(s.sendto, b'x', ('8.8.8.8', 53)))",
    "ENETUNREACH"
);
probe!(
    no_dns,
    "try:\n    socket.getaddrinfo('example.com', 443); print('resolved')\nexcept socket.gaierror: print('gaierror')",
    "gaierror"
);
probe!(
    loopback_is_private_to_the_session,
    "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(); b = socket.create_connection(a.getsockname(), timeout=2)\nprint('ok', err(socket.create_connection, ('127.0.0.1', 1)))",
    "ok ECONNREFUSED"
);

#[tokio::test(flavor = "multi_thread")]
async fn cannot_reach_the_agent_socket_or_host_ports() {
    let agent = shared_agent();
    let host = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let port = host.local_addr().expect("addr").port();
    let abstract_name = format!("rlm-test-{}", std::process::id());
    let abstract_listener = {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .expect("abstract");
        std::os::unix::net::UnixListener::bind_addr(&address).expect("abstract listener")
    };
    let socket_path = agent.address.trim_start_matches("unix://");
    let code = format!(
        "s = socket.socket(socket.AF_UNIX)\nprint(err(s.connect, {socket_path:?}))\n\
         print(err(socket.create_connection, ('127.0.0.1', {port})))\n\
         u = socket.socket(socket.AF_UNIX)\nprint(err(u.connect, '\\0{abstract_name}'))"
    );
    assert_eq!(probe(&code).await, "ENOENT\nECONNREFUSED\nECONNREFUSED");
    drop((host, abstract_listener));
}

#[tokio::test(flavor = "multi_thread")]
async fn cannot_see_or_signal_the_agent() {
    let agent = shared_agent();
    let code = format!(
        "print(os.path.exists('/proc/{pid}'), err(os.kill, {pid}, 9), err(open, '/proc/{pid}/environ'))",
        pid = agent.pid
    );
    let out = probe(&code).await;
    // PID 1 inside is the session itself; any other pid does not exist there.
    assert_eq!(out, "False ESRCH ENOENT");
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.pid), None).is_ok(),
        "agent alive"
    );
}

// --- Resources ----------------------------------------------------------------
fn small_memory() -> SessionLimits {
    SessionLimits {
        memory_bytes: 64 << 20,
        tmpfs_bytes: 8 << 20,
        ..Default::default()
    }
}

async fn memory_bomb(code: &str) {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox
        .create(Some(small_memory()), Vec::new())
        .await
        .session_id;
    let run = sandbox.run(&id, code).await;
    let result = &run.result;
    let oom_killed = result.session_ended && result.end_reason() == SessionEndReason::OomKilled;
    let memory_error = result
        .error
        .as_ref()
        .is_some_and(|e| e.exception_type == "MemoryError");
    assert!(
        oom_killed || memory_error,
        "neither OOM kill nor MemoryError: {result:?} {}",
        run.err()
    );
    // Either way, the agent and other sessions carry on.
    let other = sandbox.session().await;
    assert_eq!(sandbox.run(&other, "print(6 * 7)").await.ok().out(), "42\n");
    sandbox.destroy(&id).await;
    sandbox.destroy(&other).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn heap_bomb_is_contained() {
    memory_bomb("chunks = []\nwhile True: chunks.append(bytearray(8 << 20))").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mmap_bomb_is_contained() {
    memory_bomb("import mmap\nmaps = []\nwhile True:\n    m = mmap.mmap(-1, 8 << 20); m.write(b'x' * (8 << 20)); maps.append(m)").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_loop_times_out_and_the_session_survives_with_limits() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    sandbox.run(&id, "x = 41").await.ok();
    let run = sandbox
        .run_with(&id, "while True: pass", Duration::from_millis(500), None)
        .await;
    assert!(
        run.result.timed_out && run.result.interrupted,
        "{:?}",
        run.result
    );
    assert!(!run.result.session_ended);
    assert_eq!(
        run.result.error.as_ref().map(|e| e.exception_type.as_str()),
        Some("KeyboardInterrupt")
    );
    // Globals survive, and the limits are still in force after the interrupt.
    assert_eq!(sandbox.run(&id, "print(x + 1)").await.ok().out(), "42\n");
    let bomb = format!(
        "{PRELUDE}\nr = 'ok'\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(60); os._exit(0)\nexcept OSError as e: r = errno.errorcode[e.errno]\nprint(r)"
    );
    assert_eq!(sandbox.run(&id, &bomb).await.ok().out(), "EAGAIN\n");
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ignoring_the_interrupt_gets_the_session_killed() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass";
    let run = sandbox
        .run_with(&id, code, Duration::from_millis(300), None)
        .await;
    assert!(
        run.result.timed_out && run.result.session_ended,
        "{:?}",
        run.result
    );
    assert_eq!(run.result.end_reason(), SessionEndReason::TimeoutKilled);
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn output_flood_is_capped_and_the_session_survives() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox
        .run(&id, "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(200): sys.stdout.write(block)\nsys.stdout.flush()")
        .await;
    assert!(run.result.truncated, "{:?}", run.result);
    assert_eq!(
        run.stdout.len(),
        1 << 20,
        "exactly the default 1 MiB cap is forwarded"
    );
    assert!(run.result.output_bytes >= 200 << 20, "{:?}", run.result);
    assert_eq!(
        sandbox.run(&id, "print('still here')").await.ok().out(),
        "still here\n"
    );
    sandbox.destroy(&id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_output_arrives_byte_exact() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let run = sandbox
        .run(
            &id,
            "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00ok\\xc3'); sys.stdout.flush()",
        )
        .await
        .ok();
    assert_eq!(run.stdout, b"\xff\xfe\x00ok\xc3");
    sandbox.destroy(&id).await;
}

// --- Between sessions -----------------------------------------------------------
#[tokio::test(flavor = "multi_thread")]
async fn sessions_cannot_see_each_others_files_processes_or_signals() {
    let mut sandbox = Sandbox::shared().await;
    let a = sandbox.session().await;
    let b = sandbox.session().await;
    let a_info = sandbox
        .run(&a, "import os, subprocess\nopen('/tmp/secret', 'w').write('a')\nopen('/work/secret', 'w').write('a')\np = subprocess.Popen(['sleep', '60'])\nprint(os.getuid(), p.pid)")
        .await
        .ok()
        .out();
    let (a_uid, a_child) = a_info.trim().split_once(' ').expect("uid pid");
    let b_view = sandbox
        .run(
            &b,
            &format!(
                "{PRELUDE}\nprint(os.path.exists('/tmp/secret'), os.path.exists('/work/secret'), os.getuid() != {a_uid}, [p for p in os.listdir('/proc') if p.isdigit()], err(os.kill, {a_child}, 9))"
            ),
        )
        .await
        .ok()
        .out();
    assert_eq!(b_view.trim(), "False False True ['1'] ESRCH");
    assert_eq!(
        sandbox.run(&a, "print(p.poll())").await.ok().out(),
        "None\n",
        "a's child still runs"
    );
    sandbox.destroy(&a).await;
    sandbox.destroy(&b).await;
}

/// Each of: the `random` module's state, the kernel's randomness, the str
/// hash secret (PEP 456) and the memory layout (ASLR: where the heap lies)
/// differs from one session to the next. The last two are what sessions
/// forked from one warm interpreter (a fork server) would share.
#[tokio::test(flavor = "multi_thread")]
async fn random_state_differs_between_sessions() {
    let mut sandbox = Sandbox::shared().await;
    let mut seen: [std::collections::HashSet<String>; 4] = Default::default();
    for _ in 0..3 {
        let id = sandbox.session().await;
        let out = sandbox
            .run(
                &id,
                "import random, os\n\
                 print(random.random(), os.urandom(8).hex(), hash('x'), hex(id(object())))",
            )
            .await
            .ok()
            .out();
        let values: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(values.len(), 4, "{out}");
        for (column, value) in seen.iter_mut().zip(values) {
            assert!(
                column.insert(value.to_owned()),
                "repeated in another session: {out}"
            );
        }
        sandbox.destroy(&id).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_leaves_no_survivor_and_follows_no_planted_symlink() {
    let mut sandbox = Sandbox::shared().await;
    let id = sandbox.session().await;
    let canary_dir = tempfile::tempdir().expect("canary dir");
    let canary = canary_dir.path().join("canary");
    std::fs::write(&canary, "intact").expect("canary");
    let marker = format!("{}.{}", 600 + std::process::id() % 100, std::process::id());
    let code = format!(
        "import os, subprocess\n\
         for d in ('/tmp', '/work'):\n    os.symlink({host:?}, d + '/link'); os.symlink('/', d + '/root')\n\
         subprocess.Popen(['setsid', 'sh', '-c', 'sleep {marker} & sleep {marker}'], start_new_session=True)\n\
         if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        os.execvp('sleep', ['sleep', '{marker}'])\n    os._exit(0)\n\
         import time; time.sleep(0.3); print('planted')",
        host = canary.display().to_string()
    );
    assert_eq!(sandbox.run(&id, &code).await.ok().out(), "planted\n");
    let survivors = || processes_matching(&marker);
    assert!(survivors() >= 3, "the sleepers run before destroy");
    assert!(sandbox.destroy(&id).await);
    assert_eq!(survivors(), 0, "no process of the session survives destroy");
    assert_eq!(std::fs::read_to_string(&canary).expect("canary"), "intact");
}
