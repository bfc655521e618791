"""Alarms (defect rate, camera lost, frozen feed) and roles (PIN, auto-lock), on real widgets."""

from __future__ import annotations

import pytest
from PySide6 import QtCore, QtWidgets

from helio_gui.ui.alarms import AlarmModel, DefectRateWindow
from helio_gui.ui.config import DEFAULT_PIN, GuiConfig, log_dir
from helio_gui.ui.main_window import MainWindow
from helio_gui.ui.roles import PinDialog, RoleModel, hash_pin

pytestmark = pytest.mark.qt_log_ignore("does not support propagateSizeHints")


@pytest.fixture
def win(qtbot):
    # Not started: no runtime is contacted; the alarm logic is fed the data the presenter emits.
    config = GuiConfig()
    config.alarms.window_parts, config.alarms.min_parts, config.alarms.defect_rate_threshold = 10, 5, 0.3
    w = MainWindow([("Feed 1", "http://127.0.0.1:9", "t"), ("Feed 2", "http://127.0.0.1:9", "t")], config=config)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.shutdown()


def result(i, verdict):
    return {"id": i, "verdict": verdict, "frame_id": i, "regions": [], "frame_size": [640, 480]}


def test_defect_rate_alarm_over_sliding_window_with_hysteresis(win):
    for i in range(1, 5):
        win._rate_alarm(result(i, "FAIL"))
    assert "defect_rate" not in win.alarms.alarms  # fewer than min_parts: no alarm yet
    win._rate_alarm(result(5, "FAIL"))
    assert win.alarms.alarms["defect_rate"].active
    assert win.banner.alarming and "DEFECT RATE 100%" in win.banner.text.text()
    win._rate_alarm(result(5, "FAIL"))  # a replayed result (reconnect) is not counted twice
    assert win.defect_window.count == 5
    for i in range(6, 30):
        win._rate_alarm(result(i, "PASS"))
    assert not win.alarms.alarms["defect_rate"].active  # cleared once the window is clean
    win.banner.ack.click()
    assert not win.alarms.alarms and not win.banner.alarming
    text = (log_dir() / "alarms.log").read_text()
    assert "ALARM defect_rate" in text and "CLEARED defect_rate" in text and "ACK defect_rate by operator" in text


def test_camera_lost_and_frozen_feed_alarms(win, qtbot):
    p = win.presenters[0]
    win._source_alarm(p, {"source": {"state": "failed", "reason": "device unplugged"}})
    assert "CAMERA FAILED" in win.banner.text.text() and "unplugged" in win.banner.text.text()
    win._source_alarm(p, {"source": {"state": "live"}})
    feed = win.live.feeds[1]
    win._frozen_alarm(feed, True)
    assert "FEED FROZEN — Feed 2" in win.banner.text.text()
    win.alarms.acknowledge_all("operator")
    assert win.banner.alarming and "still active" in win.banner.text.text()  # acknowledged, not gone
    win._frozen_alarm(feed, False)
    assert not win.banner.alarming


def test_alarms_do_not_move_what_the_operator_is_about_to_tap(win, qtbot):
    """On a touchscreen a banner that appears (or grows to three lines) pushes every button down
    under the finger: the nav and pages must stay where they are, whatever the alarms."""
    win.resize(1280, 800)
    qtbot.waitUntil(lambda: win.nav_buttons["live"].isVisible())

    def where():
        QtWidgets.QApplication.processEvents()
        return [b.mapTo(win, QtCore.QPoint(0, 0)).y() for b in win.nav_buttons.values()]

    quiet = where()
    win.alarms.raise_("defect_rate", "DEFECT RATE 60% over the last 40 parts (limit 25%)")
    assert where() == quiet
    for i in range(4):
        win.alarms.raise_(f"feed_frozen:{i}", f"FEED FROZEN — Feed {i}: no new frame for over 1 s " * 2)
    assert where() == quiet
    assert "5 ALARMS" in win.banner.text.text() or "5 alarms" in win.banner.text.text()
    win.alarms.acknowledge_all("operator")
    for key in list(win.alarms.alarms):
        win.alarms.clear(key)
    win.alarms.acknowledge_all("operator")
    assert not win.banner.alarming and where() == quiet


def test_grid_shows_one_view_per_feed(win):
    assert [f.title for f in win.live.feeds] == ["Feed 1", "Feed 2"]


def test_pin_unlock_and_auto_lock_after_inactivity(qtbot):
    roles = RoleModel(hash_pin("2468"), auto_lock_s=10)
    roles.timer.setInterval(200)  # the real timer, shortened for the test
    assert not roles.unlock("1111") and roles.failed_attempts == 1
    with qtbot.waitSignal(roles.role_changed, timeout=1000) as sig:
        assert roles.unlock("2468")
    assert sig.args == ["engineer"]
    with qtbot.waitSignal(roles.role_changed, timeout=2000) as sig:
        pass
    assert sig.args == ["operator"] and not roles.is_engineer
    roles.shutdown()


