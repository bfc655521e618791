"""`FeedView`: one live feed — newest frame, Qt-drawn overlays, badges, zoom and pan.

Pattern from pyqtgraph's ImageItem: `set_frame()` only stores the frame and calls `update()`;
`paintEvent` draws whatever is newest once. The QImage wraps the frame's numpy buffer without a
copy, and the view keeps the frame object (hence the buffer) alive as long as the QImage.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from .theme import COLORS

FROZEN_AFTER_S = 1.0  # no new frame for this long: the feed is flagged, never shown as live
RECENT_FRAMES = 12  # frames kept by id so a result can be shown on the frame it was made from
SNAPSHOT_HOLD_S = 6.0  # the last part's snapshot stays this long (or until the next part)


def qimage_from_array(arr: np.ndarray) -> QtGui.QImage:
    """Wraps a C-contiguous (H, W, 3) BGR uint8 or (H, W) gray array in a QImage, zero-copy.

    The QImage does not own the memory: the caller must keep `arr` alive while the QImage
    (or any shallow copy of it) is in use. Non-contiguous arrays are copied once here.
    """
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        fmt = QtGui.QImage.Format.Format_Grayscale8
    elif arr.ndim == 3 and arr.shape[2] == 3:
        fmt = QtGui.QImage.Format.Format_BGR888
    else:
        raise ValueError(f"expected (H, W) or (H, W, 3) image, got {arr.shape}")
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    img = QtGui.QImage(arr.data, w, h, arr.strides[0], fmt)
    img._helio_buffer = arr  # type: ignore[attr-defined]  # keeps the buffer alive with the image
    return img


@dataclass
class Overlay:
    """Result data for drawing: plain values from the result JSON."""

    frame_id: int
    verdict: str
    regions: list
    frame_size: tuple[int, int]
    received: float  # monotonic
    part_id: int = -1


@dataclass
class Snapshot:
    """The inspected frame of the last part and its overlay (shown in the view's corner)."""

    frame: object  # the StreamFrame (keeps its buffer alive)
    overlay: Overlay


LOST_MARGIN = 16  # px between the FEED LOST box and the view's edges


class FeedView(QtWidgets.QWidget):
    """Paints the newest frame of one feed. Call `set_frame(frame)` from the GUI thread."""

    frame_painted = QtCore.Signal(int)  # frame id
    frozen_changed = QtCore.Signal(bool)
    display_box_changed = QtCore.Signal(int, int)  # device pixels the frame is fitted into (zoom included)

    def __init__(self, title: str = "Feed", parent=None):
        super().__init__(parent)
        self.setObjectName("FeedView")
        self.title = title
        self.setMinimumSize(160, 120)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_AcceptTouchEvents)
        self.grabGesture(QtCore.Qt.GestureType.PinchGesture)
        self._frame = None  # the StreamFrame (owns the numpy buffer behind _qimage)
        self._qimage: QtGui.QImage | None = None
        self._dirty = False
        self._overlay: Overlay | None = None
        # A short ring of recent frames by id: a result arrives after its frame has been shown,
        # and on a moving belt later frames no longer show the part where its boxes are.
        self._recent: collections.deque = collections.deque(maxlen=RECENT_FRAMES)
        self.snapshot: Snapshot | None = None
        self._snapshot_qimage: QtGui.QImage | None = None
        self.layers = {"regions": True, "labels": True, "badges": True}
        self.zoom = 1.0
        self.pan = QtCore.QPointF(0, 0)
        self._drag_from: QtCore.QPointF | None = None
        self.frames_set = 0
        self.frames_painted = 0
        self._paint_times: list[float] = []
        self.last_paint_latency_s = 0.0  # decode finished -> painted, the GUI's own share
        self.source_latency_ms: float | None = None
        self.status_text = "connecting…"
        self.frozen = False
        self.lost = False
        self._last_new = 0.0
        self.watchdog = QtCore.QTimer(self)
        self.watchdog.setObjectName("FeedWatchdog")
        self.watchdog.setInterval(200)
        self.watchdog.timeout.connect(self._check_fresh)
        self.watchdog.start()

    # -- data in -----------------------------------------------------------------------------
    def set_frame(self, frame) -> None:
        """Stores the newest frame and schedules one repaint; never paints here."""
        if frame is None:
            return
        self._frame = frame
        self._recent.append(frame)
        ov = self._overlay
        if ov is not None and frame.frame_id == ov.frame_id:
            self._take_snapshot(frame, ov)  # the result came before its frame
        self._dirty = True
        self._last_new = time.monotonic()
        self.frames_set += 1
        if self.frozen:
            self._set_frozen(False)
        self.lost = False
        self.update()

    def set_overlay(self, result: dict) -> None:
        """Takes a result JSON; its regions are drawn on the frame with the same id."""
        size = result.get("frame_size") or (0, 0)
        ov = self._overlay = Overlay(int(result.get("frame_id", -1)), str(result.get("verdict", "")),
                                     list(result.get("regions") or []), (int(size[0]), int(size[1])),
                                     time.monotonic(), int(result.get("id", -1)))
        # The inspected frame, or the nearest kept one within two frames (latest-wins may have
        # dropped the exact one; the part moves a few pixels per frame).
        near = [f for f in self._recent if abs(f.frame_id - ov.frame_id) <= 2]
        if near:
            self._take_snapshot(min(near, key=lambda f: abs(f.frame_id - ov.frame_id)), ov)
        self.update()

    def _take_snapshot(self, frame, ov: Overlay) -> None:
        self.snapshot = Snapshot(frame, ov)
        self._snapshot_qimage = qimage_from_array(frame.image)  # wraps: the snapshot holds the buffer

    def snapshot_rect(self) -> QtCore.QRectF:
        """Where the last part's snapshot is drawn (bottom left), or a null rect when none is."""
        snap = self.snapshot
        if (snap is None or not self.layers["regions"] or self.frozen or self.lost
                or time.monotonic() - snap.overlay.received > SNAPSHOT_HOLD_S):
            return QtCore.QRectF()
        ih, iw = snap.frame.image.shape[:2]
        w = max(120.0, self.width() * 0.3)
        h = w * ih / iw
        if h > self.height() * 0.4:
            h = self.height() * 0.4
            w = h * iw / ih
        return QtCore.QRectF(10, self.height() - h - 10, w, h)

    def set_status(self, text: str, lost: bool = False) -> None:
        self.status_text = text
        self.lost = lost
        self.update()

    def set_layer(self, name: str, on: bool) -> None:
        self.layers[name] = on
        self.update()

    @property
    def current_frame(self):
        return self._frame

    @property
    def current_qimage(self) -> QtGui.QImage | None:
        return self._qimage

    def painted_fps(self, window_s: float = 2.0) -> float:
        now = time.monotonic()
        recent = [t for t in self._paint_times if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(1e-6, recent[-1] - recent[0])

    def frame_age_s(self) -> float | None:
        return None if self._frame is None else time.monotonic() - self._frame.received

    def _check_fresh(self) -> None:
        if self._frame is None:
            return
        stale = time.monotonic() - self._last_new > FROZEN_AFTER_S
        if stale != self.frozen:
            self._set_frozen(stale)
        if self.frozen:
            self.update()  # the age badge keeps counting

    def _set_frozen(self, on: bool) -> None:
        self.frozen = on
        self.frozen_changed.emit(on)
        self.update()

    def shutdown(self) -> None:
        self.watchdog.stop()

    # -- geometry ----------------------------------------------------------------------------
    def _image_rect(self) -> QtCore.QRectF:
        if self._frame is None:
            return QtCore.QRectF()
        h, w = self._frame.image.shape[:2]
        scale = min(self.width() / w, self.height() / h) * self.zoom
        dw, dh = w * scale, h * scale
        x = (self.width() - dw) / 2 + self.pan.x()
        y = (self.height() - dh) / 2 + self.pan.y()
        return QtCore.QRectF(x, y, dw, dh)

    def display_box(self) -> tuple[int, int]:
        """The device-pixel box a frame is fitted into, zoom included: the reader decodes no
        more pixels than this shows."""
        dpr = self.devicePixelRatioF()
        return (int(math.ceil(self.width() * self.zoom * dpr)), int(math.ceil(self.height() * self.zoom * dpr)))

    def _box_changed(self) -> None:
        box = self.display_box()
        if box != getattr(self, "_last_box", None):
            self._last_box = box
            self.display_box_changed.emit(*box)

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._box_changed()

    def zoom_at(self, factor: float, pos: QtCore.QPointF) -> None:
        """Zooms by `factor` keeping the image point under `pos` fixed."""
        new_zoom = max(1.0, min(12.0, self.zoom * factor))
        factor = new_zoom / self.zoom
        center = QtCore.QPointF(self.width() / 2, self.height() / 2)
        self.pan = (self.pan - (pos - center)) * factor + (pos - center)
        self.zoom = new_zoom
        if self.zoom == 1.0:
            self.pan = QtCore.QPointF(0, 0)
        self._box_changed()
        self.update()

    def reset_view(self) -> None:
        self.zoom, self.pan = 1.0, QtCore.QPointF(0, 0)
        self._box_changed()
        self.update()

    def wheelEvent(self, ev: QtGui.QWheelEvent) -> None:
        self.zoom_at(1.0015 ** ev.angleDelta().y(), ev.position())
        ev.accept()

    def mousePressEvent(self, ev):
        if ev.button() == QtCore.Qt.MouseButton.LeftButton:
            self._drag_from = ev.position()

    def mouseMoveEvent(self, ev):
        if self._drag_from is not None and self.zoom > 1.0:
            self.pan += ev.position() - self._drag_from
            self._drag_from = ev.position()
            self.update()

    def mouseReleaseEvent(self, ev):
        self._drag_from = None

    def mouseDoubleClickEvent(self, ev):
        self.reset_view()

    def event(self, ev):
        if ev.type() == QtCore.QEvent.Type.Gesture:
            pinch = ev.gesture(QtCore.Qt.GestureType.PinchGesture)
            if pinch is not None:
                self.zoom_at(pinch.scaleFactor(), self.mapFromGlobal(pinch.centerPoint().toPoint()).toPointF())
                ev.accept()
                return True
        return super().event(ev)

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, ev) -> None:
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(COLORS["feed_bg"]))
        frame = self._frame
        if frame is not None:
            if self._dirty or self._qimage is None:
                # Wrap, don't copy: the frame keeps the buffer alive as long as we hold it.
                self._qimage = qimage_from_array(frame.image)
                self._dirty = False
                self.frames_painted += 1
                now = time.monotonic()
                self._paint_times.append(now)
                if len(self._paint_times) > 240:
                    del self._paint_times[:120]
                self.last_paint_latency_s = now - frame.decoded
                self.frame_painted.emit(frame.frame_id)
            rect = self._image_rect()
            p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 2.0)
            p.drawImage(rect, self._qimage)
            if self.frozen or self.lost:
                p.fillRect(rect, QtGui.QColor(0, 0, 0, 150))  # dimmed: visibly not live
            elif self.layers["regions"]:
                self._paint_overlay(p, rect, frame)
                self._paint_snapshot(p)
        self._paint_badges(p, frame)
        p.end()

    def snapshot_label(self) -> str:
        """The inset's caption. It names the result's frame_id (as the "Last part" card does), not
        the id of the nearest kept frame shown when latest-wins dropped the inspected one."""
        snap = self.snapshot
        if snap is None:
            return ""
        part = f"part #{snap.overlay.part_id}" if snap.overlay.part_id >= 0 else "last part"
        return f"{part} · {snap.overlay.verdict} · frame {snap.overlay.frame_id}"

    def _paint_snapshot(self, p: QtGui.QPainter) -> None:
        r = self.snapshot_rect()
        if r.isNull():
            return
        snap = self.snapshot
        p.save()
        p.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, True)
        p.drawImage(r, self._snapshot_qimage)
        # Boxes only, clipped to the inset: the side panel lists the part's measurements.
        p.setClipRect(r)
        self._paint_overlay(p, r, snap.frame, snap.overlay, slack=2, labels=False)
        p.setClipping(False)
        color = QtGui.QColor(COLORS["pass"] if snap.overlay.verdict == "PASS" else COLORS["fail"])
        pen = QtGui.QPen(color, 3)
        p.setPen(pen)
        p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        p.drawRect(r)
        font = p.font()
        font.setPixelSize(13)
        font.setBold(True)
        p.setFont(font)
        label = self.snapshot_label()
        fm = p.fontMetrics()
        tr = QtCore.QRectF(r.x(), r.y() - fm.height() - 4, fm.horizontalAdvance(label) + 12, fm.height() + 4)
        p.fillRect(tr, color)
        p.setPen(QtGui.QColor("#000000" if snap.overlay.verdict == "PASS" else "#ffffff"))
        p.drawText(tr, QtCore.Qt.AlignmentFlag.AlignCenter, label)
        p.restore()

    def _paint_overlay(self, p: QtGui.QPainter, rect: QtCore.QRectF, frame, ov: Overlay | None = None,
                       slack: int = 0, labels: bool = True) -> None:
        ov = ov or self._overlay
        # Only on the frame the result was made from: on a moving belt any later frame shows the
        # part elsewhere, and a box beside the part is worse than none (the snapshot shows it).
        if ov is None or abs(frame.frame_id - ov.frame_id) > slack:
            return
        # Result coordinates are in the sent frame's pixels, whatever size it was decoded at.
        full = getattr(frame, "full_size", (0, 0))
        fw, fh = ov.frame_size if ov.frame_size[0] else full if full[0] else frame.image.shape[1::-1]
        sx, sy = rect.width() / fw, rect.height() / fh
        font = p.font()
        font.setPixelSize(max(12, int(14 * min(2.0, self.zoom))))
        font.setBold(True)
        p.setFont(font)
        placed: list[QtCore.QRectF] = []
        for reg in ov.regions:
            ok = bool(reg.get("ok", True))
            color = QtGui.QColor(COLORS["pass"] if ok else COLORS["fail"])
            pen = QtGui.QPen(color, 3)
            pen.setCosmetic(True)
            p.setPen(pen)
            p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            pts = [QtCore.QPointF(rect.x() + x * sx, rect.y() + y * sy) for x, y in reg.get("points", [])]
            if not pts:
                continue
            if reg.get("kind") == "box" and len(pts) >= 2:
                p.drawRect(QtCore.QRectF(pts[0], pts[1]).normalized())
            else:
                p.drawPolygon(QtGui.QPolygonF(pts))
            label = reg.get("label") or ""
            if label and labels and self.layers["labels"]:
                top = min(pts, key=lambda q: q.y())
                fm = p.fontMetrics()
                tr = QtCore.QRectF(top.x(), top.y() - fm.height() - 4, fm.horizontalAdvance(label) + 10, fm.height() + 4)
                # Labels of nested regions start at the same corner: stack them instead of overlapping.
                for _ in range(8):
                    if not any(tr.intersects(r) for r in placed):
                        break
                    tr.translate(0, -tr.height() - 1)
                placed.append(tr)
                p.fillRect(tr, color)
                p.setPen(QtGui.QColor("#000000"))
                p.drawText(tr, QtCore.Qt.AlignmentFlag.AlignCenter, label)

    def lost_lines(self, width: float | None = None) -> list[tuple[str, int]]:
        """The FEED LOST / FROZEN box's lines as (text, pixel size), each elided to `width`:
        the reason is split at "; " so "retrying in …" gets its own line and is never cut off."""
        width = (self.width() - 2 * LOST_MARGIN - 48) if width is None else width
        age = self.frame_age_s() or 0.0
        head = min(30, max(16, self.width() // 16))
        small = max(12, int(head * 0.6))
        lines = [("FEED LOST" if self.lost else "FEED FROZEN", head), (f"last frame {age:.1f} s ago", small)]
        if self.lost and self.status_text:
            lines += [(part.strip(), small) for part in self.status_text.split("; ") if part.strip()][:3]
        out = []
        for text, px in lines:
            f = QtGui.QFont(self.font())
            f.setPixelSize(px)
            f.setBold(True)
            out.append((QtGui.QFontMetrics(f).elidedText(text, QtCore.Qt.TextElideMode.ElideMiddle, int(width)), px))
        return out

    def _paint_lost_box(self, p: QtGui.QPainter) -> None:
        lines = self.lost_lines()
        metrics = []
        for text, px in lines:
            f = QtGui.QFont(p.font())
            f.setPixelSize(px)
            f.setBold(True)
            fm = QtGui.QFontMetrics(f)
            metrics.append((text, f, fm.horizontalAdvance(text), fm.height()))
        w = max(m[2] for m in metrics) + 48
        h = sum(m[3] for m in metrics) + 28
        box = QtCore.QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)
        p.fillRect(box, QtGui.QColor(COLORS["fail"]))
        p.setPen(QtGui.QColor("#ffffff"))
        y = box.y() + 14
        for text, f, _tw, th in metrics:
            p.setFont(f)
            p.drawText(QtCore.QRectF(box.x(), y, w, th), QtCore.Qt.AlignmentFlag.AlignCenter, text)
            y += th

    def _paint_badges(self, p: QtGui.QPainter, frame) -> None:
        font = p.font()
        font.setPixelSize(15)
        font.setBold(True)
        p.setFont(font)
        fm = p.fontMetrics()
        # title top-left
        p.setPen(QtGui.QColor(COLORS["text"]))
        p.drawText(QtCore.QPointF(12, 12 + fm.ascent()), self.title)
        if frame is None:
            p.setPen(QtGui.QColor(COLORS["muted"]))
            f2 = p.font()
            f2.setPixelSize(22)
            p.setFont(f2)
            p.drawText(self.rect(), QtCore.Qt.AlignmentFlag.AlignCenter, f"NO VIDEO\n{self.status_text}")
            return
        if self.frozen or self.lost:
            self._paint_lost_box(p)
            p.setFont(font)
        if not self.layers["badges"]:
            return
        age = self.frame_age_s() or 0.0
        lat = f"{self.source_latency_ms:.0f} ms" if self.source_latency_ms is not None else "–"
        badges = [("LIVE" if not (self.frozen or self.lost) else "STALE", not (self.frozen or self.lost)),
                  (f"{self.painted_fps():.0f} fps", True), (f"lat {lat}", True),
                  (f"age {age * 1000:.0f} ms" if age < 10 else f"age {age:.0f} s", age < FROZEN_AFTER_S)]
        if self.zoom > 1.0:
            badges.append((f"{self.zoom:.1f}×", True))
        x = self.width() - 10
        for text, good in reversed(badges):
            w = fm.horizontalAdvance(text) + 16
            x -= w
            r = QtCore.QRectF(x, 10, w, fm.height() + 8)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(0, 0, 0, 170) if good else QtGui.QColor(COLORS["fail"]))
            p.drawRoundedRect(r, 4, 4)
            p.setPen(QtGui.QColor(COLORS["pass"] if text == "LIVE" else "#ffffff"))
            p.drawText(r, QtCore.Qt.AlignmentFlag.AlignCenter, text)
            x -= 6
