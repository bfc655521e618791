"""Frame sources: USB camera, video file, image folder, RTSP / HTTP MJPEG stream.

`SourceConfig.parse(spec)` turns a `--source` spec (see docs/runtime-api.md) into a typed config;
`CaptureThread` reads it on its own thread and keeps only the newest frame (latest wins, drops
counted). Every open and read is bounded in time; a source that stops delivering or keeps
returning the same image is reported `stalled` within about `stall_timeout_s` and reopened with
backoff. `iter_frames` reads a file or folder synchronously (batch runs, tests, benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .types import Frame, SourceState

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SourceError(ValueError):
    """A source spec that cannot be understood; the message says what is allowed."""


class SourceConfig(BaseModel):
    """What to capture from. Build it with `SourceConfig.parse(spec)` or directly."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["camera", "file", "folder", "stream"]
    path: str  # camera index ("0") or device path, file / folder path, or stream URL
    spec: str = ""  # the text this was parsed from, for status and logs
    # camera options (V4L2)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    fps: float | None = Field(default=None, gt=0)
    fourcc: str | None = Field(default=None, min_length=4, max_length=4)
    # file / folder options
    loop: bool | None = None  # None: files loop, folders do not
    paced: bool = True  # False: as fast as the consumer takes frames, none dropped (batch)
    rate: float = Field(default=2.0, gt=0, le=1000)  # folder images per second when paced
    # Folder images above this many pixels are skipped before decoding: a small file can claim
    # 30000x30000 pixels (a decompression bomb) and take a minute and gigabytes to decode.
    max_pixels: int = Field(default=100_000_000, gt=0)
    # network options
    open_timeout_s: float = Field(default=5.0, gt=0, le=120)
    read_timeout_s: float = Field(default=2.0, gt=0, le=120)  # a hung stream is reopened after this

    @property
    def looping(self) -> bool:
        return self.loop if self.loop is not None else self.kind == "file"

    @property
    def camera_index(self) -> int | None:
        return int(self.path) if self.kind == "camera" and self.path.isdigit() else None

    @classmethod
    def parse(cls, spec: str) -> SourceConfig:
        """Understands `0`, `camera:0`, `/dev/video0`, `camera:/dev/video0?width=..`,
        `/path/clip.mp4`, `file:/path?loop=1&paced=1`, `/path/dir/`, `folder:/path?rate=2&loop=0`,
        `rtsp://...`, `http://.../video.mjpg`. Raises `SourceError` with what is allowed."""
        text = (spec or "").strip()
        if not text:
            raise SourceError("empty source spec: give a camera index (0), a file, a folder or a URL")
        if text.lower().startswith(STREAM_SCHEMES):
            # Query strings belong to the URL itself; only our own keys would be ambiguous.
            return cls(kind="stream", path=text, spec=text)
        kind: str | None = None
        body = text
        for prefix in ("camera:", "file:", "folder:", "stream:"):
            if text.lower().startswith(prefix):
                kind, body = prefix[:-1], text[len(prefix):]
                break
        query: dict[str, str] = {}
        if "?" in body:
            body, _, qs = body.partition("?")
            for key, values in parse_qs(qs, keep_blank_values=True).items():
                query[key] = values[-1]
        if kind is None:
            if body.isdigit() or body.startswith("/dev/video"):
                kind = "camera"
            elif body.endswith(("/", os.sep)) or os.path.isdir(body):
                kind = "folder"
            else:
                kind = "file"
        allowed = {
            "camera": {"width", "height", "fps", "fourcc"},
            "file": {"loop", "paced"},
            "folder": {"loop", "paced", "rate", "max_pixels"},
            "stream": {"open_timeout_s", "read_timeout_s"},
        }[kind]
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise SourceError(f"source {text!r}: unknown option(s) {', '.join(unknown)}; "
                              f"a {kind} source allows: {', '.join(sorted(allowed))}")
        values: dict[str, object] = {}
        for key, raw in query.items():
            if key in {"loop", "paced"}:
                if raw.lower() not in _TRUE | _FALSE:
                    raise SourceError(f"source {text!r}: {key}={raw!r}; use {key}=1 or {key}=0")
                values[key] = raw.lower() in _TRUE
            elif key == "fourcc":
                values[key] = raw
            else:
                values[key] = raw
        if kind == "folder":
            body = body.rstrip("/") or "/"
        try:
            return cls(kind=kind, path=body, spec=text, **values)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise SourceError(f"source {text!r}: {problems}") from None


