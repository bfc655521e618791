"""Draws an inspection onto a copy of the frame (reject JPEGs, overlay stream)."""

from __future__ import annotations

import cv2
import numpy as np

from .types import Inspection, Region

OK = (80, 200, 60)  # BGR
NG = (40, 40, 230)
PART = (230, 180, 40)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(img: np.ndarray, text: str, org: tuple[int, int], color, scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    x, y = org
    y = max(th + 2, y)
    cv2.rectangle(img, (x, y - th - 3), (x + tw + 4, y + base - 1), (20, 20, 20), -1)
    cv2.putText(img, text, (x + 2, y - 1), FONT, scale, color, 1, cv2.LINE_AA)


def draw_region(img: np.ndarray, r: Region, scale: float = 0.45, color=None, label: bool = True) -> None:
    """Draws one region (box or polygon) with its label onto `img` in place."""
    col = color or (OK if r.ok else NG)
    pts = np.array(r.points, dtype=np.float32).round().astype(np.int32)
    if r.kind == "box" and len(pts) >= 2:
        cv2.rectangle(img, tuple(pts[0]), tuple(pts[-1]), col, 2 if not r.ok else 1, cv2.LINE_AA)
        anchor = (int(pts[0][0]), int(pts[0][1]) - 3)
    else:
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], len(pts) > 2, col, 2, cv2.LINE_AA)
        anchor = (int(pts[:, 0].min()), int(pts[:, 1].min()) - 3)
    if label and r.label:
        _label(img, r.label, anchor, col, scale)


def draw_overlay(image: np.ndarray, inspection: Inspection | None, *, extra_lines=()) -> np.ndarray:
    """A new BGR image: part box, tool regions with labels, measurements and a PASS/FAIL mark.
    Never draws on `image`. Failing tools come first in the text; on small frames passing
    regions are drawn without labels so the failing ones stay readable."""
    out = image.copy()
    if inspection is None:
        return out
    h, w = out.shape[:2]
    scale = max(0.4, min(1.0, w / 1400))
    passed = inspection.passed
    roomy = w >= 800
    if inspection.part_region is not None:
        draw_region(out, inspection.part_region, scale, color=OK if passed else NG)
    # Passing tools first, failing ones on top of them.
    for t in sorted(inspection.tools, key=lambda t: not t.passed):
        for r in t.regions:
            draw_region(out, r, scale, label=roomy or not r.ok)
    # Verdict badge, top-left, and the measurements below it.
    badge = inspection.verdict
    bs = scale * 2.0
    (tw, th), _ = cv2.getTextSize(badge, FONT, bs, 3)
    cv2.rectangle(out, (8, 8), (24 + tw, 24 + th), OK if passed else NG, -1)
    cv2.putText(out, badge, (16, 16 + th), FONT, bs, (255, 255, 255), 3, cv2.LINE_AA)
    y = 40 + th
    step = int(22 * scale / 0.45 * 0.8) + 4
    lines = []
    if inspection.defects:
        lines.append("defects: " + ", ".join(inspection.defects))
    failing = [t for t in inspection.tools if not t.passed]
    shown = failing if failing else inspection.tools
    for t in shown:
        for k, v in t.measurements.items():
            if k in ("found",):
                continue
            lines.append(f"{t.tool}.{k} = {v:.2f}" if isinstance(v, float) else f"{t.tool}.{k} = {v}")
    lines.extend(extra_lines)
    room = max(2, (h - y) // step // 2)  # never cover more than about half the frame
    if len(lines) > room:
        lines = lines[:room - 1] + [f"... {len(lines) - room + 1} more"]
    lines.append(f"frame {inspection.frame_id}  {inspection.recipe_name} v{inspection.recipe_version}")
    for line in lines:
        _label(out, line, (10, y), (240, 240, 240), scale)
        y += step
    return out
