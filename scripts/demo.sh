#!/usr/bin/env bash
# The offline demo: a real recursive completion over a generated multi-megabyte
# service log (find a needle, then fan the log out to child RLMs and add up
# their answers), driven by the scripted model: no model server, no network,
# no API key. Everything else is real: both services, isolated sandbox
# sessions, UploadContext, StreamComplete, the trajectory.
#
#   sudo ./scripts/demo.sh                        # full isolation (needs root)
#   RLM_AGENT_ISOLATION=none ./scripts/demo.sh    # without root: NO isolation, development only
#
# Settings: DEMO_MIB (context size in MiB, default 8); RLM_LISTEN and
# RLM_HTTP_LISTEN (default 127.0.0.1:50051 and 127.0.0.1:9464); RLM_STATE_DIR
# (default ./.rlm, as `rlm up`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -t 1 ]; then bold=$'\033[1m'; red=$'\033[1;31m'; green=$'\033[32m'; off=$'\033[0m'; else bold= red= green= off=; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }

# --- Isolation needs root -----------------------------------------------------
isolation="${RLM_AGENT_ISOLATION:-full}"
case "$isolation" in
  full)
    if [ "$(id -u)" -ne 0 ]; then
      cat >&2 <<EOF
demo: the sandbox agent isolates the model's code (namespaces, cgroups, seccomp, a uid per
session) and must run as root for that:

    sudo ./scripts/demo.sh

Without root you can run the demo with NO isolation: the model-written code then runs as
you, unconfined, with access to your files (it is scripted here, but that is the point):

    RLM_AGENT_ISOLATION=none ./scripts/demo.sh
EOF
      exit 1
    fi ;;
  none)
    cat >&2 <<EOF
${red}################################################################################
#  WARNING: RLM_AGENT_ISOLATION=none                                           #
#  Sandbox sessions are plain child processes: model-written code runs as      #
#  $(printf '%-76s' "$(id -un) (uid $(id -u)), unconfined, with access to this machine.")#
#  Development only. Never use this with a real model on data you care about.  #
################################################################################${off}
EOF
    ;;
  *) echo "demo: RLM_AGENT_ISOLATION must be full or none, not '$isolation'" >&2; exit 2 ;;
esac

# --- Build -------------------------------------------------------------------------
say "Building (cargo build --release --workspace --bins)"
cargo build --release --workspace --bins
rlm="$root/target/release/rlm"

state="${RLM_STATE_DIR:-$root/.rlm}"
demo="$state/demo"
mkdir -p "$demo"
export RLM_STATE_DIR="$state"
export RLM_LISTEN="${RLM_LISTEN:-127.0.0.1:50051}"
export RLM_HTTP_LISTEN="${RLM_HTTP_LISTEN:-127.0.0.1:9464}"
export RLM_ADDR="http://$RLM_LISTEN"
export RLM_HTTP_ADDR="http://$RLM_HTTP_LISTEN"
export RLM_SANDBOX_ENDPOINT="${RLM_SANDBOX_ENDPOINT:-unix://$state/run/sandbox.sock}"
turns="$root/examples/demo/turns.txt"
sub_turns="$root/examples/demo/sub_turns.txt"
models=(--model "scripted:$turns" --sub-model "scripted:$sub_turns")

# --- Start both services with `rlm up` ----------------------------------------------
say "Starting the sandbox agent and the orchestrator (rlm up, isolation $isolation; scripted model, offline demo)"
# Own session: a terminal's Ctrl-C reaches only this script, whose exit trap
# then sends `rlm up` exactly one SIGTERM (a second signal would skip the drain).
setsid "$rlm" up --isolation "$isolation" "${models[@]}" >"$demo/up.log" 2>&1 &
up_pid=$!
stop_services() {
  if kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
}
trap stop_services EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 600); do
  grep -q '^rlm up: ready' "$demo/up.log" && break
  if ! kill -0 "$up_pid" 2>/dev/null; then
    echo "demo: rlm up failed; its output:" >&2
    tail -n 40 "$demo/up.log" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q '^rlm up: ready' "$demo/up.log" || { echo "demo: services not ready after 60s; see $demo/up.log" >&2; exit 1; }
