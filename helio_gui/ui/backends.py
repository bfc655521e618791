"""Runtime control backends, Qt-free: the embedded child process, or a container on the engine.

The control panel calls these from worker threads only. Each returns plain dicts/strings;
long calls take `progress(stage, message, fraction)` and a `cancel` threading.Event.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from ..client import EmbeddedRuntime

ProgressFn = Callable[[str, str, "float | None"], None]


class ControlError(RuntimeError):
    """An action that cannot be done here; the message says what to do instead."""


class EmbeddedBackend:
    """Controls an `EmbeddedRuntime` (a child process of the GUI)."""

    kind = "embedded"
    can_update = False

    def __init__(self, runtime: EmbeddedRuntime):
        self.rt = runtime
        self._cpu_prev: tuple[float, float] | None = None

    def describe(self) -> str:
        return f"Embedded runtime (child process) on {self.rt.base_url}"

    def status(self) -> dict:
        """State of the child process, plus CPU and memory from /proc (Linux)."""
        pid = self.rt.pid
        st = {"state": "running" if pid else "stopped", "health": "", "version": "", "restarts": self.rt.restarts,
              "uptime_s": (time.time() - self.rt.started_at) if pid and self.rt.started_at else None,
              "pid": pid, "cpu_percent": None, "mem_bytes": None, "engine": "not used (embedded mode)"}
        if pid:
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                cpu_s = (int(fields[11]) + int(fields[12])) / ticks
                now = time.monotonic()
                if self._cpu_prev is not None and now > self._cpu_prev[0]:
                    st["cpu_percent"] = 100.0 * (cpu_s - self._cpu_prev[1]) / (now - self._cpu_prev[0])
                self._cpu_prev = (now, cpu_s)
                with open(f"/proc/{pid}/statm") as fh:
                    st["mem_bytes"] = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, IndexError, ValueError):
                pass
        return st

    def start(self, progress: ProgressFn | None = None, cancel=None) -> str:
        self.rt.start(timeout=20)
        return f"runtime started (pid {self.rt.pid})"

    def stop(self, progress: ProgressFn | None = None, cancel=None) -> str:
        code = self.rt.stop()
        return f"runtime stopped (exit code {code})"

    def restart(self, progress: ProgressFn | None = None, cancel=None) -> str:
        self.rt.restart(timeout=20)
        return f"runtime restarted (pid {self.rt.pid})"

    def update(self, source_kind: str, value: str, progress: ProgressFn | None = None, cancel=None) -> str:
        raise ControlError("Updates replace a container image: switch to Docker mode (Settings → Runtime mode). "
                           "The embedded runtime runs the installed helio-runtime.")

    def rollback(self, progress: ProgressFn | None = None, cancel=None) -> str:
        raise ControlError("Rollback applies to the Docker runtime container only.")

    def logs(self, stop: threading.Event, tail: int = 300) -> Iterator[str]:
        """The child's log file: the last `tail` lines, then new lines as they come (follow)."""
        path = self.rt.log_path
        while not stop.is_set() and not path.exists():
            stop.wait(0.5)
        if stop.is_set():
            return
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
            yield from (l.rstrip("\n") for l in lines[-tail:])
            while not stop.is_set():
                line = fh.readline()
                if line:
                    yield line.rstrip("\n")
                else:
                    stop.wait(0.3)

    def set_source(self, source: str | None) -> str:
        self.rt.source = source or None
        self.rt.restart(timeout=20)
        return f"runtime restarted on source {source or 'demo footage'}"

    def shutdown(self) -> None:
        self.rt.stop()


