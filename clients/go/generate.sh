#!/usr/bin/env bash
# Generates the Go stubs (rlmpb/) from the repository's proto/ tree with
# protoc-gen-go and protoc-gen-go-grpc.
#
#   ./generate.sh            # (re)writes rlmpb/
#   ./generate.sh OUT_DIR    # writes the same tree into OUT_DIR/rlmpb (check_generated.sh)
#
# protoc: $PROTOC if set (a protoc binary), else the protoc bundled with the
# pinned grpcio-tools of clients/.venv (python -m grpc_tools.protoc), the same
# compiler the Python stubs use. Plugins: $PROTOC_GEN_GO / $PROTOC_GEN_GO_GRPC,
# default Debian's /usr/bin/protoc-gen-go (1.28.1) and /usr/bin/protoc-gen-go-grpc
# (grpc-go 1.33.3). The generated headers name the versions used, so a
# different toolchain shows up as a diff in check_generated.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto_root="$(cd "$here/../../proto" && pwd)"
out="${1:-$here}"
module="github.com/rlm-runtime/rlm/clients/go"
gen_go="${PROTOC_GEN_GO:-/usr/bin/protoc-gen-go}"
gen_go_grpc="${PROTOC_GEN_GO_GRPC:-/usr/bin/protoc-gen-go-grpc}"
for plugin in "$gen_go" "$gen_go_grpc"; do
  [ -x "$plugin" ] || { echo "generate.sh: $plugin missing (apt-get install protoc-gen-go protoc-gen-go-grpc; see clients/ci-deps.sh)" >&2; exit 2; }
done

if [ -n "${PROTOC:-}" ]; then
  protoc=("$PROTOC")
  includes=()
else
  python="${PYTHON:-$here/../.venv/bin/python}"
  [ -x "$python" ] || { echo "generate.sh: $python missing; run clients/ci-deps.sh (or set PROTOC)" >&2; exit 2; }
  protoc=("$python" -m grpc_tools.protoc)
  includes=("-I$("$python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')")
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$proto_root"
mapfile -t files < <(find rlm -name '*.proto' | LC_ALL=C sort)
"${protoc[@]}" -I. "${includes[@]}" \
  --plugin=protoc-gen-go="$gen_go" --plugin=protoc-gen-go-grpc="$gen_go_grpc" \
  --go_out="$tmp" --go_opt=module="$module" \
  --go-grpc_out="$tmp" --go-grpc_opt=module="$module" \
  "${files[@]}"
rm -rf "$out/rlmpb"
mkdir -p "$out"
cp -r "$tmp/rlmpb" "$out/rlmpb"
echo "generated $(find "$out/rlmpb" -name '*.go' | wc -l) files into $out/rlmpb"