grep '^rlm up:' "$demo/up.log"
echo "(service logs: $demo/up.log)"

say "rlm doctor"
"$rlm" doctor || echo "demo: some checks failed (see above); carrying on"

# --- The context ---------------------------------------------------------------------
say "Generating the context: a ${DEMO_MIB:-8} MiB service log with one secret launch code in it"
truth=$(python3 "$root/examples/demo/haystack.py" "$demo/haystack.txt" --mib "${DEMO_MIB:-8}")
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$truth" "$1"; }
needle=$(field needle)
errors=$(field errors)
printf '%s: %s bytes, %s lines (ground truth, known only to this script: code %s, %s ERROR lines)\n' \
  "$demo/haystack.txt" "$(field bytes)" "$(field lines)" "$needle" "$errors"

# --- The completion ------------------------------------------------------------------
prompt="Find the secret launch code hidden in this service log, and count the log lines whose level is ERROR."
say "rlm run: scripted model (offline demo), root turns $turns, sub-model turns $sub_turns"
printf '$ rlm run "%s" \\\n    --context %s \\\n    --model scripted:%s --sub-model scripted:%s --json\n\n' \
  "$prompt" "$demo/haystack.txt" "$turns" "$sub_turns"
set +e
"$rlm" run "$prompt" --context "$demo/haystack.txt" "${models[@]}" --json >"$demo/result.json"
status=$?
set -e
if [ "$status" -ne 0 ] || [ ! -s "$demo/result.json" ]; then
  echo "demo: rlm run exited with status $status" >&2
  cat "$demo/result.json" >&2 2>/dev/null || true
  exit 1
fi

say "Result (scripted model, offline demo)"
python3 - "$demo/result.json" "$needle" "$errors" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
needle, errors = sys.argv[2], sys.argv[3]
u = r["usage"]
cost = f"${u['cost_usd']:.4f}" if u["cost_known"] else "? (the scripted model has no price)"
print(f"answer:      {r['answer']}")
print(f"ended with:  {r['termination_reason']}")
print(f"iterations:  {r['iterations']} of the root, {r['total_iterations']} in the whole tree")
print(f"sub-calls:   {r['subcalls']} ({r['child_rlms']} child RLMs), depth reached {r['depth_reached']}")
print(f"tokens:      {u['total_tokens']:,} ({u['input_tokens']:,} in, {u['output_tokens']:,} out) in {u['calls']} model calls, cost {cost}")
print(f"time:        {r['duration']:.2f}s")
print(f"trajectory:  {r['trajectory_id']}")
ok = needle in r["answer"] and f"ERROR lines: {errors} " in r["answer"]
print(("\u2713 the answer matches the generator's ground truth" if ok
       else f"\u2717 MISMATCH: expected code {needle} and {errors} ERROR lines"))
sys.exit(0 if ok else 1)
EOF
trajectory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["trajectory_id"])' "$demo/result.json")

say "rlm logs $trajectory (the trajectory as a tree)"
"$rlm" logs "$trajectory"

say "Done (scripted model, offline demo)"
up_command="rlm up"
[ "$state" = "$root/.rlm" ] || up_command="rlm up --state-dir $state"
cat <<EOF
The trajectory is stored in $state/trajectories/$trajectory.jsonl.
See it again later: start the services with \`$up_command\` (in $root), then
    rlm logs                        # every completion
    rlm logs ${trajectory:0:8}               # this one as a tree (an id prefix is enough; --full: everything)
    rlm logs ${trajectory:0:8} --json        # as JSON
(rlm is $rlm.) Stopping the services now.
EOF
