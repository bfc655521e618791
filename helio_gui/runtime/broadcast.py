"""Newest-frame slot and the MJPEG broadcaster: one JPEG encode per frame for all viewers.

Threads: the inspection loop `put()`s frames into a `FrameSlot`; one encoder thread waits on
the slot, encodes each new frame once per (overlay, quality) variant that some viewer is due
for, and hands the same bytes to every such viewer's single-frame mailbox. Viewers are asyncio
tasks; a slow one only finds its mailbox overwritten (a counted drop), so nothing it does can
slow capture or inspection.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2

log = logging.getLogger(__name__)

BOUNDARY = "helioframe"
# How long after a part was inspected its overlay is drawn on the live stream.
OVERLAY_HOLD_S = 0.5


class FrameSlot:
    """Holds only the newest frame (latest wins) plus the newest inspection for overlays."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Any = None
        self._inspection: Any = None
        self._inspection_at = 0.0
        self._closed = False

    def put(self, frame: Any) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify_all()

    def put_inspection(self, inspection: Any) -> None:
        with self._cond:
            self._inspection = inspection
            self._inspection_at = time.monotonic()

    def latest(self) -> Any:
        with self._cond:
            return self._frame

    def inspection_for_overlay(self) -> Any:
        with self._cond:
            if self._inspection is not None and time.monotonic() - self._inspection_at <= OVERLAY_HOLD_S:
                return self._inspection
            return None

    def wait(self, after_id: int, timeout: float) -> Any:
        """The newest frame with frame_id > after_id, or None after `timeout` seconds or close."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed and (self._frame is None or self._frame.frame_id <= after_id):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return None if self._closed else self._frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(eq=False)
class Viewer:
    """One MJPEG client: a one-part mailbox, woken through its asyncio loop."""

    loop: asyncio.AbstractEventLoop
    overlay: bool
    quality: int
    interval: float  # seconds between parts (fps cap)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    part: bytes | None = None
    frame_id: int = -1
    sent: int = 0
    dropped: int = 0
    closed: bool = False
    next_due: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, part: bytes, frame_id: int) -> None:
        with self._lock:
            if self.part is not None:
                self.dropped += 1  # the client did not take the previous one in time
            self.part, self.frame_id = part, frame_id
        self._wake()

    def take(self) -> bytes | None:
        with self._lock:
            part, self.part = self.part, None
            if part is not None:
                self.sent += 1
            return part

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop is gone: the server is shutting down
            self.closed = True


def make_part(jpeg: bytes, frame_id: int, timestamp: float) -> bytes:
    """One RFC 2046 body part: boundary line, headers, blank line, JPEG, CRLF."""
    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Frame-Id: {frame_id}\r\nX-Timestamp: {timestamp:.6f}\r\n\r\n").encode("ascii")
    return head + jpeg + b"\r\n"


class MjpegBroadcaster:
    """Encodes frames from a `FrameSlot` once per variant and feeds every `Viewer`."""

    def __init__(self, slot: FrameSlot, draw_overlay: Callable[[Any, Any], Any] | None = None):
        self.slot = slot
        self.draw_overlay = draw_overlay
        self._viewers: set[Viewer] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.encodes = 0
        self.frames_seen = 0
        self.encode_s = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mjpeg-encoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ends every viewer and the encoder thread (the slot is closed: no frame comes after)."""
        self._stop.set()
        # Wakes the encoder at once: with capture already stopped it would sleep out its wait,
        # and this join runs on the event loop during SIGTERM.
        self.slot.close()
        with self._lock:
            viewers = list(self._viewers)
        for v in viewers:
            v.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def subscribe(self, *, overlay: bool = False, quality: int = 80, fps: float = 30.0) -> Viewer:
        """Registers a viewer; call from the asyncio loop that will read it."""
        v = Viewer(loop=asyncio.get_running_loop(), overlay=overlay, quality=int(quality),
                   interval=1.0 / fps if fps > 0 else 0.0)
        with self._lock:
            self._viewers.add(v)
        if self._stop.is_set():
            v.close()
        return v

    def unsubscribe(self, viewer: Viewer) -> None:
        with self._lock:
            self._viewers.discard(viewer)

    @property
    def viewer_count(self) -> int:
        with self._lock:
            return len(self._viewers)

    def stats(self) -> dict:
        with self._lock:
            viewers = [{"overlay": v.overlay, "quality": v.quality, "sent": v.sent, "dropped": v.dropped}
                       for v in self._viewers]
        return {"clients": len(viewers), "encodes": self.encodes, "frames_seen": self.frames_seen,
                "encode_ms_avg": round(self.encode_s / self.encodes * 1000, 2) if self.encodes else None,
                "viewers": viewers}

    def _run(self) -> None:
        last_id = -1
        while not self._stop.is_set():
            frame = self.slot.wait(last_id, timeout=0.25)
            if frame is None:
                continue
            last_id = frame.frame_id
            self.frames_seen += 1
            now = time.monotonic()
            with self._lock:
                due = [v for v in self._viewers if not v.closed and now >= v.next_due]
            if not due:
                continue
            groups: dict[tuple[bool, int], list[Viewer]] = {}
            for v in due:
                groups.setdefault((v.overlay, v.quality), []).append(v)
            for (overlay, quality), viewers in groups.items():
                try:
                    part = self._encode(frame, overlay, quality)
                except Exception:  # a bad overlay must not end the stream for everyone
                    log.exception("encoding frame %s for the stream failed", frame.frame_id)
                    continue
                for v in viewers:
                    # Keep the cadence without bursting after a pause.
                    if v.interval <= 0:
                        v.next_due = now
                    elif now - v.next_due > v.interval:
                        v.next_due = now + v.interval
                    else:
                        v.next_due += v.interval
                    v.offer(part, frame.frame_id)

    def _encode(self, frame: Any, overlay: bool, quality: int) -> bytes:
        image = frame.image
        if overlay and self.draw_overlay is not None:
            inspection = self.slot.inspection_for_overlay()
            if inspection is not None:
                image = self.draw_overlay(image, inspection)
        t0 = time.perf_counter()
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        self.encode_s += time.perf_counter() - t0
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        self.encodes += 1
        return make_part(buf.tobytes(), frame.frame_id, frame.timestamp)
