"""Small image helpers shared by the trigger and the tools."""

from __future__ import annotations

import cv2
import numpy as np

from .recipe import HsvRange, Segmentation

OTSU_MIN_CONTRAST = 40  # grey levels between darkest and brightest pixel for Otsu to split
Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive), frame pixels


def roi_box(roi: tuple[float, float, float, float], anchor: Box) -> Box:
    """The frame-pixel box of fractional `roi` [x, y, w, h] inside `anchor`."""
    ax1, ay1, ax2, ay2 = anchor
    aw, ah = ax2 - ax1, ay2 - ay1
    x, y, w, h = roi
    x1 = ax1 + int(round(x * aw))
    y1 = ay1 + int(round(y * ah))
    x2 = ax1 + int(round((x + w) * aw))
    y2 = ay1 + int(round((y + h) * ah))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def clip_box(box: Box, width: int, height: int) -> Box:
    x1, y1, x2, y2 = box
    x1, y1 = max(0, min(x1, width - 1)), max(0, min(y1, height - 1))
    return x1, y1, max(x1 + 1, min(x2, width)), max(y1 + 1, min(y2, height))


def hsv_mask(hsv: np.ndarray, ranges: list[HsvRange]) -> np.ndarray:
    """Pixels inside any range; a range whose lower hue exceeds its upper hue wraps through 0."""
    mask = np.zeros(hsv.shape[:2], np.uint8)
    for r in ranges:
        lo, hi = np.array(r.lower, np.uint8), np.array(r.upper, np.uint8)
        if r.lower[0] <= r.upper[0]:
            mask |= cv2.inRange(hsv, lo, hi)
        else:
            mask |= cv2.inRange(hsv, lo, np.array([179, r.upper[1], r.upper[2]], np.uint8))
            mask |= cv2.inRange(hsv, np.array([0, r.lower[1], r.lower[2]], np.uint8), hi)
    return mask


_KERNELS: dict[int, np.ndarray] = {}


def _kernel(n: int) -> np.ndarray:
    if n not in _KERNELS:
        _KERNELS[n] = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * n + 1, 2 * n + 1))
    return _KERNELS[n]


def segment(img: np.ndarray, seg: Segmentation, scale: float = 1.0) -> np.ndarray:
    """Foreground mask (uint8 0/255) of a BGR image by `seg`; morphology sizes scale with `scale`."""
    if seg.blur:
        k = max(1, int(seg.blur * scale)) | 1
        img = cv2.GaussianBlur(img, (k, k), 0)
    mask = None
    if seg.hsv:
        mask = hsv_mask(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), seg.hsv)
    if seg.threshold is not None or not seg.hsv:
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
        kind = cv2.THRESH_BINARY if seg.polarity == "bright" else cv2.THRESH_BINARY_INV
        if seg.threshold is None:
            lo, hi = cv2.minMaxLoc(gray)[:2]
            if hi - lo < OTSU_MIN_CONTRAST:
                # Otsu always splits, even an empty belt: with no contrast there is no part.
                m = np.zeros_like(gray)
            else:
                _, m = cv2.threshold(gray, 0, 255, kind | cv2.THRESH_OTSU)
        else:
            _, m = cv2.threshold(gray, seg.threshold, 255, kind)
        mask = m if mask is None else (mask | m)
    o = int(round(seg.open_px * scale))
    if o > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _kernel(o))
    c = int(round(seg.close_px * scale))
    if c > 0:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _kernel(c))
    return mask


def blobs(mask: np.ndarray, min_area: float, max_area: float | None) -> list[tuple[np.ndarray, float]]:
    """External contours with their areas, within the limits, largest first."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        a = float(cv2.contourArea(c))
        if a < min_area or (max_area is not None and a > max_area):
            continue
        out.append((c, a))
    out.sort(key=lambda t: -t[1])
    return out
