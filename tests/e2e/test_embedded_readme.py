"""Issue 6, step 8: the README's run command on a fresh machine, no Docker engine.

`scripts/run-gui` (what the README tells a new user to type) runs as a real process on an Xvfb
display with an empty home for its settings and data (XDG dirs), and DOCKER_HOST pointing at
nothing. Within a few seconds it must show the demo feed with counted parts: the window is
saved as a PNG, the verdict banner is PASS-green or FAIL-red, and the runtime's store holds
results by the time the window closed.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from helio_gui.ui.theme import COLORS

from .conftest import check_png

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _is_colour(rgb: int, hex_colour: str, tol: int = 40) -> bool:
    want = int(hex_colour.lstrip("#"), 16)
    return all(abs(((rgb >> s) & 255) - ((want >> s) & 255)) <= tol for s in (16, 8, 0))


def test_readme_run_command_shows_the_demo_feed_with_counts(xvfb_display, screenshot_dir, tmp_path):
    home = tmp_path / "fresh-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELIO_", "QT_", "XDG_"))}
    env.update(DISPLAY=xvfb_display, QT_QPA_PLATFORM="xcb", HOME=str(home),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_STATE_HOME=str(home / ".local/state"), XDG_CACHE_HOME=str(home / ".cache"),
               DOCKER_HOST=f"unix://{tmp_path / 'no-engine.sock'}")  # no engine anywhere
    shot = screenshot_dir / "e2e" / "step8_embedded_readme.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    # Seconds between the window showing and the screenshot: "within a few seconds" (the demo's
    # first part crosses the line ~1 s into the clip).
    delay = 6.0
    t0 = time.monotonic()
    proc = subprocess.Popen([str(REPO / "scripts" / "run-gui"), "--print-timing", "--screenshot", str(shot),
                             "--screenshot-delay", str(delay)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"scripts/run-gui did not finish within 120 s:\n{out[-2000:]}\n{err[-2000:]}")
    wall = time.monotonic() - t0
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"
    m = re.search(r"first frame painted ([0-9.]+) s after start", out)
    assert m, f"no frame was painted:\n{out}\n{err[-2000:]}"
    first_frame_s = float(m.group(1))
    shown = re.search(r"window shown ([0-9.]+) s after start", out)
    assert shown and first_frame_s < float(shown.group(1)) + delay, out  # live before the screenshot

    img = check_png(shot)
    # The verdict banner (top of the 340 px side panel) shows a counted part: PASS green or FAIL red.
    side = [img.pixel(x, y) for x in range(img.width() - 320, img.width() - 30, 6) for y in range(140, 240, 6)]
    coloured = sum(_is_colour(p, COLORS["pass"]) or _is_colour(p, COLORS["fail"]) for p in side)
    assert coloured > len(side) // 3, "the verdict banner shows no PASS/FAIL: no part was counted"

    # The embedded runtime kept its results in the fresh home's data dir (platformdirs: XDG_DATA_HOME).
    db = home / ".local/share" / "helio-gui" / "embedded-runtime" / "results.sqlite3"
    assert db.is_file(), sorted(str(p) for p in home.rglob("*"))[:40]
    with sqlite3.connect(db) as con:
        (n,) = con.execute("SELECT COUNT(*) FROM results").fetchone()
    assert n >= 1, "the runtime stored no result"
    print(f"\nstep 8: window shown {float(shown.group(1)):.2f} s, first frame painted {first_frame_s:.2f} s after "
          f"start (helio-gui's clock), "
          f"{n} results stored, whole run {wall:.1f} s including setup.sh and a {delay:.0f} s screenshot delay")
