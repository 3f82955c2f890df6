//! The seccomp-BPF filter applied to every sandbox process right before it
//! execs Python.
//!
//! # Policy
//!
//! The filter is a *deny list*: every system call is allowed except the ones
//! below, which fail with `EPERM` (the process keeps running and sees an
//! ordinary permission error):
//!
//! * **new namespaces**: `unshare` and `setns` (any arguments), and `clone`
//!   whose flags contain a `CLONE_NEW*` bit (see `CLONE_NAMESPACE_FLAGS`);
//!   plain `clone` (fork, threads, `posix_spawn`) keeps working. `clone3` fails
//!   with `ENOSYS` instead, see below.
//! * **mounts and the root directory**: `mount`, `umount2`, `pivot_root`,
//!   `chroot` and the new mount API (`open_tree`, `open_tree_attr`,
//!   `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`,
//!   `mount_setattr`).
//! * **other processes**: `ptrace`, `process_vm_readv`, `process_vm_writev`,
//!   `kcmp`, `pidfd_getfd`.
//! * **large kernel attack surface the sandbox has no use for**: `bpf`,
//!   `perf_event_open`, `userfaultfd`, `io_uring_setup`, `io_uring_enter`,
//!   `io_uring_register`, the key-management calls `keyctl`, `add_key`,
//!   `request_key`, and (x86_64) `modify_ldt`.
//! * **host administration**: `kexec_load`, `kexec_file_load`, `init_module`,
//!   `finit_module`, `delete_module`, `reboot`, `swapon`, `swapoff`, `acct`,
//!   `syslog`, `quotactl`, `quotactl_fd`, `settimeofday`, `clock_settime`,
//!   `clock_adjtime`, `adjtimex`, `name_to_handle_at`, `open_by_handle_at`,
//!   `lookup_dcookie`, `vhangup`, `nfsservctl`, and on x86_64 `iopl`,
//!   `ioperm`, `uselib`, `sysfs`, `_sysctl`.
//! * `personality` with any value other than `PER_LINUX` (0) or the query
//!   value `0xffffffff` (blocks e.g. `ADDR_NO_RANDOMIZE`, which turns ASLR off
//!   for the next exec).
//! * `socket` and `socketpair` with an address family other than `AF_UNIX`,
//!   `AF_INET` or `AF_INET6`: this covers `AF_NETLINK` and `AF_VSOCK` (the
//!   host's channel into a microVM) and every rarely used, historically buggy
//!   family (`AF_PACKET`, `AF_ALG`, `AF_KEY`, ...).
//! * `ioctl` with request `TIOCSTI` (push characters into a terminal's input
//!   queue) or `TIOCLINUX`, compared on the request's **low 32 bits only**: the
//!   kernel declares the request `unsigned int` and truncates it, so a 64-bit
//!   comparison could be bypassed with `TIOCSTI | 1 << 32` (CVE-2019-10063).
//!
//! # Why `clone3` returns `ENOSYS`
//!
//! `clone3` takes its flags in a `struct clone_args` in user memory, and a
//! seccomp filter can only see the six register arguments, never the memory
//! they point to, so it cannot tell a thread from a new user namespace. The
//! filter therefore answers `ENOSYS` ("this kernel has no clone3"): glibc (and
//! other runtimes) then fall back to the legacy `clone`, whose flags are a
//! register argument the filter does check. `EPERM` would not trigger that
//! fallback and would break `pthread_create`, `posix_spawn` and `fork`.
//!
//! # Architecture and ABI checks
//!
//! * **Foreign architecture → the process is killed.** seccompiler starts
//!   every program with a check of `seccomp_data.arch`; a system call made
//!   through another ABI than the native one (on x86_64 the i386 ABI via
//!   `int 0x80`, audit arch `AUDIT_ARCH_I386`; on aarch64 the AArch32 compat
//!   ABI) hits `SECCOMP_RET_KILL_PROCESS`: the whole process dies as if by an
//!   uncatchable `SIGSYS`. The i386 table has different numbers, so a
//!   native-numbered deny list would not cover it; killing is the only safe
//!   answer and no Python code has a reason to use it.
//! * **x32 (x86_64 only) → `EPERM`.** x32 system calls carry the *native*
//!   audit arch (`AUDIT_ARCH_X86_64`) with bit `0x4000_0000` set in the
//!   number, so they pass seccompiler's arch check, and since seccompiler only
//!   compares exact numbers they would fall through to the default action,
//!   *allow*: `unshare | 0x4000_0000` would bypass the filter on kernels built
//!   with `CONFIG_X86_X32_ABI`. seccompiler's rules can only test arguments,
//!   never the system-call number range, so this module splices its own
//!   instructions after the arch check (see `early_dispatch`): any number
//!   `>= 0x4000_0000` is refused with `EPERM` before the seccompiler part runs.
//!   The same prologue also sends `clone3` to `ENOSYS` (seccompiler has a
//!   single match action per filter, here `EPERM`).
//!
//! Program layout (x86_64):
//!
//! ```text
//! ld  [arch]; jeq AUDIT_ARCH_X86_64 ? +1 : 0; ret KILL_PROCESS      (seccompiler)
//! ld  [nr];   jge 0x40000000 ? 0 : +1;        ret ERRNO(EPERM)      (this module)
//!             jeq clone3     ? 0 : +1;        ret ERRNO(ENOSYS)     (this module)
//! ld  [nr];   per-syscall rule chains → ERRNO(EPERM); default ALLOW (seccompiler)
//! ```
//!
//! The program is about 370 instructions on x86_64. Allowed system calls whose
//! verdict does not depend on their arguments are served from the kernel's
//! per-filter action cache (Linux 5.11+) without running the program at all;
//! `clone`, `socket`, `socketpair`, `ioctl` and `personality` run it, about
//! 15 to 45 instructions each.
//!
//! # Using it
//!
//! Build the program once with [`sandbox_filter`] (it allocates) and keep it;
//! in each sandbox child call [`apply`] as the **last** step before `execve`:
//! after the namespace, mount, `chroot`/`pivot_root`, uid/gid, capability,
//! rlimit and `close_range` set-up, because the filter refuses several of
//! those calls. [`apply`] sets `no_new_privs`, filters only the calling thread
//! (no `TSYNC`: the child is single-threaded between clone and exec) and is
//! async-signal-safe. The filter is inherited by every descendant and across
//! `execve`, and cannot be removed.

use std::collections::BTreeMap;

use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch, sock_filter,
};

pub use seccompiler::BpfProgram;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the sandbox seccomp filter is only defined for x86_64 and aarch64");

/// Errors from building or installing the sandbox filter.
///
/// The variants [`apply`] returns are plain data (no heap allocation), so it
/// can return them from a freshly cloned child.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler rejected a rule or the filter while compiling the policy.
    #[error("compiling the sandbox seccomp policy failed: {0}")]
    Compile(#[from] seccompiler::BackendError),
    /// seccompiler's output did not have the shape this module splices its
    /// x32/`clone3` prologue into (a seccompiler upgrade changed its code
    /// generation); the filter is refused rather than built wrong.
    #[error("unexpected seccompiler output: {0}")]
    UnexpectedProgram(&'static str),
    /// The program handed to [`apply`] is empty or longer than the kernel
    /// accepts.
    #[error("a seccomp program must have 1 to {max} instructions, this one has {len}")]
    ProgramLength {
        /// Instructions in the program.
        len: usize,
        /// The kernel's limit (`BPF_MAXINSNS`).
        max: usize,
    },
    /// `prctl(PR_GET_NO_NEW_PRIVS)` or `prctl(PR_SET_NO_NEW_PRIVS)` failed.
    #[error("prctl(no_new_privs) failed: {}", os_error(.errno))]
    NoNewPrivs {
        /// The `errno` the kernel returned.
        errno: i32,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER) failed: {}", os_error(.errno))]
    Install {
        /// The `errno` the kernel returned.
        errno: i32,
    },
}

impl SeccompError {
    /// The `errno` behind a failed system call in [`apply`], if this error
    /// came from one. Convenient in a `pre_exec` hook, which must report an
    /// `std::io::Error` without allocating:
    /// `std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EINVAL))`.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::NoNewPrivs { errno } | Self::Install { errno } => Some(*errno),
            Self::Compile(_) | Self::UnexpectedProgram(_) | Self::ProgramLength { .. } => None,
        }
    }
}

