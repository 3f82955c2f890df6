#!/usr/bin/env bash
# Installs what the clients' checks and tests need; idempotent and quiet.
#
#   Debian packages (apt-get, root):
#     golang-go                              Go 1.19 (GOPATH mode: there is no module proxy)
#     protoc-gen-go protoc-gen-go-grpc       the Go stub generators (1.28.1 / grpc-go 1.33.3)
#     golang-google-grpc-dev                 google.golang.org/grpc 1.33.3      -> /usr/share/gocode
#     golang-google-protobuf-dev             google.golang.org/protobuf 1.28.1  -> /usr/share/gocode
#     golang-github-golang-protobuf-1-5-dev  github.com/golang/protobuf 1.5.2   -> /usr/share/gocode
#     python3 python3-venv                   the venv below (Python >= 3.10)
#   pip packages (into clients/.venv): clients/python/requirements.txt
#     grpcio, grpcio-tools, grpcio-health-checking, grpcio-reflection 1.85.1,
#     protobuf 7.35.1, setuptools, pytest, pytest-asyncio
#   and cli/tests/mcp/requirements.txt: the official MCP Python SDK (mcp 2.3.0)
#     and its dependencies, for the `rlm mcp-serve` test (cli/tests/mcp_serve.rs)
#
# protoc comes from grpcio-tools (python -m grpc_tools.protoc) for both languages.
# Environment: PYTHON (interpreter for the venv, default python3).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

packages=(golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci-deps: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="$here/.venv"
requirements="$here/python/requirements.txt"
mcp_requirements="$here/../cli/tests/mcp/requirements.txt"
python="${PYTHON:-python3}"
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(cat "$requirements" "$mcp_requirements" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" -r "$mcp_requirements"
  echo "$want" >"$stamp"
fi
