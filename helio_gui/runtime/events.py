"""Fan-out of results to server-sent-event clients, fed from the inspection thread.

Each client gets a bounded asyncio queue. A client that falls so far behind that its queue
fills is disconnected rather than slowing anyone: it reconnects with `Last-Event-ID` and the
store replays what it missed, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field

QUEUE_LIMIT = 1000
_CLOSE = object()


@dataclass(eq=False)
class EventClient:
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False


class EventHub:
    """Publishes result JSON to every subscribed client; `publish` is safe from any thread."""

    def __init__(self) -> None:
        self._clients: set[EventClient] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self) -> EventClient:
        client = EventClient()
        with self._lock:
            self._clients.add(client)
        return client

    def unsubscribe(self, client: EventClient) -> None:
        with self._lock:
            self._clients.discard(client)

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, event: str, data: dict, event_id: int | None = None) -> None:
        """Queues one event for every client (called after the result is durably stored)."""
        loop = self._loop
        if loop is None:
            return
        msg = format_event(event, data, event_id)
        try:
            loop.call_soon_threadsafe(self._deliver, msg)
        except RuntimeError:  # loop closed: shutting down
            pass

    def _deliver(self, msg) -> None:
        self.published += 1
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            if c.overflowed:
                continue
            try:
                c.queue.put_nowait(msg)
            except asyncio.QueueFull:
                c.overflowed = True
                _force_put(c.queue, _CLOSE)

    def close(self) -> None:
        """Ends every client stream (server shutdown); call on the loop."""
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            _force_put(c.queue, _CLOSE)


def _force_put(queue: asyncio.Queue, item) -> None:
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


def is_close(msg) -> bool:
    return msg is _CLOSE


def format_event(event: str | None, data: dict | None, event_id: int | None = None,
                 comment: str | None = None) -> tuple[int | None, bytes]:
    """One SSE message as (id, bytes)."""
    lines = []
    if comment is not None:
        lines.append(f": {comment}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    if data is not None:
        lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return event_id, ("\n".join(lines) + "\n\n").encode("utf-8")
