"""The update journal: a small JSON file, fsync'd and atomically replaced at every phase.

If the controlling process dies mid-update, the next `Engine.recover()` reads it to know
which containers were involved and how far the update got.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .profile import write_json_atomic

# Phases in order. Up to "started" an update is rolled back after a crash (unless the new
# runtime is demonstrably healthy); from "committed" on it is finished. "handover": the new
# runtime was started beside the old one and waits for its port (images that support it).
# Bumped when the journal's meaning changes; recover() sets aside any journal it cannot use.
FORMAT = 1
PHASES = ("begin", "renamed", "created", "handover", "stopped", "started", "committed")


class Journal:
    """One update's journal file for one profile."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> dict | None:
        """The journal, or None if there is none (a corrupt one is kept aside and ignored)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            # Atomic replace makes this unlikely; never let a bad file block recovery.
            self.set_aside("corrupt")
            return None

    def set_aside(self, why: str) -> Path | None:
        """Rename the journal to `<name>.<why>-<time>` (kept for a person to read); return the new path."""
        target = self.path.with_name(f"{self.path.name}.{why}-{int(time.time())}")
        try:
            self.path.rename(target)
            return target
        except OSError:
            # Cannot even rename it (read-only state dir?): it must still not block recovery.
            try:
                self.path.unlink()
            except OSError:
                pass
            return None

    def write(self, **fields) -> dict:
        """Merge `fields` into the journal and write it durably."""
        data = self.read() or {}
        data.update(fields)
        data["format"] = FORMAT
        data["updated_at"] = time.time()
        write_json_atomic(self.path, data)
        return data

    def phase(self, phase: str, **fields) -> dict:
        assert phase in PHASES, phase
        return self.write(phase=phase, **fields)

    def clear(self) -> None:
        """Remove the journal: the update is over, one way or the other."""
        self.path.unlink(missing_ok=True)