# -- readers -------------------------------------------------------------------------------------
class _OpenFailed(Exception):
    def __init__(self, reason: str, retry: bool):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _VideoReader:
    """cv2.VideoCapture for cameras, files and streams, with bounded opens and reads."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.cap: cv2.VideoCapture | None = None
        self.fps = 0.0
        self.pos = 0

    def open(self) -> None:
        cfg = self.cfg
        if cfg.kind == "file":
            path = Path(cfg.path)
            if not path.is_file():
                raise _OpenFailed(f"video file not found: {path} (check the path in the source spec)",
                                  retry=False)
            cap = cv2.VideoCapture(str(path))
            if not cap.isOpened():
                raise _OpenFailed(f"cannot decode {path}: not a video OpenCV can read "
                                  "(try an .mp4/.avi with H.264 or MJPEG)", retry=False)
        elif cfg.kind == "camera":
            target: int | str = cfg.camera_index if cfg.camera_index is not None else cfg.path
            if isinstance(target, str) and not os.path.exists(target):
                raise _OpenFailed(f"camera {target} not present: plug it in or check the device "
                                  "path (ls /dev/video*); retrying", retry=True)
            if isinstance(target, int) and os.name == "posix" and not os.path.exists(f"/dev/video{target}"):
                raise _OpenFailed(f"camera {target} not present (/dev/video{target} missing): plug it "
                                  "in, or pass the container the device; retrying", retry=True)
            api = cv2.CAP_V4L2 if os.name == "posix" else cv2.CAP_ANY
            cap = cv2.VideoCapture(target, api)
            if not cap.isOpened():
                raise _OpenFailed(f"camera {target} could not be opened (busy or no permission: "
                                  "is another program using it, is the user in group 'video'?); "
                                  "retrying", retry=True)
            if cfg.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
            if cfg.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            if cfg.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            if cfg.fps:
                cap.set(cv2.CAP_PROP_FPS, cfg.fps)
            # A deep driver queue hands out stale frames: keep one.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:  # stream
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cfg.open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000)]
            cap = cv2.VideoCapture(cfg.path, cv2.CAP_FFMPEG, params)
            if not cap.isOpened():
                raise _OpenFailed(f"stream {cfg.path} did not open within {cfg.open_timeout_s:g} s "
                                  "(check the URL, network and camera); retrying", retry=True)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 0.0
        self.pos = 0

    def read(self) -> tuple[np.ndarray | None, int, str]:
        assert self.cap is not None
        ok, img = self.cap.read()
        if not ok or img is None:
            return None, -1, ""
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        pos = self.pos
        self.pos += 1
        return img, pos, ""

    def rewind(self) -> bool:
        if self.cap is None:
            return False
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self.pos = 0
        return True

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _FolderReader:
    """Images of a folder in name order; unreadable files are skipped, counted and named."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        self.files: list[Path] = []
        self.index = 0
        self.fps = cfg.rate
        self.skipped: dict[str, str] = {}

    def open(self) -> None:
        folder = Path(self.cfg.path)
        if not folder.is_dir():
            raise _OpenFailed(f"image folder not found: {folder} (check the path in the source spec)",
                              retry=False)
        self.files = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                            key=lambda p: p.name)
        self.index = 0
        if not self.files:
            raise _OpenFailed(f"image folder {folder} is empty: put .png/.jpg images in it",
                              retry=False)

    def read(self) -> tuple[np.ndarray | None, int, str]:
        while self.index < len(self.files):
            path = self.files[self.index]
            pos = self.index
            self.index += 1
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                self.skipped.setdefault(path.name, "not an image file (by extension)")
                continue
            try:
                size = image_size(path)
                if size is not None and size[0] * size[1] > self.cfg.max_pixels:
                    self.skipped.setdefault(path.name, f"too large: {size[0]}x{size[1]} pixels, over the "
                                            f"limit of {self.cfg.max_pixels} (folder option max_pixels)")
                    continue
                data = np.fromfile(str(path), dtype=np.uint8)
                img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            except (OSError, cv2.error) as exc:
                img = None
                self.skipped.setdefault(path.name, f"unreadable: {exc}")
            if img is None:
                self.skipped.setdefault(path.name, "corrupt or unsupported image")
                continue
            return img, pos, path.name
        return None, -1, ""

    def rewind(self) -> bool:
        self.index = 0
        return any(p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in self.skipped for p in self.files)

    def close(self) -> None:
        pass


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from an image file's header without decoding it: PNG, JPEG, BMP, WebP,
    TIFF, PGM/PPM. None when the header is not recognised (the decoder then decides)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:2] == b"BM" and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = head[12:16]
            if kind == b"VP8 " and len(head) >= 30:
                w, h = struct.unpack("<HH", head[26:30])
                return w & 0x3FFF, h & 0x3FFF
            if kind == b"VP8L" and len(head) >= 25:
                b = head[21:25]
                return 1 + (((b[1] & 0x3F) << 8) | b[0]), 1 + (((b[3] & 0xF) << 10) | (b[2] << 2) | (b[1] >> 6))
            if kind == b"VP8X" and len(head) >= 30:
                return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
            return None
        if head[:2] in (b"P5", b"P6", b"P2", b"P3"):
            tokens = []
            for line in head.split(b"\n")[:6]:
                tokens += line.split(b"#")[0].split()
            try:
                return int(tokens[1]), int(tokens[2])
            except (IndexError, ValueError):
                return None
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(f, "<" if head[:2] == b"II" else ">")
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(f)
    return None


