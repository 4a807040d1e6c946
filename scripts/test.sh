#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Debian, a Rust toolchain, Python 3.11).
# Installs what the tests need that cargo does not fetch (openssl for the interop PKI script,
# Debian's chromium and chromium-driver for the web console's browser test, postgresql for
# the store tests' throwaway clusters), then runs every
# test of the workspace. The interop tests install the real RedPepper 0.0.17
# peers into a venv under target/ by themselves (../shared/peers/redpepper/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# PostgreSQL's server binaries: the store tests start throwaway clusters of their own.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)
  if command -v apt-get >/dev/null && "${as_root[@]}" true 2>/dev/null; then
    echo "test.sh: installing ${need[*]}"
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  fi
fi
command -v openssl >/dev/null || { echo "test.sh: please install openssl" >&2; exit 1; }
command -v python3 >/dev/null || { echo "test.sh: please install python3 and python3-venv" >&2; exit 1; }
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  # Without root (or sudo) the browser cannot be installed here: say so loudly, and run the
  # rest (the console's browser test then skips itself, saying so in its output).
  echo "test.sh: WARNING: chromium/chromium-driver could not be installed; the web console's browser test is skipped" >&2
  export SWITCHBOARD_SKIP_BROWSER=1
fi

# Simulation sweeps: SIM_SEEDS=N widens them (default: a handful per scenario).
exec cargo test --workspace "$@"
