#!/usr/bin/env bash
# Installs the external servers the end-to-end tests start; idempotent, quiet.
#   redis-server (Debian package, root)   tests/tests/queue.rs: the fleet queue
#   moto_server  (pip, tests/.moto-venv)  tests/tests/trajectory_s3.rs: an S3 API
# Without root a missing package is reported and the tests that need it fail
# saying what to install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export DEBIAN_FRONTEND=noninteractive

if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The tests start their own on free ports; nothing uses the packaged service.
    if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
  else
    echo "tests/deps.sh: redis-server is missing (apt-get install redis-server, as root)" >&2
  fi
fi

venv="$here/.moto-venv"
requirements="$here/moto-requirements.txt"
stamp="$venv/.requirements.sha256"
wanted="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-input -r "$requirements"
  echo "$wanted" >"$stamp"
fi
