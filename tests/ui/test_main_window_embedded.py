"""The real main window driven by a real helio-runtime child process (embedded mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from PySide6 import QtWidgets

from helio_gui.client import EmbeddedRuntime
from helio_gui.ui.backends import EmbeddedBackend
from helio_gui.ui.config import DEFAULT_PIN, GuiConfig, log_dir
from helio_gui.ui.main_window import MainWindow

# The offscreen platform warns that it cannot pass size hints to a window system it does not
# have; that says nothing about the GUI, every other Qt warning still fails the test.
pytestmark = [pytest.mark.slow, pytest.mark.qt_log_ignore("does not support propagateSizeHints")]


def open_window(qtbot, rt, config=None, **kw) -> MainWindow:
    win = MainWindow([("Feed 1", rt.base_url, rt.token)], backend=EmbeddedBackend(rt), config=config or GuiConfig(),
                     mode_text="Embedded runtime", **kw)
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    win.start()
    return win


def test_live_view_paints_real_frames_and_shows_results(qtbot, demo_runtime):
    win = open_window(qtbot, demo_runtime)
    try:
        feed = win.live.feeds[0]
        qtbot.waitUntil(lambda: feed.frames_painted >= 10, timeout=15000)
        assert win.presenter.connection == "connected"
        assert "connected" in win.conn_label.text()
        # A part crosses the line in the demo clip every couple of seconds.
        qtbot.waitUntil(lambda: win.live.banner.verdict in ("PASS", "FAIL"), timeout=20000)
        assert feed._overlay is not None and feed._overlay.frame_id >= 0
        qtbot.waitUntil(lambda: win.stats.n_total.value.text() not in ("–", "0"), timeout=10000)
        assert not feed.frozen and feed.painted_fps() > 5
        # The reader knows the feed's on-screen size (it decodes no more pixels than that shows).
        assert win.presenter.reader.display_box == feed.display_box()
        frame = feed.current_frame
        assert frame.image.shape[2] == 3 and frame.frame_id > 0
    finally:
        win.shutdown()


def test_operator_cannot_control_engineer_can(qtbot, demo_runtime):
    win = open_window(qtbot, demo_runtime)
    try:
        c = win.control
        assert not c.btn_stop.isEnabled() and not c.btn_restart.isEnabled()
        assert not win.stats.btn_shift_reset.isEnabled()
        assert win.settings.editor.isReadOnly()
        assert not win.roles.unlock("0000")
        assert win.roles.unlock(DEFAULT_PIN)
        qtbot.waitUntil(c.btn_stop.isEnabled, timeout=5000)  # once the runtime is seen running
        assert not c.btn_start.isEnabled()  # already running
        assert win.stats.btn_shift_reset.isEnabled()
        assert not c.btn_update.isEnabled()  # embedded mode: updates need Docker
        win.roles.lock()
        assert not c.btn_stop.isEnabled()
        # Logs view: the runtime's own log arrives (follow) and can be searched.
        qtbot.waitUntil(lambda: "listening" in c.log_view.toPlainText(), timeout=10000)
        c.search.setText("listening")
        assert c.find_next() and "match" in c.search_status.text()
        assert not c.follow.isChecked()  # a search pins the view
        c.search.setText("no such text anywhere")
        assert not c.find_next() and c.search_status.text() == "not found"
    finally:
        win.shutdown()


def test_recipe_editor_marks_the_runtimes_422_errors_inline(qtbot, demo_runtime):
    win = open_window(qtbot, demo_runtime)
    try:
        win.roles.unlock(DEFAULT_PIN)
        s = win.settings
        qtbot.waitUntil(lambda: "[[tools]]" in s.editor.toPlainText(), timeout=15000)
        original = s.editor.toPlainText()
        lines = original.splitlines()
        idx = next(i for i, l in enumerate(lines) if l.startswith("line ="))
        lines[idx] = 'line = "middle"'  # not a number
        s.editor.setPlainText("\n".join(lines))
        with qtbot.waitSignal(s.recipe_applied, timeout=10000) as sig:
            s.btn_apply.click()
        ok, detail = sig.args
        assert not ok and s.recipe_errors, detail
        assert any(e.get("line") == idx + 1 for e in s.recipe_errors), s.recipe_errors
        assert len(s.editor.extraSelections()) >= 1  # the bad line is highlighted in the editor
        assert s.error_list.count() >= 1 and "keeps running" in s.recipe_msg.text()
        # The runtime still runs the old recipe.
        assert win.presenter.client.recipe()["text"] == original
    finally:
        win.shutdown()


def test_csv_export_off_the_gui_thread(qtbot, demo_runtime, tmp_path):
    win = open_window(qtbot, demo_runtime)
    try:
        qtbot.waitUntil(lambda: win.presenter.last_stats.get("total", 0) > 0, timeout=20000)
        dest = tmp_path / "export.csv"
        win.stats.start_export(str(dest), since=0, until=time.time() + 60)
        qtbot.waitUntil(lambda: win.stats.export_status.text().startswith(("Saved", "Export failed")), timeout=15000)
        assert win.stats.export_status.text().startswith("Saved"), win.stats.export_status.text()
        rows = dest.read_text().splitlines()
        assert len(rows) >= 2 and "verdict" in rows[0]
        # A backwards range is refused with a clear message and nothing written.
        win.stats.start_export(str(tmp_path / "no.csv"), since=100, until=50)
        assert "after its start" in win.stats.export_status.text()
        assert not (tmp_path / "no.csv").exists()
    finally:
        win.shutdown()


def test_stop_and_start_buttons_alarm_and_resume(qtbot, tmp_path):
    rt = EmbeddedRuntime(data_dir=tmp_path / "rt")
    rt.start(timeout=30)
    config = GuiConfig()
    config.alarms.runtime_down_s = 1.0
    win = open_window(qtbot, rt, config=config)
    try:
        feed = win.live.feeds[0]
        qtbot.waitUntil(lambda: feed.frames_painted >= 3, timeout=15000)
        win.roles.unlock(DEFAULT_PIN)
        win.control.skip_confirm = True
        qtbot.waitUntil(win.control.btn_stop.isEnabled, timeout=5000)
        with qtbot.waitSignal(win.control.action_finished, timeout=15000) as sig:
            win.control.btn_stop.click()
        assert sig.args[:2] == ["stop", True], sig.args
        assert not rt.running()
        qtbot.waitUntil(lambda: feed.lost or feed.frozen, timeout=3000)  # never shown as live
        qtbot.waitUntil(lambda: "runtime_down" in win.alarms.alarms, timeout=8000)
        assert win.banner.alarming and "RUNTIME DOWN" in win.banner.text.text()
        assert win.presenter.connection == "reconnecting"
        painted = feed.frames_painted
        qtbot.waitUntil(win.control.btn_start.isEnabled, timeout=5000)  # enabled once seen stopped
        with qtbot.waitSignal(win.control.action_finished, timeout=30000) as sig:
            win.control.btn_start.click()
        assert sig.args[:2] == ["start", True], sig.args
        # The feed resumes by itself (reconnect with backoff), and the alarm clears.
        qtbot.waitUntil(lambda: feed.frames_painted > painted + 3, timeout=20000)
        qtbot.waitUntil(lambda: not win.alarms.alarms["runtime_down"].active, timeout=5000)
        win.banner.ack.click()  # cleared and acknowledged: gone
        assert "runtime_down" not in win.alarms.alarms and not win.banner.alarming
        logged = (log_dir() / "alarms.log").read_text()
        assert "ALARM runtime_down" in logged and "CLEARED runtime_down" in logged and "ACK runtime_down" in logged
    finally:
        win.shutdown()
        rt.stop()


def test_killed_runtime_is_restarted_and_feed_resumes(qtbot, tmp_path):
    rt = EmbeddedRuntime(data_dir=tmp_path / "rt")
    rt.start(timeout=30)
    win = open_window(qtbot, rt)
    try:
        feed = win.live.feeds[0]
        qtbot.waitUntil(lambda: feed.frames_painted >= 3, timeout=15000)
        old_pid = rt.pid
        os.kill(old_pid, signal.SIGKILL)
        qtbot.waitUntil(lambda: rt.pid not in (None, old_pid), timeout=10000)
        assert rt.restarts == 1
        painted = feed.frames_painted
        qtbot.waitUntil(lambda: feed.frames_painted > painted + 3, timeout=20000)
        assert not feed.lost
    finally:
        win.shutdown()
        rt.stop()


def test_kiosk_window_has_no_way_out_for_operators_and_big_targets(qtbot, demo_runtime, qapp):
    from helio_gui.ui import theme

    old = qapp.styleSheet()
    theme.apply(qapp, kiosk=True)
    win = open_window(qtbot, demo_runtime, kiosk=True)
    try:
        flags = win.windowFlags()
        assert flags & win.windowFlags().__class__.FramelessWindowHint
        win.close()
        assert win.isVisible()  # an operator cannot close the kiosk
        assert not win.btn_exit.isVisible()
        small = [b.text() for b in win.findChildren(QtWidgets.QPushButton) + win.findChildren(QtWidgets.QCheckBox)
                 if b.isVisibleTo(win) and max(b.sizeHint().height(), b.minimumHeight()) < 48]
        assert not small, f"touch targets under 48 px: {small}"
        # With the alarm row, every page still fits a 1280x800 touchscreen (no window larger
        # than the screen; the pages scroll by finger instead).
        win.build_pages()
        assert win.minimumSizeHint().height() <= 800 and win.minimumSizeHint().width() <= 1280
        win.roles.unlock(DEFAULT_PIN)
        assert win.btn_exit.isVisible()
        win.btn_exit.click()
        assert not win.isVisible()
    finally:
        win.shutdown()
        qapp.setStyleSheet(old)


def test_no_display_gives_a_clear_message():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "helio_gui.ui"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "needs a display" in proc.stderr and "Traceback" not in proc.stderr


def test_yield_trend_axis_fits_a_fresh_shift(qtbot, demo_runtime):
    """A shift a few minutes old: the time axis spans minutes (from the first part to now), not
    the hour the runtime's empty buckets cover, and every point is inside it."""
    win = open_window(qtbot, demo_runtime)
    try:
        st = win.stats
        qtbot.waitUntil(lambda: any(b.get("total") for b in win.presenter.last_stats.get("buckets") or []),
                        timeout=20000)
        st.show_stats(win.presenter.last_stats)
        (left, right), (bottom, top) = st.trend.getViewBox().viewRange()
        xs, _ys = st.trend_curve.getData()
        now = time.time()
        assert len(xs) >= 1
        assert right - left <= 16 * 60, f"axis spans {(right - left) / 60:.0f} min for a shift minutes old"
        assert right - left >= 5 * 60  # not zoomed to seconds either
        assert left <= min(xs) and max(xs) <= right and left <= now <= right + 1
        assert bottom <= 0 and top >= 100
    finally:
        win.shutdown()