class DockerBackend:
    """Controls the runtime container described by a `RuntimeProfile`, through `helio_gui.engine`."""

    kind = "docker"
    can_update = True

    def __init__(self, profile, engine=None, base_url: str | None = None, profile_path: str | None = None):
        self.profile = profile
        self.profile_path = profile_path
        self._engine = engine
        self._engine_url = base_url
        self._lock = threading.Lock()

    def engine(self):
        # One docker client per backend, created lazily on a worker thread (connect can block).
        with self._lock:
            if self._engine is None:
                from .. import engine as eng

                self._engine = eng.connect(self._engine_url)
            return self._engine

    def describe(self) -> str:
        return f"Docker runtime container (profile {self.profile.name})"

    def status(self) -> dict:
        eng = self.engine()
        st = eng.runtime_status(self.profile)
        out = {k: getattr(st, k, None) for k in ("state", "health", "uptime_s", "restart_count", "restart_loop",
                                                  "image", "version", "digest", "container_id")}
        out["restarts"] = out.pop("restart_count")
        try:
            info = eng.info()
            out["engine"] = f"connected, engine {info.get('version') or info.get('ServerVersion') or ''}".strip()
        except Exception as exc:  # noqa: BLE001
            out["engine"] = f"error: {exc}"
        if out.get("state") == "running":
            try:
                s = eng.stats(self.profile)
                out["cpu_percent"], out["mem_bytes"] = s.cpu_percent, s.mem_bytes
            except Exception:  # noqa: BLE001 - stats are nice to have
                pass
        return out

    def _adapt(self, progress: ProgressFn | None):
        if progress is None:
            return None
        return lambda p: progress(p.stage, p.message, p.fraction)

    def start(self, progress=None, cancel=None) -> str:
        self.engine().start(self.profile)
        return "runtime container started"

    def stop(self, progress=None, cancel=None) -> str:
        self.engine().stop(self.profile)
        return "runtime container stopped"

    def restart(self, progress=None, cancel=None) -> str:
        self.engine().restart(self.profile)
        return "runtime container restarted"

    def update(self, source_kind: str, value: str, progress: ProgressFn | None = None, cancel=None,
               base_image: str | None = None) -> str:
        """Gets the image (pull / load / build), then the engine's gated update with rollback.

        For a build, `base_image` (if given) is the BASE_IMAGE build arg: a local image, so the build
        needs no registry; a `wheelhouse/` folder in the context makes pip install offline."""
        eng = self.engine()
        prog = self._adapt(progress)
        if not value:
            raise ControlError("Give the update source: an image reference, an image file, or a build folder.")
        if source_kind == "registry":
            ref = value
            eng.pull_image(ref, progress=prog, cancel=cancel)
        elif source_kind == "file":
            if not Path(value).is_file():
                raise ControlError(f"{value} is not a file; choose an image tar saved with `docker save`.")
            loaded = eng.load_image(value, progress=prog, cancel=cancel)
            ref = loaded[0] if loaded else None
            if not ref:
                raise ControlError(f"{value} held no tagged image.")
        elif source_kind == "build":
            ctx = Path(value)
            if not (ctx / "Dockerfile.device").is_file():
                raise ControlError(f"{ctx} has no Dockerfile.device; choose the project folder.")
            ref = f"helio-runtime:local-{time.strftime('%Y%m%d%H%M%S')}"
            base_image = (base_image or "").strip()
            try:
                eng.build_image(str(ctx), ref, {"BASE_IMAGE": base_image} if base_image else {},
                                progress=prog, cancel=cancel)
            except Exception as exc:
                if _is_cancel(exc):
                    raise
                if base_image:
                    raise ControlError(f"{exc}\nIs the base image {base_image!r} on this engine? Load it first "
                                       "(docker load -i base.tar); nothing was stopped.") from exc
                # The default base is a registry image: on an air-gapped machine that is the failure.
                raise ControlError(f"{exc}\nNo base image was given, so the build used Dockerfile.device's "
                                   "default from a registry. Without a registry, set Base image to a local "
                                   "image with python3 (and put wheels in wheelhouse/); nothing was "
                                   "stopped.") from exc
        else:
            raise ControlError(f"unknown update source {source_kind!r}")
        report = eng.update(self.profile, ref, progress=prog, cancel=cancel)
        self._adopt(report)
        return _report_text(report, f"update to {ref}")

    def rollback(self, progress=None, cancel=None) -> str:
        report = self.engine().rollback(self.profile, progress=self._adapt(progress))
        self._adopt(report)
        return _report_text(report, "rollback")

    def _adopt(self, report) -> None:
        # The report carries the profile now in force (new image): keep it, and save it if we can.
        new = getattr(report, "profile", None)
        if new is not None:
            self.profile = new
            if self.profile_path:
                try:
                    new.save(self.profile_path)
                except OSError:
                    pass

    def logs(self, stop: threading.Event, tail: int = 300) -> Iterator[str]:
        # Log streams end silently on read timeouts: re-attach until asked to stop.
        while not stop.is_set():
            try:
                for line in self.engine().logs(self.profile, tail=tail, follow=True, stop=stop):
                    yield line
            except Exception as exc:  # noqa: BLE001
                yield f"[logs unavailable: {exc}]"
            tail = 0
            stop.wait(1.0)

    def set_source(self, source: str | None) -> str:
        raise ControlError("In Docker mode the source is part of the runtime profile: edit the profile and restart.")

    def shutdown(self) -> None:
        eng = self._engine
        if eng is not None and hasattr(eng, "close"):
            try:
                eng.close()
            except Exception:  # noqa: BLE001
                pass


def wheelhouse_info(context: str) -> str:
    """One line for the UI: whether the build context has a wheelhouse (an offline pip install)."""
    if not context:
        return ""
    ctx = Path(context)
    if not (ctx / "Dockerfile.device").is_file():
        return f"{ctx} has no Dockerfile.device."
    wheels = list((ctx / "wheelhouse").glob("*.whl")) if (ctx / "wheelhouse").is_dir() else []
    if wheels:
        return f"wheelhouse/ found ({len(wheels)} wheels): pip installs offline, no package index needed."
    return "No wheelhouse/ in this folder: pip will need a package index (scripts/build-device-image --wheelhouse)."


def _is_cancel(exc: BaseException) -> bool:
    return type(exc).__name__ == "Cancelled"


def _report_text(report, what: str) -> str:
    """The engine's step-by-step report as text; a failed report raises with the same text."""
    text = report.summary() if hasattr(report, "summary") else str(report)
    text = f"{what}: " + text
    if not getattr(report, "success", False):
        raise ControlError(text)
    return text