def test_pin_dialog_keypad_needs_no_keyboard(qtbot):
    dlg = PinDialog()
    qtbot.addWidget(dlg)
    for k in DEFAULT_PIN:
        dlg.buttons[k].click()
    dlg.buttons["⌫"].click()
    dlg.buttons[DEFAULT_PIN[-1]].click()
    assert dlg.pin() == DEFAULT_PIN
    assert all(b.minimumHeight() >= 48 for b in dlg.buttons.values())


def test_defect_window_is_by_part_count():
    w = DefectRateWindow(4)
    for i, v in enumerate([True, True, False, False, False, False]):
        w.add(i, v)
    assert w.count == 4 and w.rate == 0.0


def test_alarm_log_failure_does_not_hide_the_alarm(tmp_path, qtbot):
    bad = tmp_path / "file"
    bad.write_text("x")
    model = AlarmModel(bad / "alarms.log")  # a path under a file: cannot be written
    model.raise_("runtime_down", "RUNTIME DOWN")
    assert model.unacknowledged() and model.history


def test_three_alarms_each_get_a_whole_legible_line(win, qtbot):
    win.resize(1280, 800)
    qtbot.waitUntil(lambda: win.banner.isVisible())
    msgs = ["DEFECT RATE 60% over the last 40 parts", "CAMERA FAILED on Feed 1: unplugged",
            "FEED FROZEN — Feed 2: no new frame for over 1 s"]
    for i, m in enumerate(msgs):
        win.alarms.raise_(f"a{i}", m)
    QtWidgets.QApplication.processEvents()
    lines = win.banner.text.text().split("\n")
    assert lines == msgs  # one line per alarm, none elided at this width
    fm = win.banner.text.fontMetrics()
    # The label has room for all three lines: none is cut off top or bottom.
    assert win.banner.text.height() >= 3 * fm.lineSpacing()
    win.alarms.raise_("a3", "FOURTH")
    QtWidgets.QApplication.processEvents()
    lines = win.banner.text.text().split("\n")
    assert len(lines) == 3 and lines[:2] == msgs[:2] and lines[2].startswith("+2 more")


def test_this_shift_counts_move_with_the_verdict_banner(win):
    live, p = win.live, win.presenters[0]
    live.show_counts({"total": 10, "pass": 8, "fail": 2, "yield": 0.8})
    assert live.counts.text().startswith("Total 10")
    p.result_received.emit({"id": 11, "verdict": "FAIL", "frame_id": 50, "regions": []})
    QtWidgets.QApplication.processEvents()
    assert live.banner.verdict == "FAIL"
    assert "Total 11" in live.counts.text() and "FAIL 3" in live.counts.text()  # same event, no lag
    p.result_received.emit({"id": 11, "verdict": "FAIL", "frame_id": 50, "regions": []})  # replayed
    QtWidgets.QApplication.processEvents()
    assert "Total 11" in live.counts.text()
    live.show_counts({"total": 10, "pass": 8, "fail": 2})  # stats polled just before part 11
    assert "Total 11" in live.counts.text() and "FAIL 3" in live.counts.text()
    live.show_counts({"total": 11, "pass": 8, "fail": 3})
    assert "Total 11" in live.counts.text()
    live.show_counts({"total": 0, "pass": 0, "fail": 0})  # shift reset: the runtime wins
    assert "Total 0" in live.counts.text()


def test_reject_filmstrip_is_newest_first_whatever_order_thumbs_arrive(win, real_frames):
    import cv2

    from helio_gui.ui.stats import _decode_thumb

    panel = win._page("stats")
    ok, jpeg = cv2.imencode(".jpg", real_frames[0])
    assert ok
    for rid in (14, 15, 19, 10, 17, 3):  # the order the worker threads happened to finish in
        panel._add_thumb((rid, "scratch", _decode_thumb(jpeg.tobytes())))
    ids = [panel.filmstrip.item(i).data(QtCore.Qt.ItemDataRole.UserRole) for i in range(panel.filmstrip.count())]
    assert ids == [19, 17, 15, 14, 10, 3]
    for rid in range(20, 30):  # more than 12: the oldest drop off the end
        panel._add_thumb((rid, "", _decode_thumb(jpeg.tobytes())))
    ids = [panel.filmstrip.item(i).data(QtCore.Qt.ItemDataRole.UserRole) for i in range(panel.filmstrip.count())]
    assert ids == sorted(ids, reverse=True) and len(ids) == 12 and ids[0] == 29 and 3 not in ids
