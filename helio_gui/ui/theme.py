"""Dark industrial theme: one palette, one stylesheet (resources/theme/dark.qss)."""

from __future__ import annotations

from pathlib import Path

from PySide6 import QtGui, QtWidgets

COLORS = {
    "bg": "#0f1216", "panel": "#1c2229", "feed_bg": "#07090b", "text": "#e6e9ee", "muted": "#8b95a3",
    "pass": "#2ecc71", "fail": "#ff3b30", "warn": "#ffb020", "accent": "#388bfd",
}

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def stylesheet(kiosk: bool = False) -> str:
    """The QSS with sizes for desktop or kiosk (touch targets >= 48 px, larger fonts)."""
    try:
        qss = (RESOURCES / "theme" / "dark.qss").read_text("utf-8")
    except OSError:
        return ""  # an installed wheel without resources still runs, in Qt's default look
    sizes = {"FONT": 15, "TITLE": 19, "BIG": 44, "SMALL": 13, "TOUCH": 36, "FIELD": 30, "NAV": 56,
             "NAVFONT": 17, "CHECK": 20, "SCROLL": 14}
    if kiosk:
        sizes.update({"FONT": 20, "TITLE": 24, "BIG": 56, "SMALL": 16, "TOUCH": 56, "FIELD": 48, "NAV": 72,
                      "NAVFONT": 22, "CHECK": 36, "SCROLL": 32})
    for k, v in sizes.items():
        qss = qss.replace(f"@{k}@", str(v))
    return qss


def apply(app: QtWidgets.QApplication, kiosk: bool = False) -> None:
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    for role, col in ((QtGui.QPalette.ColorRole.Window, COLORS["bg"]),
                      (QtGui.QPalette.ColorRole.Base, "#0f1318"),
                      (QtGui.QPalette.ColorRole.Text, COLORS["text"]),
                      (QtGui.QPalette.ColorRole.WindowText, COLORS["text"]),
                      (QtGui.QPalette.ColorRole.Button, "#27303a"),
                      (QtGui.QPalette.ColorRole.ButtonText, COLORS["text"]),
                      (QtGui.QPalette.ColorRole.Highlight, "#1f6feb")):
        pal.setColor(role, QtGui.QColor(col))
    app.setPalette(pal)
    app.setStyleSheet(stylesheet(kiosk))
