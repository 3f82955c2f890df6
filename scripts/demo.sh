#!/usr/bin/env bash
# The demo: a real recursive completion over a generated multi-megabyte service
# log (find a needle, then fan the log out to child RLMs and add up their
# answers). By default it is driven by the scripted model: no model server, no
# network, no API key. Everything else is real: both services, isolated sandbox
# sessions, UploadContext, StreamComplete, the trajectory (and its viewer).
#
#   sudo ./scripts/demo.sh                        # full isolation (needs root)
#   RLM_AGENT_ISOLATION=none ./scripts/demo.sh    # without root: NO isolation, development only
#
# With a real model: set OPENAI_API_KEY (the demo then uses openai/gpt-4o, sub-model
# openai/gpt-4o-mini), or RLM_MODEL (+ RLM_LLM_BASE_URL for any OpenAI-compatible
# server, + its key if it needs one; RLM_SUB_MODEL defaults to RLM_MODEL):
#
#   OPENAI_API_KEY=sk-... sudo -E ./scripts/demo.sh
#   RLM_MODEL=openai/llama3.1 RLM_LLM_BASE_URL=http://127.0.0.1:8000/v1 sudo -E ./scripts/demo.sh
#
# Settings: DEMO_MODEL=scripted (offline even when a key is set); DEMO_MIB (context
# size in MiB, default 8); DEMO_PROFILE=release|debug (which build to use, default
# release); DEMO_BUILD=0 (no `cargo build`: use the binaries already built, e.g. the
# debug ones `make test` builds); DEMO_KEEP=1 (leave the services running at the
# end, to browse the trajectory viewer; Ctrl-C stops them); RLM_LISTEN and
# RLM_HTTP_LISTEN (default 127.0.0.1:50051 and 127.0.0.1:9464); RLM_STATE_DIR
# (default ./.rlm, as `rlm up`); every other RLM_* variable reaches the services
# (e.g. RLM_AGENT_CGROUP, the agent's cgroup, default rlm-sandbox).
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

# --- The model ---------------------------------------------------------------------
# Scripted (offline) unless a real model is configured: RLM_MODEL (not scripted:),
# or OPENAI_API_KEY. DEMO_MODEL=scripted forces the offline demo.
turns="$root/examples/demo/turns.txt"
sub_turns="$root/examples/demo/sub_turns.txt"
demo_model="${DEMO_MODEL:-auto}"
case "$demo_model" in auto|scripted|real) ;; *) echo "demo: DEMO_MODEL must be auto, scripted or real, not '$demo_model'" >&2; exit 2 ;; esac
if [ "$demo_model" != scripted ] && [ -n "${RLM_MODEL:-}" ] && [[ "$RLM_MODEL" != scripted:* ]]; then
  mode=real
  root_model="$RLM_MODEL"
  sub_model="${RLM_SUB_MODEL:-$RLM_MODEL}"
elif [ "$demo_model" != scripted ] && [ -n "${OPENAI_API_KEY:-}" ] && [ -z "${RLM_MODEL:-}" ]; then
  mode=real
  root_model="openai/gpt-4o"
  sub_model="${RLM_SUB_MODEL:-openai/gpt-4o-mini}"
elif [ "$demo_model" = real ]; then
  echo "demo: DEMO_MODEL=real needs OPENAI_API_KEY, or RLM_MODEL (and RLM_LLM_BASE_URL for a local server)" >&2
  exit 2
else
  mode=scripted
  root_model="scripted:$turns"
  sub_model="scripted:$sub_turns"
  # A scripted RLM_MODEL/RLM_SUB_MODEL of your own is honoured.
  if [ "$demo_model" != scripted ] && [[ "${RLM_MODEL:-}" == scripted:* ]]; then root_model="$RLM_MODEL"; fi
  if [ "$demo_model" != scripted ] && [[ "${RLM_SUB_MODEL:-}" == scripted:* ]]; then sub_model="$RLM_SUB_MODEL"; fi
