"""Core data that crosses threads and packages: frozen, plain, Qt-free.

Owned by the vision package; the runtime, the client and the GUI all speak in these terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image. `image` is BGR uint8 (H, W, 3) and is never written to after capture."""

    image: np.ndarray
    frame_id: int  # increases by one per frame the capture thread delivers, per runtime run
    timestamp: float  # time.time() at capture, for people and clients
    monotonic: float  # time.monotonic() at capture, for latency and freshness
    source_pos: int = -1  # frame number within a file, image index within a folder; -1 if unknown
    source_name: str = ""  # file name for folder sources (which image this part is)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])


class SourceState(str, Enum):
    CONNECTING = "connecting"
    LIVE = "live"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Region:
    """Something to draw: a box ((x1, y1), (x2, y2)) or a polygon, in frame pixels."""

    kind: str  # "box" | "polygon"
    points: tuple[tuple[float, float], ...]
    label: str = ""
    ok: bool = True
    tool: str = ""

    def to_json(self) -> dict:
        return {"kind": self.kind, "points": [list(p) for p in self.points], "label": self.label,
                "ok": self.ok, "tool": self.tool}


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one inspection tool found on one part."""

    tool: str  # the tool's name in the recipe
    passed: bool
    defect: str | None = None  # defect type when not passed, e.g. "wrong_part", "cap_missing"
    measurements: dict[str, float | int | str] = field(default_factory=dict)
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True, slots=True)
class Inspection:
    """The verdict on one part: all tools' results on one frame."""

    frame_id: int
    frame_ts: float
    tools: tuple[ToolResult, ...]
    part_region: Region | None = None  # where the part was found (trigger), if known
    recipe_name: str = ""
    recipe_version: str = ""
    frame_size: tuple[int, int] = (0, 0)

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.tools)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def defects(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for t in self.tools:
            if not t.passed and t.defect:
                seen.setdefault(t.defect, None)
        return tuple(seen)

    @property
    def measurements(self) -> dict[str, float | int | str]:
        merged: dict[str, float | int | str] = {}
        for t in self.tools:
            for key, value in t.measurements.items():
                merged[f"{t.tool}.{key}"] = value
        return merged

    @property
    def regions(self) -> tuple[Region, ...]:
        out = [self.part_region] if self.part_region else []
        for t in self.tools:
            out.extend(t.regions)
        return tuple(out)
