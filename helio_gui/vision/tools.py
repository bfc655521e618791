"""Inspection tools and their registry.

A tool is built once from its recipe config (`build(config, recipe)`) and then called per part:
`tool.run(image, anchor_box) -> ToolResult` with measurements, verdict, defect type and regions in
frame pixels. `anchor_box` is the part's box from the trigger, or the whole frame.

To add a tool type (an ONNX classifier or detector, say): add its config model to
`recipe.ToolConfig` (with `type: Literal["onnx_classifier"]`), then here

    @register_tool("onnx_classifier")
    class OnnxClassifier(Tool):
        def __init__(self, cfg, recipe):
            super().__init__(cfg, recipe)
            self.session = onnxruntime.InferenceSession(str(recipe.resolve(cfg.model)))
        def run(self, image, anchor):
            x1, y1, x2, y2 = self.roi(image, anchor)
            ...  # preprocess image[y1:y2, x1:x2], run, map scores to a ToolResult

Load models in `__init__` (once per recipe), never per part.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .imgproc import Box, blobs, clip_box, hsv_mask, roi_box, segment
from .recipe import (BarcodeTool, BlobTool, ColorClassTool, DimensionTool, EdgeTool, LevelTool,
                     Recipe, TemplateTool)
from .types import Region, ToolResult

TOOL_TYPES: dict[str, type[Tool]] = {}


def register_tool(type_name: str) -> Callable[[type[Tool]], type[Tool]]:
    """Class decorator: the implementation of recipe tools with `type = type_name`."""
    def deco(cls: type[Tool]) -> type[Tool]:
        TOOL_TYPES[type_name] = cls
        return cls
    return deco


class ToolSetupError(ValueError):
    """A tool cannot be built (e.g. its reference image is missing); says what to do.

    `field` names the tool's setting at fault (e.g. "reference"); `index` is the tool's place in
    the recipe (set by the `Inspector`), so the error can point at a line of the file."""

    def __init__(self, message: str, *, field: str = "", index: int | None = None):
        super().__init__(message)
        self.field = field
        self.index = index


def build(cfg, recipe: Recipe) -> Tool:
    """The tool instance for one recipe tool config."""
    cls = TOOL_TYPES.get(cfg.type)
    if cls is None:
        raise ToolSetupError(f"tool {cfg.name!r}: no implementation for type {cfg.type!r}")
    return cls(cfg, recipe)


def _box_region(box: Box, label: str, ok: bool, tool: str) -> Region:
    x1, y1, x2, y2 = box
    return Region("box", ((float(x1), float(y1)), (float(x2), float(y2))), label, ok, tool)


def _poly_region(points, label: str, ok: bool, tool: str) -> Region:
    return Region("polygon", tuple((float(x), float(y)) for x, y in points), label, ok, tool)


class Tool:
    def __init__(self, cfg, recipe: Recipe):
        self.cfg = cfg
        self.name = cfg.name

    def roi(self, image: np.ndarray, anchor: Box) -> Box:
        h, w = image.shape[:2]
        base = anchor if self.cfg.anchor == "part" else (0, 0, w, h)
        return clip_box(roi_box(self.cfg.roi, base), w, h)

    def run(self, image: np.ndarray, anchor: Box) -> ToolResult:  # pragma: no cover - abstract
        raise NotImplementedError


@register_tool("blob")
class Blob(Tool):
    cfg: BlobTool

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        mask = segment(image[y1:y2, x1:x2], c.segment)
        found = blobs(mask, c.min_area, c.max_area)
        n = len(found)
        lo = c.expected_count if c.expected_count is not None else c.min_count
        hi = c.expected_count if c.expected_count is not None else c.max_count
        ok = (lo is None or n >= lo) and (hi is None or n <= hi)
        defect = None
        if not ok:
            defect = c.defect if (lo is not None and n < lo) else (c.too_many_defect or c.defect)
        regions = [_box_region(box, f"{c.name}: {n}", ok, c.name)]
        for cnt, _a in found[:20]:
            bx, by, bw, bh = cv2.boundingRect(cnt)
            regions.append(_box_region((x1 + bx, y1 + by, x1 + bx + bw, y1 + by + bh), "", ok, c.name))
        meas = {"count": n, "largest_area": round(found[0][1], 1) if found else 0.0}
        return ToolResult(c.name, ok, defect, meas, tuple(regions))


@register_tool("color_class")
class ColorClass(Tool):
    cfg: ColorClassTool

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        hsv = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2HSV)
        total = max(1, hsv.shape[0] * hsv.shape[1])
        fractions = {name: float(cv2.countNonZero(hsv_mask(hsv, ranges))) / total
                     for name, ranges in c.classes.items()}
        best = max(fractions, key=fractions.get)
        cls = best if fractions[best] >= c.min_fraction else "unknown"
        wanted = [c.expected] if isinstance(c.expected, str) else list(c.expected)
        ok = cls in wanted
        meas: dict = {"class": cls}
        meas.update({f"frac_{k}": round(v, 3) for k, v in fractions.items()})
        return ToolResult(c.name, ok, None if ok else c.defect, meas,
                          (_box_region(box, cls, ok, c.name),))


@register_tool("dimension")
class Dimension(Tool):
    cfg: DimensionTool

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        mask = segment(image[y1:y2, x1:x2], c.segment)
        found = blobs(mask, c.min_area, None)
        if not found:
            return ToolResult(c.name, False, c.defect, {"found": 0},
                              (_box_region(box, f"{c.name}: no outline", False, c.name),))
        cnt = found[0][0]
        (cx, cy), (rw, rh), ang = cv2.minAreaRect(cnt)
        length_px, width_px = max(rw, rh), min(rw, rh)
        length, width = length_px / c.px_per_mm, width_px / c.px_per_mm
        ok = True
        if c.length is not None and not (c.length.low <= length <= c.length.high):
            ok = False
        if c.width is not None and not (c.width.low <= width <= c.width.high):
            ok = False
        pts = cv2.boxPoints(((cx + x1, cy + y1), (rw, rh), ang))
        meas = {"length_mm": round(length, 2), "width_mm": round(width, 2), "found": 1}
        label = f"{length:.1f} x {width:.1f} mm"
        return ToolResult(c.name, ok, None if ok else c.defect, meas,
                          (_poly_region(pts, label, ok, c.name),))


@register_tool("level")
class Level(Tool):
    cfg: LevelTool

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        mask = segment(image[y1:y2, x1:x2], c.segment)
        rows = (mask > 0).mean(axis=1)
        hit = np.nonzero(rows >= c.row_fraction)[0]
        h = max(1, y2 - y1)
        if hit.size == 0:
            return ToolResult(c.name, False, c.under_defect, {"level": 1.0, "found": 0},
                              (_box_region(box, f"{c.name}: none", False, c.name),))
        level = float(hit[0]) / h
        defect = None
        if level < c.min_level:
            defect = c.over_defect
        elif level > c.max_level:
            defect = c.under_defect
        ok = defect is None
        y = y1 + int(hit[0])
        regions = (_box_region(box, f"{c.name} {level:.2f}", ok, c.name),
                   _poly_region(((x1, y), (x2, y)), "", ok, c.name))
        return ToolResult(c.name, ok, defect, {"level": round(level, 3), "found": 1}, regions)


@register_tool("edge")
class Edge(Tool):
    cfg: EdgeTool

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        mask = segment(image[y1:y2, x1:x2], c.segment) > 0
        # Work in "scan from the top" orientation, then map back.
        if c.scan == "bottom_up":
            m = mask[::-1]
        elif c.scan == "left_right":
            m = mask.T
        elif c.scan == "right_left":
            m = mask.T[::-1]
        else:
            m = mask
        depth, n = m.shape
        has = m.any(axis=0)
        first = np.argmax(m, axis=0).astype(np.float64)
        xs = np.nonzero(has)[0]
        if xs.size < max(3, c.min_points * n):
            return ToolResult(c.name, False, c.missing_defect, {"found": 0},
                              (_box_region(box, f"{c.name}: no edge", False, c.name),))
        ys = first[xs]
        k, b = np.polyfit(xs, ys, 1)
        # One robust pass: refit without the worst outliers (glare, print on the label).
        res = np.abs(ys - (k * xs + b))
        keep = res <= max(2.0, np.percentile(res, 80))
        if keep.sum() >= 3:
            k, b = np.polyfit(xs[keep], ys[keep], 1)
        resid = float(np.median(np.abs(ys - (k * xs + b))))
        angle = float(np.degrees(np.arctan(k)))
        mid = k * (n - 1) / 2 + b
        position = float(mid / max(1, depth))
        ok = abs(angle) <= c.max_angle and c.min_position <= position <= c.max_position and resid <= c.max_residual
        # End points of the fitted line in frame pixels.
        def to_frame(u, v):
            if c.scan == "bottom_up":
                return x1 + u, y2 - 1 - v
            if c.scan == "left_right":
                return x1 + v, y1 + u
            if c.scan == "right_left":
                return x2 - 1 - v, y1 + u
            return x1 + u, y1 + v
        p1, p2 = to_frame(0, b), to_frame(n - 1, k * (n - 1) + b)
        meas = {"angle_deg": round(angle, 2), "position": round(position, 3), "residual_px": round(resid, 2),
                "found": 1}
        return ToolResult(c.name, ok, None if ok else c.defect, meas,
                          (_box_region(box, f"{c.name} {angle:+.1f} deg", ok, c.name),
                           _poly_region((p1, p2), "", ok, c.name)))


@register_tool("template")
class Template(Tool):
    cfg: TemplateTool

    def __init__(self, cfg, recipe):
        super().__init__(cfg, recipe)
        path = recipe.resolve(cfg.reference)
        ref = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if ref is None:
            raise ToolSetupError(f"tool {cfg.name!r}: reference image {path} is missing or unreadable "
                                 "(paths are relative to the recipe file)", field="reference")
        self.ref = self._prep(ref)
        self._ref_f = self.ref.astype(np.float32)
        self._win = cv2.createHanningWindow(self.ref.shape[::-1], cv2.CV_32F)

    def _prep(self, gray):
        k = self.cfg.blur
        return cv2.GaussianBlur(gray, (k | 1, k | 1), 0) if k else gray

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        rh, rw = self.ref.shape
        gray = cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
        sx, sy = (x2 - x1) / rw, (y2 - y1) / rh
        cur = self._prep(cv2.resize(gray, (rw, rh), interpolation=cv2.INTER_AREA))
        warp = np.eye(2, 3, dtype=np.float32)
        if c.align == "phase":
            (dx, dy), _resp = cv2.phaseCorrelate(self._ref_f, cur.astype(np.float32), self._win)
            warp[0, 2], warp[1, 2] = dx, dy
        elif c.align == "ecc":
            try:
                crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
                _cc, warp = cv2.findTransformECC(self.ref, cur, warp, cv2.MOTION_EUCLIDEAN, crit, None, 1)
            except cv2.error:
                pass  # no convergence: compare unaligned, the difference will show it
        aligned = cv2.warpAffine(cur, warp, (rw, rh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
        diff = cv2.absdiff(aligned, self.ref)
        _, mask = cv2.threshold(diff, c.diff_threshold, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        area_scale = sx * sy
        found = blobs(mask, c.min_defect_area / max(area_scale, 1e-6), None)
        ok = len(found) <= c.max_defects
        regions = [_box_region(box, f"{c.name}: {len(found)} defects", ok, c.name)]
        for cnt, _a in found[:20]:
            bx, by, bw, bh = cv2.boundingRect(cnt)
            # The difference is in reference coordinates; the warp maps them into this image's.
            corners = np.array([[bx, by, 1], [bx + bw, by, 1], [bx, by + bh, 1], [bx + bw, by + bh, 1]],
                               np.float32) @ warp.T
            regions.append(_box_region((x1 + int(corners[:, 0].min() * sx), y1 + int(corners[:, 1].min() * sy),
                                        x1 + int(np.ceil(corners[:, 0].max() * sx)),
                                        y1 + int(np.ceil(corners[:, 1].max() * sy))),
                                       "defect", False, c.name))
        meas = {"defects": len(found), "defect_area": round(sum(a for _c, a in found) * area_scale, 1),
                "shift_x": round(float(warp[0, 2]) * sx, 2), "shift_y": round(float(warp[1, 2]) * sy, 2)}
        return ToolResult(c.name, ok, None if ok else c.defect, meas, tuple(regions))


@dataclass(frozen=True)
class Code:
    """One decoded code: text, format name, corner points (in the image it was read from)."""

    text: str
    format: str
    points: tuple[tuple[float, float], ...]


@register_tool("barcode")
class Barcode(Tool):
    cfg: BarcodeTool

    def __init__(self, cfg, recipe):
        super().__init__(cfg, recipe)
        import zxingcpp

        self.zx = zxingcpp
        self.formats = None
        for name in cfg.formats:
            f = getattr(zxingcpp.BarcodeFormat, name)
            self.formats = f if self.formats is None else (self.formats | f)
        self.pattern = re.compile(cfg.expected) if cfg.expected else None

    def _read(self, img: np.ndarray, binarizer=None, scale: float = 1.0) -> list[Code]:
        kwargs = {"try_rotate": True, "try_downscale": True, "try_invert": True}
        if self.formats is not None:
            kwargs["formats"] = self.formats
        if binarizer is not None:
            kwargs["binarizer"] = binarizer
        out = []
        for r in self.zx.read_barcodes(img, **kwargs):
            if not getattr(r, "valid", True):
                continue
            p = r.position
            pts = tuple((q.x / scale, q.y / scale) for q in (p.top_left, p.top_right, p.bottom_right, p.bottom_left))
            out.append(Code(r.text, getattr(r.format, "name", str(r.format)), pts))
        return out

    def decode(self, bgr: np.ndarray, accept: Callable[[list[Code]], bool] | None = None) -> list[Code]:
        """Codes zxing-cpp finds in an image. With `try_harder`, when the first pass finds
        nothing `accept`able, a few cheap variants follow (unsharp mask, half size, a global
        histogram binarizer): on real photos each rescues codes the others miss."""
        accept = accept or bool
        found = self._read(bgr)
        if accept(found) or not self.cfg.try_harder:
            return found
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
        variants = (
            lambda: self._read(cv2.addWeighted(gray, 1.8, cv2.GaussianBlur(gray, (0, 0), 3), -0.8, 0)),
            lambda: self._read(cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), scale=0.5),
            lambda: self._read(gray, self.zx.Binarizer.GlobalHistogram),
        )
        for variant in variants:
            more = variant()
            if accept(more):
                return more
            found = found or more
        return found

    def run(self, image, anchor):
        c = self.cfg
        x1, y1, x2, y2 = box = self.roi(image, anchor)
        want = (lambda rs: any(self.pattern.fullmatch(r.text) for r in rs)) if self.pattern else None
        codes = self.decode(image[y1:y2, x1:x2], want)
        texts = [r.text for r in codes]
        good = [t for t in texts if self.pattern is None or self.pattern.fullmatch(t)]
        if len(codes) < c.min_codes:
            ok, defect = False, c.defect
        elif len(good) < c.min_codes:
            ok, defect = False, c.mismatch_defect
        else:
            ok, defect = True, None
        regions = [_box_region(box, c.name, ok, c.name)]
        for r in codes[:10]:
            pts = [(x + x1, y + y1) for x, y in r.points]
            regions.append(_poly_region(pts, r.text[:32], ok, c.name))
        meas = {"codes": len(codes), "code": texts[0] if texts else "",
                "format": codes[0].format if codes else ""}
        return ToolResult(c.name, ok, defect, meas, tuple(regions))
