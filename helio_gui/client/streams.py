"""Background readers of the runtime's two streams: MJPEG frames and server-sent events.

Both are plain threads (Qt-free). They reconnect with backoff and report their connection
state through callbacks, which run on the reader thread: a callback must only hand plain data
on (the GUI emits a queued Qt signal from it).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlencode

import cv2
import numpy as np

BOUNDARY = b"--helioframe"


@dataclass(frozen=True, slots=True)
class StreamFrame:
    """One decoded frame: BGR uint8 (H, W, 3), never written to after decoding."""

    image: np.ndarray
    frame_id: int  # X-Frame-Id, or -1 when the server sent none
    timestamp: float  # X-Timestamp (capture time, time.time()), or arrival time
    received: float  # time.monotonic() when the last byte arrived
    decoded: float  # time.monotonic() when decoding finished
    seq: int  # frames decoded by this reader so far (counts every one, for drop accounting)
    # (width, height) of the frame as sent; larger than `image` when it was decoded reduced.
    full_size: tuple[int, int] = (0, 0)

    @property
    def scale(self) -> float:
        """`image` pixels per sent-frame pixel (1.0, 0.5, 0.25 or 0.125)."""
        return self.image.shape[1] / self.full_size[0] if self.full_size[0] else 1.0


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
# Start-of-frame markers (baseline, extended, progressive, lossless...): not DHT/JPG/DAC.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame header without decoding it, or None."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg = (data[i + 2] << 8) | data[i + 3]
        if marker in _SOF:
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            return (w, h) if w and h else None
        i += 2 + seg
    return None


def reduction_for(full: tuple[int, int], box: tuple[int, int] | None) -> int:
    """The largest JPEG scale-down (1, 2, 4 or 8) that still gives at least one image pixel per
    display pixel when a `full`-sized frame is fitted into `box` (device pixels, zoom included)."""
    if not box or not full[0] or not full[1] or box[0] <= 0 or box[1] <= 0:
        return 1
    fit = min(box[0] / full[0], box[1] / full[1])  # display pixels per frame pixel
    for r, _flag in _REDUCED:
        if fit * r <= 1.0:
            return r
    return 1


# A restarted/updated runtime is back within a fraction of a second: a cap much above 0.5 s
# leaves the feed black for seconds after the runtime is already serving again.
RECONNECT_BACKOFF = (0.1, 0.5)


class _StreamThread(threading.Thread):
    """Shared connect / backoff / stop logic. Subclasses implement `_consume(resp)`."""

    path = "/"

    def __init__(self, host: str, port: int, token: str = "", *, name: str,
                 on_state: Callable[[str, str], None] | None = None,
                 connect_timeout: float = 2.0, read_timeout: float = 5.0,
                 backoff: tuple[float, float] = RECONNECT_BACKOFF):
        super().__init__(name=name, daemon=True)
        self.host, self.port, self.token = host, port, token
        self.on_state = on_state
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.backoff_min, self.backoff_max = backoff
        self.state = "connecting"
        self.reason = ""
        self.reconnects = 0
        self._stop_evt = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._conn_lock = threading.Lock()

    # -- control -----------------------------------------------------------------------------
    def stop(self, timeout: float = 3.0) -> bool:
        """Asks the thread to end, unblocks its socket read, and joins. True when it ended."""
        self._stop_evt.set()
        with self._conn_lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                # shutdown() (not close) wakes a recv() blocked in the reader thread at once.
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop_evt.is_set()

    def _set_state(self, state: str, reason: str = "") -> None:
        if (state, reason) == (self.state, self.reason):
            return
        self.state, self.reason = state, reason
        if self.on_state:
            try:
                self.on_state(state, reason)
            except Exception:  # a broken callback must not kill the reader
                pass

    def _request_headers(self) -> dict[str, str]:
        h = {"Connection": "close"}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def _query(self) -> str:
        return ""

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> None:
        delay = self.backoff_min
        while not self._stop_evt.is_set():
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
            with self._conn_lock:
                self._conn = conn
            got_data = False
            try:
                path = self.path + (("?" + self._query()) if self._query() else "")
                conn.request("GET", path, headers=self._request_headers())
                conn.sock.settimeout(self.read_timeout)
                resp = conn.getresponse()
                if resp.status != 200:
                    body = resp.read(500).decode("utf-8", "replace")
                    try:
                        body = json.loads(body).get("error", body)
                    except (ValueError, AttributeError):
                        pass
                    hint = " (wrong token?)" if resp.status == 401 else ""
                    raise ConnectionError(f"HTTP {resp.status}{hint}: {body}")
                self._set_state("live", "")
                delay = self.backoff_min  # a good connection: the next outage starts fast again
                got_data = self._consume(resp)
                if not self._stop_evt.is_set():
                    raise ConnectionError("the runtime closed the stream")
            except (OSError, http.client.HTTPException, ConnectionError, ValueError) as exc:
                if self._stop_evt.is_set():
                    break
                reason = str(exc) or type(exc).__name__
                if isinstance(exc, (socket.timeout, TimeoutError)):
                    reason = f"no data for {self.read_timeout:.0f} s"
                elif isinstance(exc, ConnectionRefusedError):
                    reason = f"connection refused at {self.host}:{self.port} (runtime not running?)"
                self._set_state("reconnecting", f"{reason}; retrying in {delay:.1f} s")
            finally:
                with self._conn_lock:
                    self._conn = None
                conn.close()
            if self._stop_evt.is_set():
                break
            self.reconnects += 1
            if got_data:
                delay = self.backoff_min  # the link worked for a while: retry quickly
            self._stop_evt.wait(delay)
            delay = min(self.backoff_max, delay * 2)
        self._set_state("stopped", "")

    def _consume(self, resp: http.client.HTTPResponse) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class MjpegReader(_StreamThread):
    """Reads ``/stream.mjpg`` and decodes each JPEG on this thread.

    Only the newest decoded frame is kept (one slot). A frame replaced before anyone took it
    is counted in `frames_dropped`. `on_frame()` (no arguments) is called after each new frame,
    so a view can schedule a repaint and then `take()` the newest frame when it paints.
    """

    path = "/stream.mjpg"

    def __init__(self, host: str, port: int, token: str = "", *, overlay: bool = False,
                 quality: int | None = None, fps: float | None = None,
                 on_frame: Callable[[], None] | None = None, **kw):
        kw.setdefault("name", "MjpegReader")
        super().__init__(host, port, token, **kw)
        self.overlay, self.quality, self.fps = overlay, quality, fps
        self.on_frame = on_frame
        self._slot: StreamFrame | None = None
        self._slot_lock = threading.Lock()
        self.frames_decoded = 0
        self.frames_dropped = 0
        self.bad_parts = 0
        self.last_frame_mono = 0.0
        # The size the frame is shown at, in device pixels (zoom included), set by the view from
        # any thread (a tuple swap is atomic). Frames are decoded reduced in the JPEG decoder when
        # that loses nothing on screen: half the pixels cost about half the decode time. None:
        # always full size.
        self.display_box: tuple[int, int] | None = None
        self.frames_reduced = 0

    def _query(self) -> str:
        q: dict[str, object] = {"overlay": int(self.overlay)}
        if self.quality:
            q["quality"] = self.quality
        if self.fps:
            q["fps"] = self.fps
        return urlencode(q)

    def take(self) -> StreamFrame | None:
        """The newest frame not yet taken (and empties the slot), or None."""
        with self._slot_lock:
            f, self._slot = self._slot, None
        return f

    def peek(self) -> StreamFrame | None:
        with self._slot_lock:
            return self._slot

    def _publish(self, frame: StreamFrame) -> None:
        with self._slot_lock:
            if self._slot is not None:
                self.frames_dropped += 1  # latest wins: the unshown frame is discarded
            self._slot = frame
        self.last_frame_mono = frame.decoded
        if self.on_frame:
            try:
                self.on_frame()
            except Exception:
                pass

    def _consume(self, resp: http.client.HTTPResponse) -> bool:
        buf = bytearray()
        got = False

        def fill() -> None:
            chunk = resp.read1(256 * 1024)
            if not chunk:
                raise ConnectionError("the runtime closed the stream")
            buf.extend(chunk)

        while not self._stop_evt.is_set():
            # Find the boundary line, then the part headers.
            while True:
                start = buf.find(BOUNDARY)
                if start >= 0:
                    end = buf.find(b"\r\n\r\n", start)
                    if end >= 0:
                        break
                elif len(buf) > len(BOUNDARY):
                    del buf[: len(buf) - len(BOUNDARY)]  # keep a possible partial boundary
                fill()
            header_text = bytes(buf[start + len(BOUNDARY): end]).decode("latin-1")
            del buf[: end + 4]
            headers: dict[str, str] = {}
            for line in header_text.split("\r\n"):
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = headers.get("content-length")
            if length is not None and length.isdigit():
                n = int(length)
                while len(buf) < n:
                    fill()
                jpeg = bytes(buf[:n])
                del buf[:n]
            else:  # no length: the part ends at the next boundary
                while (nxt := buf.find(BOUNDARY)) < 0:
                    fill()
                jpeg = bytes(buf[:nxt]).rstrip(b"\r\n")
                del buf[:nxt]
            received = time.monotonic()
            full = jpeg_size(jpeg) or (0, 0)
            r = reduction_for(full, self.display_box)
            flag = dict(_REDUCED).get(r, cv2.IMREAD_COLOR)
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
            if r > 1 and image is not None:
                self.frames_reduced += 1
            if image is None:
                self.bad_parts += 1  # a corrupt part is skipped, the stream goes on
                continue
            try:
                frame_id = int(headers.get("x-frame-id", "-1"))
            except ValueError:
                frame_id = -1
            try:
                ts = float(headers.get("x-timestamp", ""))
            except ValueError:
                ts = time.time()
            self.frames_decoded += 1
            image.flags.writeable = False  # shared read-only with the GUI from here on
            if not full[0]:
                full = (image.shape[1], image.shape[0])
            self._publish(StreamFrame(image, frame_id, ts, received, time.monotonic(), self.frames_decoded, full))
            got = True
        return got


class EventStream(_StreamThread):
    """Reads ``/api/events`` (server-sent events).

    `on_event(kind, data, event_id)` gets each event with its JSON parsed. On reconnect it sends
    ``Last-Event-ID`` with the last result id seen, so the runtime replays what was missed.
    """

    path = "/api/events"

    def __init__(self, host: str, port: int, token: str = "", *,
                 on_event: Callable[[str, object, str | None], None] | None = None,
                 last_event_id: str | None = None, **kw):
        kw.setdefault("name", "EventStream")
        # Keepalives come every few seconds; allow a little more before calling the link dead.
        kw.setdefault("read_timeout", 10.0)
        super().__init__(host, port, token, **kw)
        self.on_event = on_event
        self.last_event_id = last_event_id
        self.events_received = 0

    def _request_headers(self) -> dict[str, str]:
        h = super()._request_headers()
        h["Accept"] = "text/event-stream"
        if self.last_event_id:
            h["Last-Event-ID"] = self.last_event_id
        return h

    def _consume(self, resp: http.client.HTTPResponse) -> bool:
        got = False
        kind, data_lines, ev_id = "message", [], None
        while not self._stop_evt.is_set():
            raw = resp.readline(1 << 20)
            if not raw:
                raise ConnectionError("the runtime closed the event stream")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if data_lines:
                    text = "\n".join(data_lines)
                    try:
                        data: object = json.loads(text)
                    except ValueError:
                        data = text
                    if ev_id is not None:
                        self.last_event_id = ev_id
                    self.events_received += 1
                    got = True
                    if self.on_event:
                        try:
                            self.on_event(kind, data, ev_id)
                        except Exception:
                            pass
                kind, data_lines, ev_id = "message", [], None
                continue
            if line.startswith(":"):
                continue  # keepalive comment
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                kind = value
            elif field == "data":
                data_lines.append(value)
            elif field == "id":
                ev_id = value
        return got
