"""FeedView on real frames: zero-copy wrap, one paint per newest frame, overlays, frozen flag, zoom."""

from __future__ import annotations

import gc
import time

import numpy as np
from PySide6 import QtCore, QtGui

from helio_gui.ui.feed_view import FROZEN_AFTER_S, FeedView, qimage_from_array
from helio_gui.ui.theme import COLORS
from tests.ui.conftest import make_frame


def _addr(qimg: QtGui.QImage) -> int:
    return np.frombuffer(qimg.constBits(), np.uint8).ctypes.data


def test_qimage_wraps_numpy_without_copy_and_keeps_buffer_alive(qapp, real_frames):
    arr = np.ascontiguousarray(real_frames[0])
    arr.flags.writeable = False
    qimg = qimage_from_array(arr)
    assert _addr(qimg) == arr.ctypes.data  # same memory: no copy was made
    b, g, r = (int(v) for v in arr[10, 20])
    assert qimg.pixelColor(20, 10).getRgb()[:3] == (r, g, b)
    expected = arr[5, 7].copy()
    del arr
    gc.collect()
    # The QImage holds the array: the pixels are still the frame's, not freed memory.
    c = qimg.pixelColor(7, 5)
    assert (c.blue(), c.green(), c.red()) == tuple(int(v) for v in expected)


def test_non_contiguous_input_is_copied_once(qapp, real_frames):
    view = real_frames[0][::2, ::2]
    qimg = qimage_from_array(view)
    assert _addr(qimg) != view.ctypes.data
    assert qimg.width() == view.shape[1]


def test_newest_frame_painted_once_per_paint(qtbot, real_frames):
    view = FeedView("Line 1")
    qtbot.addWidget(view)
    view.resize(640, 400)
    view.show()
    qtbot.waitExposed(view)
    painted = []
    view.frame_painted.connect(painted.append)
    for i in range(5):  # five frames arrive before the GUI gets to paint
        view.set_frame(make_frame(real_frames[i], 100 + i))
    view.grab()
    assert painted == [104]  # only the newest, once
    assert _addr(view.current_qimage) == view.current_frame.image.ctypes.data  # painted zero-copy
    view.grab()
    assert painted == [104]  # a repaint without a new frame does not count as a frame
    view.shutdown()


def test_overlay_drawn_on_matching_frame_and_toggleable(qtbot, real_frames):
    view = FeedView("Line 1")
    qtbot.addWidget(view)
    h, w = real_frames[0].shape[:2]
    view.resize(w, h)  # 1:1 so frame pixels map to widget pixels
    view.show()
    qtbot.waitExposed(view)
    view.set_layer("badges", False)
    view.set_frame(make_frame(real_frames[0], 7))
    box = [[100, 120], [300, 260]]
    view.set_overlay({"frame_id": 7, "verdict": "FAIL", "frame_size": [w, h],
                      "regions": [{"kind": "box", "points": box, "label": "", "ok": False}]})
    img = view.grab().toImage()
    edge = img.pixelColor(200, 120)
    assert edge.name() == QtGui.QColor(COLORS["fail"]).name()
    view.set_layer("regions", False)
    img2 = view.grab().toImage()
    assert img2.pixelColor(200, 120).name() != QtGui.QColor(COLORS["fail"]).name()
    view.shutdown()


def test_frozen_feed_flagged_within_a_second_and_not_shown_live(qtbot, real_frames):
    view = FeedView("Line 1")
    qtbot.addWidget(view)
    view.resize(640, 400)
    view.show()
    view.set_frame(make_frame(real_frames[0], 1))
    t0 = time.monotonic()
    with qtbot.waitSignal(view.frozen_changed, timeout=3000) as sig:
        pass
    assert sig.args == [True] and view.frozen
    assert time.monotonic() - t0 < FROZEN_AFTER_S + 0.5
    img = view.grab().toImage()
    # The red FEED FROZEN plate covers the centre.
    assert img.pixelColor(320, 200).name() in (QtGui.QColor(COLORS["fail"]).name(), "#ffffff")
    view.set_frame(make_frame(real_frames[1], 2))
    assert not view.frozen
    view.shutdown()


