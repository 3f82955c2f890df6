#!/usr/bin/env bash
# Regenerates the Python stubs into a temporary directory and fails on any
# difference with the committed ones (src/rlm_client/pb). Run by clients/test.sh.
#   PYTHON=/path/to/python ./check_generated.sh   (default: clients/.venv/bin/python)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || { echo "check_generated: $python not found; run clients/ci-deps.sh first" >&2; exit 2; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" "$here/generate.py" --out "$tmp/pb" >/dev/null
if ! diff -r -x __pycache__ "$here/src/rlm_client/pb" "$tmp/pb" >"$tmp/diff.txt"; then
  echo "FAIL: clients/python/src/rlm_client/pb differs from what generate.py produces from proto/." >&2
  head -n 60 "$tmp/diff.txt" >&2
  echo "Regenerate with: clients/.venv/bin/python clients/python/generate.py" >&2
  exit 1
fi
echo "python stubs: up to date with proto/"
