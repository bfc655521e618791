"""`EmbeddedRuntime`: the runtime as a child process of the GUI (the default without an engine).

Starts ``helio-runtime`` on a free 127.0.0.1 port with a generated token and a data dir in the
platform's standard data location; stops it with SIGTERM; a watchdog thread restarts it (with
backoff) when it dies on its own. Its output goes to ``DATA_DIR/runtime.log`` for the logs view.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import platformdirs

APP_NAME, APP_AUTHOR = "helio-gui", "HelioVision"


def default_data_dir() -> Path:
    """Where the embedded runtime keeps results, reject images and its log."""
    return Path(platformdirs.user_data_dir(APP_NAME, APP_AUTHOR)) / "embedded-runtime"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedRuntime:
    """One ``helio-runtime`` child process. `start()` blocks until its API answers (timeout)."""

    def __init__(self, source: str | None = None, recipe: str | None = None,
                 data_dir: str | os.PathLike | None = None, port: int | None = None,
                 *, host: str = "127.0.0.1", token: str | None = None,
                 extra_args: list[str] | None = None, restart: bool = True,
                 on_state: Callable[[str, str], None] | None = None):
        self.source, self.recipe = source, recipe
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.host = host
        self.port = port or free_port(host)
        self.token = token or secrets.token_urlsafe(24)
        self.extra_args = list(extra_args or [])
        self.restart_on_exit = restart
        self.on_state = on_state
        self.restarts = 0
        self.started_at: float | None = None
        self.last_exit: int | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.RLock()
        self._stop_evt = threading.Event()
        self._watchdog: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "runtime.log"

    @property
    def pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def running(self) -> bool:
        p = self._proc
        return p is not None and p.poll() is None

    def command(self) -> list[str]:
        """The command line of the child (``python -m helio_gui.runtime``: same venv as the GUI)."""
        cmd = [sys.executable, "-m", "helio_gui.runtime", "--host", self.host, "--port", str(self.port),
               "--data-dir", str(self.data_dir)]
        if self.source:
            cmd += ["--source", str(self.source)]
        if self.recipe:
            cmd += ["--recipe", str(self.recipe)]
        return cmd + self.extra_args

    def _emit(self, state: str, reason: str = "") -> None:
        if self.on_state:
            try:
                self.on_state(state, reason)
            except Exception:
                pass

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ)
        # The token goes by environment, not argv, so `ps` on a shared machine does not show it.
        env["HELIO_TOKEN"] = self.token
        env.setdefault("PYTHONUNBUFFERED", "1")
        # If this process dies without cleaning up (SIGKILL, a crash), the child stops itself.
        env["HELIO_EXIT_WITH_PARENT"] = str(os.getpid())
        try:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
        finally:
            log.close()  # the child holds its own descriptor
        self.started_at = time.time()

    def _tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Blocks until the API answers /api/health (200 or 503); raises with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self._proc
            if p is None or p.poll() is not None:
                raise RuntimeError(
                    f"the embedded runtime exited with code {p.returncode if p else '?'} while starting. "
                    f"Last log lines:\n{self._tail()}")
            # http.client, not requests: this runs before the GUI has imported anything heavy.
            conn = http.client.HTTPConnection(self.host, self.port, timeout=0.5)
            try:
                conn.request("GET", "/api/health")
                if conn.getresponse().status in (200, 503):
                    return
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            time.sleep(0.03)
        raise TimeoutError(f"the embedded runtime did not answer on {self.base_url} within {timeout:.0f} s. "
                           f"Last log lines:\n{self._tail()}")

    def start(self, timeout: float = 15.0, wait: bool = True) -> None:
        """Starts the child (if not running) and its watchdog; waits for the API when `wait`."""
        with self._lock:
            self._stop_evt.clear()
            if not self.running():
                self._emit("starting", f"starting helio-runtime on {self.base_url}")
                self._spawn()
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, name="EmbeddedRuntimeWatchdog",
                                                  daemon=True)
                self._watchdog.start()
        if wait:
            try:
                self.wait_ready(timeout)
            except BaseException:
                self.stop()
                raise
            self._emit("running", f"helio-runtime pid {self.pid} on {self.base_url}")

    def _watch(self) -> None:
        delay = 0.5
        while not self._stop_evt.wait(0.2):
            with self._lock:
                p = self._proc
                if p is None or p.poll() is None:
                    continue
                self.last_exit = p.returncode
            if not self.restart_on_exit:
                self._emit("exited", f"helio-runtime exited with code {p.returncode}")
                return
            # Died on its own: restart after a backoff so a crash loop does not spin the CPU.
            self._emit("restarting", f"helio-runtime exited with code {p.returncode}; restarting in {delay:.1f} s")
            if self._stop_evt.wait(delay):
                return
            with self._lock:
                if self._stop_evt.is_set():
                    return
                lived = time.time() - (self.started_at or 0)
                self._spawn()
                self.restarts += 1
            delay = 0.5 if lived > 30 else min(10.0, delay * 2)
            self._emit("running", f"helio-runtime restarted (pid {self.pid})")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        self._stop_evt.set()
        wd = self._watchdog
        if wd is not None and wd is not threading.current_thread():
            wd.join(2.0)
        self._watchdog = None
        with self._lock:
            p = self._proc
            if p is None:
                return None
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            self.last_exit = p.returncode
            self._emit("stopped", f"helio-runtime stopped (exit {p.returncode})")
            return p.returncode

    def restart(self, timeout: float = 15.0) -> None:
        """Stop then start (a new process on the same port and token)."""
        self.stop()
        self.restarts += 1
        self.start(timeout)

    def __enter__(self) -> "EmbeddedRuntime":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
