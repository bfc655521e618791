"""End-to-end fixtures: isolated GUI settings, and helpers shared by the scenario tests."""

from __future__ import annotations

import pytest
from PySide6 import QtGui


@pytest.fixture
def gui_dirs(tmp_path, monkeypatch):
    # Never touch the person's own settings, PIN or alarm log.
    monkeypatch.setenv("HELIO_GUI_CONFIG_DIR", str(tmp_path / "gui-config"))
    monkeypatch.setenv("HELIO_GUI_LOG_DIR", str(tmp_path / "gui-logs"))
    return tmp_path


@pytest.fixture
def themed_app(qapp):
    """The application in helio-gui's theme for this test, and back to how it was afterwards
    (later tests in the session compare pixels in Qt's default look)."""
    from helio_gui.ui import theme

    style, palette, sheet = qapp.style().name(), qapp.palette(), qapp.styleSheet()
    theme.apply(qapp)
    yield qapp
    qapp.setStyleSheet(sheet)
    qapp.setPalette(palette)
    qapp.setStyle(style)


def check_png(path, w=1280, h=800) -> QtGui.QImage:
    """A saved screenshot exists, has the window's size and is not blank."""
    img = QtGui.QImage(str(path))
    assert not img.isNull(), f"{path} is not an image"
    assert img.height() == h and (w is None or img.width() == w), (path, img.width(), img.height())
    small = img.scaled(64, 40)
    colours = {small.pixel(x, y) for x in range(64) for y in range(40)}
    assert len(colours) > 20, f"{path} looks blank"
    return img
