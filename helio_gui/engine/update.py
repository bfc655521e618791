"""The health-gated update, its rollback, and crash recovery from the journal."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import docker.errors

from .errors import EngineError, ImageRejected
from .journal import PHASES
from .profile import HANDOVER_LABEL, HANDOVER_READY, PREVIOUS_IMAGE_LABEL, RuntimeProfile
from .progress import ProgressFn, report

if TYPE_CHECKING:
    from .engine import Engine, UpdateReport

# Stages and their share of the overall progress bar.
_STAGES = {"verify": 0.0, "validate": 0.05, "prepare": 0.1, "stop": 0.2, "start": 0.3, "health": 0.35,
           "commit": 0.95, "rollback": 0.5}


def _stage(progress: ProgressFn | None, stage: str, message: str, cancellable: bool = True) -> None:
    report(progress, stage, message, _STAGES.get(stage), cancellable)


def run_update(engine: "Engine", profile: RuntimeProfile, image_ref: str,
               progress: ProgressFn | None, cancel: threading.Event | None) -> "UpdateReport":
    from .engine import UpdateReport

    rep = UpdateReport(image=image_ref, profile=profile)
    journal = engine.journal(profile)
    api = engine.client.api
    cancelled = lambda: cancel is not None and cancel.is_set()  # noqa: E731

    with engine._doing("checking for an interrupted update"):
        leftover = journal.read() is not None or engine._container(profile.previous_container_name) is not None
    if leftover:
        t = time.monotonic()
        recovered = run_recover(engine, profile, progress)
        if recovered is not None:
            rep.add("recover interrupted update", recovered.success or recovered.rolled_back,
                    recovered.outcome, t)
            if recovered.profile is not None:
                profile = recovered.profile
                rep.profile = profile

    # 1. The image first: nothing stops unless it is present and right.
    t = time.monotonic()
    _stage(progress, "verify", f"Checking image {image_ref}")
    try:
        image = engine.verify_image(image_ref)
    except ImageRejected as exc:
        rep.add("verify image", False, str(exc), t)
        rep.outcome = "refused"
        return rep
    version = ((image.get("Config") or {}).get("Labels") or {}).get("org.opencontainers.image.version")
    rep.add("verify image", True, f"{image_ref} is runtime {version}", t)

    # 2. The create request, from the profile only.
    t = time.monotonic()
    _stage(progress, "validate", "Checking the runtime profile")
    new_profile = profile.model_copy(update={"image": image_ref})
    try:
        new_profile.check_host()
    except EngineError as exc:
        rep.add("validate profile", False, str(exc), t)
        rep.outcome = "refused"
        return rep
    with engine._doing("reading the current runtime"):
        old = engine._container(profile.runtime_container_name)
    old_id = old["Id"] if old else None
    extra = {PREVIOUS_IMAGE_LABEL: old["Image"]} if old and old["Image"] != image["Id"] else {}
    if old and not extra:
        # Re-deploying the same image keeps the rollback target it already had.
        prev = (old["Config"].get("Labels") or {}).get(PREVIOUS_IMAGE_LABEL)
        extra = {PREVIOUS_IMAGE_LABEL: prev} if prev else {}
    kwargs = new_profile.create_kwargs(extra_labels=extra)
    if not (old and old["State"].get("Running")):
        # Nothing of ours holds the port: another program must not either (checked here, not
        # after a crash-looping start and a full health gate).
        try:
            engine.check_port_free(new_profile)
        except EngineError as exc:
            rep.add("validate profile", False, str(exc), t)
            rep.outcome = "refused"
            return rep
    rep.add("validate profile", True, "devices, recipe and mounts present", t)
    if (old and old["Image"] == image["Id"] and old["State"].get("Running") and not old["State"].get("Restarting")
            and not engine.mismatches(new_profile, old) and engine.probe_runtime(new_profile)[0]):
        # Already running this image with these settings and serving frames: recreating it would
        # only cost the line a feed gap.
        rep.add("compare", True, f"{image_ref} is already running with this profile and is healthy; nothing to do")
        rep.outcome, rep.success, rep.profile, rep.version = "unchanged", True, new_profile, version
        report(progress, "done", f"Runtime {version} is already running", 1.0, False)
        return rep
    if cancelled():
        rep.outcome = "cancelled"
        rep.add("cancel", True, "cancelled before anything changed")
        return rep

    journal.phase("begin", image_ref=image_ref, image_id=image["Id"], old_id=old_id,
                  profile=profile.model_dump(mode="json"), new_profile=new_profile.model_dump(mode="json"))
    new_id = None
    committed = False
    try:
        # 3. Keep the old container as the previous one. The new one is created *before* the
        # old stops: the engine validates the request while the line still runs, and the
        # feed gap shrinks to stop + start.
        t = time.monotonic()
        _stage(progress, "prepare", "Creating the new runtime container")
        with engine._doing("renaming the current runtime"):
            if old_id:
                _rename_aside(engine, profile, old_id, rep)
                journal.phase("renamed")
        try:
            with engine._doing("creating the new runtime container"):
                new_id = engine.client.containers.create(**kwargs).id
        except EngineError as exc:
            with engine._doing("restoring the runtime name"):
                if old_id:
                    api.rename(old_id, profile.runtime_container_name)
            journal.clear()
            rep.add("create new container", False, str(exc), t)
            rep.outcome = "refused"
            return rep
        journal.phase("created", new_id=new_id)
        rep.add("create new container", True, new_id[:12], t)
        if cancelled():
            raise _CancelledMidway()

        handover = (bool(old_id) and ((image.get("Config") or {}).get("Labels") or {}).get(HANDOVER_LABEL) == "1"
                    and engine._container(old_id)["State"].get("Running"))
        if handover:
            # 4a. Start the new runtime beside the old: it loads everything, then waits for the
            # port. Only then is the old one stopped, so the feed gap is stop + bind + first frame.
            t = time.monotonic()
            _stage(progress, "start", "Starting the new runtime beside the current one")
            with engine._doing("starting the new runtime"):
                api.start(new_id)
            journal.phase("handover")
            ready, why = _wait_ready(engine, new_id, min(60.0, new_profile.health_timeout_s), cancel)
            rep.add("start new (handover)", ready, why, t)
            if not ready:
                if why == "cancelled":
                    raise _CancelledMidway()
                return _undo(engine, journal, profile, old_id, new_id, rep, progress, "rolled_back")
            t = time.monotonic()
            _stage(progress, "stop", "Stopping the current runtime (the new one takes over)")
            with engine._doing("stopping the current runtime"):
                api.stop(old_id, timeout=profile.stop_timeout_s)
            journal.phase("started")
            rep.add("stop previous", True, f"stopped in {time.monotonic() - t:.2f} s", t)
        else:
            # 4b. Stop the old, start the new.
            t = time.monotonic()
            _stage(progress, "stop", "Stopping the current runtime")
            with engine._doing("stopping the current runtime"):
                if old_id and engine._container(old_id)["State"].get("Running"):
                    api.stop(old_id, timeout=profile.stop_timeout_s)
            journal.phase("stopped")
            rep.add("stop previous", True, f"stopped in {time.monotonic() - t:.2f} s", t)
            t = time.monotonic()
            _stage(progress, "start", "Starting the new runtime")
            with engine._doing("starting the new runtime"):
                api.start(new_id)
            journal.phase("started")
            rep.add("start new", True, "started", t)

        # 5. Health gate.
        t = time.monotonic()
        hc = new_profile.healthcheck
        grace = min(new_profile.health_timeout_s, hc.start_period_s + hc.interval_s * (hc.retries + 1)) if handover else 0.0
        ok, why = engine.wait_healthy(new_profile, new_id, new_profile.health_timeout_s, cancel, progress, grace_s=grace)
        rep.add("health gate", ok, why, t)
        if not ok:
            if why == "cancelled":
                raise _CancelledMidway()
            return _undo(engine, journal, profile, old_id, new_id, rep, progress, "rolled_back")

        # 6. Point of no return.
        journal.phase("committed")
        committed = True
        t = time.monotonic()
        _stage(progress, "commit", "Removing the previous container (its image is kept)", cancellable=False)
        with engine._doing("removing the previous container"):
            if old_id:
                try:
                    api.remove_container(old_id, force=True)
                except docker.errors.NotFound:
                    pass
        journal.clear()
        rep.add("remove previous container", True, "image kept for rollback", t)
        if cancelled():
            rep.add("cancel", True, "cancel came too late: the new runtime had passed its health gate, "
                                    "so the update was finished (use rollback to go back)")
        rep.outcome, rep.success, rep.profile, rep.version = "updated", True, new_profile, version
        report(progress, "done", f"Runtime {version} is running", 1.0, False)
        return rep
    except _CancelledMidway:
        return _undo(engine, journal, profile, old_id, new_id, rep, progress, "cancelled")
    except EngineError as exc:
        # The engine refused a step after the old runtime was touched (e.g. it cannot start the
        # new container). Never leave the line without a runtime: undo, and say what happened.
        rep.add("update step", False, str(exc))
        if committed:
            # The new runtime passed its gate; recover() finishes the clean-up (journal kept).
            raise EngineError(f"The update to {image_ref} succeeded but its clean-up failed: {exc.message}",
                              "The new runtime is running; the next start of the console finishes the "
                              "clean-up.") from exc
        return _undo(engine, journal, profile, old_id, new_id, rep, progress, "rolled_back")


def _undo(engine: "Engine", journal, profile: RuntimeProfile, old_id: str | None, new_id: str | None,
          rep: "UpdateReport", progress: ProgressFn | None, outcome: str) -> "UpdateReport":
    """Roll back; only a rollback that put the previous runtime back counts as `outcome`.
    Otherwise the journal is kept (recover() retries) and the report says `failed`, or, when the
    engine itself stopped answering, an EngineError says so with the whole report."""
    _rollback(engine, profile, old_id, new_id, rep, progress)
    if _restored(rep):
        # The previous container is back and started (its health gate is reported as a step).
        journal.clear()
        rep.outcome, rep.rolled_back = outcome, True
        return rep
    rep.outcome, rep.rolled_back = "failed", False
    rep.add("rollback incomplete", False, "the update journal is kept: recover() (the console does it at "
                                          "start) puts the previous runtime back")
    try:
        engine.client.ping()
    except Exception:
        raise EngineError(f"The Docker engine stopped answering during the update to {rep.image}; the previous "
                          f"runtime could not be restored yet.\n{rep.summary()}",
                          "When the engine runs again (sudo systemctl status docker), start the console (or "
                          "Engine.recover) to put the previous runtime back; the update journal is kept.") from None
    return rep


def _rename_aside(engine: "Engine", profile: RuntimeProfile, old_id: str, rep: "UpdateReport") -> None:
    """Rename the current runtime to `-previous`. A container in its restart back-off (a crash
    loop: it serves nothing) cannot be renamed ("sandbox not found"), so it is stopped first."""
    api = engine.client.api
    for attempt in range(3):
        info = engine._container(old_id)
        if info is not None and (info["State"].get("Restarting") or
                                 (int(info.get("RestartCount", 0)) > 0 and not info["State"].get("Running"))):
            t = time.monotonic()
            api.stop(old_id, timeout=profile.stop_timeout_s)
            rep.add("stop crash-looping runtime", True, "it was restarting in a loop, serving nothing", t)
        try:
            api.rename(old_id, profile.previous_container_name)
            return
        except docker.errors.APIError:
            info = engine._container(old_id)
            if attempt == 2 or info is None or not (info["State"].get("Restarting") or info.get("RestartCount")):
                raise
            time.sleep(0.2)  # it went into its back-off between our look and the rename


def _restored(rep: "UpdateReport") -> bool:
    return all(s.ok for s in rep.steps if s.name in ("remove new container", "restore previous"))


class _CancelledMidway(Exception):
    pass


def _wait_ready(engine: "Engine", container_id: str, timeout: float,
                cancel: threading.Event | None) -> tuple[bool, str]:
    """Wait for the device entry point's HANDOVER_READY line; fail if the container dies first."""
    api = engine.client.api
    deadline = time.monotonic() + timeout
    start = time.monotonic()
    while True:
        with engine._doing("waiting for the new runtime to load"):
            logs = api.logs(container_id, tail=50).decode(errors="replace")
            info = engine._container(container_id)
        if HANDOVER_READY in logs:
            return True, f"loaded beside the current runtime in {time.monotonic() - start:.2f} s"
        if info is None or not info["State"].get("Running") or info["State"].get("Restarting") \
                or int(info.get("RestartCount", 0)) > 0:
            # With a restart policy a crashing runtime is "running" again a moment later.
            code = (info or {}).get("State", {}).get("ExitCode")
            # The logs above were read before the state: read them again now that it has
            # stopped, or its last words (the reason) can be missing.
            try:
                with engine._doing("reading the new runtime's last log lines"):
                    logs = api.logs(container_id, tail=50).decode(errors="replace")
            except EngineError:
                pass
            return False, f"the new runtime exited (code {code}) before taking over. Last log lines:\n{logs[-1500:]}"
        if cancel is not None and cancel.is_set():
            return False, "cancelled"
        if time.monotonic() > deadline:
            return False, f"the new runtime did not load within {timeout:.0f} s. Last log lines:\n{logs[-1500:]}"
        time.sleep(0.03)


