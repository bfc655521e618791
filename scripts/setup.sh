#!/usr/bin/env bash
# Set-up shared by scripts/run-gui and scripts/run-tests. Safe to run any number of times:
# it installs only what is missing and reinstalls the Python packages only when
# pyproject.toml changed.
#   scripts/setup.sh gui    what the GUI needs
#   scripts/setup.sh test   what the whole test suite needs (adds the Docker engine, Xvfb, ...)
set -euo pipefail
mode=${1:-gui}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Debian packages. Qt 6.5+ needs libxcb-cursor0 and friends for its xcb platform plugin.
gui_debs=(python3 python3-venv python3-pip libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1
          libxcb-shape0 libxcb-randr0 libxcb-render-util0 libxcb-image0 libxcb-xinerama0 libxcb-xkb1
          libegl1 libgl1 libfontconfig1 libdbus-1-3 fonts-dejavu-core)
test_debs=(docker.io xvfb debootstrap busybox-static ffmpeg)
debs=("${gui_debs[@]}")
[ "$mode" = test ] && debs+=("${test_debs[@]}")

missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: these Debian packages are missing: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get install ${missing[*]}" >&2
    echo "setup: (or run this command once with sudo, which installs them)" >&2
    if [ "$mode" = test ] || ! command -v python3 >/dev/null; then exit 2; fi
  fi
fi

# The virtual environment, with the runtime, GUI and test dependencies.
py=${HELIO_PYTHON:-python3}
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed ($py is $("$py" --version 2>&1))." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$py" -m venv .venv
fi
stamp=.venv/.helio-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[gui,test]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  echo "$want" > "$stamp"
fi