/// Formats an errno for an error message (only called by `Display`, never on
/// the async-signal-safe path).
fn os_error(errno: &i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(*errno)
}

// ---------------------------------------------------------------------------
// The policy
// ---------------------------------------------------------------------------

/// Number of `open_tree_attr` (Linux 6.15); not in `libc` yet. System calls
/// added since 5.1 share one number on every architecture.
const SYS_OPEN_TREE_ATTR: i64 = 467;

/// System calls refused with `EPERM` whatever their arguments.
const DENIED_SYSCALLS: &[(&str, i64)] = &[
    // New namespaces, or joining existing ones.
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    // Mounts and the root directory.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_tree", libc::SYS_open_tree),
    ("open_tree_attr", SYS_OPEN_TREE_ATTR),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // Other processes' memory, descriptors and kernel objects.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    // Large kernel attack surface that sandboxed Python has no use for.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // Only 16-bit / Wine code uses the LDT; the call has a history of bugs.
    #[cfg(target_arch = "x86_64")]
    ("modify_ldt", libc::SYS_modify_ldt),
    // Host administration (most need a capability the sandbox does not have;
    // refusing them here is defence in depth).
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("vhangup", libc::SYS_vhangup),
    ("nfsservctl", libc::SYS_nfsservctl),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("sysfs", libc::SYS_sysfs),
    #[cfg(target_arch = "x86_64")]
    ("_sysctl", libc::SYS__sysctl),
];

/// `clone` flags that create a namespace; `clone` with any of them is refused.
///
/// `CLONE_NEWTIME` (0x80) is deliberately absent: it overlaps `CSIGNAL`, the
/// exit-signal byte of the legacy `clone` flags, so the kernel reads that bit
/// as part of the exit signal and can create a time namespace only through
/// `unshare` and `clone3`, both refused outright.
const CLONE_NAMESPACE_FLAGS: &[(&str, libc::c_int)] = &[
    ("CLONE_NEWNS", libc::CLONE_NEWNS),
    ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
    ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
    ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
    ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
    ("CLONE_NEWPID", libc::CLONE_NEWPID),
    ("CLONE_NEWNET", libc::CLONE_NEWNET),
];

/// The only address families `socket` and `socketpair` may use.
const ALLOWED_SOCKET_FAMILIES: &[(&str, libc::c_int)] = &[
    ("AF_UNIX", libc::AF_UNIX),
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
];

/// `ioctl` requests that are refused (compared on their low 32 bits). The
/// values come from asm-generic/ioctls.h, shared by x86_64 and aarch64 (a test
/// checks them against `libc`).
const DENIED_IOCTLS: &[(&str, u64)] = &[
    // Fake terminal input: lets a process type commands into a shell that
    // shares its terminal.
    ("TIOCSTI", 0x5412),
    // Virtual-console control (selection, console switching).
    ("TIOCLINUX", 0x541C),
];

/// `personality` values that are allowed: `PER_LINUX` and the query value.
const ALLOWED_PERSONALITIES: &[u64] = &[0, 0xffff_ffff];

// ---------------------------------------------------------------------------
// Building the program
// ---------------------------------------------------------------------------