def _jpeg_size(f) -> tuple[int, int] | None:
    import struct

    f.seek(2)
    for _ in range(1000):  # segments; a real JPEG reaches its frame header within a few
        b = f.read(1)
        while b == b"\xff":
            b = f.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        raw = f.read(2)
        if len(raw) < 2:
            return None
        length = struct.unpack(">H", raw)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                return None
            h, w = struct.unpack(">HH", sof[1:5])
            return w, h
        f.seek(length - 2, 1)
    return None


def _tiff_size(f, order: str) -> tuple[int, int] | None:
    import struct

    f.seek(4)
    (ifd,) = struct.unpack(order + "I", f.read(4))
    f.seek(ifd)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    (n,) = struct.unpack(order + "H", raw)
    w = h = None
    for _ in range(min(n, 500)):
        entry = f.read(12)
        if len(entry) < 12:
            break
        tag, typ = struct.unpack(order + "HH", entry[:4])
        value = struct.unpack(order + ("H" if typ == 3 else "I"), entry[8:10] if typ == 3 else entry[8:12])[0]
        if tag == 256:
            w = value
        elif tag == 257:
            h = value
    return (w, h) if w and h else None


def _make_reader(cfg: SourceConfig):
    return _FolderReader(cfg) if cfg.kind == "folder" else _VideoReader(cfg)


def iter_frames(config: SourceConfig | str, *, max_frames: int | None = None) -> Iterator[Frame]:
    """Every frame of a file or folder, in order, as fast as the caller takes them (no pacing,
    no drops, no loop). For batch runs, tests and benchmarks. Raises `SourceError` if it cannot
    open."""
    cfg = SourceConfig.parse(config) if isinstance(config, str) else config
    if cfg.kind not in ("file", "folder"):
        raise SourceError("iter_frames reads files and folders only; use CaptureThread for live sources")
    reader = _make_reader(cfg)
    try:
        reader.open()
    except _OpenFailed as exc:
        raise SourceError(exc.reason) from None
    try:
        fid = 0
        while max_frames is None or fid < max_frames:
            img, pos, name = reader.read()
            if img is None:
                return
            fid += 1
            yield Frame(image=img, frame_id=fid, timestamp=time.time(), monotonic=time.monotonic(),
                        source_pos=pos, source_name=name)
    finally:
        reader.close()


def _signature(img: np.ndarray) -> bytes:
    # A sparse sample is enough to tell a frozen camera (identical bytes) from a live one (noise).
    return hashlib.blake2b(np.ascontiguousarray(img[::17, ::13]).tobytes(), digest_size=16).digest()


