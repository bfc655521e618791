"""Control of the Docker engine: the only package that imports `docker`. Qt-free.

All calls block; call them from a worker thread. See docs/interfaces.md.
"""

from .engine import (Engine, ImageVersion, RuntimeStats, RuntimeStatus, Step, UpdateReport,
                     connect)
from .errors import Cancelled, EngineError, ImageRejected
from .profile import HealthCheckConfig, Mount, RuntimeProfile
from .progress import Progress, PullProgress

__all__ = [
    "Cancelled", "Engine", "EngineError", "HealthCheckConfig", "ImageRejected", "ImageVersion",
    "Mount", "Progress", "PullProgress", "RuntimeProfile", "RuntimeStats", "RuntimeStatus", "Step",
    "UpdateReport", "connect",
]
