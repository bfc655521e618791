"""The inspection loop: CaptureThread → PartTrigger → Inspector → ResultStore → publish.

It runs in its own thread and never touches the asyncio loop except through the hub's
thread-safe `publish`. Latest frame wins: the loop always asks the capture for the newest
frame, and frames it never saw are counted as dropped.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from helio_gui import RUNTIME_API_VERSION, __version__
from helio_gui.runtime.broadcast import FrameSlot
from helio_gui.runtime.store import ResultStore, StoreError
from helio_gui.vision.types import SourceState

log = logging.getLogger(__name__)

FRESH_FRAME_S = 3.0  # health: a real frame within this many seconds
REJECT_JPEG_QUALITY = 85
# Triggers are served between frames: a longer queue would starve the live line of frames for
# seconds (a burst of 1500 stopped frame processing for the whole 5 s trigger timeout).
MAX_PENDING_TRIGGERS = 64


class TriggerBusy(RuntimeError):
    """Too many external triggers are already waiting."""


@dataclass
class LoadedRecipe:
    """A validated recipe with what was built from it, swapped in as one piece."""

    recipe: Any
    text: str
    fmt: str
    base_dir: Path | None
    inspector: Any
    trigger: Any


def _fmt_of(path: Path) -> str:
    return "yaml" if path.suffix.lower() in (".yaml", ".yml") else "toml"


def build_recipe(text: str, fmt: str, source_name: str, base_dir: Path | None,
                 source_kind: str | None = None) -> LoadedRecipe:
    """Parses and builds a recipe; raises `RecipeError` (with issues) if anything is wrong."""
    from helio_gui.vision.inspect import Inspector, ToolSetupError
    from helio_gui.vision.recipe import RecipeError, RecipeIssue, parse_recipe, recipe_line
    from helio_gui.vision.trigger import PartTrigger

    recipe = parse_recipe(text, fmt=fmt, source_name=source_name, base_dir=base_dir)
    try:
        inspector = Inspector(recipe, base_dir=base_dir)
    except RecipeError:
        raise
    except ToolSetupError as exc:
        loc: tuple = ("tools",)
        field = "tools"
        if exc.index is not None:
            loc = ("tools", exc.index) + ((exc.field,) if exc.field else ())
            field = f"tools[{exc.index}]" + (f".{exc.field}" if exc.field else "")
        raise RecipeError([RecipeIssue(source_name, recipe_line(text, fmt, loc), field, str(exc))]) from exc
    except Exception as exc:  # e.g. a reference image that cannot be read
        raise RecipeError([RecipeIssue(source_name, None, "tools", f"cannot build the inspector: {exc}")]) from exc
    trigger = PartTrigger(_trigger_config_for(recipe, source_kind))
    return LoadedRecipe(recipe, text, fmt, base_dir, inspector, trigger)


def _trigger_config_for(recipe: Any, source_kind: str | None) -> Any:
    # One image is one part for a folder of images, whatever the recipe says for video.
    cfg = recipe.trigger
    if source_kind == "folder" and getattr(cfg, "mode", None) not in (None, "every_frame", "external"):
        try:
            cfg = cfg.model_copy(update={"mode": "every_frame"})
        except Exception:
            pass
    return cfg


def load_recipe_file(path: Path, source_kind: str | None = None) -> LoadedRecipe:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        from helio_gui.vision.recipe import RecipeError, RecipeIssue
        raise RecipeError([RecipeIssue(str(path), None, "", f"cannot read the recipe file: {exc}")]) from exc
    return build_recipe(text, _fmt_of(path), str(path), path.resolve().parent, source_kind)


def _write_durably(path: Path, data: bytes) -> None:
    """Replaces `path` atomically and fsyncs it, so a power loss leaves the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some file systems cannot fsync a directory; the file itself is synced
        pass


class LatencyWindow:
    """Rolling capture-to-result latencies (seconds) with percentiles."""

    def __init__(self, size: int = 2000):
        self._values: collections.deque[float] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)

    def percentiles_ms(self) -> dict:
        with self._lock:
            values = list(self._values)
        if not values:
            return {"p50": None, "p95": None, "max": None, "n": 0}
        arr = np.asarray(values) * 1000.0
        return {"p50": round(float(np.percentile(arr, 50)), 2), "p95": round(float(np.percentile(arr, 95)), 2),
                "max": round(float(arr.max()), 2), "n": len(values)}


