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
    """A full-width red banner while any alarm is unacknowledged; amber line while one is active."""

    acknowledge_clicked = QtCore.Signal()

    def __init__(self, model: AlarmModel, parent=None):
        super().__init__(parent)
        self.setObjectName("AlarmBanner")
        self.model = model
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(18, 8, 12, 8)
        self.icon = QtWidgets.QLabel("⚠")
        self.text = QtWidgets.QLabel()
        self.text.setWordWrap(True)
        self.ack = QtWidgets.QPushButton("ACKNOWLEDGE")
        self.ack.setMinimumWidth(200)
        self.ack.clicked.connect(self.acknowledge_clicked)
        lay.addWidget(self.icon)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.ack)
        model.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        unack = self.model.unacknowledged()
        active = self.model.active()
        if unack:
            self.setStyleSheet("#AlarmBanner { background: #c62828; }")
            self.text.setText("   |   ".join(("" if a.active else "(cleared) ") + a.message for a in unack))
            self.ack.show()
            self.show()
        elif active:
            self.setStyleSheet("#AlarmBanner { background: #8a5a00; }")
            self.text.setText("Acknowledged, still active: " + "   |   ".join(a.message for a in active))
            self.ack.hide()
            self.show()
        else:
            self.hide()
