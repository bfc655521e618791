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


def test_bad_settings_file_is_a_clear_exit_and_leaves_no_runtime(tmp_path):
    """The runtime starts before the settings are fully validated (cold start): a bad file must
    still end with the message and no runtime child left behind."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "gui.yaml").write_text("mode: embedded\nauto_lock_s: 1\nalarms: {window_parts: -3}\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HELIO_GUI_CONFIG_DIR=str(cfg),
               HELIO_GUI_LOG_DIR=str(tmp_path / "log"))
    data = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-m", "helio_gui.ui", "--data-dir", str(data)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "bad settings file" in proc.stderr and "auto_lock_s" in proc.stderr and "Traceback" not in proc.stderr
    # The child it spawned (if it got that far) was stopped: nobody holds the data dir's log open.
    time.sleep(0.5)
    holders = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if "helio_gui.runtime" in cmd and str(data) in cmd and _alive(int(d.name)):
                holders.append(int(d.name))
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    assert not holders, "a runtime outlived the refused start"


def test_early_settings_reads_only_what_starts_the_runtime(tmp_path):
    from helio_gui.ui.paths import early_settings

    p = tmp_path / "gui.yaml"
    assert early_settings(p) == {}  # no file
    p.write_text("mode: docker\nsource: /media/parts\nrecipe: null\nalarms: {window_parts: 40}\n")
    assert early_settings(p) == {"mode": "docker", "source": "/media/parts", "recipe": None}
    p.write_text("mode: [docker\n")  # broken YAML: the full load reports it
    assert early_settings(p) == {}


def test_first_frame_path_imports_nothing_it_does_not_need():
    """Cold start: the window and live view load without the charting library (the stats page
    is built after the first frame) and without requests (first used by a worker thread)."""
    code = ("import sys; import helio_gui.ui.main_window, helio_gui.ui.backends, helio_gui.ui.paths; "
            "print(sorted(m for m in ('requests', 'pyqtgraph', 'pydantic', 'docker') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert out.returncode == 0, out.stderr
    # pydantic comes with the settings (GuiConfig), after the runtime child has been started.
    assert out.stdout.strip() == "['pydantic']", out.stdout
