#!/usr/bin/env bash
# One-time set-up on a fresh machine, and a no-op when nothing changed:
# the Debian library open3d needs, a virtualenv in .venv, handanno and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: libusb for open3d; Chromium for the review page's browser test (skipped,
# saying why, where it cannot be installed).
debs=""
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || debs="libusb-1.0-0"
command -v chromium >/dev/null 2>&1 || debs="$debs chromium"
if [ -n "$debs" ]; then
  echo "setup: installing Debian packages:$debs" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if $SUDO apt-get update -qq >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $debs >/dev/null \
      || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
fi

PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi

stamp=.venv/.handanno-setup
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing handanno and its dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test,ray,mediapipe]"
  echo "$want" > "$stamp"
fi