fi
if [ "$mode" = real ]; then
  model_label="real model $root_model (sub-model $sub_model)"
  case "$root_model $sub_model" in
    *openai/*) model_label="$model_label at ${RLM_LLM_BASE_URL:-https://api.openai.com/v1}" ;;
  esac
else
  model_label="scripted model, offline demo"
fi
models=(--model "$root_model" --sub-model "$sub_model")

# --- Build -------------------------------------------------------------------------
profile="${DEMO_PROFILE:-release}"
case "$profile" in
  release) build=(cargo build --release --workspace --bins) ;;
  debug) build=(cargo build --workspace --bins) ;;
  *) echo "demo: DEMO_PROFILE must be release or debug, not '$profile'" >&2; exit 2 ;;
esac
target_dir="${CARGO_TARGET_DIR:-$root/target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
bin_dir="$target_dir/$profile"
if [ "${DEMO_BUILD:-1}" = 0 ]; then
  say "Using the $profile binaries in $bin_dir (DEMO_BUILD=0: no build)"
  for bin in rlm rlm-orchestrator rlm-sandbox-agent; do
    [ -x "$bin_dir/$bin" ] || { echo "demo: $bin_dir/$bin is missing: run \`${build[*]}\` first (or drop DEMO_BUILD=0)" >&2; exit 1; }
  done
else
  say "Building (${build[*]})"
  "${build[@]}"
fi
rlm="$bin_dir/rlm"

state="${RLM_STATE_DIR:-$root/.rlm}"
demo="$state/demo"
mkdir -p "$demo"
export RLM_STATE_DIR="$state"
export RLM_LISTEN="${RLM_LISTEN:-127.0.0.1:50051}"
export RLM_HTTP_LISTEN="${RLM_HTTP_LISTEN:-127.0.0.1:9464}"
export RLM_ADDR="http://$RLM_LISTEN"
export RLM_HTTP_ADDR="http://$RLM_HTTP_LISTEN"
export RLM_SANDBOX_ENDPOINT="${RLM_SANDBOX_ENDPOINT:-unix://$state/run/sandbox.sock}"
# --- Start both services with `rlm up` ----------------------------------------------
say "Starting the sandbox agent and the orchestrator (rlm up, isolation $isolation; $model_label)"
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
prompt="Find the secret launch code hidden in this service log, and count the log lines whose level is ERROR. Answer in the form: secret launch code: CODE; ERROR lines: N"
if [ "$mode" = real ]; then
  say "rlm run: $model_label"
  cat <<EOF
(a real model: the prompts, and whatever parts of the generated log the model's code
prints or sends to sub-calls, go to that endpoint; it may take a few minutes and cost a little)
EOF
else
  say "rlm run: scripted model (offline demo), root turns ${root_model#scripted:}, sub-model turns ${sub_model#scripted:}"
fi
printf '$ rlm run "%s" \\\n    --context %s \\\n    --model %s --sub-model %s --json\n\n' \
  "$prompt" "$demo/haystack.txt" "$root_model" "$sub_model"
set +e
"$rlm" run "$prompt" --context "$demo/haystack.txt" "${models[@]}" --json >"$demo/result.json"
status=$?
set -e
if [ "$status" -ne 0 ] || [ ! -s "$demo/result.json" ]; then
  echo "demo: rlm run exited with status $status ($model_label)" >&2
  cat "$demo/result.json" >&2 2>/dev/null || true
  echo "demo: the trajectories are listed by \`$rlm logs\` and at $RLM_HTTP_ADDR/trajectories while the services run" >&2
  exit 1
fi

say "Result ($model_label)"
set +e
python3 - "$demo/result.json" "$needle" "$errors" "$mode" <<'EOF'
import json, re, sys
r = json.load(open(sys.argv[1]))
needle, errors, mode = sys.argv[2], sys.argv[3], sys.argv[4]
u = r["usage"]
if u["cost_known"]:
    cost = f"${u['cost_usd']:.4f}"
elif mode == "scripted":
    cost = "? (the scripted model has no price)"
else:
    cost = f">= ${u['cost_usd']:.4f} (some prices unknown)"
print(f"answer:      {r['answer']}")
print(f"ended with:  {r['termination_reason']}")
print(f"iterations:  {r['iterations']} of the root, {r['total_iterations']} in the whole tree")
print(f"sub-calls:   {r['subcalls']} ({r['child_rlms']} child RLMs), depth reached {r['depth_reached']}")
print(f"tokens:      {u['total_tokens']:,} ({u['input_tokens']:,} in, {u['output_tokens']:,} out) in {u['calls']} model calls, cost {cost}")
print(f"time:        {r['duration']:.2f}s")
print(f"trajectory:  {r['trajectory_id']}")
if mode == "scripted":
    ok = needle in r["answer"] and f"ERROR lines: {errors} " in r["answer"]
else:
    # A real model words its answer its own way: the code and the count must be in it.
    ok = needle in r["answer"] and re.search(rf"(?<!\d){errors}(?!\d)", r["answer"].replace(",", "")) is not None
print(("\u2713 the answer matches the generator's ground truth" if ok
       else f"\u2717 MISMATCH: expected code {needle} and {errors} ERROR lines"
            + ("" if mode == "scripted" else " (a real model can get this wrong: see its trajectory below)")))
sys.exit(0 if ok else 1)
EOF
matched=$?
set -e
trajectory=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["trajectory_id"])' "$demo/result.json")

say "rlm logs $trajectory (the trajectory as a tree)"
"$rlm" logs "$trajectory"

say "The trajectory viewer"
echo "$RLM_HTTP_ADDR/trajectories/$trajectory"
echo "(the completion tree, a timeline of the sub-calls, every code block and output; served by the orchestrator)"

say "Done ($model_label)"
up_command="rlm up"
[ "$state" = "$root/.rlm" ] || up_command="rlm up --state-dir $state"
cat <<EOF
The trajectory is stored in $state/trajectories/$trajectory.jsonl.
See it again later: start the services with \`$up_command\` (in $root), then
    rlm logs                        # every completion
    rlm logs ${trajectory:0:8}               # this one as a tree (an id prefix is enough; --full: everything)
    rlm logs ${trajectory:0:8} --json        # as JSON
or open $RLM_HTTP_ADDR/trajectories in a browser.
(rlm is $rlm.)
EOF
if [ "$matched" -ne 0 ]; then
  echo "demo: the answer did not match the ground truth (see above)" >&2
  exit 1
fi
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "DEMO_KEEP=1: the services keep running; open $RLM_HTTP_ADDR/trajectories/$trajectory. Ctrl-C stops them."
  wait "$up_pid" || true
else
  echo "Stopping the services now (DEMO_KEEP=1 leaves them running)."
fi
