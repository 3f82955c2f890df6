#!/usr/bin/env python3
"""Runs a command under a Docker/OCI seccomp profile, the way a container runtime would.

    confine.py PROFILE.json -- COMMAND [ARG...]

Loads the profile's defaultAction, architectures and syscalls[].names/action/
errnoRet (the subset deploy/docker/sandbox-agent-seccomp.json uses; rules with
`args`, `includes` or `excludes` are refused rather than half-applied) into a
libseccomp filter, sets no_new_privs (as `no-new-privileges:true` does), loads
the filter and execs COMMAND. Syscall names unknown on this architecture are
skipped, as runc does. tests/tests/deploy_env.rs uses it, together with
`setpriv` for the capability set, to run the sandbox agent with exactly the
container privileges the manifests grant.

Talks to libseccomp.so.2 through ctypes: no Python package needed.
"""

import ctypes
import ctypes.util
import json
import os
import sys

ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_LOG": 0x7FFC0000,
}
SCMP_ACT_ERRNO = 0x00050000
ARCHES = {
    # AUDIT_ARCH_* values (libseccomp's SCMP_ARCH_*).
    "SCMP_ARCH_X86_64": 0xC000003E,
    "SCMP_ARCH_AARCH64": 0xC00000B7,
}
EEXIST = 17


def action(name, errno_ret):
    if name == "SCMP_ACT_ERRNO":
        return SCMP_ACT_ERRNO | (errno_ret & 0xFFFF)
    if name not in ACTIONS:
        raise SystemExit(f"confine.py: unsupported action {name}")
    return ACTIONS[name]


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit("usage: confine.py PROFILE.json -- COMMAND [ARG...]")
    profile = json.load(open(sys.argv[1]))
    command = sys.argv[3:]

    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(path, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    default = action(profile["defaultAction"], profile.get("defaultErrnoRet", 1))
    context = lib.seccomp_init(default)
    if not context:
        raise SystemExit("confine.py: seccomp_init failed")
    native = lib.seccomp_arch_native()
    arches = [ARCHES[a] for a in profile.get("architectures", []) if a in ARCHES]
    if arches and native not in arches:
        raise SystemExit("confine.py: the profile does not cover this machine's architecture")

    applied = 0
    for rule in profile.get("syscalls", []):
        for key in ("args", "includes", "excludes"):
            if rule.get(key):
                raise SystemExit(f"confine.py: rules with `{key}` are not supported")
        rule_action = action(rule["action"], rule.get("errnoRet", 1))
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # not a syscall of this architecture (runc skips these too)
            result = lib.seccomp_rule_add(context, rule_action, number, 0)
            if result < 0 and result != -EEXIST:
                raise SystemExit(f"confine.py: adding a rule for {name}: {os.strerror(-result)}")
            applied += 1
    # libseccomp sets no_new_privs itself when loading (SCMP_FLTATR_CTL_NNP defaults to on).
    result = lib.seccomp_load(context)
    if result < 0:
        raise SystemExit(f"confine.py: loading the filter: {os.strerror(-result)}")
    print(f"confine.py: {applied} syscall rules from {sys.argv[1]} in force", file=sys.stderr)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
