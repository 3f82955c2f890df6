#!/usr/bin/env bash
# Builds and starts rlm-sandbox-agent and rlm-orchestrator on this machine, in the
# foreground; Ctrl-C stops both. State lives under ./.rlm unless RLM_* says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --release
state="${RLM_STATE_DIR:-$PWD/.rlm}"
mkdir -p "$state"

export RLM_AGENT_LISTEN="${RLM_AGENT_LISTEN:-unix://$state/run/sandbox.sock}"
export RLM_AGENT_DATA_DIR="${RLM_AGENT_DATA_DIR:-$state/agent}"
export RLM_SANDBOX_ENDPOINT="${RLM_SANDBOX_ENDPOINT:-$RLM_AGENT_LISTEN}"
export RLM_LOG_DIR="${RLM_LOG_DIR:-$state/trajectories}"

# Own sessions, so a terminal's Ctrl-C reaches only this script, which then
# sends each service exactly one SIGTERM (a second signal would skip the drain).
setsid ./target/release/rlm-sandbox-agent &
agent=$!
setsid ./target/release/rlm-orchestrator &
orchestrator=$!

stop() {
  trap - INT TERM EXIT
  kill -TERM "$orchestrator" "$agent" 2>/dev/null || true
  wait "$orchestrator" "$agent" 2>/dev/null || true
}
trap stop INT TERM EXIT

echo "rlm: orchestrator gRPC ${RLM_LISTEN:-127.0.0.1:50051}, metrics and health on http://${RLM_HTTP_LISTEN:-127.0.0.1:9464}, agent ${RLM_AGENT_LISTEN}" >&2
# Either process ending ends the session.
wait -n "$agent" "$orchestrator"
