#!/usr/bin/env bash
# Regenerates the Go stubs into a temporary directory and fails on any
# difference with the committed ones (rlmpb/). Run by clients/test.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$here/generate.sh" "$tmp" >/dev/null
if ! diff -r "$here/rlmpb" "$tmp/rlmpb" >"$tmp/diff.txt"; then
  echo "FAIL: clients/go/rlmpb differs from what generate.sh produces from proto/." >&2
  head -n 60 "$tmp/diff.txt" >&2
  echo "Regenerate with: clients/go/generate.sh" >&2
  exit 1
fi
echo "go stubs: up to date with proto/"
