#!/usr/bin/env bash
# The whole test suite, from a fresh machine (Debian, a Rust toolchain, Python 3.11).
# Installs what the tests need that cargo does not fetch (openssl for the interop PKI script,
# Debian's chromium and chromium-driver for the web console's browser test), then runs every
# test of the workspace. The interop tests install the real RedPepper 0.0.17
# peers into a venv under target/ by themselves (../shared/peers/redpepper/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "test.sh: please install: ${need[*]}" >&2
    exit 1
  fi
fi

# Simulation sweeps: SIM_SEEDS=N widens them (default: a handful per scenario).
exec cargo test --workspace "$@"
