"""Real windows under Xvfb (xcb): every main screen saved at 1280x800 for people to look at."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PySide6 import QtGui

pytestmark = pytest.mark.slow


def run_gui(display, args, tmp_path, timeout=90):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb",
               HELIO_GUI_CONFIG_DIR=str(tmp_path / "cfg"), HELIO_GUI_LOG_DIR=str(tmp_path / "log"))
    proc = subprocess.run([sys.executable, "-m", "helio_gui.ui", "--data-dir", str(tmp_path / "data"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_png(path, w=1280, h=800):
    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not an image"
    assert (img.width(), img.height()) == (w, h), (img.width(), img.height())
    # Not blank: a real screen has many distinct colours.
    small = img.scaled(64, 40)
    colours = {small.pixel(x, y) for x in range(64) for y in range(40)}
    assert len(colours) > 20, f"{path} looks blank"


def test_every_screen_embedded_demo(xvfb_display, screenshot_dir, tmp_path, qapp):
    out = screenshot_dir / "gui"
    run_gui(xvfb_display, ["--unlock", "1234", "--screenshots", str(out), "--screenshot-delay", "6"], tmp_path)
    for name in ("live", "stats", "runtime", "settings"):
        check_png(out / f"{name}.png")


def test_kiosk_operator_on_real_footage(xvfb_display, screenshot_dir, tmp_path, conveyor_video, qapp):
    out = screenshot_dir / "gui" / "kiosk"
    run_gui(xvfb_display, ["--kiosk", "--source", f"file:{conveyor_video}", "--screenshots", str(out),
                           "--screenshot-delay", "5"], tmp_path)
    for name in ("live", "stats", "runtime", "settings"):
        check_png(out / f"{name}.png")
