"""Shared fixtures: the private Docker engine, base images, Qt hygiene, real data."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

# Qt renders offscreen in tests; a real window (screenshots) uses the `xvfb_display` fixture.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from tests.support import private_engine as pe  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("HELIO_SHARED_DATA", REPO.parent / "shared" / "data"))
SESSION_ID = uuid.uuid4().hex[:12]
SESSION_LABEL = f"{pe.SESSION_LABEL}={SESSION_ID}"


def pytest_configure(config):
    # Anything that reaches for "the" engine during tests reaches the private one, never the
    # user's. The engine fixture below is what starts it.
    if not os.environ.get("HELIO_TEST_DOCKER_HOST"):
        os.environ["DOCKER_HOST"] = f"unix://{pe.DEFAULT_DIR / 'docker.sock'}"
    else:
        os.environ["DOCKER_HOST"] = os.environ["HELIO_TEST_DOCKER_HOST"]


# -- real data ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`; tests that need it are skipped, visibly and counted, where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not present at {SHARED_DATA} (a user's clone has none)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def conveyor_video(shared_data) -> Path:
    path = shared_data / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"
    if not path.exists():
        pytest.skip(f"{path} missing from the shared data")
    return path


# -- the private engine ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def docker_engine():
    """A private dockerd for this session. A missing engine is a failure, never a skip."""
    engine = pe.PrivateEngine()
    try:
        engine.start()
    except pe.EngineUnavailable as exc:
        pytest.fail(f"private Docker engine unavailable: {exc}", pytrace=False)
    client = engine.client()
    # Containers left by a killed earlier run are nobody's now (we hold the engine lock).
    if not engine.external:
        pe.remove_labelled(client, pe.SESSION_LABEL)
    try:
        yield engine
    finally:
        pe.remove_labelled(client, SESSION_LABEL)
        client.close()
        engine.stop()


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    client = docker_engine.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def session_labels() -> dict[str, str]:
    """Labels every container a test creates must carry, so the session can remove them all."""
    return {pe.SESSION_LABEL: SESSION_ID}


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    return pe.busybox_image(docker_client)


@pytest.fixture(scope="session")
def debian_base_image(docker_client) -> str:
    try:
        return pe.debian_base_image(docker_client)
    except pe.EngineUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


# -- a real X display for screenshots ----------------------------------------------------------
@pytest.fixture(scope="session")
def xvfb_display():
    """Starts Xvfb at 1280x800 and yields its DISPLAY string (e.g. ':99')."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail("Xvfb is not installed (apt-get install xvfb; scripts/run-tests does it as root).", pytrace=False)
    for number in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{number}").exists() and not Path(f"/tmp/.X{number}-lock").exists():
            break
    display = f":{number}"
    proc = subprocess.Popen([xvfb, display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Xvfb did not start on {display}", pytrace=False)
        time.sleep(0.05)
    try:
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    """Where tests save screenshots for people to look at (kept after the run)."""
    path = Path(os.environ.get("HELIO_SCREENSHOT_DIR", REPO / "build" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


# -- hygiene: no thread, QThread or QTimer may outlive its test --------------------------------
_QT_TRACKED: list = []


def _install_qt_tracking() -> None:
    from PySide6 import QtCore

    if getattr(QtCore.QThread, "_helio_tracked", False):
        return
    import weakref

    thread_start = QtCore.QThread.start
    timer_start = QtCore.QTimer.start

    def tracked_thread_start(self, *args, **kwargs):
        _QT_TRACKED.append(weakref.ref(self))
        return thread_start(self, *args, **kwargs)

    def tracked_timer_start(self, *args, **kwargs):
        _QT_TRACKED.append(weakref.ref(self))
        return timer_start(self, *args, **kwargs)

    QtCore.QThread.start = tracked_thread_start
    QtCore.QTimer.start = tracked_timer_start
    QtCore.QThread._helio_tracked = True


def _running_qt_objects() -> list[str]:
    from PySide6 import QtCore

    alive = []
    for ref in list(_QT_TRACKED):
        obj = ref()
        if obj is None:
            continue
        try:
            if isinstance(obj, QtCore.QThread) and obj.isRunning():
                alive.append(f"QThread {obj.objectName() or type(obj).__name__}")
            elif isinstance(obj, QtCore.QTimer) and obj.isActive():
                alive.append(f"QTimer {obj.objectName() or type(obj).__name__} (interval {obj.interval()} ms)")
        except RuntimeError:  # C++ object already deleted: fine
            continue
    return alive


@pytest.fixture(autouse=True)
def no_leaked_threads(request):
    """Fails a test that leaves a Python thread, QThread or active QTimer behind."""
    uses_qt = "qtbot" in request.fixturenames or "qapp" in request.fixturenames
    if uses_qt:
        _install_qt_tracking()
        _QT_TRACKED.clear()
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 3.0
    while True:
        if uses_qt:
            from PySide6 import QtCore, QtWidgets

            app = QtWidgets.QApplication.instance()
            if app is not None:
                # Deleting widgets (deleteLater) stops the timers they own.
                QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
                app.processEvents()
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        leaked_qt = _running_qt_objects() if uses_qt else []
        if not leaked and not leaked_qt:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    names = [f"thread {t.name}" for t in leaked] + leaked_qt
    pytest.fail("test left running: " + ", ".join(names), pytrace=False)