def test_zoom_keeps_point_under_cursor_and_pans(qtbot, real_frames):
    view = FeedView()
    qtbot.addWidget(view)
    view.resize(800, 450)
    view.set_frame(make_frame(real_frames[0], 1))
    before = view._image_rect()
    p = QtCore.QPointF(600, 300)
    fx = (p.x() - before.x()) / before.width()
    view.zoom_at(2.0, p)
    after = view._image_rect()
    assert abs(view.zoom - 2.0) < 1e-6
    assert abs((p.x() - after.x()) / after.width() - fx) < 1e-3  # same image point under the cursor
    qtbot.mousePress(view, QtCore.Qt.MouseButton.LeftButton, pos=QtCore.QPoint(400, 200))
    qtbot.mouseMove(view, QtCore.QPoint(350, 200))
    qtbot.mouseRelease(view, QtCore.Qt.MouseButton.LeftButton, pos=QtCore.QPoint(350, 200))
    assert view._image_rect().x() < after.x()
    qtbot.mouseDClick(view, QtCore.Qt.MouseButton.LeftButton, pos=QtCore.QPoint(10, 10))
    assert view.zoom == 1.0
    view.shutdown()


def test_reduced_decode_keeps_overlays_and_aspect_where_full_size_puts_them(qtbot, real_frames):
    """A frame decoded at half size (its `full_size` says what was sent) fills the same rect and
    gets its overlay at the same pixels as the full-size frame, including a result without
    frame_size; the view reports the box it needs, and zoom raises it."""
    import cv2

    from helio_gui.client import StreamFrame

    view = FeedView("Line 1")
    qtbot.addWidget(view)
    full = np.ascontiguousarray(real_frames[0])
    h, w = full.shape[:2]
    view.resize(w // 2, h // 2)
    view.show()
    qtbot.waitExposed(view)
    view.set_layer("badges", False)
    half = cv2.resize(full, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    box = [[100, 120], [300, 260]]
    fail = QtGui.QColor(COLORS["fail"]).name()

    def overlay_pixels(img, result_size):
        now = time.monotonic()
        view.set_frame(StreamFrame(img, 7, time.time(), now, now, 1, (w, h)))
        view.set_overlay({"frame_id": 7, "verdict": "FAIL", "regions": [{"kind": "box", "points": box, "label": "",
                                                                         "ok": False}], **result_size})
        g = view.grab().toImage()
        return {(x, y) for x in range(g.width()) for y in range(0, g.height(), 3) if g.pixelColor(x, y).name() == fail}

    ref = overlay_pixels(full, {"frame_size": [w, h]})
    assert ref, "the box was not drawn"
    assert overlay_pixels(half, {"frame_size": [w, h]}) == ref
    assert overlay_pixels(half, {}) == ref  # no frame_size: the frame's full size, not its decoded size
    bw, bh = view.display_box()
    assert (bw, bh) == (w // 2, h // 2) or view.devicePixelRatioF() != 1.0
    with qtbot.waitSignal(view.display_box_changed, timeout=2000) as sig:
        view.zoom_at(2.0, QtCore.QPointF(10, 10))
    assert sig.args[0] >= 2 * bw - 1
    view.shutdown()


def test_lost_feed_message_fits_the_view_and_says_it_retries(qtbot, real_frames):
    """The FEED LOST box stays inside the view with a margin however long the reason is, and the
    reconnect part of the reason ("retrying in …") is shown, not cut off."""
    view = FeedView("Feed 1")
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    qtbot.waitExposed(view)
    view.set_frame(make_frame(real_frames[0], 1))
    reason = ("connection refused at 127.0.0.1:33163 (runtime not running?); retrying in 3.0 s")
    view.set_status(reason, lost=True)
    img = view.grab().toImage()
    fail = QtGui.QColor(COLORS["fail"]).name()
    mid = img.height() // 2
    row = [img.pixelColor(x, mid).name() == fail for x in range(img.width())]
    assert sum(row) > img.width() // 3, "no FEED LOST box across the middle"
    assert not any(row[:12]) and not any(row[-12:]), "the box runs off the view"
    lines = view.lost_lines()
    assert any("retrying in 3.0 s" in l for l in lines), lines
    view.shutdown()


def test_result_overlay_never_trails_the_part_on_later_frames(qtbot, real_frames):
    """On a moving belt the inspected frame is gone by the time later frames paint: the part's
    boxes are drawn on its own frame only, and the inspected frame is kept (from a short ring of
    recent frames, by id) as a 'part N' snapshot with its overlay in the view's corner."""
    view = FeedView("Line 1")
    qtbot.addWidget(view)
    h, w = real_frames[0].shape[:2]
    view.resize(w, h)  # 1:1 so frame pixels map to widget pixels
    view.show()
    qtbot.waitExposed(view)
    view.set_layer("badges", False)
    fail = QtGui.QColor(COLORS["fail"]).name()
    box = [[w - 200, 40], [w - 60, 140]]  # top right: clear of the snapshot (bottom left)
    for i in range(5):
        view.set_frame(make_frame(real_frames[i], 5 + i))  # frames 5..9 painted
        view.grab()
    view.set_overlay({"id": 3, "frame_id": 7, "verdict": "FAIL", "frame_size": [w, h],
                      "regions": [{"kind": "box", "points": box, "label": "", "ok": False}]})
    img = view.grab().toImage()  # the live frame is 9: the box from frame 7 must not be on it
    edge_y = 40
    assert not any(img.pixelColor(x, edge_y).name() == fail for x in range(w - 200, w - 60)), \
        "the part's box is drawn on a later frame"
    snap = view.snapshot
    assert snap is not None and snap.frame.frame_id == 7 and snap.overlay.frame_id == 7
    r = view.snapshot_rect()
    assert r.width() < w / 2 and r.left() < w / 4 and r.bottom() > h * 0.6
    inside = {img.pixelColor(x, y).name() for x in range(int(r.left()), int(r.right()))
              for y in range(int(r.top()), int(r.bottom()), 2)}
    assert fail in inside  # the snapshot shows the box on the inspected frame (and a FAIL frame)
    # The exact frame still gets its boxes live (e.g. a slow belt, or a result that came first).
    view.set_overlay({"id": 4, "frame_id": 10, "verdict": "FAIL", "frame_size": [w, h],
                      "regions": [{"kind": "box", "points": box, "label": "", "ok": False}]})
    view.set_frame(make_frame(real_frames[5], 10))
    img = view.grab().toImage()
    assert any(img.pixelColor(x, edge_y).name() == fail for x in range(w - 200, w - 60))
    assert view.snapshot.frame.frame_id == 10
    view.set_layer("regions", False)
    assert view.snapshot_rect().isNull()  # layers off: no snapshot either
    view.shutdown()


def test_inset_names_the_results_frame_id_even_when_that_frame_was_dropped(qtbot, real_frames):
    view = FeedView("Line 1")
    qtbot.addWidget(view)
    view.resize(640, 480)
    view.show()
    qtbot.waitExposed(view)
    for i, fid in enumerate([1333, 1334, 1336, 1337]):  # 1335 dropped by latest-wins
        view.set_frame(make_frame(real_frames[i], fid))
    h, w = real_frames[0].shape[:2]
    view.set_overlay({"id": 14, "frame_id": 1335, "verdict": "FAIL", "frame_size": [w, h], "regions": []})
    assert view.snapshot is not None and view.snapshot.frame.frame_id != 1335  # a neighbour is shown
    assert view.snapshot_label() == "part #14 · FAIL · frame 1335"  # as the "Last part" card says
    view.grab()  # paints the inset with that caption
    view.shutdown()
