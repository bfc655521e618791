"""The Qt-free client against tiny real servers (real sockets, real JPEGs from real footage)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from helio_gui.client import ApiError, EventStream, MjpegReader, RuntimeClient, RuntimeUnreachable
from tests.client.tiny_server import TinyServer, jpeg_frames


@pytest.fixture(scope="module")
def jpegs(conveyor_video):
    return jpeg_frames(conveyor_video, 20)


@pytest.fixture
def server(port, jpegs):
    srv = TinyServer(port, jpegs).start()
    yield srv
    srv.stop()


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_client_package_is_qt_and_docker_free():
    code = ("import sys, helio_gui.client; bad=[m for m in ('PySide6','docker','pyqtgraph') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unreachable_runtime_says_what_to_do(port):
    client = RuntimeClient(f"http://127.0.0.1:{port}", "tok", timeout=(0.5, 0.5))
    with pytest.raises(RuntimeUnreachable, match="is it running"):
        client.status()


def test_bad_url_is_rejected():
    with pytest.raises(ValueError, match="http"):
        RuntimeClient("127.0.0.1:8750")


def test_wrong_token_and_recipe_errors(server):
    bad = RuntimeClient(f"http://127.0.0.1:{server.port}", "wrong")
    with pytest.raises(ApiError) as info:
        bad.status()
    assert info.value.status == 401 and "token" in str(info.value)
    good = RuntimeClient(f"http://127.0.0.1:{server.port}", "tok")
    assert good.health()["ok"] is True
    with pytest.raises(ApiError) as info:
        good.put_recipe("this is bad", "toml")
    assert info.value.status == 422 and info.value.errors[0]["line"] == 3
    assert good.put_recipe("fine") == {"name": "demo", "version": "2"}
    bad.close(), good.close()


def test_csv_export_is_atomic_and_cancellable(server, tmp_path):
    client = RuntimeClient(f"http://127.0.0.1:{server.port}", "tok")
    dest = tmp_path / "out.csv"
    seen = []
    n = client.export_csv(str(dest), since=0, until=2e9, progress=seen.append)
    assert n == dest.stat().st_size and seen[-1] == n
    assert dest.read_text().splitlines()[0] == "id,ts,verdict"
    cancel = threading.Event()
    cancel.set()
    dest2 = tmp_path / "cancelled.csv"
    with pytest.raises(InterruptedError):
        client.export_csv(str(dest2), cancel=cancel)
    assert not dest2.exists() and not (tmp_path / "cancelled.csv.part").exists()
    client.close()


@pytest.mark.parametrize("content_length", [True, False])
def test_mjpeg_reader_decodes_real_frames_with_ids(port, jpegs, content_length):
    srv = TinyServer(port, jpegs, fps=60, content_length=content_length).start()
    reader = MjpegReader("127.0.0.1", port, "tok")
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_decoded >= 10), reader.reason
        f = reader.take()
        assert f is not None and f.image.ndim == 3 and f.image.shape[1] == 640
        assert f.image.dtype == np.uint8 and not f.image.flags.writeable
        assert f.frame_id >= 9 and f.received <= f.decoded
        assert reader.state == "live"
    finally:
        assert reader.stop(3.0)
        srv.stop()


def test_jpeg_size_reads_the_header_of_real_frames(jpegs):
    import cv2

    from helio_gui.client.streams import jpeg_size, reduction_for

    for j in jpegs[:5]:
        img = cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR)
        assert jpeg_size(j) == (img.shape[1], img.shape[0])
    assert jpeg_size(b"not a jpeg") is None and jpeg_size(jpegs[0][:40]) is None
    assert reduction_for((1920, 1080), None) == 1
    assert reduction_for((1920, 1080), (1920, 1080)) == 1
    assert reduction_for((1920, 1080), (714, 712)) == 2  # the live page's feed: 960 wide still covers 714
    assert reduction_for((1920, 1080), (400, 300)) == 4
    assert reduction_for((1920, 1080), (1428, 1424)) == 1  # zoomed 2x: full size again


def test_mjpeg_decodes_reduced_to_the_display_box(port, jpegs):
    srv = TinyServer(port, jpegs, fps=60).start()
    reader = MjpegReader("127.0.0.1", port, "tok")
    w, h = 640, 360
    reader.display_box = (w // 4, h // 4)  # a quarter-size view: decoded at a quarter
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_decoded >= 5), reader.reason
        f = reader.take()
        full_w, full_h = f.full_size
        assert full_w == 640 and f.image.shape[1] == 160 and f.scale == 0.25
        assert abs(f.image.shape[0] * 4 - full_h) < 4
        reader.display_box = None  # zoomed in / no hint: full size from the next frame
        seq = f.seq
        assert wait_for(lambda: (g := reader.peek()) is not None and g.seq > seq + 1 and g.image.shape[1] == 640)
        assert reader.frames_reduced >= 1
    finally:
        assert reader.stop(3.0)
        srv.stop()


def test_mjpeg_latest_wins_and_counts_drops(server):
    reader = MjpegReader("127.0.0.1", server.port, "tok")
    reader.start()
    try:
        # Nobody takes frames: the slot holds one, every replaced frame is a counted drop.
        assert wait_for(lambda: reader.frames_decoded >= 15)
        f = reader.take()
        assert reader.take() is None  # one slot, now empty
        assert reader.frames_dropped >= reader.frames_decoded - 3
        assert f.seq >= reader.frames_decoded - 1  # what we took was the newest
    finally:
        reader.stop()


def test_mjpeg_reconnects_after_server_restart(port, jpegs):
    srv = TinyServer(port, jpegs, fps=60).start()
    states = []
    reader = MjpegReader("127.0.0.1", port, "tok", on_state=lambda s, r: states.append((s, r)),
                         backoff=(0.1, 0.5))
    reader.start()
    try:
        assert wait_for(lambda: reader.frames_decoded >= 3)
        srv.stop()
        assert wait_for(lambda: reader.state == "reconnecting")
        n = reader.frames_decoded
        srv = TinyServer(port, jpegs, fps=60).start()
        assert wait_for(lambda: reader.frames_decoded > n + 3, 8), states
        assert reader.state == "live" and reader.reconnects >= 1
        assert any(s == "reconnecting" for s, _ in states)
    finally:
        reader.stop()
        srv.stop()


def test_mjpeg_wrong_token_reports_reason(server):
    reader = MjpegReader("127.0.0.1", server.port, "nope", backoff=(0.1, 0.2))
    reader.start()
    try:
        assert wait_for(lambda: "401" in reader.reason)
        assert "token" in reader.reason
    finally:
        reader.stop()


def test_stop_is_prompt_even_mid_read(server):
    reader = MjpegReader("127.0.0.1", server.port, "tok", read_timeout=30)
    reader.start()
    assert wait_for(lambda: reader.frames_decoded >= 1)
    t0 = time.monotonic()
    assert reader.stop(3.0)
    assert time.monotonic() - t0 < 1.0


def test_event_stream_resumes_with_last_event_id(server):
    server.cut_events_after = 4
    results = []
    es = EventStream("127.0.0.1", server.port, "tok", backoff=(0.05, 0.2),
                     on_event=lambda kind, data, eid: results.append(data["id"]) if kind == "result" else None)
    es.start()
    try:
        assert wait_for(lambda: len(results) >= 10)
        # Reconnected once, resumed after id 4: every result exactly once, in order.
        assert results[:10] == list(range(1, 11))
        assert server.last_event_ids[:2] == [None, "4"]
        assert es.last_event_id == "10"
    finally:
        es.stop()


@pytest.mark.parametrize("kind", ["mjpeg", "events"])
def test_default_backoff_resumes_quickly_after_a_3s_outage(port, jpegs, kind):
    # A runtime restart/update: down ~3 s, then back at once. With the default backoff (what the
    # GUI uses) the stream must be live again well under a second later, not after a 3 s wait.
    srv = TinyServer(port, jpegs, fps=60).start()
    if kind == "mjpeg":
        t = MjpegReader("127.0.0.1", port, "tok")
    else:
        t = EventStream("127.0.0.1", port, "tok")
    t.start()
    try:
        assert t.backoff_max <= 1.0
        assert wait_for(lambda: t.state == "live")
        srv.stop()
        assert wait_for(lambda: t.state == "reconnecting")
        time.sleep(3.0)
        srv = TinyServer(port, jpegs, fps=60).start()
        t0 = time.monotonic()
        assert wait_for(lambda: t.state == "live", 5)
        assert time.monotonic() - t0 < 0.9
    finally:
        t.stop()
        srv.stop()
