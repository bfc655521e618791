#!/usr/bin/env bash
# Every benchmark, one at a time (they compete for the same cores), each preceded by the machine's
# load so a disturbed figure can be told apart. The record is BENCHMARKS.md.
#   benchmarks/run_all.sh [--rss-minutes N]     (as root: bench_update.py starts its own dockerd)
# The GUI memory record is the 10-minute run: benchmarks/run_all.sh --rss-minutes 10
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
py=${HELIO_PYTHON:-$repo/.venv/bin/python}
rss=0.5
[ "${1:-}" = --rss-minutes ] && rss=$2
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -h | awk '/Mem:/ {print $2}') RAM"
"$py" -c 'import sys, cv2, PySide6; from PySide6 import QtCore; print("== Python", sys.version.split()[0], "| PySide6", PySide6.__version__, "| Qt", QtCore.qVersion(), "| OpenCV", cv2.__version__)'
echo "== $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
run() {
  echo
  echo "== $* (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  "$@"
}
run "$py" benchmarks/bench_vision.py
run "$py" benchmarks/bench_runtime.py
run "$py" benchmarks/bench_update.py
run "$py" benchmarks/bench_gui.py --rss-minutes "$rss"
echo
echo "== done (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
