"""A tiny real HTTP server speaking the runtime's wire contract, for client tests that must
run before (or without) the real runtime: real sockets, real JPEGs from real footage."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import cv2
from aiohttp import web


def jpeg_frames(video_path, count: int = 30, width: int = 640) -> list[bytes]:
    cap = cv2.VideoCapture(str(video_path))
    out = []
    try:
        while len(out) < count:
            ok, img = cap.read()
            if not ok:
                break
            h = int(img.shape[0] * width / img.shape[1])
            img = cv2.resize(img, (width, h))
            out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes())
    finally:
        cap.release()
    assert out, f"no frames decoded from {video_path}"
    return out


class TinyServer:
    def __init__(self, port: int, jpegs: list[bytes], token: str = "tok", fps: float = 30.0,
                 content_length: bool = True):
        self.port, self.jpegs, self.token, self.fps = port, jpegs, token, fps
        self.content_length = content_length
        self.results = [{"id": i, "frame_id": i * 3, "verdict": "PASS" if i % 3 else "FAIL"} for i in range(1, 11)]
        self.last_event_ids: list[str | None] = []
        self.cut_events_after = 0  # >0: close the event stream after that many events
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.stream_connects = 0
        self._runner = None

    def _auth(self, request) -> None:
        tok = request.headers.get("Authorization", "").removeprefix("Bearer ") or request.query.get("token")
        if tok != self.token:
            raise web.HTTPUnauthorized(text=json.dumps({"error": "missing or wrong token"}),
                                       content_type="application/json")

    async def health(self, request):
        return web.json_response({"ok": True, "frame_age_s": 0.01, "source_state": "live"})

    async def status(self, request):
        self._auth(request)
        return web.json_response({"runtime_version": "tiny", "api_version": "1.0", "uptime_s": 1.0})

    async def recipe_put(self, request):
        self._auth(request)
        text = await request.text()
        if "bad" in text:
            return web.json_response({"error": "recipe invalid", "errors": [
                {"line": 3, "field": "tools.0.min_mm", "message": "must be a number"}]}, status=422)
        return web.json_response({"name": "demo", "version": "2"})

    async def csv(self, request):
        self._auth(request)
        lines = ["id,ts,verdict"] + [f"{r['id']},{1000 + r['id']},{r['verdict']}" for r in self.results]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/csv")

    async def stream(self, request):
        self._auth(request)
        self.stream_connects += 1
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=helioframe"})
        await resp.prepare(request)
        i = 0
        try:
            while True:
                jpg = self.jpegs[i % len(self.jpegs)]
                head = (f"--helioframe\r\nContent-Type: image/jpeg\r\n"
                        + (f"Content-Length: {len(jpg)}\r\n" if self.content_length else "")
                        + f"X-Frame-Id: {i}\r\nX-Timestamp: {time.time():.6f}\r\n\r\n")
                await resp.write(head.encode() + jpg + b"\r\n")
                i += 1
                await asyncio.sleep(1.0 / self.fps)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def events(self, request):
        self._auth(request)
        last = request.headers.get("Last-Event-ID")
        self.last_event_ids.append(last)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        start = int(last) if last else 0
        sent = 0
        try:
            await resp.write(b": keepalive\n\n")
            for r in self.results:
                if r["id"] <= start:
                    continue
                await resp.write(f"event: result\nid: {r['id']}\ndata: {json.dumps(r)}\n\n".encode())
                sent += 1
                if self.cut_events_after and sent >= self.cut_events_after:
                    self.cut_events_after = 0
                    return resp  # drop the link mid-way: the client must resume after the last id
                await asyncio.sleep(0.01)
            while True:
                await resp.write(b"event: status\ndata: {\"uptime_s\": 2}\n\n")
                await asyncio.sleep(0.2)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    def start(self) -> "TinyServer":
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_get("/api/health", self.health)
            app.router.add_get("/api/status", self.status)
            app.router.add_put("/api/recipe", self.recipe_put)
            app.router.add_get("/api/results.csv", self.csv)
            app.router.add_get("/stream.mjpg", self.stream)
            app.router.add_get("/api/events", self.events)
            self._runner = web.AppRunner(app, shutdown_timeout=0.5)
            self.loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self.loop.run_until_complete(site.start())
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self._runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, name="TinyServer", daemon=True)
        self.thread.start()
        assert ready.wait(10), "tiny server did not start"
        return self

    def stop(self) -> None:
        if self.loop and self.thread and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
