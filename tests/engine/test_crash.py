"""An updater killed mid-way, and an engine that stops mid-operation (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helio_gui.engine import EngineError, connect
from tests.support.private_engine import PrivateEngine, busybox_image

from .conftest import build_fake_runtime, http_json, wait_for

pytestmark = pytest.mark.engine

# The updater in its own process; it SIGKILLs itself when it reaches `kill_at`.
_UPDATER = r"""
import json, os, signal, sys
from helio_gui.engine import connect, RuntimeProfile
base_url, state_dir, profile_path, image, kill_at = sys.argv[1:6]
engine = connect(base_url, state_dir=state_dir)
profile = RuntimeProfile.load(profile_path)
def progress(p):
    if p.stage == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
engine.update(profile, image, progress=progress)
print("update finished without being killed")
"""


@pytest.mark.parametrize("kill_at, expected, serving", [
    ("start", "rolled_back", "1.0.0"),   # old stopped, new created but not started: roll back
    ("commit", "finished", "2.0.0"),     # health gate passed: finish the update
])
def test_killed_updater_is_recovered(engine, profile, fake_images, docker_engine, tmp_path, kill_at, expected, serving):
    engine.start(profile)
    wait_for(lambda: engine.probe_runtime(profile)[0], 15, what="v1 serving")
    profile_path = tmp_path / "profile.json"
    profile.save(profile_path)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _UPDATER, docker_engine.base_url, str(engine.state_dir), str(profile_path),
             fake_images["v2"], kill_at],
            capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert proc.returncode == -9, proc.stdout + proc.stderr
        journal = engine.journal(profile).read()
        assert journal is not None and journal["image_ref"] == fake_images["v2"]
        if kill_at == "start":
            assert journal["phase"] == "stopped"
            assert engine._container(profile.previous_container_name) is not None
        report = engine.recover(profile)
        assert report is not None and report.outcome == expected, report.summary()
        assert engine.journal(profile).read() is None
        assert engine._container(profile.previous_container_name) is None
        wait_for(lambda: engine.probe_runtime(profile)[0], 15, what="a runtime serving after recovery")
        assert http_json(profile.base_url + "/api/status")["runtime_version"] == serving
        assert report.profile.image == fake_images["v1" if serving == "1.0.0" else "v2"]
    finally:
        engine.remove(profile)


def test_engine_stopping_mid_operation_gives_clear_error(tmp_path, session_labels, port):
    # A second private engine of our own: stopping it cannot hurt the session's engine.
    root = Path(os.environ.get("HELIO_TEST_ENGINE_DIR", "/var/tmp/helio-test-engine") + "-stopper")
    second = PrivateEngine(root=root)
    second.start()
    client = second.client()
    eng = None
    try:
        base = busybox_image(client)
        slow = build_fake_runtime(client, base, "helio-test/fake-runtime:slow-health", "1.0.0", healthy=False)
        eng = connect(second.base_url, state_dir=tmp_path)
        from helio_gui.engine import HealthCheckConfig, RuntimeProfile

        profile = RuntimeProfile(name="stopper", image=slow, port=port, labels=dict(session_labels),
                                 healthcheck=HealthCheckConfig(interval_s=5, start_period_s=60), health_timeout_s=60)
        errors: list[BaseException] = []
        in_gate = threading.Event()

        def run():
            try:
                eng.start(profile)
                in_gate.set()
                # Waiting for health that never comes; the engine dies meanwhile.
                # What the GUI does all day: read status and health. The engine dies meanwhile
                # (it first stops its containers, so the gate sees the runtime exit, then goes).
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    eng.wait_healthy(profile, profile.runtime_container_name, 0.5)
                    eng.runtime_status(profile)
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                errors.append(exc)

        worker = threading.Thread(target=run, name="op-during-engine-stop")
        worker.start()
        assert in_gate.wait(30)
        time.sleep(0.5)
        client.close()
        second.stop()
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert errors and isinstance(errors[0], EngineError), errors
        text = str(errors[0])
        assert "not running" in text or "stopped answering" in text, text
        assert "systemctl" in errors[0].hint
        with pytest.raises(EngineError, match="not running"):
            eng.runtime_status(profile)
    finally:
        if eng is not None:
            eng.close()
        client.close()
        second.stop()
