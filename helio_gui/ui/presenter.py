"""`RuntimePresenter`: one runtime's data for the views — frames, results, status, stats.

Owns the runtime client and its two stream threads. Stream callbacks run on those threads and
only emit queued signals with plain data; the views pull the newest frame when they paint.
"""

from __future__ import annotations

import threading
import time

from PySide6 import QtCore

from ..client import EventStream, MjpegReader, RuntimeClient
from .workers import TaskRunner


class RuntimePresenter(QtCore.QObject):
    frame_ready = QtCore.Signal()
    result_received = QtCore.Signal(dict)
    status_changed = QtCore.Signal(dict)
    stats_changed = QtCore.Signal(dict)
    connection_changed = QtCore.Signal(str, str)  # "connecting" | "connected" | "reconnecting" | "stopped", message
    stream_changed = QtCore.Signal(str, str)  # MJPEG link state, reason

    def __init__(self, runner: TaskRunner, base_url: str, token: str, name: str = "Feed 1",
                 stats_interval_ms: int = 2000, parent=None):
        super().__init__(parent)
        self.runner = runner
        self.name = name
        self.client = RuntimeClient(base_url, token)
        self.reader: MjpegReader | None = None
        self.events: EventStream | None = None
        self.last_status: dict = {}
        self.last_stats: dict = {}
        self.connection = "connecting"
        self.connection_message = f"connecting to {base_url}…"
        self._notify_pending = threading.Event()
        self._last_status_at = 0.0
        self._stats_busy = False
        self._status_busy = False
        self._last_event_id: str | None = None
        self._display_box: tuple[int, int] | None = None
        self.timer = QtCore.QTimer(self)
        self.timer.setObjectName(f"PresenterPoll:{name}")
        self.timer.setInterval(stats_interval_ms)
        self.timer.timeout.connect(self.poll)

    @property
    def base_url(self) -> str:
        return self.client.base_url

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        c = self.client
        self.reader = MjpegReader(c.host, c.port, c.token, on_frame=self._on_frame_thread,
                                  on_state=self._on_stream_state_thread,
                                  name=f"MjpegReader:{self.name}")
        self.events = EventStream(c.host, c.port, c.token, on_event=self._on_event_thread,
                                  on_state=self._on_events_state_thread,
                                  last_event_id=self._last_event_id, name=f"EventStream:{self.name}")
        self.reader.display_box = self._display_box
        self.reader.start()
        self.events.start()
        self.timer.start()
        self.poll()

    def set_display_box(self, w: int, h: int) -> None:
        """The feed's on-screen size in device pixels: frames are decoded no larger than needed."""
        self._display_box = (int(w), int(h)) if w > 0 and h > 0 else None
        if self.reader is not None:
            self.reader.display_box = self._display_box

    def stop_streams(self) -> None:
        if self.reader is not None:
            self.reader.on_frame = None  # no notification may outlive the presenter
        for t in (self.reader, self.events):
            if t is not None:
                t.stop(3.0)
        if self.events is not None:
            self._last_event_id = self.events.last_event_id
        self.reader = self.events = None

    def reconnect(self, base_url: str, token: str) -> None:
        """Points this presenter at another runtime (e.g. after switching mode)."""
        self.stop_streams()
        self.client = RuntimeClient(base_url, token)
        self._last_event_id = None
        self.start()

    def shutdown(self) -> None:
        self.timer.stop()
        self.stop_streams()

    # -- stream callbacks (reader threads): plain data through queued signals only ----------
    def _on_frame_thread(self) -> None:
        # Coalesce: one pending notification at most, so no event queue can grow behind a slow GUI.
        if not self._notify_pending.is_set():
            self._notify_pending.set()
            self.frame_ready.emit()

    def take_frame(self):
        self._notify_pending.clear()
        r = self.reader
        return r.take() if r is not None else None

    def _on_stream_state_thread(self, state: str, reason: str) -> None:
        self.stream_changed.emit(state, reason)

    def _on_events_state_thread(self, state: str, reason: str) -> None:
        if state == "live":
            self._set_connection("connected", f"connected to {self.client.base_url}")
        elif state == "reconnecting":
            # The strip elides on the right: what is happening first, the technical reason after.
            why, _, retry = reason.rpartition("; ")
            if retry.startswith("retrying in") and why:
                self._set_connection("reconnecting", f"runtime unreachable · {retry} · {why}")
            else:
                self._set_connection("reconnecting", f"runtime unreachable · reconnecting · {reason}")

    def _set_connection(self, state: str, message: str) -> None:
        # May run on a reader thread: the signal is queued to the GUI thread.
        self.connection, self.connection_message = state, message
        self.connection_changed.emit(state, message)

    def _on_event_thread(self, kind: str, data, event_id) -> None:
        if kind == "result" and isinstance(data, dict):
            self.result_received.emit(data)
        elif kind == "status" and isinstance(data, dict):
            self._last_status_at = time.monotonic()
            self.last_status = data
            self.status_changed.emit(data)

    # -- polling (worker threads) -------------------------------------------------------------
    @QtCore.Slot()
    def poll(self) -> None:
        if not self._stats_busy:
            self._stats_busy = True
            self.runner.run(self.client.stats, on_done=self._got_stats, on_error=self._stats_failed)
        # Status comes by SSE once a second; poll only when the stream has not delivered any.
        if time.monotonic() - self._last_status_at > 3.0 and not self._status_busy:
            self._status_busy = True
            self.runner.run(self.client.status, on_done=self._got_status, on_error=self._status_failed)

    def _got_stats(self, stats: dict) -> None:
        self._stats_busy = False
        self.last_stats = stats
        self.stats_changed.emit(stats)

    def _stats_failed(self, msg: str) -> None:
        self._stats_busy = False

    def _got_status(self, status: dict) -> None:
        self._status_busy = False
        self.last_status = status
        self.status_changed.emit(status)

    def _status_failed(self, msg: str) -> None:
        self._status_busy = False
        if self.connection != "reconnecting":
            # The status poll may notice before the event stream does: say when it tries again,
            # first, as the stream's message does (the strip elides on the right).
            retry = self.timer.interval() / 1000.0
            self._set_connection("reconnecting", f"runtime unreachable · retrying in {retry:.1f} s · {msg}")
