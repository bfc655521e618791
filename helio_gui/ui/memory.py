"""Keep the GUI's resident memory flat while it decodes large frames all day."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3


def tune_allocator(threshold: int = 1 << 20) -> bool:
    """Serve allocations above `threshold` with mmap, so freed frame buffers go back to the OS.

    glibc raises its mmap threshold after the first large free, after which 6 MB frame buffers
    come from the heap and fragment it: resident memory then creeps up by whole frames. A fixed
    threshold keeps every decoded frame in its own mapping. Returns False where not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
