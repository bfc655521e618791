"""`helio-gui`: the operator console.

With no arguments it starts the embedded runtime (a child process) on the project's demo
footage and shows it. `--runtime-url URL --token T` connects to a runtime that already runs;
`--docker` controls the runtime container described by the saved runtime profile.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

T0 = time.monotonic()


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="helio-gui", description="HelioVision operator console")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--embedded", action="store_true", help="run the runtime as a child process (default "
                      "when no runtime URL is given and no Docker profile is configured)")
    mode.add_argument("--docker", action="store_true", help="control the runtime container on the Docker engine")
    ap.add_argument("--runtime-url", action="append", default=[], metavar="URL",
                    help="connect to a running runtime (repeat for up to 4 feeds)")
    ap.add_argument("--token", action="append", default=[], help="API token for each --runtime-url, in order")
    ap.add_argument("--profile", help="runtime profile file for --docker")
    ap.add_argument("--source", help="embedded mode: source spec (camera, file, folder, URL); default demo footage")
    ap.add_argument("--recipe", help="embedded mode: recipe file; default the demo recipe")
    ap.add_argument("--data-dir", help="embedded mode: data directory (default: the platform's data location)")
    ap.add_argument("--kiosk", action="store_true", help="full screen, no window chrome, touch sizes")
    ap.add_argument("--screen", default="live", choices=["live", "stats", "runtime", "settings"],
                    help="screen shown first")
    ap.add_argument("--unlock", metavar="PIN", help="start unlocked as engineer (tests, commissioning)")
    ap.add_argument("--size", default="1280x800", help="window size WxH (ignored in kiosk mode)")
    ap.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window, then quit")
    ap.add_argument("--screenshots", metavar="DIR", help="save a PNG of every screen into DIR, then quit")
    ap.add_argument("--screenshot-delay", type=float, default=4.0, metavar="S",
                    help="seconds to wait before the screenshots (default 4)")
    ap.add_argument("--quit-after", type=float, metavar="SECONDS", help="quit after this many seconds")
    ap.add_argument("--print-timing", action="store_true", help="print the time to the first painted frame")
    return ap.parse_args(argv)


def _display_problem() -> str | None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                                                  or os.environ.get("QT_QPA_PLATFORM")):
        return ("helio-gui needs a display, and none is set (DISPLAY / WAYLAND_DISPLAY are empty).\n"
                "Run it on the station's desktop, over `ssh -X`, under Xvfb (xvfb-run helio-gui), or headless with "
                "QT_QPA_PLATFORM=offscreen. The runtime alone runs without a display: helio-runtime.")
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = _display_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    try:
        w, h = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"--size {args.size!r}: give it as WIDTHxHEIGHT, e.g. 1280x800", file=sys.stderr)
        return 2
    if len(args.token) not in (0, 1, len(args.runtime_url)):
        print("give one --token per --runtime-url (or one for all)", file=sys.stderr)
        return 2

    # The runtime child takes longest to start, so it starts first, before pydantic and Qt are
    # imported: from the settings file's mode/source/recipe (read quickly); the full validation
    # follows and stops it again if the file is bad.
    _install_quit_signals()
    from .paths import early_settings

    early = early_settings()
    embedded = None
    if not args.runtime_url and not args.docker and (args.embedded or early.get("mode") != "docker"):
        from ..client.embedded import EmbeddedRuntime

        embedded = EmbeddedRuntime(source=args.source or early.get("source"),
                                   recipe=args.recipe or early.get("recipe"), data_dir=args.data_dir)
    try:
        if embedded is not None:
            embedded.start(wait=False)
            if args.print_timing:
                print(f"runtime spawned {time.monotonic() - T0:.3f} s after start", flush=True)
        return _configure_and_run(args, embedded, (w, h))
    except _QuitSignal:
        if embedded is not None:
            embedded.stop()
        return 0


def _configure_and_run(args, embedded, size) -> int:
    from .config import GuiConfig

    try:
        config = GuiConfig.load()
    except ValueError as exc:
        if embedded is not None:
            embedded.stop()
        print(f"helio-gui: bad settings file: {exc}", file=sys.stderr)
        return 2
    runtimes: list[tuple[str, str, str]] = []
    backend = None
    mode_text = ""
    if args.runtime_url:
        tokens = args.token * len(args.runtime_url) if len(args.token) == 1 else args.token or [""] * len(args.runtime_url)
        runtimes = [(f"Feed {i + 1}", url, tok) for i, (url, tok) in enumerate(zip(args.runtime_url, tokens))]
        mode_text = "Remote runtime"
    elif embedded is None:
        try:
            from ..engine import connect
            from ..engine.profile import RuntimeProfile
            from .backends import DockerBackend

            path = args.profile or config.profile_path
            if not path:
                raise ValueError("no runtime profile: give --profile FILE (or set profile_path in the settings file)")
            profile = RuntimeProfile.load(path)
            engine = connect()
            backend = DockerBackend(profile, engine, profile_path=path)
            runtimes = [("Feed 1", profile.base_url, profile.token or "")]
            mode_text = f"Docker · profile {profile.name}"
        except Exception as exc:  # noqa: BLE001 - shown to the person with what to do
            print(f"helio-gui: Docker mode unavailable: {exc}", file=sys.stderr)
            return 2
    else:
        from .backends import EmbeddedBackend

        backend = EmbeddedBackend(embedded)
        runtimes = [("Feed 1", embedded.base_url, embedded.token)]
        mode_text = "Embedded runtime"
    try:
        return _run_gui(args, config, runtimes, backend, embedded, mode_text, size)
    finally:
        if backend is not None:
            backend.shutdown()
        elif embedded is not None:
            embedded.stop()


class _QuitSignal(BaseException):
    """A quit signal that arrived before the event loop ran."""


_QUIT_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")
_quit_gui = None  # set while the Qt event loop runs: closes the window from the GUI thread


def _install_quit_signals() -> None:
    import signal

    def handler(signum, frame):
        if _quit_gui is not None:
            _quit_gui()
        else:
            raise _QuitSignal()

    for name in _QUIT_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), handler)


def _wake_python_on_signals(app):
    """Qt's event loop runs in C++, so a Python signal handler would wait for the next Python
    call; a wakeup fd watched by a QSocketNotifier runs it at once (no polling timer)."""
    import signal
    import socket

    from PySide6 import QtCore

    rsock, wsock = socket.socketpair()
    for s in (rsock, wsock):
        s.setblocking(False)
    signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
    notifier = QtCore.QSocketNotifier(rsock.fileno(), QtCore.QSocketNotifier.Type.Read, app)

    def drain():
        try:
            rsock.recv(64)
        except OSError:
            pass

    notifier.activated.connect(drain)  # the Python handler runs as soon as Python gets control
    return notifier, rsock, wsock


def _run_gui(args, config, runtimes, backend, embedded, mode_text, size) -> int:
    from PySide6 import QtCore, QtWidgets

    from .memory import tune_allocator

    tune_allocator()

    from . import theme
    from .main_window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("HelioVision Operator")
    theme.apply(app, kiosk=args.kiosk)
    win = MainWindow(runtimes, backend=backend, config=config, kiosk=args.kiosk, mode_text=mode_text)
    if args.unlock and not win.roles.unlock(args.unlock):
        print("helio-gui: --unlock: wrong PIN", file=sys.stderr)
    win.show_screen(args.screen)
    if args.kiosk:
        # Without a window manager (a bare X server) full screen is only a hint: size it ourselves.
        win.setGeometry(app.primaryScreen().geometry())
        win.showFullScreen()
    else:
        win.resize(*size)
        win.show()
    exit_code = [0]
    global _quit_gui

    def quit_gui():
        win._closing_allowed = True  # kiosk too: the signal comes from the system, not the operator
        win.close()
        app.quit()

    _quit_gui = quit_gui
    wake = _wake_python_on_signals(app)
    if args.print_timing:
        print(f"window shown {time.monotonic() - T0:.3f} s after start", flush=True)

    if embedded is not None:
        # Wait for the child's API off the GUI thread, then connect the streams.
        def ready():
            embedded.wait_ready(20)
            if args.print_timing:
                print(f"runtime API answered {time.monotonic() - T0:.3f} s after start", flush=True)

        def failed(msg):
            win.conn_label.setText(f"embedded runtime failed to start: {msg.splitlines()[0]}")
            print(f"helio-gui: {msg}", file=sys.stderr)

        win.runner.run(ready, on_done=lambda _: win.start(), on_error=failed)
    else:
        win.start()

    if args.print_timing:
        def first(_fid):
            print(f"first frame painted {time.monotonic() - T0:.3f} s after start", flush=True)
            win.live.feeds[0].frame_painted.disconnect(first)
        win.live.feeds[0].frame_painted.connect(first)

    if args.screenshot or args.screenshots:
        def shoot():
            try:
                if args.screenshots:
                    os.makedirs(args.screenshots, exist_ok=True)
                    for key in list(win.nav_buttons):
                        win.show_screen(key)
                        _settle(app)
                        win.grab().save(os.path.join(args.screenshots, f"{key}.png"))
                if args.screenshot:
                    os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
                    win.show_screen(args.screen)
                    _settle(app)
                    if not win.grab().save(args.screenshot):
                        raise OSError(f"cannot write {args.screenshot}")
            except Exception as exc:  # noqa: BLE001
                print(f"helio-gui: screenshot failed: {exc}", file=sys.stderr)
                exit_code[0] = 1
            win._closing_allowed = True
            win.close()
        QtCore.QTimer.singleShot(int(args.screenshot_delay * 1000), shoot)
    if args.quit_after:
        def quit_now():
            win._closing_allowed = True
            win.close()
        QtCore.QTimer.singleShot(int(args.quit_after * 1000), quit_now)
    try:
        app.exec()
    finally:
        import signal

        _quit_gui = None
        signal.set_wakeup_fd(-1)
        wake[0].setEnabled(False)
        for sock in wake[1:]:
            sock.close()
        win.shutdown()
    return exit_code[0]


def _settle(app) -> None:
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main())
