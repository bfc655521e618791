"""The real `helio-gui` process (offscreen) with its embedded runtime: how it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_terminated_gui_stops_its_embedded_runtime(tmp_path, sig):
    """A GUI ended by a signal (systemd stop, logout, a script's terminate()) stops the runtime
    child it started: it must not keep inspecting, unseen, with the data dir held."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HELIO_GUI_CONFIG_DIR=str(tmp_path / "cfg"),
               HELIO_GUI_LOG_DIR=str(tmp_path / "log"))
    proc = subprocess.Popen([sys.executable, "-m", "helio_gui.ui", "--print-timing", "--quit-after", "120",
                             "--data-dir", str(tmp_path / "data")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kids: list[int] = []
    try:
        for line in proc.stdout:
            if line.startswith("first frame painted"):
                break
        else:
            pytest.fail(f"the GUI never painted a frame: {proc.stderr.read()[-2000:]}")
        kids = _children(proc.pid)
        assert kids, "no embedded runtime child found"
        proc.send_signal(sig)
        proc.wait(30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.1)
        assert not any(_alive(k) for k in kids), "the embedded runtime outlived its GUI"
        assert proc.returncode == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
