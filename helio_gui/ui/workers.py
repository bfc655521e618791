"""Background work for the GUI: every blocking call (HTTP, engine, files) runs here.

Workers are plain Python threads from one bounded pool; results come back to the GUI thread as
queued Qt signals carrying plain data. `shutdown()` cancels what it can and joins every thread
(no terminate), so a closed window leaves nothing running.
"""

from __future__ import annotations

import threading
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from PySide6 import QtCore


class _Bridge(QtCore.QObject):
    # (callback, value): emitted on a worker thread, delivered on the GUI thread (queued).
    call = QtCore.Signal(object, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.closed = False
        self.call.connect(self._run, QtCore.Qt.ConnectionType.QueuedConnection)

    @QtCore.Slot(object, object)
    def _run(self, fn, value):
        # After shutdown the views these callbacks update may be gone: drop late answers.
        if not self.closed:
            fn(value)


class TaskRunner(QtCore.QObject):
    """Runs `fn(*args)` on a worker thread; `on_done(result)` / `on_error(message)` on the GUI thread."""

    def __init__(self, parent=None, max_workers: int = 4, name: str = "HelioWorker"):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._bridge = _Bridge(self)
        self._closed = False
        self.cancel_all = threading.Event()  # long tasks poll it

    def post(self, fn: Callable[[Any], None], value: Any = None) -> None:
        """From any thread: run `fn(value)` on the GUI thread."""
        if not self._closed:
            self._bridge.call.emit(fn, value)

    def run(self, fn: Callable[..., Any], *args, on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[str], None] | None = None) -> Future | None:
        if self._closed:
            return None

        def job():
            try:
                value = fn(*args)
            except Exception as exc:  # noqa: BLE001 - shown to the person, with its type
                if on_error is not None:
                    msg = str(exc) or type(exc).__name__
                    if not str(exc):
                        msg += "\n" + traceback.format_exc(limit=3)
                    self.post(on_error, msg)
                return None
            if on_done is not None:
                self.post(on_done, value)
            return value

        try:
            return self._pool.submit(job)
        except RuntimeError:  # pool already shut down
            return None

    def shutdown(self) -> None:
        """Cancels queued jobs, signals running ones, and joins the worker threads."""
        self._closed = True
        self._bridge.closed = True
        self.cancel_all.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