def _rollback(engine: "Engine", profile: RuntimeProfile, old_id: str | None, new_id: str | None,
              rep: "UpdateReport", progress: ProgressFn | None) -> bool:
    """Remove the new container, put the old one back under its name and start it.

    Every step is reported; a failing step does not stop the next (the aim is a running runtime).
    """
    api = engine.client.api
    _stage(progress, "rollback", "Rolling back to the previous runtime", cancellable=False)
    t = time.monotonic()
    try:
        current = engine._container(profile.runtime_container_name)
        ids = {new_id} if new_id else set()
        if current and current["Id"] != old_id:
            ids.add(current["Id"])
        for cid in ids:
            try:
                api.remove_container(cid, force=True)
            except docker.errors.NotFound:
                pass
        rep.add("remove new container", True, ", ".join(i[:12] for i in ids) or "none was created", t)
    except Exception as exc:
        rep.add("remove new container", False, str(exc), t)
    if not old_id:
        rep.add("restore previous", True, "there was no previous runtime (first install)")
        return True
    t = time.monotonic()
    try:
        info = engine._container(old_id)
        if info is None:
            rep.add("restore previous", False, "the previous container is gone; start the runtime from the profile")
            return False
        if info["Name"].lstrip("/") != profile.runtime_container_name:
            api.rename(old_id, profile.runtime_container_name)
        if not info["State"].get("Running"):
            api.start(old_id)
        rep.add("restore previous", True, "previous runtime started", t)
    except Exception as exc:
        rep.add("restore previous", False, f"{exc}", t)
        return False
    t = time.monotonic()
    try:
        ok, why = engine.wait_healthy(profile, old_id, profile.health_timeout_s, None, progress, stage="rollback")
    except EngineError as exc:
        ok, why = False, str(exc)
    rep.add("previous healthy", ok, why, t)
    return ok


