# syntax=docker/dockerfile:1.7
#
# rlm-orchestrator, plus the `rlm` CLI for the health check.
# Build from the workspace root (the context must hold Cargo.toml and every crate):
#
#   docker buildx build -f deploy/docker/orchestrator.Dockerfile -t rlm-orchestrator:0.1.0 .
#
# The runtime image is distroless (glibc, libgcc, CA certificates for the model
# APIs; no shell, no package manager) and runs as the unprivileged uid/gid
# 65532. Everything but RLM_LOG_DIR can be read-only: run it with
# `read_only: true` / `readOnlyRootFilesystem: true` and a volume at
# /var/log/rlm. It reaches the sandbox agent over the agent's Unix socket,
# mounted at /run/rlm (see deploy/compose.yaml and deploy/k8s/).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are build caches, so the binaries are
# copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p rlm-orchestrator -p rlm-cli \
    && install -D -m 0755 target/release/rlm-orchestrator /out/bin/rlm-orchestrator \
    && install -D -m 0755 target/release/rlm /out/bin/rlm \
    && install -d -m 0750 /out/log

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# Owned by the runtime user, so a fresh named volume mounted here starts writable.
COPY --from=build --chown=65532:65532 /out/log /var/log/rlm

# Container defaults: listen on every interface (published ports and Services
# reach the container from outside), the agent's socket on the shared volume,
# trajectories on the log volume, one JSON log object per line.
ENV RLM_LISTEN=0.0.0.0:50051 \
    RLM_HTTP_LISTEN=0.0.0.0:9464 \
    RLM_SANDBOX_ENDPOINT=unix:///run/rlm/sandbox.sock \
    RLM_LOG_DIR=/var/log/rlm \
    RLM_LOG_FORMAT=json

USER 65532:65532
# gRPC (rlm.v1.RLMService, grpc.health.v1, reflection) and HTTP (/metrics, /health).
EXPOSE 50051 9464
VOLUME ["/var/log/rlm"]

# `rlm doctor` checks gRPC health (overall and rlm.v1.RLMService), /health
# (sandbox, storage, model endpoint) and the agent through the shared socket;
# it exits 1 when a check fails. Host checks only warn and are skipped.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["rlm", "doctor", "--skip", "host"]

ENTRYPOINT ["rlm-orchestrator"]
