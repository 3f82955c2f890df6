# syntax=docker/dockerfile:1.7
#
# rlm-sandbox-agent with the Python runtime its sessions run (/usr/bin/python3,
# RLM_AGENT_PYTHON), plus the `rlm` CLI for the health check.
# Build from the workspace root:
#
#   docker buildx build -f deploy/docker/sandbox-agent.Dockerfile -t rlm-sandbox-agent:0.1.0 .
#
# Privileges. The agent isolates every session with namespaces, pivot_root,
# a per-session uid, cgroups and seccomp, so the container runs as uid 0 with
# exactly these capabilities and nothing else (cap_drop ALL, then cap_add):
#   SYS_ADMIN  clone() with new mount/pid/net/ipc/uts namespaces, unshare of the
#              cgroup namespace, mount (tmpfs, bind, proc), pivot_root, umount,
#              sethostname, and remounting the container's /sys/fs/cgroup rw
#   SETUID, SETGID  setresuid/setresgid/setgroups to the session's dedicated uid
#              (RLM_AGENT_UID_RANGE)
#   SETPCAP    clearing the session's capability bounding set (PR_CAPBSET_DROP)
#   NET_ADMIN  bringing up loopback inside the session's new network namespace
#   KILL       signalling session processes, which run under other uids
#              (interrupting a cell, killing a session: without it
#              DestroySession never returns)
# tests/tests/deploy_env.rs runs the agent with exactly this set (and the
# seccomp profile below) and shows that each one is needed.
# Also required, and why `privileged: true` is not:
#   - seccomp: deploy/docker/sandbox-agent-seccomp.json (the runtime default has
#     no pivot_root);
#   - AppArmor: unconfined, or a profile that allows mount and pivot_root
#     (docker-default denies mount);
#   - a private cgroup namespace (Docker's default on cgroup v2) so the writable
#     /sys/fs/cgroup is the container's own subtree; the entrypoint remounts it
#     read-write and, on cgroup v2, moves itself into a leaf cgroup;
#   - no user namespace remapping for this container (sessions get real host
#     uids from RLM_AGENT_UID_RANGE).
# See docs/deployment.md for what these privileges mean for the host.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p rlm-sandbox-agent -p rlm-cli \
    && install -D -m 0755 target/release/rlm-sandbox-agent /out/bin/rlm-sandbox-agent \
    && install -D -m 0755 target/release/rlm /out/bin/rlm

FROM debian:bookworm-slim
# The sessions' Python: Debian's python3 (stdlib only; the REPL driver needs
# nothing else). Sessions bind /usr read-only, so packages installed here
# (e.g. `apt-get install python3-numpy` in an image built FROM this one) are
# importable by model code. `mount` (util-linux) is part of the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bin/ /usr/local/bin/
COPY --chmod=0755 deploy/docker/agent-entrypoint.sh /usr/local/bin/rlm-agent-entrypoint

# RLM_SANDBOX_ENDPOINT is read by `rlm doctor` (the health check), not by the agent.
ENV RLM_AGENT_LISTEN=unix:///run/rlm/sandbox.sock \
    RLM_AGENT_DATA_DIR=/var/lib/rlm-agent \
    RLM_AGENT_PYTHON=/usr/bin/python3 \
    RLM_AGENT_ISOLATION=full \
    RLM_LOG_FORMAT=json \
    RLM_SANDBOX_ENDPOINT=unix:///run/rlm/sandbox.sock

# No USER: the agent must be uid 0 (it checks at start-up) with the capability
# set above; model code never runs as root (dedicated uid per session, no
# capabilities, no_new_privs, seccomp).
# The socket directory (shared with the orchestrator) and the agent's state
# (stored contexts, the compiled REPL driver, session mount points). With
# these two volumes the root filesystem can be read-only.
VOLUME ["/run/rlm", "/var/lib/rlm-agent"]

# The agent's gRPC health and GetInfo (isolation in force, cgroups, warm pool).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["rlm", "doctor", "--skip", "orchestrator", "--skip", "host"]

ENTRYPOINT ["rlm-agent-entrypoint"]
