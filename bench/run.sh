#!/usr/bin/env bash
# Runs this repository's runtime through the shared peer benchmark
# (run_peers.py + the fake model server), as the peer "ours".
#
#   sudo bench/run.sh                                   # needle-10MB, fanout-100, iterations-20, 5 reps
#   sudo bench/run.sh --reps 3 --scenarios fanout-100 --latency-ms 50 --out bench/results/ours-latency50.md
#   sudo bench/run.sh --by-id                           # needle: upload untimed, time Complete only
#   sudo bench/run.sh --no-build ...                    # skip cargo build
#
# Any other argument goes to run_peers.py after the defaults, so it overrides
# them (--scenarios, --reps, --out, --raw, --latency-ms, --timeout, ...).
# Scenario ids: needle-100KB, needle-1MB, needle-10MB, fanout-10, fanout-100,
# iterations-20.
#
# Needs root (the sandbox agent isolates every session with namespaces,
# cgroups and seccomp), python3 with the venv module, and cargo. The shared
# bench directory is $RLM_SHARED_BENCH, by default <repo>/../shared/bench.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
shared="${RLM_SHARED_BENCH:-$(dirname "$repo")/shared/bench}"

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/run.sh must run as root: rlm-sandbox-agent isolates each session" >&2
    echo "(namespaces, cgroups, seccomp). Run: sudo bench/run.sh $*" >&2
    exit 1
fi
if [ ! -f "$shared/run_peers.py" ]; then
    echo "no run_peers.py in $shared: set RLM_SHARED_BENCH to the shared bench directory" >&2
    exit 1
fi

build=1
variant=default
args=()
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        --by-id) variant=by-id ;;
        *) args+=("$arg") ;;
    esac
done

# Python environment for the adapter (grpcio + generated stubs).
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== creating $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi

if [ "$build" -eq 1 ]; then
    if ! command -v cargo >/dev/null; then
        echo "cargo not found on PATH (sudo resets it): run sudo env \"PATH=\$PATH\" bench/run.sh," >&2
        echo "or build first and pass --no-build" >&2
        exit 1
    fi
    echo "== cargo build --release --workspace --bins" >&2
    (cd "$repo" && cargo build --release --workspace --bins)
fi

if [ "$variant" = by-id ]; then
    label="rlm-runtime (isolated, context by id)"
    out="$here/results/ours-by-id.md"
    raw="$here/results/ours-by-id-raw.jsonl"
else
    label="rlm-runtime (isolated)"
    out="$here/results/ours.md"
    raw="$here/results/ours-raw.jsonl"
fi
mkdir -p "$here/results"

export RLM_BENCH_VARIANT="$variant"
exec python3 "$shared/run_peers.py" \
    --ours-adapter "$here/rlm_adapter.py" \
    --ours-python "$venv/bin/python" \
    --ours-label "$label" \
    --ours-dialect generic \
    --peers ours \
    --scenarios needle-10MB,fanout-100,iterations-20 \
    --reps 5 \
    --out "$out" \
    --raw "$raw" \
    ${args[@]+"${args[@]}"}
