"""Qt-free client of the runtime API: JSON calls, the MJPEG and event streams, and the
embedded-runtime launcher. No PySide6, no docker here.

Names are imported on first use (PEP 562), so starting the embedded runtime does not first pay
for importing OpenCV and requests: the GUI launches the child before anything heavy loads.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "RuntimeClient": ".api",
    "EmbeddedRuntime": ".embedded", "default_data_dir": ".embedded", "free_port": ".embedded",
    "ApiError": ".errors", "ClientError": ".errors", "RuntimeUnreachable": ".errors",
    "EventStream": ".streams", "MjpegReader": ".streams", "StreamFrame": ".streams",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    mod = _NAMES.get(name)
    if mod is None:
        raise AttributeError(f"module 'helio_gui.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value
