"""Qt-free client of the runtime API: JSON calls, the MJPEG and event streams, and the
embedded-runtime launcher. No PySide6, no docker here."""

from .api import RuntimeClient
from .embedded import EmbeddedRuntime, default_data_dir, free_port
from .errors import ApiError, ClientError, RuntimeUnreachable
from .streams import EventStream, MjpegReader, StreamFrame

__all__ = ["RuntimeClient", "EmbeddedRuntime", "default_data_dir", "free_port", "ApiError", "ClientError",
           "RuntimeUnreachable", "EventStream", "MjpegReader", "StreamFrame"]
