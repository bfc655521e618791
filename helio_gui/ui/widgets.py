"""Small shared widgets: cards, big numbers, the PASS/FAIL banner."""

from __future__ import annotations

import html

from PySide6 import QtCore, QtWidgets

from .theme import COLORS


class Card(QtWidgets.QFrame):
    def __init__(self, title: str = "", parent=None):
        super().__init__(parent)
        self.setProperty("role", "card")
        self.layout_ = QtWidgets.QVBoxLayout(self)
        self.layout_.setContentsMargins(16, 12, 16, 12)
        self.layout_.setSpacing(8)
        if title:
            t = QtWidgets.QLabel(title.upper())
            t.setProperty("role", "biglabel")
            t.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Fixed)
            self.layout_.addWidget(t)

    def add(self, w, stretch: int = 0):
        self.layout_.addWidget(w, stretch)
        return w


class ElidedLabel(QtWidgets.QLabel):
    """One line that never widens its window: long text ends in "…" and shows whole as a tooltip."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(text, parent)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(80)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt naming
        super().setText(text)
        self.setToolTip(text)

    def paintEvent(self, ev) -> None:
        from PySide6 import QtGui

        p = QtGui.QPainter(self)
        p.setPen(self.palette().color(self.foregroundRole()))
        text = self.fontMetrics().elidedText(self.text(), QtCore.Qt.TextElideMode.ElideRight, self.width())
        p.drawText(self.rect(), int(QtCore.Qt.AlignmentFlag.AlignVCenter | QtCore.Qt.AlignmentFlag.AlignLeft), text)
        p.end()


class BigNumber(Card):
    def __init__(self, title: str, value: str = "–", parent=None):
        super().__init__(title, parent)
        self.value = QtWidgets.QLabel(value)
        self.value.setProperty("role", "bignum")
        self.add(self.value)

    def set(self, text: str, color: str | None = None) -> None:
        self.value.setText(text)
        self.value.setStyleSheet(f"color: {color};" if color else "")


class VerdictBanner(QtWidgets.QLabel):
    """The last part's verdict, as large as the space allows: green PASS, red FAIL."""

    def __init__(self, parent=None):
        super().__init__("WAITING", parent)
        self.setObjectName("VerdictBanner")
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.setMinimumHeight(120)
        self.verdict = ""
        self.set_verdict("")

    def set_verdict(self, verdict: str, detail: str = "") -> None:
        self.verdict = verdict
        if verdict == "PASS":
            bg, fg, text = COLORS["pass"], "#04210f", "PASS"
        elif verdict == "FAIL":
            bg, fg, text = COLORS["fail"], "#ffffff", "FAIL"
        else:
            bg, fg, text = "#27303a", COLORS["muted"], verdict or "WAITING"
        big = 56 if verdict in ("PASS", "FAIL") else 40
        # The verdict is what is read from 2 m; the part number under it is half the size, so
        # both fit the banner's minimum height (a squeezed kiosk column clipped "PASS").
        self.setText(f"<div style='font-size:{big}px'>{text}</div>"
                     + (f"<div style='font-size:{big // 2}px'>{html.escape(detail)}</div>" if detail else ""))
        self.setStyleSheet(f"QLabel#VerdictBanner {{ background: {bg}; color: {fg}; border-radius: 10px;"
                           f" font-weight: 800; padding: 4px; }}")


def confirm(parent, title: str, text: str, ok_text: str) -> bool:
    """A touch-friendly confirmation for destructive actions."""
    box = QtWidgets.QMessageBox(parent)
    box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(text)
    ok = box.addButton(ok_text, QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Cancel", QtWidgets.QMessageBox.ButtonRole.RejectRole)
    for b in box.buttons():
        b.setMinimumSize(140, 56)
    box.exec()
    return box.clickedButton() is ok


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "–"
