"""Alarms: conditions raised by the presenters, shown in a banner, acknowledged and logged."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6 import QtCore, QtWidgets


@dataclass
class Alarm:
    key: str  # "defect_rate", "runtime_down", "feed_frozen:<feed>", "camera_lost"
    message: str
    raised_at: float = field(default_factory=time.time)
    active: bool = True
    acknowledged: bool = False
    acknowledged_by: str = ""


class DefectRateWindow:
    """FAIL fraction over the last `size` parts (a sliding window by part count)."""

    def __init__(self, size: int):
        self.verdicts: collections.deque[bool] = collections.deque(maxlen=size)
        self.seen_ids: set[int] = set()

    def add(self, result_id: int, failed: bool) -> None:
        if result_id in self.seen_ids:
            return  # a replayed result (reconnect) is not counted twice
        self.seen_ids.add(result_id)
        if len(self.seen_ids) > 100000:
            self.seen_ids.clear()
        self.verdicts.append(failed)

    @property
    def count(self) -> int:
        return len(self.verdicts)

    @property
    def rate(self) -> float:
        return sum(self.verdicts) / len(self.verdicts) if self.verdicts else 0.0


class AlarmModel(QtCore.QObject):
    """Active and unacknowledged alarms. Every transition is appended to `log_path`."""

    changed = QtCore.Signal()

    def __init__(self, log_path: Path | None = None, parent=None):
        super().__init__(parent)
        self.alarms: dict[str, Alarm] = {}
        self.log_path = log_path
        self.history: list[str] = []

    def _log(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}"
        self.history.append(line)
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass  # the banner still shows it; a full disk must not hide alarms

    def raise_(self, key: str, message: str) -> None:
        a = self.alarms.get(key)
        if a is not None and a.active:
            if a.message != message:
                a.message = message
                self.changed.emit()
            return
        self.alarms[key] = Alarm(key, message)
        self._log(f"ALARM {key}: {message}")
        self.changed.emit()

    def clear(self, key: str) -> None:
        a = self.alarms.get(key)
        if a is None or not a.active:
            return
        a.active = False
        self._log(f"CLEARED {key}")
        if a.acknowledged:
            del self.alarms[key]
        self.changed.emit()

    def acknowledge_all(self, who: str) -> None:
        for key, a in list(self.alarms.items()):
            if not a.acknowledged:
                a.acknowledged, a.acknowledged_by = True, who
                self._log(f"ACK {key} by {who}")
            if not a.active:
                del self.alarms[key]
        self.changed.emit()

    def unacknowledged(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if not a.acknowledged]

    def active(self) -> list[Alarm]:
        return [a for a in self.alarms.values() if a.active]


class AlarmBanner(QtWidgets.QFrame):
    """The alarm row under the status strip: red while any alarm is unacknowledged, amber while
    one is still active, a quiet "no alarms" line otherwise. It always keeps its height, so an
    alarm never pushes the buttons below it under the operator's finger (touchscreens)."""

    acknowledge_clicked = QtCore.Signal()
    MAX_LINES = 3

    def __init__(self, model: AlarmModel, parent=None):
        super().__init__(parent)
        self.setObjectName("AlarmBanner")
        self.model = model
        self.alarming = False
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(18, 4, 12, 4)
        self.icon = QtWidgets.QLabel("⚠")
        self.text = QtWidgets.QLabel()
        # One line per alarm, MAX_LINES at most (more: the last line counts the rest; all are in
        # the tooltip). Lines are elided to the width, never wrapped, so none is cut top/bottom.
        self.text.setWordWrap(False)
        self.text.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Ignored)
        self.lines: list[str] = []
        self.ack = QtWidgets.QPushButton("ACKNOWLEDGE")
        self.ack.setMinimumWidth(200)
        self.ack.clicked.connect(self.acknowledge_clicked)
        # The button's space stays reserved when it is hidden, so the text never reflows.
        keep = self.ack.sizePolicy()
        keep.setRetainSizeWhenHidden(True)
        self.ack.setSizePolicy(keep)
        lay.addWidget(self.icon)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.ack)
        model.changed.connect(self.refresh)
        self.refresh()

    def _fix_height(self) -> None:
        self.ensurePolished()
        self.text.ensurePolished()
        self.ack.ensurePolished()
        lines = self.MAX_LINES * self.text.fontMetrics().lineSpacing() + 12
        self.setFixedHeight(max(lines, self.ack.sizeHint().height() + 8))
        self._show_lines()

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._show_lines()

    def _show_lines(self) -> None:
        fm = self.text.fontMetrics()
        w = max(40, self.text.width())
        self.text.setText("\n".join(fm.elidedText(line, QtCore.Qt.TextElideMode.ElideRight, w)
                                    for line in self.lines))

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        if ev.type() in (QtCore.QEvent.Type.StyleChange, QtCore.QEvent.Type.FontChange):
            self._fix_height()

    def _set_look(self, state: str) -> None:
        if getattr(self, "_state", None) == state:
            return
        self._state = state
        bg = {"alarm": "#c62828", "active": "#8a5a00"}.get(state)
        if bg:
            self.setStyleSheet(f"#AlarmBanner {{ background: {bg}; }}")
        else:
            self.setStyleSheet("#AlarmBanner { background: transparent; border-bottom: 1px solid #30363d; }"
                               "#AlarmBanner QLabel { color: #8b949e; font-weight: 400; }")
        self._fix_height()

    def refresh(self) -> None:
        unack = self.model.unacknowledged()
        active = self.model.active()
        shown = unack or active
        self.alarming = bool(shown)
        if unack:
            self._set_look("alarm")
            parts = [("" if a.active else "(cleared) ") + a.message for a in unack]
            self.ack.show()
        elif active:
            self._set_look("active")
            parts = ["Acknowledged, still active: " + a.message for a in active]
            self.ack.hide()
        else:
            self._set_look("quiet")
            parts = []
            self.ack.hide()
        if not shown:
            self.icon.setText("✓")
            self.lines = ["No active alarms"]
            self.setToolTip("")
            self._show_lines()
            return
        self.icon.setText("⚠")
        lines = list(parts)
        if len(lines) > self.MAX_LINES:
            rest = len(lines) - (self.MAX_LINES - 1)
            lines = lines[:self.MAX_LINES - 1] + [f"+{rest} more — {len(parts)} alarms in all (list in the tooltip)"]
        self.lines = lines
        self._show_lines()
        self.setToolTip("\n".join(parts))
