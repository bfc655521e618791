"""The client against a real helio-runtime child process (EmbeddedRuntime) on the demo footage."""

from __future__ import annotations

import os
import time

import pytest

from helio_gui.client import ApiError, EmbeddedRuntime, EventStream, MjpegReader, RuntimeClient
from helio_gui.client.embedded import default_data_dir

pytestmark = pytest.mark.slow


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    runtime = EmbeddedRuntime(data_dir=tmp_path_factory.mktemp("rt"))
    runtime.start(timeout=30)
    yield runtime
    runtime.stop()


def test_default_data_dir_is_the_platform_data_location():
    import platformdirs

    assert str(default_data_dir()).startswith(platformdirs.user_data_dir())


def test_token_is_generated_and_kept_out_of_the_command_line(rt):
    assert len(rt.token) >= 20
    with open(f"/proc/{rt.pid}/cmdline", "rb") as fh:
        assert rt.token.encode() not in fh.read()
    assert rt.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(ApiError) as info:
        RuntimeClient(rt.base_url, "wrong").status()
    assert info.value.status == 401


def test_json_endpoints(rt):
    c = RuntimeClient(rt.base_url, rt.token)
    st = c.status()
    assert {"runtime_version", "api_version", "source", "latency_ms"} <= set(st)
    assert wait_for(lambda: c.health()["ok"], 15)
    assert wait_for(lambda: c.stats()["total"] > 0, 30)
    page = c.results(limit=5)
    assert page["items"] and page["items"][0]["verdict"] in ("PASS", "FAIL")
    assert c.recipe()["format"] in ("toml", "yaml")
    c.close()


def test_mjpeg_and_events_from_the_real_runtime(rt):
    results = []
    reader = MjpegReader("127.0.0.1", rt.port, rt.token)
    events = EventStream("127.0.0.1", rt.port, rt.token,
                         on_event=lambda k, d, i: results.append(d) if k == "result" else None)
    reader.start()
    events.start()
    try:
        assert wait_for(lambda: reader.frames_decoded >= 10, 15), reader.reason
        f = reader.take()
        assert f.frame_id > 0 and f.image.ndim == 3
        assert abs(f.timestamp - time.time()) < 5  # X-Timestamp parsed
        assert wait_for(lambda: len(results) >= 1, 30)
        assert "frame_id" in results[0] and "regions" in results[0]
    finally:
        reader.stop()
        events.stop()


def test_sigterm_stop_is_fast_and_clean(tmp_path):
    runtime = EmbeddedRuntime(data_dir=tmp_path)
    runtime.start(timeout=30)
    t0 = time.monotonic()
    code = runtime.stop()
    assert code == 0 and time.monotonic() - t0 < 3.0
    assert not runtime.running()
    assert (tmp_path / "runtime.log").stat().st_size > 0


def test_start_failure_reports_the_runtime_log(tmp_path):
    runtime = EmbeddedRuntime(data_dir=tmp_path, recipe=str(tmp_path / "missing.toml"))
    with pytest.raises((RuntimeError, TimeoutError)) as info:
        runtime.start(timeout=20)
    assert "missing.toml" in str(info.value) or "Last log lines" in str(info.value)
    assert not runtime.running()


def test_runtime_stops_by_itself_when_the_gui_is_killed(tmp_path):
    """A GUI killed with SIGKILL runs no clean-up; its embedded runtime must not live on
    holding the camera and the port (it did: 25 orphans from killed benchmark runs)."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from helio_gui.client import EmbeddedRuntime\n"
        f"rt = EmbeddedRuntime(data_dir={str(tmp_path)!r})\n"
        "rt.start(timeout=60)\n"
        "print(rt.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    gui = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(gui.stdout.readline())
        assert _alive(child)
        gui.send_signal(signal.SIGKILL)
        gui.wait(timeout=10)
        assert wait_for(lambda: not _alive(child), timeout=15), "the runtime outlived the GUI that started it"
        log = (tmp_path / "runtime.log").read_text()
        assert "is gone: stopping" in log and "stopped in" in log
    finally:
        gui.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
