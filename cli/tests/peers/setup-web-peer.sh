#!/usr/bin/env bash
# setup-web-peer.sh DIR
#
# Creates DIR/venv with the `websockets` library (pinned, wheels only): an outside WebSocket
# client for the web face's tests. Idempotent: an existing venv with the pin is kept.
set -euo pipefail
DIR=${1:?usage: setup-web-peer.sh DIR}
PY=${PYTHON:-python3}
PIN='websockets==13.1'
mkdir -p "$DIR"
V=$DIR/venv
if [ -x "$V/bin/python" ] && "$V/bin/python" -c 'import websockets, sys; sys.exit(websockets.__version__ != "13.1")' 2>/dev/null; then
  exit 0
fi
rm -rf "$V"
if ! "$PY" -m venv "$V" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$PY" -m venv "$V"
  else
    echo "setup-web-peer.sh: python3 -m venv failed (install python3-venv)" >&2
    exit 1
  fi
fi
"$V/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all: "$PIN"
"$V/bin/python" -c 'import websockets; print("websockets", websockets.__version__)'