class CaptureThread:
    """Reads a source on a thread; `wait_frame` hands out the newest frame (latest wins).

    States: connecting → live; stalled (no new frame / same frame for `stall_timeout_s`) →
    reconnecting (backoff 0.5 s doubling to 10 s); ended (file/folder done, no loop); failed
    (with `reason`; cameras and streams keep retrying, files and folders stop).
    A folder never drops an image (each is a part), nor does a file with `paced=False`: the thread
    waits for the consumer.
    """

    def __init__(self, config: SourceConfig | str, *, stall_timeout_s: float = 1.0,
                 on_state: Callable[[SourceState, str], None] | None = None):
        self.config = SourceConfig.parse(config) if isinstance(config, str) else config
        self.stall_timeout_s = stall_timeout_s
        self.on_state = on_state
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = SourceState.CONNECTING
        self._reason = "not started"
        self._latest: Frame | None = None
        self._taken_id = 0
        self._next_id = 0
        self._captured = 0
        self._dropped = 0
        self._fps_in = 0.0
        self._last_mono = 0.0
        self._size = (0, 0)
        self._reader = None
        self._reconnects = 0

    # -- public ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts the capture thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.config.kind}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stops the thread and releases the device; waits at most `timeout` seconds."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread did not stop within %.1f s (blocked in a read)", timeout)

    def wait_frame(self, after_id: int, timeout: float) -> Frame | None:
        """The newest frame with `frame_id > after_id`, waiting at most `timeout` s; else None."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while True:
                f = self._latest
                if f is not None and f.frame_id > after_id:
                    if f.frame_id > self._taken_id:
                        self._taken_id = f.frame_id
                        self._cond.notify_all()
                    return f
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or self._state in (SourceState.ENDED,) and (
                        f is None or f.frame_id <= after_id):
                    return None
                self._cond.wait(min(left, 0.25))

    @property
    def state(self) -> SourceState:
        with self._cond:
            st = self._state
            # A read that blocks inside the driver cannot report itself: the age of the last
            # frame can (an unplugged camera, a stream that hangs).
            if st == SourceState.LIVE and self._last_mono and self.config.paced and (
                    time.monotonic() - self._last_mono > self.stall_timeout_s + self._frame_period()):
                return SourceState.STALLED
            return st

    @property
    def reason(self) -> str:
        with self._cond:
            if self.state == SourceState.STALLED and self._state == SourceState.LIVE:
                return f"no new frame for {time.monotonic() - self._last_mono:.1f} s"
            return self._reason

    @property
    def ended(self) -> bool:
        return self._state == SourceState.ENDED

    def stats(self) -> dict:
        """Counters and state for /api/status."""
        with self._cond:
            skipped = dict(self._reader.skipped) if isinstance(self._reader, _FolderReader) else {}
            state = self.state
            return {
                "spec": self.config.spec or self.config.path,
                "kind": self.config.kind,
                "state": state.value,
                "reason": self.reason,
                # The rate of the last live spell would read as a healthy feed on a dead camera.
                "fps_in": round(self._fps_in, 2) if state == SourceState.LIVE else 0.0,
                "frames_captured": self._captured,
                "frames_dropped": self._dropped,
                "width": self._size[0],
                "height": self._size[1],
                "files_skipped": len(skipped),
                "skipped_files": skipped,
                "reconnects": self._reconnects,
            }

    # -- thread ----------------------------------------------------------------------------------
    def _frame_period(self) -> float:
        if self.config.kind == "folder":
            return 1.0 / self.config.rate
        reader = self._reader
        fps = getattr(reader, "fps", 0.0) or 0.0
        return 1.0 / fps if fps > 0 else 0.0

    def _set_state(self, state: SourceState, reason: str) -> None:
        with self._cond:
            changed = state != self._state or reason != self._reason
            self._state, self._reason = state, reason
            self._cond.notify_all()
        if changed:
            log.info("source %s: %s %s", self.config.spec or self.config.path, state.value, reason)
            if self.on_state is not None:
                try:
                    self.on_state(state, reason)
                except Exception:  # a bad callback must not kill capture
                    log.exception("on_state callback failed")

    def _publish(self, img: np.ndarray, pos: int, name: str) -> bool:
        # Each image of a folder is a part: pacing sets its rate, but one is never dropped for
        # a newer one (at rate=200, 27 of 40 images were never inspected). Unpaced files too.
        lossless = self.config.kind == "folder" or (not self.config.paced and self.config.kind == "file")
        with self._cond:
            if lossless:
                while self._latest is not None and self._taken_id < self._latest.frame_id:
                    if self._stop.is_set():
                        return False
                    self._cond.wait(0.25)
            elif self._latest is not None and self._taken_id < self._latest.frame_id:
                self._dropped += 1
            self._next_id += 1
            now_m = time.monotonic()
            if self._last_mono:
                dt = now_m - self._last_mono
                if dt > 0:
                    inst = 1.0 / dt
                    self._fps_in = inst if self._fps_in == 0 else 0.9 * self._fps_in + 0.1 * inst
            self._last_mono = now_m
            self._captured += 1
            self._size = (int(img.shape[1]), int(img.shape[0]))
            self._latest = Frame(image=img, frame_id=self._next_id, timestamp=time.time(),
                                 monotonic=now_m, source_pos=pos, source_name=name)
            self._cond.notify_all()
        return True

    def _sleep(self, seconds: float) -> bool:
        """Sleeps unless stopped; True if stopped."""
        return self._stop.wait(max(0.0, seconds))

    def _run(self) -> None:
        cfg = self.config
        backoff = 0.5
        first = True
        try:
            while not self._stop.is_set():
                self._set_state(SourceState.CONNECTING if first else SourceState.RECONNECTING,
                                "opening" if first else f"reopening after {self._reason}")
                reader = _make_reader(cfg)
                with self._cond:
                    self._reader = reader
                try:
                    reader.open()
                except _OpenFailed as exc:
                    self._set_state(SourceState.FAILED, exc.reason)
                    if not exc.retry:
                        return
                    if self._sleep(backoff):
                        return
                    backoff = min(backoff * 2, 10.0)
                    first = False
                    continue
                before = self._captured
                outcome = self._read_loop(reader)
                reader.close()
                if outcome in ("ended", "stopped"):
                    return
                if self._captured > before:
                    backoff = 0.5  # it worked for a while: start the backoff over
                first = False
                if cfg.kind in ("file", "folder") and outcome == "failed":
                    return
                self._reconnects += 1
                if self._sleep(backoff):
                    return
                backoff = min(backoff * 2, 10.0)
        finally:
            reader = self._reader
            if reader is not None:
                reader.close()
            with self._cond:
                self._cond.notify_all()

    def _read_loop(self, reader) -> str:
        cfg = self.config
        live_kind = cfg.kind in ("camera", "stream")
        period = self._frame_period() if cfg.paced else 0.0
        next_due = time.monotonic()
        last_sig = b""
        same_since = 0.0
        last_good = time.monotonic()
        got_any = False
        while not self._stop.is_set():
            img, pos, name = reader.read()
            now = time.monotonic()
            if img is None:
                if not live_kind:
                    if cfg.looping and reader.rewind() and got_any:
                        got_any = False
                        continue
                    if not got_any and cfg.kind == "file":
                        self._set_state(SourceState.FAILED, f"{cfg.path}: no frame could be decoded")
                        return "failed"
                    if not got_any and cfg.kind == "folder":
                        self._set_state(SourceState.FAILED, f"{cfg.path}: no readable image in the folder "
                                        f"({len(reader.skipped)} skipped)")
                        return "failed"
                    self._set_state(SourceState.ENDED, "end of file" if cfg.kind == "file" else
                                    f"all images read ({len(reader.skipped)} skipped)")
                    return "ended"
                if now - last_good > self.stall_timeout_s:
                    self._set_state(SourceState.STALLED, f"no frame for {now - last_good:.1f} s")
                    return "stalled"
                self._sleep(0.02)
                continue
            if live_kind:
                sig = _signature(img)
                if sig == last_sig:
                    if now - same_since > self.stall_timeout_s:
                        self._set_state(SourceState.STALLED,
                                        f"same image for {now - same_since:.1f} s (frozen camera?)")
                        return "stalled"
                    continue
                last_sig, same_since = sig, now
            last_good = now
            if not got_any:
                got_any = True
                self._set_state(SourceState.LIVE, "")
            elif self._state != SourceState.LIVE:
                self._set_state(SourceState.LIVE, "")
            if period > 0:
                # Pace like a camera: hold each frame until its time; never catch up in bursts.
                delay = next_due - time.monotonic()
                if delay > 0 and self._sleep(delay):
                    return "stopped"
                next_due = max(next_due + period, time.monotonic() - period)
            if not self._publish(img, pos, name):
                return "stopped"
        return "stopped"