def test_restart_button_the_feed_comes_back_by_itself(qtbot, tmp_path):
    """Runtime → Restart: the API goes away and comes back on the same address; the window says
    it is reconnecting meanwhile (never live), and the feed resumes with no action."""
    rt = EmbeddedRuntime(data_dir=tmp_path / "rt")
    rt.start(timeout=30)
    win = open_window(qtbot, rt)
    try:
        feed = win.live.feeds[0]
        qtbot.waitUntil(lambda: feed.frames_painted >= 3, timeout=15000)
        win.roles.unlock(DEFAULT_PIN)
        win.control.skip_confirm = True
        qtbot.waitUntil(win.control.btn_restart.isEnabled, timeout=5000)
        old_pid = rt.pid
        states = []
        win.presenter.connection_changed.connect(lambda s, m: states.append((s, m)))
        with qtbot.waitSignal(win.control.action_finished, timeout=40000) as sig:
            win.control.btn_restart.click()
        assert sig.args[:2] == ["restart", True], sig.args
        assert rt.pid not in (None, old_pid)
        painted = feed.frames_painted
        qtbot.waitUntil(lambda: feed.frames_painted > painted + 3 and not feed.lost and not feed.frozen,
                        timeout=20000)
        qtbot.waitUntil(lambda: win.presenter.connection == "connected", timeout=10000)
        assert any(s == "reconnecting" and "runtime unreachable" in m for s, m in states), states
    finally:
        win.shutdown()
        rt.stop()