// Classic BPF opcodes (linux/bpf_common.h) and `struct seccomp_data` offsets
// (linux/seccomp.h) used by the hand-written prologue.
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20): load a 32-bit word of `seccomp_data`.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K` (0x05 | 0x30 | 0x00).
#[cfg(target_arch = "x86_64")]
const BPF_JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64`: `EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 183 | 0x8000_0000 | 0x4000_0000;
#[cfg(target_arch = "x86_64")]
const TARGET_ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const TARGET_ARCH: TargetArch = TargetArch::aarch64;

/// `__X32_SYSCALL_BIT`: set in the number of every x32-ABI system call.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const EPERM: u32 = libc::EPERM.unsigned_abs();
const ENOSYS: u32 = libc::ENOSYS.unsigned_abs();
/// The number of `clone3` (435 on both architectures; fits a BPF immediate).
const SYS_CLONE3: u32 = libc::SYS_clone3 as u32;

const fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

const fn ret_errno(errno: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA)
}

/// Builds the sandbox filter for the architecture this binary targets.
///
/// Pure computation (no system calls); it takes well under a millisecond, but
/// allocates, so build it once in the agent and hand the same program to
/// [`apply`] in every session.
pub fn sandbox_filter() -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        policy_rules()?,
        // Mismatch (syscall not listed, or none of its rules match): allow.
        SeccompAction::Allow,
        // Match: refuse with EPERM.
        SeccompAction::Errno(EPERM),
        TARGET_ARCH,
    )?;
    let program = BpfProgram::try_from(filter)?;
    splice_early_dispatch(program)
}

/// The seccompiler rules: syscall number → rules, any of which (each an AND of
/// conditions) refuses the call; an empty rule list refuses it always.
fn policy_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();

    // clone(flags, ...): flags are argument 0 on both architectures, and the
    // kernel uses only their low 32 bits (`lower_32_bits(clone_flags)`).
    let clone_rules = CLONE_NAMESPACE_FLAGS
        .iter()
        .map(|&(_, flag)| {
            let flag = u64::from(flag.unsigned_abs());
            rule(vec![dword(0, SeccompCmpOp::MaskedEq(flag), flag)?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);

    // socket(domain, ...) / socketpair(domain, ...): `int domain`.
    let foreign_family = rule(
        ALLOWED_SOCKET_FAMILIES
            .iter()
            .map(|&(_, family)| dword(0, SeccompCmpOp::Ne, u64::from(family.unsigned_abs())))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    rules.insert(libc::SYS_socket, vec![foreign_family.clone()]);
    rules.insert(libc::SYS_socketpair, vec![foreign_family]);

    // ioctl(fd, request, ...): `unsigned int request`, so compare 32 bits
    // (CVE-2019-10063).
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|&(_, request)| rule(vec![dword(1, SeccompCmpOp::Eq, request)?]))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);

    // personality(unsigned int persona).
    let odd_personality = rule(
        ALLOWED_PERSONALITIES
            .iter()
            .map(|&persona| dword(0, SeccompCmpOp::Ne, persona))
            .collect::<Result<Vec<_>, _>>()?,
    )?;
    rules.insert(libc::SYS_personality, vec![odd_personality]);

    Ok(rules)
}

/// A condition on the low 32 bits of argument `arg`.
fn dword(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        op,
        value,
    )?)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(conditions)?)
}

/// The prologue spliced between seccompiler's arch check and its rule chains:
/// refuse every x32 system call (x86_64) and answer `clone3` with `ENOSYS`.
fn early_dispatch() -> Vec<sock_filter> {
    let mut prologue = vec![stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)];
    #[cfg(target_arch = "x86_64")]
    prologue.extend([
        jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, ret_errno(EPERM)),
    ]);
    prologue.extend([
        jump(BPF_JMP_JEQ_K, SYS_CLONE3, 0, 1),
        stmt(BPF_RET_K, ret_errno(ENOSYS)),
    ]);
    prologue
}

/// Inserts [`early_dispatch`] right after seccompiler's arch check.
///
/// seccompiler 0.5 emits `ld [arch]; jeq ARCH, 1, 0; ret KILL_PROCESS` and
/// then `ld [nr]` followed by the rule chains. Classic BPF jumps are relative
/// and only go forward, and the only jump that crosses the insertion point is
/// the arch check's, whose target (index 3) becomes the prologue; every other
/// jump lies entirely after it. The shape is verified before splicing.
fn splice_early_dispatch(mut program: BpfProgram) -> Result<BpfProgram, SeccompError> {
    let arch_check = [
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH),
        jump(BPF_JMP_JEQ_K, AUDIT_ARCH_NATIVE, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
    ];
    if program.get(..arch_check.len()) != Some(&arch_check[..]) {
        return Err(SeccompError::UnexpectedProgram(
            "the program does not start with the expected architecture check",
        ));
    }
    if program.get(arch_check.len()) != Some(&stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)) {
        return Err(SeccompError::UnexpectedProgram(
            "the architecture check is not followed by a load of the syscall number",
        ));
    }
    let at = arch_check.len();
    program.splice(at..at, early_dispatch());
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::ProgramLength {
            len: program.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(program)
}

// ---------------------------------------------------------------------------
// Installing the program
// ---------------------------------------------------------------------------

// `apply` hands seccompiler's instructions to the kernel as `libc::sock_filter`
// (both mirror `struct sock_filter` from linux/filter.h); make sure they agree.
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<sock_filter>() == size_of::<libc::sock_filter>());
    assert!(align_of::<sock_filter>() == align_of::<libc::sock_filter>());
    assert!(offset_of!(sock_filter, code) == offset_of!(libc::sock_filter, code));
    assert!(offset_of!(sock_filter, jt) == offset_of!(libc::sock_filter, jt));
    assert!(offset_of!(sock_filter, jf) == offset_of!(libc::sock_filter, jf));
    assert!(offset_of!(sock_filter, k) == offset_of!(libc::sock_filter, k));
};

/// Applies `filter` to the calling thread, setting `no_new_privs` first if it
/// is not set yet.
///
/// Async-signal-safe, so it may run in a `pre_exec` hook or any other code
/// between `clone`/`fork` and `execve` in a multi-threaded process: it makes
/// three system calls at most (`prctl` ×2, `seccomp`), reads `errno`, and
/// neither allocates nor takes a lock, on success and on error alike.
/// seccompiler's own `apply_filter` would do (it does not allocate either), but
/// this keeps the guarantee in our hands and skips the `prctl` when the flag is
/// already set.
///
/// Only the calling thread is filtered (no `SECCOMP_FILTER_FLAG_TSYNC`); its
/// later children and threads, and the program it execs, inherit the filter.
pub fn apply(filter: &BpfProgram) -> Result<(), SeccompError> {
    let len = filter.len();
    let Ok(len_u16) = u16::try_from(len) else {
        return Err(SeccompError::ProgramLength {
            len,
            max: BPF_MAXINSNS,
        });
    };
    if len == 0 || len > BPF_MAXINSNS {
        return Err(SeccompError::ProgramLength {
            len,
            max: BPF_MAXINSNS,
        });
    }
    ensure_no_new_privs()?;
    install_filter(filter, len_u16)
}

/// The calling thread's `errno`, read without allocating.
fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

/// Sets `no_new_privs` on the calling thread unless it is set already (it is
/// required for an unprivileged `seccomp(SECCOMP_SET_MODE_FILTER)`, and keeps
/// set-uid binaries from gaining privileges under the filter).
#[allow(unsafe_code)]
fn ensure_no_new_privs() -> Result<(), SeccompError> {
    // The variadic arguments must be `unsigned long`: the kernel rejects
    // these options unless the unused arguments are exactly zero.
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers; it only returns 0 or 1.
    let current = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, zero, zero, zero, zero) };
    match current {
        1 => return Ok(()),
        0 => {}
        _ => {
            return Err(SeccompError::NoNewPrivs {
                errno: last_errno(),
            });
        }
    }
    let one: libc::c_ulong = 1;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointers; it only sets a flag on
    // the calling thread.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) };
    if rc != 0 {
        return Err(SeccompError::NoNewPrivs {
            errno: last_errno(),
        });
    }
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)`.
#[allow(unsafe_code)]
fn install_filter(filter: &[sock_filter], len: u16) -> Result<(), SeccompError> {
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    let flags: libc::c_ulong = 0;
    // SAFETY: `prog` points at `len` initialised instructions of `filter`,
    // whose layout matches `libc::sock_filter` (asserted above); the kernel
    // copies them in during the call and never writes through the pointer,
    // and both `prog` and `filter` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            flags,
            &raw const prog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Install {
            errno: last_errno(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Two kinds of tests:
    //!
    //! * unit tests run the compiled program through a small classic-BPF
    //!   interpreter ([`run_bpf`]) for many `seccomp_data` inputs;
    //! * process tests re-execute this test binary with `RLM_SECCOMP_PROBE`
    //!   set: the child runs only [`probe_entry`], which applies the real
    //!   filter to itself, attempts one operation and prints the outcome. The
    //!   harness process itself is never filtered. Most probes also run once
    //!   *unfiltered* as a control, to show that the kernel would have answered
    //!   differently without the filter.

    use super::*;

    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Command, ExitStatus, Stdio};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const RET_EPERM: u32 = ret_errno(EPERM);
    const RET_ENOSYS: u32 = ret_errno(ENOSYS);
    const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    const PROBE_ENV: &str = "RLM_SECCOMP_PROBE";
    const MODE_ENV: &str = "RLM_SECCOMP_PROBE_MODE";
    const RESULT_MARKER: &str = "RLM_SECCOMP_PROBE_RESULT=";

    const EPERM_OUT: &str = "errno:1";

    fn program() -> &'static BpfProgram {
        static PROGRAM: OnceLock<BpfProgram> = OnceLock::new();
        PROGRAM.get_or_init(|| sandbox_filter().expect("building the sandbox filter"))
    }

    // -----------------------------------------------------------------------
    // A classic-BPF interpreter for seccomp programs
    // -----------------------------------------------------------------------

    /// Checks what the kernel's verifier would: every instruction is one the
    /// interpreter knows, every jump lands inside the program, and the last
    /// instruction returns.
    fn check_program(program: &[sock_filter]) {
        assert!(!program.is_empty() && program.len() <= BPF_MAXINSNS);
        for (pc, insn) in program.iter().enumerate() {
            let targets: Vec<usize> = match insn.code {
                0x20 => {
                    assert!(
                        insn.k % 4 == 0 && insn.k + 4 <= 64,
                        "load out of seccomp_data at {pc}"
                    );
                    vec![]
                }
                0x54 | 0x06 => vec![],
                0x05 => vec![pc + 1 + usize::try_from(insn.k).expect("jump offset")],
                0x15 | 0x25 | 0x35 | 0x45 => {
                    vec![pc + 1 + usize::from(insn.jt), pc + 1 + usize::from(insn.jf)]
                }
                other => panic!("unexpected opcode {other:#x} at {pc}"),
            };
            for target in targets {
                assert!(target < program.len(), "jump out of the program at {pc}");
            }
        }
        assert_eq!(program.last().map(|insn| insn.code), Some(BPF_RET_K));
    }

    /// Runs `program` on a `struct seccomp_data` the way the kernel does.
    fn run_bpf(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0_u8; 64];
        data[0..4].copy_from_slice(&nr.to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        let mut acc: u32 = 0;
        let mut pc = 0_usize;
        loop {
            let insn = program.get(pc).expect("the program ran off its end");
            pc += 1;
            let taken = match insn.code {
                0x20 => {
                    let at = usize::try_from(insn.k).expect("offset");
                    let word = data[at..at + 4].try_into().expect("a 4-byte word");
                    acc = u32::from_ne_bytes(word);
                    continue;
                }
                0x54 => {
                    acc &= insn.k;
                    continue;
                }
                0x05 => {
                    pc += usize::try_from(insn.k).expect("offset");
                    continue;
                }
                0x06 => return insn.k,
                0x15 => acc == insn.k,
                0x25 => acc > insn.k,
                0x35 => acc >= insn.k,
                0x45 => acc & insn.k != 0,
                other => panic!("unexpected opcode {other:#x}"),
            };
            pc += usize::from(if taken { insn.jt } else { insn.jf });
        }
    }

    /// The verdict of the sandbox filter on a native system call.
    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        let nr = u32::try_from(nr).expect("syscall number");
        run_bpf(program(), AUDIT_ARCH_NATIVE, nr, args)
    }

    fn args1(a0: u64) -> [u64; 6] {
        [a0, 0, 0, 0, 0, 0]
    }

    fn flag(value: libc::c_int) -> u64 {
        u64::from(value.unsigned_abs())
    }

    // -----------------------------------------------------------------------
    // Unit tests on the program
    // -----------------------------------------------------------------------

    #[test]
    fn program_is_well_formed_and_deterministic() {
        check_program(program());
        let again = sandbox_filter().expect("second build");
        assert_eq!(&again, program(), "the build is deterministic");
        // The prologue sits right after the arch check.
        let prologue = early_dispatch();
        assert_eq!(program()[3..3 + prologue.len()], prologue[..]);
    }

    #[test]
    fn build_time_and_size() {
        let runs: u32 = 200;
        let started = Instant::now();
        for _ in 0..runs {
            let built = sandbox_filter().expect("build");
            assert_eq!(built.len(), program().len());
        }
        let per_build = started.elapsed() / runs;
        println!(
            "sandbox_filter(): {} BPF instructions ({} bytes), {per_build:?} per build (mean of {runs})",
            program().len(),
            program().len() * std::mem::size_of::<sock_filter>(),
        );
        assert!(program().len() < BPF_MAXINSNS);
        assert!(
            per_build < Duration::from_millis(50),
            "building took {per_build:?}"
        );
    }

    #[test]
    fn ioctl_constants_match_libc() {
        let table: Vec<(&str, u64)> = DENIED_IOCTLS.to_vec();
        assert_eq!(
            table,
            [("TIOCSTI", libc::TIOCSTI), ("TIOCLINUX", libc::TIOCLINUX)]
        );
    }

    #[test]
    fn the_deny_list_has_no_duplicates_or_overlaps() {
        let mut numbers: Vec<i64> = DENIED_SYSCALLS.iter().map(|&(_, nr)| nr).collect();
        numbers.extend([
            libc::SYS_clone,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_ioctl,
            libc::SYS_personality,
            libc::SYS_clone3,
        ]);
        let count = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), count, "a syscall is listed twice");
        assert_eq!(
            policy_rules().expect("rules").len(),
            count - 1,
            "clone3 is in the prologue"
        );
    }

    #[test]
    fn every_listed_syscall_is_denied_whatever_its_arguments() {
        for &(name, nr) in DENIED_SYSCALLS {
            for args in [[0; 6], [u64::MAX; 6], [1, 2, 3, 4, 5, 6]] {
                assert_eq!(verdict(nr, args), RET_EPERM, "{name} with {args:?}");
            }
        }
    }

    #[test]
    fn other_syscalls_are_allowed() {
        let conditional = [
            libc::SYS_clone,
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_ioctl,
            libc::SYS_personality,
            libc::SYS_clone3,
        ];
        let mut allowed = 0;
        for nr in 0..1024_i64 {
            if DENIED_SYSCALLS.iter().any(|&(_, denied)| denied == nr) || conditional.contains(&nr)
            {
                continue;
            }
            for args in [[0; 6], [u64::MAX; 6]] {
                assert_eq!(verdict(nr, args), RET_ALLOW, "syscall {nr} with {args:?}");
            }
            allowed += 1;
        }
        assert!(allowed > 900);
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_mmap,
            libc::SYS_futex,
            libc::SYS_exit_group,
            libc::SYS_seccomp,
            libc::SYS_prctl,
        ] {
            assert_eq!(verdict(nr, [0; 6]), RET_ALLOW, "syscall {nr}");
        }
    }

    #[test]
    fn clone_is_denied_only_with_namespace_flags() {
        let sigchld = flag(libc::SIGCHLD);
        let thread_flags = flag(
            libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM
                | libc::CLONE_SETTLS
                | libc::CLONE_PARENT_SETTID
                | libc::CLONE_CHILD_CLEARTID,
        );
        let fork_flags = flag(libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) | sigchld;
        let spawn_flags = flag(libc::CLONE_VM | libc::CLONE_VFORK) | sigchld;
        for allowed in [0, sigchld, thread_flags, fork_flags, spawn_flags] {
            assert_eq!(
                verdict(libc::SYS_clone, args1(allowed)),
                RET_ALLOW,
                "{allowed:#x}"
            );
        }
        // The exit-signal byte may hold 0x80 (the CLONE_NEWTIME value): the
        // kernel does not read it as a namespace flag in clone().
        assert_eq!(verdict(libc::SYS_clone, args1(0x80 | sigchld)), RET_ALLOW);
        // The kernel ignores the high 32 bits of clone's flags.
        let newuser_high = flag(libc::CLONE_NEWUSER) << 32;
        assert_eq!(verdict(libc::SYS_clone, args1(newuser_high)), RET_ALLOW);

        for &(name, bit) in CLONE_NAMESPACE_FLAGS {
            let bit = flag(bit);
            for flags in [
                bit,
                bit | sigchld,
                bit | fork_flags,
                bit | (1 << 32),
                bit | thread_flags,
            ] {
                assert_eq!(
                    verdict(libc::SYS_clone, args1(flags)),
                    RET_EPERM,
                    "{name}: {flags:#x}"
                );
            }
        }
        let all = CLONE_NAMESPACE_FLAGS
            .iter()
            .fold(0, |acc, &(_, bit)| acc | flag(bit));
        assert_eq!(verdict(libc::SYS_clone, args1(all)), RET_EPERM);
    }

    #[test]
    fn clone3_returns_enosys_whatever_its_arguments() {
        for args in [[0; 6], [u64::MAX; 6], [0x1000, 88, 0, 0, 0, 0]] {
            assert_eq!(verdict(libc::SYS_clone3, args), RET_ENOSYS);
        }
    }

    #[test]
    fn foreign_architectures_are_killed() {
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;
        const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
        const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
        let foreign: Vec<u32> = [
            AUDIT_ARCH_I386,
            AUDIT_ARCH_ARM,
            AUDIT_ARCH_X86_64,
            AUDIT_ARCH_AARCH64,
            0,
            u32::MAX,
        ]
        .into_iter()
        .filter(|&arch| arch != AUDIT_ARCH_NATIVE)
        .collect();
        assert_eq!(foreign.len(), 5);
        for arch in foreign {
            // i386 getpid (20), write (4), and a number of nothing at all.
            for nr in [20, 4, 0, 0x4000_0000] {
                assert_eq!(
                    run_bpf(program(), arch, nr, [0; 6]),
                    RET_KILL_PROCESS,
                    "arch {arch:#x}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_are_denied() {
        for nr in [
            libc::SYS_getpid,
            libc::SYS_read,
            libc::SYS_unshare,
            libc::SYS_clone,
            512,
            547,
        ] {
            let x32 = u32::try_from(nr).expect("nr") | X32_SYSCALL_BIT;
            assert_eq!(
                run_bpf(program(), AUDIT_ARCH_NATIVE, x32, [0; 6]),
                RET_EPERM,
                "x32 {nr}"
            );
        }
        for nr in [0x4000_0000, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            assert_eq!(
                run_bpf(program(), AUDIT_ARCH_NATIVE, nr, [0; 6]),
                RET_EPERM,
                "{nr:#x}"
            );
        }
    }

    #[test]
    fn only_unix_and_inet_sockets_are_allowed() {
        for nr in [libc::SYS_socket, libc::SYS_socketpair] {
            for &(name, family) in ALLOWED_SOCKET_FAMILIES {
                let family = flag(family);
                assert_eq!(verdict(nr, [family, 1, 0, 0, 0, 0]), RET_ALLOW, "{name}");
                // `int domain`: the kernel ignores the high half, so do we.
                assert_eq!(verdict(nr, args1(family | (7 << 32))), RET_ALLOW, "{name}");
            }
            for family in [
                libc::AF_UNSPEC,
                libc::AF_NETLINK,
                libc::AF_VSOCK,
                libc::AF_PACKET,
                libc::AF_ALG,
                libc::AF_KEY,
                libc::AF_BLUETOOTH,
                libc::AF_TIPC,
                libc::AF_RDS,
            ] {
                assert_eq!(
                    verdict(nr, [flag(family), 1, 0, 0, 0, 0]),
                    RET_EPERM,
                    "family {family}"
                );
            }
            assert_eq!(verdict(nr, args1(u64::MAX)), RET_EPERM);
        }
    }

    #[test]
    fn tiocsti_is_denied_on_the_low_32_bits() {
        for &(name, request) in DENIED_IOCTLS {
            for high in [0, 1 << 32, 0xffff_ffff << 32] {
                assert_eq!(
                    verdict(libc::SYS_ioctl, [0, request | high, 0, 0, 0, 0]),
                    RET_EPERM,
                    "{name}"
                );
            }
        }
        for request in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::FIONREAD,
            libc::FIONBIO,
            libc::TIOCSTI + 1,
        ] {
            assert_eq!(
                verdict(libc::SYS_ioctl, [1, request, 0, 0, 0, 0]),
                RET_ALLOW,
                "{request:#x}"
            );
        }
    }

    #[test]
    fn only_the_default_personality_is_allowed() {
        for persona in [0, 0xffff_ffff, 1 << 32, 0xffff_ffff_ffff_ffff] {
            assert_eq!(
                verdict(libc::SYS_personality, args1(persona)),
                RET_ALLOW,
                "{persona:#x}"
            );
        }
        let per_linux32 = 0x0008;
        let read_implies_exec = 0x040_0000;
        let addr_no_randomize = flag(libc::ADDR_NO_RANDOMIZE);
        for persona in [per_linux32, read_implies_exec, addr_no_randomize, 1] {
            assert_eq!(
                verdict(libc::SYS_personality, args1(persona)),
                RET_EPERM,
                "{persona:#x}"
            );
        }
    }

    #[test]
    fn splicing_refuses_an_unexpected_program() {
        let mut program = program().clone();
        program.remove(0);
        assert!(matches!(
            splice_early_dispatch(program),
            Err(SeccompError::UnexpectedProgram(_))
        ));
    }

    #[test]
    fn apply_rejects_bad_lengths_before_any_syscall() {
        let empty = BpfProgram::new();
        let error = apply(&empty).expect_err("an empty program");
        assert!(matches!(error, SeccompError::ProgramLength { len: 0, .. }));
        assert_eq!(error.raw_os_error(), None);
        let huge = vec![stmt(BPF_RET_K, RET_ALLOW); BPF_MAXINSNS + 1];
        assert!(matches!(
            apply(&huge),
            Err(SeccompError::ProgramLength { .. })
        ));
        let huge = vec![stmt(BPF_RET_K, RET_ALLOW); usize::from(u16::MAX) + 1];
        assert!(matches!(
            apply(&huge),
            Err(SeccompError::ProgramLength { .. })
        ));
    }

    #[test]
    fn errors_display_the_errno() {
        let error = SeccompError::Install {
            errno: libc::EINVAL,
        };
        assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
        assert!(error.to_string().contains("Invalid argument"), "{error}");
    }

    // -----------------------------------------------------------------------
    // Process tests: the harness side
    // -----------------------------------------------------------------------

    /// How the child treats the filter before running the probe.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Build and apply the sandbox filter, then probe.
        Filtered,
        /// Probe without any filter (the control).
        Unfiltered,
        /// The parent applied the filter in `pre_exec`; just probe.
        PreApplied,
    }

    impl Mode {
        fn as_str(self) -> &'static str {
            match self {
                Self::Filtered => "filtered",
                Self::Unfiltered => "unfiltered",
                Self::PreApplied => "preapplied",
            }
        }
    }

    struct ProbeRun {
        status: ExitStatus,
        result: Option<String>,
        stdout: String,
        stderr: String,
    }

    impl std::fmt::Debug for ProbeRun {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "status {:?}, result {:?}\n--- stdout\n{}\n--- stderr\n{}",
                self.status, self.result, self.stdout, self.stderr
            )
        }
    }

    /// The libtest name of [`probe_entry`] (the module path without the crate).
    fn probe_test_name() -> String {
        let path = module_path!();
        let in_crate = path.split_once("::").map_or(path, |(_, rest)| rest);
        format!("{in_crate}::probe_entry")
    }

    fn probe_command(name: &str, mode: Mode) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                &probe_test_name(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PROBE_ENV, name)
            .env(MODE_ENV, mode.as_str())
            .stdin(Stdio::null());
        command
    }

    fn collect(output: std::process::Output) -> ProbeRun {
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let result = stdout
            .lines()
            .find_map(|line| line.split_once(RESULT_MARKER))
            .map(|(_, result)| result.to_owned());
        ProbeRun {
            status: output.status,
            result,
            stdout,
            stderr,
        }
    }

    fn run_probe(name: &str, mode: Mode) -> ProbeRun {
        let output = probe_command(name, mode)
            .output()
            .expect("running the probe");
        collect(output)
    }

    /// Runs probe `name` under the filter and returns what it reported.
    fn filtered(name: &str) -> String {
        let run = run_probe(name, Mode::Filtered);
        assert!(run.status.success(), "probe {name} failed: {run:?}");
        match run.result {
            Some(ref result) => result.clone(),
            None => panic!("probe {name} reported nothing: {run:?}"),
        }
    }

    fn unfiltered(name: &str) -> String {
        let run = run_probe(name, Mode::Unfiltered);
        assert!(run.status.success(), "control probe {name} failed: {run:?}");
        match run.result {
            Some(ref result) => result.clone(),
            None => panic!("control probe {name} reported nothing: {run:?}"),
        }
    }

    /// Asserts that probe `name` reports `want` under the filter, and
    /// something else without it.
    fn assert_filter_changes(name: &str, want: &str) {
        assert_eq!(filtered(name), want, "probe {name} under the filter");
        if harness_is_filtered() {
            println!("the test process is already filtered: control of {name} skipped");
            return;
        }
        let control = unfiltered(name);
        assert_ne!(control, want, "probe {name} without the filter");
    }

    /// A field of this (harness) process's /proc status.
    fn own_status(key: &str) -> String {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|value| value.trim().to_owned())
            .unwrap_or_default()
    }

    /// Whether the harness holds CAP_SYS_ADMIN (controls that need it, such
    /// as an unfiltered mount, are skipped otherwise).
    fn has_cap_sys_admin() -> bool {
        const CAP_SYS_ADMIN: u32 = 21;
        u64::from_str_radix(&own_status("CapEff:"), 16)
            .is_ok_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
    }

    /// Whether the harness already runs under a seccomp filter (e.g. a
    /// container runtime's), which would make the unfiltered controls
    /// meaningless.
    fn harness_is_filtered() -> bool {
        own_status("Seccomp:") != "0"
    }

    #[test]
    fn unshare_and_setns_are_denied() {
        assert_eq!(filtered("unshare_newuser"), EPERM_OUT);
        // unshare(0) is a no-op that always succeeds without the filter.
        assert_filter_changes("unshare_zero", EPERM_OUT);
        assert_eq!(filtered("setns"), EPERM_OUT);
    }

    #[test]
    fn clone_with_namespace_flags_is_denied() {
        assert_eq!(filtered("clone_newpid"), EPERM_OUT);
        assert_eq!(filtered("clone_each_namespace_flag"), "ok");
        if has_cap_sys_admin() && !harness_is_filtered() {
            assert_eq!(unfiltered("clone_newpid"), "ok");
        }
    }

    #[test]
    fn clone3_returns_enosys() {
        // Without the filter, the kernel rejects the zero-sized clone_args
        // with EINVAL.
        assert_filter_changes("clone3", "errno:38");
    }

    #[test]
    fn fork_threads_and_exec_still_work() {
        for probe in [
            "fork",
            "clone_plain",
            "thread",
            "exec_true",
            "inet_loopback",
        ] {
            assert_eq!(filtered(probe), "ok", "probe {probe}");
        }
    }

    #[test]
    fn mount_and_ptrace_are_denied() {
        assert_eq!(filtered("mount"), EPERM_OUT);
        assert_eq!(filtered("ptrace_traceme"), EPERM_OUT);
        if has_cap_sys_admin() && !harness_is_filtered() {
            // ENOENT: the mount point does not exist.
            assert_eq!(unfiltered("mount"), "errno:2");
        }
    }

    #[test]
    fn kernel_attack_surface_is_denied() {
        for probe in ["bpf", "io_uring_setup"] {
            assert_eq!(filtered(probe), EPERM_OUT, "probe {probe}");
        }
        // These behave the same for root and non-root without the filter.
        for probe in ["perf_event_open", "keyctl", "userfaultfd"] {
            assert_filter_changes(probe, EPERM_OUT);
        }
    }

    #[test]
    fn every_listed_syscall_is_refused_in_a_real_process() {
        assert_eq!(
            filtered("denied_table"),
            format!("ok:{}", DENIED_SYSCALLS.len())
        );
    }

    #[test]
    fn sockets_other_than_unix_and_inet_are_denied() {
        assert_filter_changes("socket_vsock", EPERM_OUT);
        assert_filter_changes("socket_netlink", EPERM_OUT);
        assert_filter_changes("socketpair_netlink", EPERM_OUT);
        assert_eq!(filtered("socket_packet"), EPERM_OUT);
        for probe in ["socket_inet", "socket_unix", "socketpair_unix"] {
            assert_eq!(filtered(probe), "ok", "probe {probe}");
        }
        let inet6 = filtered("socket_inet6");
        assert!(inet6 == "ok" || inet6 == "errno:97", "AF_INET6: {inet6}");
    }

    #[test]
    fn tiocsti_is_denied_even_with_high_bits_set() {
        // stdin is /dev/null: without the filter the kernel says ENOTTY.
        assert_filter_changes("ioctl_tiocsti", EPERM_OUT);
        assert_filter_changes("ioctl_tiocsti_high_bits", EPERM_OUT);
        assert_filter_changes("ioctl_tioclinux", EPERM_OUT);
        // Other ioctls still reach the kernel.
        assert_eq!(filtered("ioctl_tcgets"), "errno:25");
        assert_eq!(filtered("ioctl_fionread"), "ok");
    }

    #[test]
    fn personality_cannot_be_changed() {
        assert_filter_changes("personality", "ok");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn i386_syscalls_kill_the_process() {
        let control = run_probe("int80_getpid", Mode::Unfiltered);
        if control.status.signal() == Some(libc::SIGSEGV) {
            println!("the kernel has no IA32 emulation (int 0x80 faults): nothing to filter");
            return;
        }
        let result = control.result.clone().unwrap_or_default();
        assert!(
            result.starts_with("ok:pid"),
            "int 0x80 getpid without the filter: {control:?}"
        );

        let run = run_probe("int80_getpid", Mode::Filtered);
        assert_eq!(
            run.status.signal(),
            Some(libc::SIGSYS),
            "int 0x80 under the filter: {run:?}"
        );
        assert_eq!(
            run.result, None,
            "the process must die before reporting: {run:?}"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_syscalls_are_refused() {
        assert_eq!(filtered("x32_getpid"), EPERM_OUT);
        if harness_is_filtered() {
            return;
        }
        // Without the filter: the pid on x32-enabled kernels, else ENOSYS.
        let control = unfiltered("x32_getpid");
        assert!(
            control.starts_with("ok") || control == "errno:38",
            "{control}"
        );
    }

    #[test]
    fn apply_filters_the_calling_thread_and_sets_no_new_privs() {
        assert_eq!(filtered("status"), "ok:seccomp=2,filters=1,no_new_privs=1");
        assert_eq!(
            unfiltered("status"),
            "ok:seccomp=0,filters=0,no_new_privs=0"
        );
    }

    #[test]
    fn apply_reports_kernel_errors() {
        // The probe installs a program without a final `ret`: EINVAL.
        assert_eq!(unfiltered("apply_invalid"), "errno:22");
    }

    /// The way the agent uses it: the filter is built in the (multi-threaded)
    /// parent and applied in the child between fork and exec; it survives the
    /// exec.
    #[allow(unsafe_code)]
    #[test]
    fn filter_applied_in_pre_exec_survives_execve() {
        for (probe, want) in [
            ("status", "ok:seccomp=2,filters=1,no_new_privs=1"),
            ("unshare_newuser", EPERM_OUT),
            ("socket_netlink", EPERM_OUT),
            ("thread", "ok"),
        ] {
            let filter = program().clone();
            let mut command = probe_command(probe, Mode::PreApplied);
            // SAFETY: the hook runs in the forked child before execve; apply
            // is async-signal-safe (no allocation, no locks) and so is
            // building an io::Error from a raw errno.
            unsafe {
                command.pre_exec(move || {
                    apply(&filter).map_err(|error| {
                        std::io::Error::from_raw_os_error(
                            error.raw_os_error().unwrap_or(libc::EINVAL),
                        )
                    })
                });
            }
            let run = collect(command.output().expect("spawning the probe"));
            assert!(run.status.success(), "{run:?}");
            assert_eq!(run.result.as_deref(), Some(want), "probe {probe}: {run:?}");
        }
    }

    #[test]
    fn python_runs_under_the_filter() {
        let result = filtered("python");
        if let Some(reason) = result.strip_prefix("skip:") {
            println!("python smoke test skipped: {reason}");
            return;
        }
        assert_eq!(
            result,
            "ok:thread,subprocess,fork,multiprocessing,asyncio,inet,netlink-eperm,unshare-eperm"
        );
    }

    // -----------------------------------------------------------------------
    // Process tests: the probe side (runs only in the re-executed child)
    // -----------------------------------------------------------------------

    /// Entry point of the re-executed test binary; does nothing in an
    /// ordinary test run.
    #[test]
    fn probe_entry() {
        let Ok(name) = std::env::var(PROBE_ENV) else {
            return;
        };
        detach_and_disable_core_dumps();
        let mode = std::env::var(MODE_ENV).unwrap_or_default();
        if mode == Mode::Filtered.as_str() {
            let filter = sandbox_filter().expect("building the filter in the probe");
            apply(&filter).expect("applying the filter in the probe");
        }
        let result = run_named_probe(&name, mode == Mode::Unfiltered.as_str());
        // libtest has printed "test ... " without a newline: start a line.
        println!("\n{RESULT_MARKER}{result}");
        use std::io::Write as _;
        std::io::stdout()
            .flush()
            .expect("flushing the probe result");
        std::process::exit(0);
    }

    /// Starts a new session (so no probe can reach the terminal the tests run
    /// in, e.g. through vhangup) and disables core dumps (the i386 probe is
    /// killed by SIGSYS, which dumps core by default).
    #[allow(unsafe_code)]
    fn detach_and_disable_core_dumps() {
        // SAFETY: setsid takes no arguments; failure (already a group
        // leader) is harmless.
        unsafe { libc::setsid() };
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `no_core` is a valid rlimit that outlives the call.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        assert_eq!(rc, 0, "setrlimit(RLIMIT_CORE)");
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// "ok" for a non-negative return value, "errno:N" for -1.
    fn outcome(rc: libc::c_long) -> String {
        if rc == -1 {
            format!("errno:{}", errno())
        } else {
            "ok".to_owned()
        }
    }

    /// Like [`outcome`], closing the descriptor a successful call returned.
    #[allow(unsafe_code)]
    fn fd_outcome(rc: libc::c_long) -> String {
        if let Ok(fd) = libc::c_int::try_from(rc)
            && fd >= 0
        {
            // SAFETY: `fd` was just returned to us and is closed once.
            unsafe { libc::close(fd) };
        }
        outcome(rc)
    }

    /// `syscall(nr, args...)`.
    ///
    /// # Safety
    ///
    /// The arguments must be valid for `nr`: integers, null or valid
    /// pointers, descriptors the caller owns or invalid ones.
    #[allow(unsafe_code)]
    unsafe fn raw_syscall(nr: libc::c_long, args: [libc::c_long; 6]) -> libc::c_long {
        // SAFETY: forwarded to the caller.
        unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
    }

    /// A fork-like raw `clone(flags)` (no `CLONE_VM`, no new stack): the
    /// child exits at once, the parent reaps it.
    #[allow(unsafe_code)]
    fn clone_outcome(flags: u64) -> String {
        let flags = libc::c_long::try_from(flags).expect("clone flags");
        // SAFETY: without CLONE_VM and with a null stack, clone behaves like
        // fork; the child only calls _exit.
        let pid = unsafe { raw_syscall(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]) };
        match pid {
            -1 => format!("errno:{}", errno()),
            0 => {
                // SAFETY: terminating the child without running any Rust code.
                unsafe { libc::_exit(0) }
            }
            pid => wait_outcome(libc::pid_t::try_from(pid).expect("pid")),
        }
    }

    #[allow(unsafe_code)]
    fn wait_outcome(pid: libc::pid_t) -> String {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc != pid {
            return format!("fail:waitpid errno {}", errno());
        }
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            "ok".to_owned()
        } else {
            format!("fail:child status {status:#x}")
        }
    }

    fn long(value: libc::c_int) -> libc::c_long {
        libc::c_long::from(value)
    }

    /// Harmless arguments for each always-denied syscall, in case the filter
    /// failed to refuse it: null pointers, invalid descriptors, no-ops.
    fn harmless_args(name: &str) -> [libc::c_long; 6] {
        match name {
            // Invalid descriptors.
            "setns" | "finit_module" | "fsconfig" | "fsmount" | "fspick" | "open_tree"
            | "open_tree_attr" | "mount_setattr" | "io_uring_enter" | "io_uring_register"
            | "pidfd_getfd" | "quotactl_fd" | "name_to_handle_at" | "open_by_handle_at" => {
                [-1, 0, 0, 0, 0, 0]
            }
            "move_mount" => [-1, 0, -1, 0, 0, 0],
            "kexec_file_load" => [-1, -1, 0, 0, 0, 0],
            // Too many segments and a foreign KEXEC_ARCH: EINVAL.
            "kexec_load" => [0, 1000, 0, 0xdead_0000, 0, 0],
            // PTRACE_PEEKDATA on pid 0: ESRCH (0 would be PTRACE_TRACEME).
            "ptrace" => [2, 0, 0, 0, 0, 0],
            // A bad pointer: EFAULT (NULL would switch accounting off).
            "acct" => [1, 0, 0, 0, 0, 0],
            _ => [0; 6],
        }
    }

    #[allow(unsafe_code)]
    fn run_named_probe(name: &str, unfiltered: bool) -> String {
        let stdin = 0;
        match name {
            "status" => seccomp_status(),
            "unshare_newuser" => {
                // SAFETY: unshare takes only flags.
                outcome(long(unsafe { libc::unshare(libc::CLONE_NEWUSER) }))
            }
            "unshare_zero" => {
                // SAFETY: unshare(0) does nothing.
                outcome(long(unsafe { libc::unshare(0) }))
            }
            "setns" => {
                // SAFETY: an invalid descriptor.
                outcome(long(unsafe { libc::setns(-1, 0) }))
            }
            "clone_newpid" => clone_outcome(flag(libc::CLONE_NEWPID | libc::SIGCHLD)),
            "clone_plain" => clone_outcome(flag(libc::SIGCHLD)),
            "clone_each_namespace_flag" => {
                let unexpected: Vec<String> = CLONE_NAMESPACE_FLAGS
                    .iter()
                    .map(|&(flag_name, bit)| (flag_name, clone_outcome(flag(bit | libc::SIGCHLD))))
                    .filter(|(_, result)| result != EPERM_OUT)
                    .map(|(flag_name, result)| format!("{flag_name}={result}"))
                    .collect();
                if unexpected.is_empty() {
                    "ok".to_owned()
                } else {
                    format!("fail:{}", unexpected.join(","))
                }
            }
            "clone3" => {
                // SAFETY: a null clone_args of size 0 (EINVAL without the filter).
                outcome(unsafe { raw_syscall(libc::SYS_clone3, [0; 6]) })
            }
            "fork" => {
                // SAFETY: the child only calls _exit.
                match unsafe { libc::fork() } {
                    -1 => format!("errno:{}", errno()),
                    // SAFETY: leaving the child without running Rust code.
                    0 => unsafe { libc::_exit(0) },
                    pid => wait_outcome(pid),
                }
            }
            "thread" => match std::thread::spawn(|| 42).join() {
                Ok(42) => "ok".to_owned(),
                other => format!("fail:{other:?}"),
            },
            "exec_true" => match Command::new("/bin/true").status() {
                Ok(status) if status.success() => "ok".to_owned(),
                Ok(status) => format!("fail:{status}"),
                Err(error) => format!("errno:{}", error.raw_os_error().unwrap_or(0)),
            },
            "inet_loopback" => inet_loopback(),
            "mount" => {
                // SAFETY: NUL-terminated strings; the target does not exist.
                outcome(long(unsafe {
                    libc::mount(
                        c"none".as_ptr(),
                        c"/nonexistent-rlm-seccomp-probe".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    )
                }))
            }
            "ptrace_traceme" => {
                // SAFETY: PTRACE_TRACEME takes no pointers.
                outcome(unsafe { raw_syscall(libc::SYS_ptrace, [0; 6]) })
            }
            "bpf" => {
                // SAFETY: BPF_MAP_CREATE with a null attr of size 0.
                fd_outcome(unsafe { raw_syscall(libc::SYS_bpf, [0; 6]) })
            }
            "perf_event_open" => {
                // SAFETY: a null attr: EFAULT without the filter.
                fd_outcome(unsafe { raw_syscall(libc::SYS_perf_event_open, [0, 0, -1, -1, 0, 0]) })
            }
            "io_uring_setup" => {
                // SAFETY: a null params pointer.
                fd_outcome(unsafe { raw_syscall(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]) })
            }
            "keyctl" => {
                // KEYCTL_GET_KEYRING_ID(KEY_SPEC_SESSION_KEYRING, create=0).
                // SAFETY: integer arguments only.
                outcome(unsafe { raw_syscall(libc::SYS_keyctl, [0, -3, 0, 0, 0, 0]) })
            }
            "userfaultfd" => {
                // UFFD_USER_MODE_ONLY (1) is allowed unprivileged (5.11+).
                let flags = long(libc::O_CLOEXEC) | 1;
                // SAFETY: integer flags only.
                fd_outcome(unsafe { raw_syscall(libc::SYS_userfaultfd, [flags, 0, 0, 0, 0, 0]) })
            }
            "denied_table" => {
                if unfiltered {
                    return "fail:refusing to run the denied-syscall table unfiltered".to_owned();
                }
                let unexpected: Vec<String> = DENIED_SYSCALLS
                    .iter()
                    .map(|&(syscall, nr)| {
                        // SAFETY: the filter refuses the call before the kernel
                        // looks at the arguments; had it not, `harmless_args`
                        // makes the call fail or do nothing.
                        (
                            syscall,
                            outcome(unsafe { raw_syscall(nr, harmless_args(syscall)) }),
                        )
                    })
                    .filter(|(_, result)| result != EPERM_OUT)
                    .map(|(syscall, result)| format!("{syscall}={result}"))
                    .collect();
                if unexpected.is_empty() {
                    format!("ok:{}", DENIED_SYSCALLS.len())
                } else {
                    format!("fail:{}", unexpected.join(","))
                }
            }
            "socket_vsock" => socket_outcome(libc::AF_VSOCK, libc::SOCK_STREAM),
            "socket_netlink" => socket_outcome(libc::AF_NETLINK, libc::SOCK_RAW),
            "socket_packet" => socket_outcome(libc::AF_PACKET, libc::SOCK_RAW),
            "socket_inet" => socket_outcome(libc::AF_INET, libc::SOCK_STREAM),
            "socket_inet6" => socket_outcome(libc::AF_INET6, libc::SOCK_STREAM),
            "socket_unix" => socket_outcome(libc::AF_UNIX, libc::SOCK_STREAM),
            "socketpair_unix" => socketpair_outcome(libc::AF_UNIX),
            "socketpair_netlink" => socketpair_outcome(libc::AF_NETLINK),
            "ioctl_tiocsti" => ioctl_outcome(stdin, libc::TIOCSTI),
            "ioctl_tiocsti_high_bits" => ioctl_outcome(stdin, libc::TIOCSTI | (1 << 32)),
            "ioctl_tioclinux" => ioctl_outcome(stdin, libc::TIOCLINUX),
            "ioctl_tcgets" => ioctl_outcome(stdin, libc::TCGETS),
            "ioctl_fionread" => {
                let mut fds = [0; 2];
                // SAFETY: `fds` has room for the two descriptors.
                if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
                    return format!("fail:pipe errno {}", errno());
                }
                let result = ioctl_outcome(fds[0], libc::FIONREAD);
                for fd in fds {
                    // SAFETY: our own descriptors, closed once.
                    unsafe { libc::close(fd) };
                }
                result
            }
            "personality" => personality_outcome(),
            #[cfg(target_arch = "x86_64")]
            "int80_getpid" => int80_getpid(),
            #[cfg(target_arch = "x86_64")]
            "x32_getpid" => {
                let nr = libc::SYS_getpid | libc::c_long::from(X32_SYSCALL_BIT);
                // SAFETY: getpid takes no arguments.
                outcome(unsafe { raw_syscall(nr, [0; 6]) })
            }
            "apply_invalid" => {
                // A load with no `ret` after it: the kernel's checker refuses it.
                let invalid = vec![stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)];
                match apply(&invalid) {
                    Ok(()) => "fail:the kernel accepted an invalid program".to_owned(),
                    Err(error) => match error.raw_os_error() {
                        Some(errno) => format!("errno:{errno}"),
                        None => format!("fail:{error}"),
                    },
                }
            }
            "python" => python_smoke(),
            other => format!("fail:unknown probe {other}"),
        }
    }

    /// The calling thread's seccomp state (the filter is per thread).
    fn seccomp_status() -> String {
        let status =
            std::fs::read_to_string("/proc/thread-self/status").expect("/proc/thread-self/status");
        let field = |key: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(|value| value.trim().to_owned())
                .unwrap_or_default()
        };
        format!(
            "ok:seccomp={},filters={},no_new_privs={}",
            field("Seccomp:"),
            field("Seccomp_filters:"),
            field("NoNewPrivs:")
        )
    }

    fn inet_loopback() -> String {
        use std::io::{Read as _, Write as _};
        let run = || -> std::io::Result<()> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let mut client = std::net::TcpStream::connect(listener.local_addr()?)?;
            let (mut server, _) = listener.accept()?;
            client.write_all(b"ping")?;
            let mut buf = [0; 4];
            server.read_exact(&mut buf)?;
            if &buf == b"ping" {
                Ok(())
            } else {
                Err(std::io::Error::other("garbled"))
            }
        };
        match run() {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("fail:{error}"),
        }
    }

    #[allow(unsafe_code)]
    fn socket_outcome(family: libc::c_int, kind: libc::c_int) -> String {
        // SAFETY: integer arguments only.
        fd_outcome(long(unsafe {
            libc::socket(family, kind | libc::SOCK_CLOEXEC, 0)
        }))
    }

    #[allow(unsafe_code)]
    fn socketpair_outcome(family: libc::c_int) -> String {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe { libc::socketpair(family, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
        let result = outcome(long(rc));
        for fd in fds.into_iter().filter(|&fd| fd >= 0) {
            // SAFETY: our own descriptors, closed once.
            unsafe { libc::close(fd) };
        }
        result
    }

    /// A raw ioctl, so that all 64 bits of `request` reach the kernel.
    #[allow(unsafe_code)]
    fn ioctl_outcome(fd: libc::c_int, request: u64) -> String {
        let mut scratch = [0_u8; 256];
        let request = libc::c_long::from_ne_bytes(request.to_ne_bytes());
        let buffer = scratch.as_mut_ptr() as libc::c_long;
        // SAFETY: every request used here reads or writes at most
        // `scratch.len()` bytes through the pointer.
        outcome(unsafe { raw_syscall(libc::SYS_ioctl, [long(fd), request, buffer, 0, 0, 0]) })
    }

    #[allow(unsafe_code)]
    fn personality_outcome() -> String {
        let mut results = Vec::new();
        for persona in [
            0xffff_ffff,
            0,
            libc::c_long::from(libc::ADDR_NO_RANDOMIZE),
            0x0008,
            1 << 32,
        ] {
            // SAFETY: personality takes an integer.
            let rc = unsafe { raw_syscall(libc::SYS_personality, [persona, 0, 0, 0, 0, 0]) };
            results.push(outcome(rc));
        }
        // Restore the default in case a change went through (control run).
        // SAFETY: as above.
        unsafe { raw_syscall(libc::SYS_personality, [0; 6]) };
        if results == ["ok", "ok", EPERM_OUT, EPERM_OUT, "ok"] {
            "ok".to_owned()
        } else {
            format!("fail:{}", results.join(","))
        }
    }

    /// getpid through the i386 ABI (`int 0x80`, i386 number 20).
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn int80_getpid() -> String {
        let mut rax: u64 = 20;
        // SAFETY: i386 getpid takes no arguments and touches no memory. The
        // kernel preserves the other registers on current kernels; r8-r11
        // are declared clobbered because old kernels zeroed them. The user
        // stack is not used (the trap switches to the kernel stack).
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inout("rax") rax,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                options(nostack),
            );
        }
        let returned = i64::from_ne_bytes(rax.to_ne_bytes());
        let pid = i64::from(std::process::id());
        if returned == pid {
            format!("ok:pid={pid}")
        } else {
            format!("fail:int 0x80 returned {returned}, pid {pid}")
        }
    }

    fn python_smoke() -> String {
        const SCRIPT: &str = r#"
import asyncio, multiprocessing, os, socket, subprocess, threading
out = []
t = threading.Thread(target=lambda: None); t.start(); t.join(); out.append("thread")
subprocess.run(["/bin/true"], check=True); out.append("subprocess")
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0); out.append("fork")
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
out.append("multiprocessing")
asyncio.run(asyncio.sleep(0)); out.append("asyncio")
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind(("127.0.0.1", 0)); s.close(); out.append("inet")
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); out.append("netlink-allowed")
except PermissionError:
    out.append("netlink-eperm")
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1:
    out.append("unshare-eperm")
else:
    out.append("unshare-allowed")
print(",".join(out))
"#;
        match Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::null())
            .output()
        {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                "skip:python3 is not on PATH".to_owned()
            }
            Err(error) => format!("fail:spawning python3: {error}"),
            Ok(output) if output.status.success() => {
                format!("ok:{}", String::from_utf8_lossy(&output.stdout).trim())
            }
            Ok(output) => format!(
                "fail:python3 {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).replace('\n', " | ")
            ),
        }
    }
}
