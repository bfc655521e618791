"""UI test fixtures: isolated GUI config/log dirs, real frames from real footage, a real runtime."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from helio_gui.client import EmbeddedRuntime, StreamFrame


@pytest.fixture(autouse=True)
def gui_dirs(tmp_path, monkeypatch):
    # Never touch the person's own settings, PIN or alarm log.
    monkeypatch.setenv("HELIO_GUI_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("HELIO_GUI_LOG_DIR", str(tmp_path / "logs"))
    return tmp_path


@pytest.fixture(scope="session")
def real_frames(conveyor_video):
    """A few decoded frames of the real conveyor video, read-only like the reader's."""
    cap = cv2.VideoCapture(str(conveyor_video))
    out = []
    try:
        while len(out) < 8:
            ok, img = cap.read()
            if not ok:
                break
            img.flags.writeable = False
            out.append(img)
    finally:
        cap.release()
    assert out
    return out


def make_frame(img: np.ndarray, frame_id: int) -> StreamFrame:
    now = time.monotonic()
    return StreamFrame(img, frame_id, time.time(), now, now, frame_id)


@pytest.fixture(scope="module")
def demo_runtime(tmp_path_factory):
    """A real helio-runtime child process on the project's demo footage (results come quickly)."""
    rt = EmbeddedRuntime(data_dir=tmp_path_factory.mktemp("rt-data"))
    rt.start(timeout=30)
    yield rt
    rt.stop()
