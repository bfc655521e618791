"""MJPEG broadcaster fed with real frames from the conveyor video: readers, encodes, slow and
vanished clients."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time

import cv2
import pytest
from aiohttp import web

from helio_gui.runtime import app as api
from helio_gui.runtime.broadcast import FrameSlot, MjpegBroadcaster
from helio_gui.vision.types import Frame


class Feeder(threading.Thread):
    """Decodes the real clip and puts frames into the slot at 30 fps, looping."""

    def __init__(self, path, slot, fps=30.0):
        super().__init__(name="test-feeder", daemon=True)
        self.path, self.slot, self.period = str(path), slot, 1.0 / fps
        self.stop_event = threading.Event()
        self.frames = 0

    def run(self):
        cap = cv2.VideoCapture(self.path)
        try:
            next_t = time.monotonic()
            while not self.stop_event.is_set():
                ok, img = cap.read()
                if not ok:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self.frames += 1
                self.slot.put(Frame(img, self.frames, time.time(), time.monotonic()))
                next_t += self.period
                self.stop_event.wait(max(0.0, next_t - time.monotonic()))
        finally:
            cap.release()


class StreamServer:
    def __init__(self, video, port):
        self.port = port
        self.slot = FrameSlot()
        self.broadcaster = MjpegBroadcaster(self.slot)
        self.feeder = Feeder(video, self.slot)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-aiohttp", daemon=True)

    def _serve(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app[api.BROADCASTER] = self.broadcaster
        app.router.add_get("/stream.mjpg", api.stream)
        self.runner = web.AppRunner(app, shutdown_timeout=0.2)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def viewer_count(self):
        return self.broadcaster.viewer_count

    def __enter__(self):
        self.feeder.start()
        self.broadcaster.start()
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.broadcaster.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.feeder.stop_event.set()
        self.feeder.join(5)
        self.slot.close()


@pytest.fixture
def server(conveyor_video, port):
    with StreamServer(conveyor_video, port) as s:
        yield s


def read_parts(port, n, query="fps=30", timeout=10.0):
    """A strict reader: boundary before every part, Content-Length matches the JPEG."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(f"GET /stream.mjpg?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    f = sock.makefile("rb")
    status = f.readline()
    assert b"200" in status
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    assert headers["content-type"] == "multipart/x-mixed-replace; boundary=helioframe"
    chunked = headers.get("transfer-encoding") == "chunked"
    raw = ChunkReader(f) if chunked else f
    parts = []
    for _ in range(n):
        line = raw.readline()
        assert line == b"--helioframe\r\n", line
        h = {}
        while (line := raw.readline()) != b"\r\n":
            k, v = line.decode().split(":", 1)
            h[k.strip().lower()] = v.strip()
        body = raw.read(int(h["content-length"]))
        assert raw.read(2) == b"\r\n"
        assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"
        parts.append((int(h["x-frame-id"]), float(h["x-timestamp"]), body))
    sock.close()
    return parts


class ChunkReader:
    def __init__(self, f):
        self.f, self.buf = f, b""

    def _fill(self, n):
        while len(self.buf) < n:
            size = int(self.f.readline().strip(), 16)
            self.buf += self.f.read(size)
            self.f.readline()

    def readline(self):
        while b"\n" not in self.buf:
            self._fill(len(self.buf) + 1)
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def test_parts_are_well_formed_and_decode(server):
    parts = read_parts(server.port, 10)
    ids = [p[0] for p in parts]
    assert ids == sorted(ids) and len(set(ids)) == 10
    img = cv2.imdecode(__import__("numpy").frombuffer(parts[-1][2], "uint8"), cv2.IMREAD_COLOR)
    assert img.shape == (540, 960, 3)


def test_one_encode_per_frame_for_three_clients(server):
    results = []
    threads = [threading.Thread(target=lambda: results.append(read_parts(server.port, 30)), name=f"r{i}")
               for i in range(3)]
    e0, f0 = server.broadcaster.encodes, server.broadcaster.frames_seen
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    e1, f1 = server.broadcaster.encodes, server.broadcaster.frames_seen
    assert len(results) == 3
    # Three viewers of the same variant: encodes never exceed frames seen.
    assert e1 - e0 <= f1 - f0 + 1
    shared = set(p[0] for p in results[0]) & set(p[0] for p in results[1]) & set(p[0] for p in results[2])
    assert len(shared) >= 10, "three viewers should receive mostly the same frames"


def test_fps_and_quality_caps(server):
    t0 = time.monotonic()
    parts = read_parts(server.port, 6, query="fps=5&quality=20")
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.8  # 6 parts at 5 fps take at least 1 s minus the first
    small = len(parts[-1][2])
    big = len(read_parts(server.port, 2, query="fps=30&quality=95")[-1][2])
    assert small < big / 2


def test_ffprobe_and_opencv_read_the_stream(server):
    url = f"http://127.0.0.1:{server.port}/stream.mjpg?fps=30"
    out = subprocess.run(["ffprobe", "-v", "error", "-f", "mpjpeg", "-show_entries", "stream=codec_name,width,height",
                          "-of", "json", "-rw_timeout", "5000000", url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)["streams"][0]
    assert (s["codec_name"], s["width"], s["height"]) == ("mjpeg", 960, 540)
    out = subprocess.run(["ffmpeg", "-v", "error", "-f", "mpjpeg", "-i", url, "-frames:v", "20", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        got = 0
        for _ in range(10):
            ok, img = cap.read()
            got += ok
        assert got == 10 and img.shape == (540, 960, 3)
    finally:
        cap.release()


def test_slow_client_does_not_slow_others_and_vanished_client_is_freed(server):
    # A client that connects and never reads.
    stalled = socket.create_connection(("127.0.0.1", server.port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg?fps=30&quality=95 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    t0 = time.monotonic()
    parts = read_parts(server.port, 30)
    assert time.monotonic() - t0 < 3.0  # 30 fps feed: about 1 s; the stalled viewer costs nothing
    assert len(parts) == 30
    # The stalled viewer piles up drops, not memory.
    viewers = server.broadcaster.stats()["viewers"]
    assert any(v["dropped"] > 0 for v in viewers)
    stalled.close()
    deadline = time.monotonic() + 10
    while server.viewer_count() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.viewer_count() == 0, "a vanished viewer was not freed within seconds"


def test_nearby_qualities_share_one_encode(server):
    """Viewers asking quality 81..89 shared no encode: each distinct value cost one per frame."""
    results = []
    threads = [threading.Thread(target=lambda q=q: results.append(read_parts(server.port, 20, f"fps=30&quality={q}")),
                                name=f"q{q}") for q in range(81, 90)]
    e0, f0 = server.broadcaster.encodes, server.broadcaster.frames_seen
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    e1, f1 = server.broadcaster.encodes, server.broadcaster.frames_seen
    assert len(results) == 9
    assert e1 - e0 <= 2 * (f1 - f0) + 2, (e1 - e0, f1 - f0)  # quality 80 and 90 only
