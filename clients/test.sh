#!/usr/bin/env bash
# Every check and test of the Python and Go clients:
#   1. dependencies (ci-deps.sh: idempotent, quiet);
#   2. the committed Python and Go stubs equal what proto/ generates;
#   3. Python: install the package into clients/.venv, pytest (unit, fake
#      server, and live tests against the real binaries the fixture starts);
#   4. Go (GOPATH mode against Debian's packages): gofmt, vet, build, go test
#      (unit, fake server, and live tests that start the real binaries);
#   5. the Go example command against a live stack.
#
# Needs: the binaries built (`cargo build --workspace --bins`, which `make
# build` runs) in $RLM_BIN_DIR (default <repo>/target/debug), and root (the
# sandbox agent isolates sessions with namespaces and cgroups).
set -euo pipefail
clients="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$clients/.." && pwd)"
export RLM_BIN_DIR="${RLM_BIN_DIR:-$repo/target/debug}"

step() { echo "== clients: $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "clients/test.sh: must run as root: the live tests start rlm-sandbox-agent, which needs root for its isolation" >&2
  exit 1
fi
for bin in rlm-sandbox-agent rlm-orchestrator; do
  if [ ! -x "$RLM_BIN_DIR/$bin" ]; then
    echo "clients/test.sh: $RLM_BIN_DIR/$bin is missing: run \`cargo build --workspace --bins\` first" >&2
    exit 1
  fi
done

step "dependencies"
"$clients/ci-deps.sh"
venv="$clients/.venv"

step "generated stubs are up to date"
"$clients/python/check_generated.sh"
"$clients/go/check_generated.sh"

step "python: install rlm-runtime-client into clients/.venv"
build_tmp="$(mktemp -d)"
trap 'rm -rf "$build_tmp"' EXIT
# Build from a copy so the source tree gets no build/ or *.egg-info.
cp -r "$clients/python" "$build_tmp/python"
rm -rf "$build_tmp/python/build" "$build_tmp/python/src/"*.egg-info
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
  --force-reinstall "$build_tmp/python" 2>&1 | { grep -v -i -E "warning|return '|^\s*$" || true; }

step "python: pytest"
(cd "$clients/python/tests" && "$venv/bin/python" -m pytest -q -p no:cacheprovider --durations=5 .)

step "go: gofmt, vet, build, test (GOPATH mode, Debian packages)"
export GO111MODULE=off GOFLAGS= GOPROXY=off
export GOPATH="$clients/.gopath:/usr/share/gocode"
export GOCACHE="$clients/.gopath/cache"
link="$clients/.gopath/src/github.com/rlm-runtime/rlm/clients/go"
mkdir -p "$(dirname "$link")"
ln -sfn "$clients/go" "$link"
go version
(
  cd "$link"
  unformatted="$(gofmt -l rlm cmd)"
  if [ -n "$unformatted" ]; then
    echo "gofmt: these files need formatting:" >&2
    echo "$unformatted" >&2
    exit 1
  fi
  go vet ./...
  go build ./...
  go build -o "$build_tmp/rlm-example" ./cmd/rlm-example
  go test -count=1 -v ./... 2>&1 | grep -E -v "^=== (RUN|PAUSE|CONT)"
)

step "go: rlm-example against a live stack"
"$venv/bin/python" "$clients/python/tests/stack.py" >"$build_tmp/stack.out" 2>&1 &
stack_pid=$!
trap 'kill -TERM "$stack_pid" 2>/dev/null || true; wait "$stack_pid" 2>/dev/null || true; rm -rf "$build_tmp"' EXIT
for _ in $(seq 1 300); do
  grep -q '^gRPC ' "$build_tmp/stack.out" && break
  kill -0 "$stack_pid" 2>/dev/null || { cat "$build_tmp/stack.out" >&2; exit 1; }
  sleep 0.1
done
target="$(awk '/^gRPC /{print $2}' "$build_tmp/stack.out")"
[ -n "$target" ] || { echo "the stack did not start:" >&2; cat "$build_tmp/stack.out" >&2; exit 1; }
printf '%s\n' '```repl' 'print(len(context))' '```' '---' 'FINAL(example ok)' >"$build_tmp/turns.txt"
printf 'hello from a file\n' >"$build_tmp/ctx.txt"
example="$build_tmp/rlm-example"
[ "$("$example" -target "$target" -health)" = "SERVING" ]
out="$("$example" -target "$target" -prompt "smoke" -context-file "$build_tmp/ctx.txt" -model "scripted:$build_tmp/turns.txt")"
echo "$out"
grep -q '^answer: example ok$' <<<"$out"
out="$("$example" -target "$target" -stream -prompt "smoke" -context "abc" -model "scripted:$build_tmp/turns.txt")"
grep -q 'code ran: "3\\n"' <<<"$out"
grep -q '^answer: example ok$' <<<"$out"
if "$example" -target "$target" -prompt "" >/dev/null 2>&1; then echo "rlm-example accepted an empty prompt" >&2; exit 1; fi
printf '%s\n' '```repl' 'print(1)' '```' >"$build_tmp/loop.txt"
set +e
"$example" -target "$target" -prompt "loop" -model "scripted:$build_tmp/loop.txt" -max-iterations 1 -fail-on-partial >"$build_tmp/partial.out" 2>&1
status=$?
set -e
[ "$status" -eq 3 ] && grep -q 'reason: MAX_ITERATIONS' "$build_tmp/partial.out" || { cat "$build_tmp/partial.out" >&2; echo "expected exit 3 (partial)" >&2; exit 1; }
echo "rlm-example: 4 passed, 0 failed"

step "all client checks passed"