def run_recover(engine: "Engine", profile: RuntimeProfile, progress: ProgressFn | None) -> "UpdateReport | None":
    from .engine import UpdateReport

    journal = engine.journal(profile)
    with engine._doing("reading the update journal"):
        entry = journal.read()
        prev = engine._container(profile.previous_container_name)
        cur = engine._container(profile.runtime_container_name)
    if entry is None and prev is None:
        return None
    api = engine.client.api
    unreadable = ""
    if entry is not None:
        try:
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            if entry.get("phase") not in PHASES:
                raise ValueError(f"unknown phase {entry.get('phase')!r}")
            old_profile = RuntimeProfile.model_validate(entry["profile"])
            new_profile = RuntimeProfile.model_validate(entry["new_profile"])
        except Exception as exc:  # another version's journal, or damaged: never block recovery
            kept = journal.set_aside("unreadable")
            unreadable = (f"update journal unreadable ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}); "
                          f"kept as {kept.name if kept else '?'}; recovering from the containers")
            entry = None
            if prev is None:
                return None
    if entry is not None:
        old_id, new_id, phase = entry.get("old_id"), entry.get("new_id"), entry.get("phase")
        if new_id is None and cur is not None and cur["Id"] != old_id:
            new_id = cur["Id"]  # created, but the crash came before the journal said so
        rep = UpdateReport(image=entry.get("image_ref", ""), profile=old_profile)
        rep.add("journal", True, f"interrupted update to {rep.image} found at phase '{phase}'")
    else:
        old_profile = new_profile = profile
        old_id, new_id, phase = prev["Id"], (cur["Id"] if cur else None), "unknown"
        rep = UpdateReport(image=(cur or prev)["Config"].get("Image", ""), profile=profile)
        if unreadable:
            rep.add("journal", False, unreadable)
        rep.add("leftover", True, f"found {profile.previous_container_name} without a usable journal")

    finish = phase == "committed"
    if not finish and new_id and phase in ("handover", "started", "unknown"):
        info = engine._container(new_id)
        if info is not None:
            if not info["State"].get("Running") and phase == "unknown":
                try:
                    api.start(new_id)
                except Exception:
                    pass
            t = time.monotonic()
            ok, why = engine.wait_healthy(new_profile, new_id, new_profile.health_timeout_s, None, progress)
            rep.add("health of new runtime", ok, why, t)
            finish = ok
    if finish:
        t = time.monotonic()
        with engine._doing("finishing the interrupted update"):
            if old_id and old_id != new_id:
                try:
                    api.remove_container(old_id, force=True)
                except docker.errors.NotFound:
                    pass
            if new_id:
                info = engine._container(new_id)
                if info is not None and not info["State"].get("Running"):
                    api.start(new_id)
        rep.add("finish update", True, "previous container removed, new runtime kept", t)
        journal.clear()
        rep.outcome, rep.success, rep.profile = "finished", True, new_profile
        return rep
    _rollback(engine, old_profile, old_id, new_id, rep, progress)
    ok = _restored(rep)
    if ok:
        journal.clear()
    rep.outcome, rep.rolled_back, rep.profile = ("rolled_back" if ok else "failed"), ok, old_profile
    rep.success = False
    rep.add("rolled back", ok, "the previous runtime is back" if ok else "restore incomplete: see the steps above")
    return rep
