#!/usr/bin/env bash
# Set up pvcharge from this source tree on Debian 12 / Raspberry Pi OS bookworm (or newer):
#   deploy/bootstrap.sh          Debian's python3-venv if missing, then .venv with pvcharge (the demo, run, probe)
#   deploy/bootstrap.sh --dev    also what the test suite needs: chromium (the status page test), mosquitto
#                                (the MQTT tests start their own broker), systemd-analyze (the unit's checks),
#                                gcc + libsystemd-dev (the optional sd_notify backend), and .venv with '.[dev]'
# Debian packages are installed with apt-get only where missing: as root directly, otherwise through sudo.
# Without apt-get (another distribution) it says what to install and goes on; the tests that need a
# missing program then fail with a message naming it, never skip.  Safe to run again: an existing .venv
# is reused and brought up to date.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
case "${1:-}" in
  "") ;;
  --dev) dev=true ;;
  *) echo "usage: $0 [--dev]" >&2; exit 2 ;;
esac

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if $dev; then
  command -v chromium >/dev/null || missing+=(chromium)
  [[ -x /usr/sbin/mosquitto ]] || command -v mosquitto >/dev/null || missing+=(mosquitto)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v gcc >/dev/null || missing+=(gcc)
  pkg-config --exists libsystemd 2>/dev/null || missing+=(libsystemd-dev pkg-config)
  # Python's headers, for building systemd-python (Debian's python3 keeps them in python3-dev)
  python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || missing+=(python3-dev)
fi
if ((${#missing[@]})); then
  if ! command -v apt-get >/dev/null; then
    echo "bootstrap: no apt-get here; install these yourself: ${missing[*]}" >&2
  else
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if $dev; then
  extras=dev
  # sd_notify through libsystemd as well: tests/test_notify.py then covers both backends
  if pkg-config --exists libsystemd 2>/dev/null && command -v gcc >/dev/null; then extras=dev,systemd; fi
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "bootstrap: .venv is ready ($(.venv/bin/pvcharge --version))"
