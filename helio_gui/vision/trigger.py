"""Part trigger: decides which frames show a part to inspect, each physical part exactly once.

`line`/`zone` modes segment a downscaled copy of the trigger ROI, track blob centroids from frame
to frame (greedy nearest neighbour) and fire a track once: when its centre crosses the line, or
when its box is fully inside the ROI. `every_frame` fires once per frame (image folders),
`external` never fires (the API triggers instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .imgproc import blobs, clip_box, roi_box, segment
from .recipe import TriggerConfig
from .types import Frame, Region


@dataclass(frozen=True, slots=True)
class PartEvent:
    """One part to inspect: the frame, where the part is (None: the whole frame), its track."""

    frame: Frame
    region: Region | None
    track_id: int

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        if self.region is None:
            return None
        (x1, y1), (x2, y2) = self.region.points[0], self.region.points[-1]
        return int(x1), int(y1), int(x2), int(y2)


@dataclass
class _Track:
    tid: int
    cx: float
    cy: float
    box: tuple[int, int, int, int]
    fired: bool = False
    missed: int = 0
    seen: int = 1
    history: list[float] = field(default_factory=list)


class PartTrigger:
    """`update(frame)` returns the parts to inspect in this frame (usually none or one)."""

    def __init__(self, config: TriggerConfig):
        self.config = config
        self._tracks: list[_Track] = []
        self._next_tid = 1
        self.fired_total = 0
        self.last_blobs: list[tuple[int, int, int, int]] = []  # boxes seen in the last frame

    def reset(self) -> None:
        """Forgets all tracks (after a recipe change or a source reconnect)."""
        self._tracks.clear()
        self.last_blobs = []

    def _axis(self, cx: float, cy: float, box: tuple[int, int, int, int]) -> float:
        """Progress along the motion direction, 0 at the entry edge of the ROI, 1 at the exit."""
        x1, y1, x2, y2 = box
        d = self.config.direction
        if d == "left_to_right":
            return (cx - x1) / max(1, x2 - x1)
        if d == "right_to_left":
            return (x2 - cx) / max(1, x2 - x1)
        if d == "top_to_bottom":
            return (cy - y1) / max(1, y2 - y1)
        return (y2 - cy) / max(1, y2 - y1)

    def line_position(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The trigger line's end points in frame pixels (to draw)."""
        x1, y1, x2, y2 = roi_box(self.config.roi, (0, 0, width, height))
        f = self.config.line
        d = self.config.direction
        if d in ("left_to_right", "right_to_left"):
            x = x1 + f * (x2 - x1) if d == "left_to_right" else x2 - f * (x2 - x1)
            return (int(x), y1), (int(x), y2)
        y = y1 + f * (y2 - y1) if d == "top_to_bottom" else y2 - f * (y2 - y1)
        return (x1, int(y)), (x2, int(y))

    def update(self, frame: Frame) -> list[PartEvent]:
        """The parts that fire in this frame."""
        cfg = self.config
        if cfg.mode == "external":
            return []
        if cfg.mode == "every_frame":
            self.fired_total += 1
            return [PartEvent(frame=frame, region=None, track_id=frame.frame_id)]
        h, w = frame.image.shape[:2]
        if (w, h) != getattr(self, "_size", (w, h)):
            self.reset()  # a reopened source with another resolution: old tracks mean nothing
        self._size = (w, h)
        rx1, ry1, rx2, ry2 = roi = clip_box(roi_box(cfg.roi, (0, 0, w, h)), w, h)
        s = cfg.downscale
        crop = frame.image[ry1:ry2, rx1:rx2]
        # INTER_LINEAR, not INTER_AREA: the trigger only needs blob centres, and INTER_AREA was
        # most of the per-frame cost of the whole loop (profiled on conveyor_belt.mp4).
        small = cv2.resize(crop, (max(1, int((rx2 - rx1) * s)), max(1, int((ry2 - ry1) * s))),
                           interpolation=cv2.INTER_LINEAR) if s < 1 else crop
        mask = segment(small, cfg.segment, scale=s)
        area_scale = s * s
        found = blobs(mask, cfg.min_area * area_scale, cfg.max_area * area_scale if cfg.max_area else None)
        dets: list[tuple[float, float, tuple[int, int, int, int]]] = []
        for c, _a in found:
            bx, by, bw, bh = cv2.boundingRect(c)
            box = (rx1 + int(bx / s), ry1 + int(by / s), rx1 + int(np.ceil((bx + bw) / s)),
                   ry1 + int(np.ceil((by + bh) / s)))
            m = cv2.moments(c)
            if m["m00"] > 0:
                cx, cy = rx1 + m["m10"] / m["m00"] / s, ry1 + m["m01"] / m["m00"] / s
            else:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            dets.append((cx, cy, box))
        self.last_blobs = [d[2] for d in dets]
        events: list[PartEvent] = []
        for tr, (cx, cy, box) in self._match(dets):
            prev = self._axis(tr.cx, tr.cy, roi) if tr is not None else None
            if tr is None:
                tr = _Track(self._next_tid, cx, cy, box)
                self._next_tid += 1
                self._tracks.append(tr)
            else:
                tr.cx, tr.cy, tr.box, tr.missed = cx, cy, box, 0
                tr.seen += 1
            if tr.fired:
                continue
            fire = False
            if cfg.mode == "line":
                cur = self._axis(cx, cy, roi)
                fire = prev is not None and prev < cfg.line <= cur
            else:  # zone: fully inside the ROI, away from its edges
                m = cfg.edge_margin
                fire = (box[0] >= rx1 + m and box[1] >= ry1 + m and box[2] <= rx2 - m and box[3] <= ry2 - m)
            if fire:
                tr.fired = True
                self.fired_total += 1
                p = cfg.pad
                bx1, by1, bx2, by2 = clip_box((box[0] - p, box[1] - p, box[2] + p, box[3] + p), w, h)
                region = Region(kind="box", points=((float(bx1), float(by1)), (float(bx2), float(by2))),
                                label=f"part {tr.tid}", ok=True, tool="trigger")
                events.append(PartEvent(frame=frame, region=region, track_id=tr.tid))
        return events

    def _match(self, dets):
        """Pairs detections with tracks, nearest first within max_distance; ages the rest."""
        pairs = []
        for ti, tr in enumerate(self._tracks):
            for di, (cx, cy, _b) in enumerate(dets):
                d = float(np.hypot(cx - tr.cx, cy - tr.cy))
                if d <= self.config.max_distance:
                    pairs.append((d, ti, di))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        out = []
        for _d, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            out.append((self._tracks[ti], dets[di]))
        for di, det in enumerate(dets):
            if di not in used_d:
                out.append((None, det))
        keep = []
        for ti, tr in enumerate(self._tracks):
            if ti not in used_t:
                tr.missed += 1
            if tr.missed <= self.config.max_missed:
                keep.append(tr)
        self._tracks = keep
        return out
