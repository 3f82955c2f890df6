#!/bin/sh
# Entrypoint of the rlm-sandbox-agent image: makes the container's cgroup
# hierarchy usable for per-session cgroups, then execs the agent (which becomes
# PID 1 and handles SIGTERM itself).
#
# Two things stand between a non-privileged container and the agent's cgroups:
#  1. Docker and containerd mount /sys/fs/cgroup read-only unless the container
#     is privileged. With CAP_SYS_ADMIN (which isolation needs anyway) and an
#     AppArmor profile that allows mount, the mount can be made writable again:
#     it only exposes the container's own cgroup subtree (cgroup namespace).
#  2. cgroup v2 lets a cgroup hand controllers to children only while it holds
#     no processes ("no internal processes"). Inside a private cgroup namespace
#     the container's cgroup is the root the agent sees, and the container's
#     processes live in it. So they move into a leaf, /sys/fs/cgroup/agent,
#     first; the agent then enables memory, pids and cpu at the root and creates
#     its session cgroups under $RLM_AGENT_CGROUP. (Probe and healthcheck
#     processes that runc later starts join the leaf of PID 1.)
#
# Everything here is skipped when it is not needed (cgroup v1, or the mount is
# already writable), and the leaf move happens only as PID 1 at the root of a
# cgroup namespace, so running this outside a container changes nothing.
# (Do not run the image with an init such as `docker run --init`: PID 1 must be
# this script, then the agent.)
set -eu

cgroup_fs=/sys/fs/cgroup

log() { echo "rlm-agent-entrypoint: $*" >&2; }

# Mount points at or under $cgroup_fs of type cgroup/cgroup2 that are mounted read-only.
read_only_cgroup_mounts() {
  awk -v root="$cgroup_fs" '
    {
      sep = 0
      for (i = 7; i <= NF; i++) if ($i == "-") { sep = i; break }
      if (!sep) next
      fstype = $(sep + 1)
      if (fstype != "cgroup" && fstype != "cgroup2") next
      if ($5 != root && index($5, root "/") != 1) next
      split($6, opts, ",")
      if (opts[1] == "ro") print $5
    }' /proc/self/mountinfo
}

for mount_point in $(read_only_cgroup_mounts); do
  if mount -o remount,bind,rw "$mount_point"; then
    log "remounted $mount_point read-write (the container's own cgroup subtree)"
  else
    log "cannot remount $mount_point read-write: the container needs CAP_SYS_ADMIN and an AppArmor profile that allows mount (see docs/deployment.md)"
    exit 1
  fi
done

# cgroup v2 at the root of a cgroup namespace, as PID 1: move into a leaf.
if [ -f "$cgroup_fs/cgroup.controllers" ] && [ "$$" = 1 ] &&
  [ "$(cat /proc/self/cgroup)" = "0::/" ]; then
  leaf="$cgroup_fs/agent"
  mkdir -p "$leaf"
  moved=0
  while read -r pid; do
    [ -n "$pid" ] || continue
    # A process may exit between the read and the write.
    if echo "$pid" >"$leaf/cgroup.procs" 2>/dev/null; then
      moved=$((moved + 1))
    fi
  done <"$cgroup_fs/cgroup.procs"
  log "moved $moved process(es) into $leaf so the root can delegate controllers"
fi

exec rlm-sandbox-agent "$@"