class Runtime:
    """Owns the capture, the loop thread, the store and the newest-frame slot."""

    def __init__(self, source_spec: str, recipe_path: Path | None, store: ResultStore, *,
                 data_dir: Path, stall_timeout_s: float = 1.0,
                 on_result: Callable[[dict], None] | None = None):
        from helio_gui.vision.sources import CaptureThread, SourceConfig

        self.store = store
        self.data_dir = Path(data_dir)
        self.on_result = on_result
        self.source_spec = source_spec
        self.source_config = SourceConfig.parse(source_spec)  # raises SourceError on a bad spec
        self.source_kind = getattr(self.source_config, "kind", None)
        self.capture = CaptureThread(self.source_config, stall_timeout_s=stall_timeout_s)
        # Set when the saved recipe cannot be used: the runtime then serves frames but inspects
        # nothing (health 503) until a recipe is PUT, rather than judge parts by a wrong recipe.
        self.recipe_problem: str | None = None
        self.recipe = self._initial_recipe(recipe_path)
        self.slot = FrameSlot()
        self.latency = LatencyWindow()
        self.result_latency = LatencyWindow()
        self.started_at = time.time()
        self._started_mono = time.monotonic()
        self._stop = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pending_recipe: LoadedRecipe | None = None
        self._triggers: collections.deque[concurrent.futures.Future] = collections.deque()
        self._lock = threading.Lock()
        self._replace_lock = threading.Lock()
        self._last_frame: Any = None
        self._last_frame_mono: float | None = None
        self._processed_times: collections.deque[float] = collections.deque(maxlen=600)
        self.frames_processed = 0
        self.frames_dropped = 0
        self.parts_inspected = 0
        self.inspect_errors = 0
        self.store_errors = 0
        self.last_error = ""
        self.store_failing: str | None = None  # the last store attempt failed with this

    # -- recipe --------------------------------------------------------------------------------
    @property
    def _saved_recipe_paths(self) -> tuple[Path, Path]:
        return self.data_dir / "recipe.active", self.data_dir / "recipe.active.json"

    def _initial_recipe(self, recipe_path: Path | None) -> LoadedRecipe:
        if recipe_path is not None:
            return load_recipe_file(recipe_path, self.source_kind)
        text_path, meta_path = self._saved_recipe_paths
        if text_path.exists() and meta_path.exists():
            # A recipe PUT through the API outlives restarts when no recipe file is configured.
            # Either file may be damaged, or no longer valid for a newer runtime: that must not
            # crash-loop the runtime, nor may parts be judged by another recipe. The runtime holds
            # inspection (health 503, status says why) until a good recipe is PUT.
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                if not isinstance(meta, dict):
                    raise ValueError("not a JSON object")
                base = Path(meta["base_dir"]) if meta.get("base_dir") else None
                return build_recipe(text_path.read_text(encoding="utf-8"), meta["format"], str(text_path),
                                    base, self.source_kind)
            except Exception as exc:
                self.recipe_problem = (f"the saved recipe {text_path} cannot be used ({exc}); inspection is on hold: "
                                       "send a recipe (GUI Settings → Recipe, or PUT /api/recipe) or restart "
                                       "with --recipe FILE")
                log.error("%s", self.recipe_problem)
        from helio_gui.runtime.config import demo_recipe
        return load_recipe_file(demo_recipe(), self.source_kind)

    def replace_recipe(self, text: str, fmt: str) -> LoadedRecipe:
        """Validates and builds a new recipe, then swaps it in at the next frame.

        Raises `RecipeError` and leaves the running recipe alone when the new one is bad."""
        # One replacement at a time: two PUTs at once shared the .tmp files (one got 503) and could
        # save one recipe while running the other.
        with self._replace_lock:
            base = self.recipe.base_dir
            loaded = build_recipe(text, fmt, f"<PUT /api/recipe>", base, self.source_kind)
            text_path, meta_path = self._saved_recipe_paths
            try:
                _write_durably(text_path, text.encode("utf-8"))
                _write_durably(meta_path, json.dumps({"format": fmt, "base_dir": str(base) if base else None})
                               .encode("utf-8"))
            except OSError as exc:
                # Saved first, swapped second: a recipe that would be gone after a restart is refused.
                raise StoreError(f"could not save the recipe in {self.data_dir}: {exc.strerror or exc}; "
                                 "free some space or make the data directory writable, then PUT it again. "
                                 "The running recipe was kept.") from exc
            with self._lock:
                self._pending_recipe = loaded
                self.recipe = loaded
                self.recipe_problem = None
            return loaded

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.capture.start()
        self._thread = threading.Thread(target=self._run, name="inspection-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.6) -> None:
        """Stops the loop and the capture (releasing the device); stored results are committed."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self.capture.stop(timeout=timeout)
        with self._lock:
            pending = list(self._triggers)
            self._triggers.clear()
        for fut in pending:
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError("the runtime is stopping"))

    # -- external trigger ----------------------------------------------------------------------
    def request_trigger(self) -> concurrent.futures.Future:
        """Asks the loop to inspect the newest frame as one part; the future gets the result JSON.

        Raises `TriggerBusy` when MAX_PENDING_TRIGGERS are already waiting."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("the runtime is stopping")
            if len(self._triggers) >= MAX_PENDING_TRIGGERS:
                raise TriggerBusy(f"{len(self._triggers)} triggers are already waiting; the loop serves them "
                                  "one part at a time, so trigger again once they are answered")
            self._triggers.append(fut)
        return fut

    # -- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        active = self.recipe
        last_id = 0
        while not self._stop.is_set():
            try:
                with self._lock:
                    if self._pending_recipe is not None:
                        active, self._pending_recipe = self._pending_recipe, None
                        log.info("recipe %s version %s is now running", active.recipe.name, active.recipe.version)
                frame = self.capture.wait_frame(last_id, timeout=0.05)
                if frame is not None:
                    if last_id and frame.frame_id > last_id + 1:
                        self.frames_dropped += frame.frame_id - last_id - 1
                    last_id = frame.frame_id
                    self._last_frame, self._last_frame_mono = frame, frame.monotonic
                    self.slot.put(frame)
                    self._process(active, frame)
                self._serve_triggers(active)
            except Exception as exc:
                # The loop is the line: whatever went wrong with one frame, the next is inspected.
                # (A dead loop thread left the API up, health failing and nothing counted.)
                log.exception("inspection loop error")
                self._error(f"inspection loop error: {exc}")
                self._stop.wait(0.05)

    def _process(self, active: LoadedRecipe, frame: Any) -> None:
        if self.recipe_problem is not None:
            events = []
        else:
            try:
                events = active.trigger.update(frame)
            except Exception as exc:
                self._error(f"part trigger failed on frame {frame.frame_id}: {exc}")
                events = []
        for event in events:
            self._inspect_and_record(active, frame, event)
        now = time.monotonic()
        self.latency.add(now - frame.monotonic)
        self.frames_processed += 1
        self._processed_times.append(now)

    def _serve_triggers(self, active: LoadedRecipe) -> None:
        # Stop checks in between: a queue of triggers must not hold up SIGTERM (stop() fails the rest).
        while not self._stop.is_set():
            with self._lock:
                if not self._triggers:
                    return
                fut = self._triggers.popleft()
            if not fut.set_running_or_notify_cancel():
                continue  # the caller gave up (504) before its turn: it was told nothing is stored
            frame = self._last_frame
            if frame is None:
                fut.set_exception(RuntimeError("no frame has arrived from the source yet"))
                continue
            if self.recipe_problem is not None:
                fut.set_exception(RuntimeError(self.recipe_problem))
                continue
            result = self._inspect_and_record(active, frame, None)
            if result is None:
                fut.set_exception(RuntimeError(self.last_error or "inspection failed"))
            else:
                fut.set_result(result)

    def _inspect_and_record(self, active: LoadedRecipe, frame: Any, event: Any) -> dict | None:
        try:
            inspection = active.inspector.inspect(frame, event)
        except Exception as exc:
            self.inspect_errors += 1
            self._error(f"inspection failed on frame {frame.frame_id}: {exc}")
            return None
        self.slot.put_inspection(inspection)
        jpeg = None
        if not inspection.passed:
            try:
                from helio_gui.vision.annotate import draw_overlay
                ok, buf = cv2.imencode(".jpg", draw_overlay(frame.image, inspection),
                                       [cv2.IMWRITE_JPEG_QUALITY, REJECT_JPEG_QUALITY])
                jpeg = buf.tobytes() if ok else None
            except Exception as exc:  # the record matters more than its picture
                self._error(f"could not draw the reject image for frame {frame.frame_id}: {exc}")
        try:
            result = self.store.add(inspection, jpeg=jpeg, source_name=getattr(frame, "source_name", ""))
        except StoreError as exc:
            # Not stored means not reported: no client ever sees a result that could be lost.
            self.store_errors += 1
            self.store_failing = str(exc)
            self._error(str(exc))
            return None
        self.store_failing = None
        self.parts_inspected += 1
        self.result_latency.add(time.monotonic() - frame.monotonic)
        if self.on_result is not None:
            self.on_result(result)
        return result

    def _error(self, message: str) -> None:
        self.last_error = message
        log.error("%s", message)

    # -- status --------------------------------------------------------------------------------
    def frame_age(self) -> float | None:
        mono = self._last_frame_mono
        return None if mono is None else max(0.0, time.monotonic() - mono)

    def health(self) -> tuple[bool, dict]:
        state = self.capture.state
        state_s = state.value if isinstance(state, SourceState) else str(state)
        age = self.frame_age()
        if age is None:
            return False, {"ok": False, "reason": f"no frame from the source yet ({self.capture.reason or state_s})",
                           "source_state": state_s}
        if age > FRESH_FRAME_S:
            return False, {"ok": False, "reason": f"no frame for {age:.1f} s ({self.capture.reason or state_s})",
                           "source_state": state_s}
        if self.recipe_problem is not None:
            return False, {"ok": False, "reason": self.recipe_problem, "source_state": state_s,
                           "frame_age_s": round(age, 3)}
        failing = self.store_failing
        if failing is not None:
            # Frames flow but parts are not being counted (a full disk): that is not ready.
            return False, {"ok": False, "reason": f"results cannot be stored, parts are not counted: {failing}",
                           "source_state": state_s, "frame_age_s": round(age, 3)}
        return True, {"ok": True, "frame_age_s": round(age, 3), "source_state": state_s}

    def fps_processed(self) -> float:
        now = time.monotonic()
        times = [t for t in list(self._processed_times) if now - t <= 2.0]
        if len(times) < 2:
            return 0.0
        return round((len(times) - 1) / max(1e-6, times[-1] - times[0]), 2)

    def status(self) -> dict:
        cs = self.capture.stats()
        state = cs.get("state")
        state_s = state.value if isinstance(state, SourceState) else str(state)
        age = self.frame_age()
        lat = self.latency.percentiles_ms()
        recipe = self.recipe.recipe
        return {
            "runtime_version": __version__,
            "api_version": RUNTIME_API_VERSION,
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "started_at": self.started_at,
            "source": {"spec": self.source_spec, "kind": cs.get("kind", self.source_kind), "state": state_s,
                       "reason": cs.get("reason", ""), "width": cs.get("width"), "height": cs.get("height"),
                       "fps_in": cs.get("fps_in"), "frames_captured": cs.get("frames_captured"),
                       "capture_dropped": cs.get("frames_dropped"), "files_skipped": cs.get("files_skipped", 0)},
            "fps_processed": self.fps_processed(),
            "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped,
            "latency_ms": {"p50": lat["p50"], "p95": lat["p95"], "max": lat["max"]},
            "result_latency_ms": {k: v for k, v in self.result_latency.percentiles_ms().items() if k != "n"},
            "recipe": {"name": recipe.name, "version": str(recipe.version), "problem": self.recipe_problem},
            "last_frame_age_s": None if age is None else round(age, 3),
            "parts_total": self.store.current_shift()["total"],
            "parts_inspected": self.parts_inspected,
            "inspect_errors": self.inspect_errors,
            "store_errors": self.store_errors,
            "last_error": self.last_error,
        }
