"""The real device image (Dockerfile.device on the local Debian base) running the real runtime
on a real video, updated v1 -> v2, and a failing-health update rolled back."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import pytest

from helio_gui import RUNTIME_API_VERSION
from helio_gui.engine import HealthCheckConfig, RuntimeProfile

from .conftest import wait_for

pytestmark = [pytest.mark.engine, pytest.mark.slow]
TOKEN = "device-test-token"


def api(profile: RuntimeProfile, path: str) -> dict:
    req = urllib.request.Request(profile.base_url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def device_profile(device_images, video_source, session_labels, port, docker_client, engine):
    source, mounts = video_source
    volume = f"helio-test-data-{uuid.uuid4().hex[:8]}"
    profile = RuntimeProfile(
        name=f"device{port}", image=device_images["0.1.0"], port=port, token=TOKEN, source=source,
        mounts=mounts, data_volume=volume, labels=dict(session_labels),
        healthcheck=HealthCheckConfig(interval_s=1, timeout_s=3, retries=3, start_period_s=5),
        health_timeout_s=90, stop_timeout_s=10)
    yield profile
    engine.remove(profile)
    try:
        docker_client.volumes.get(volume).remove(force=True)
    except Exception:
        pass


def test_image_labels_user_and_contents(docker_client, device_images, session_labels):
    image = docker_client.images.get(device_images["0.1.0"])
    labels = image.labels
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == "test"
    assert labels["io.heliovision.runtime-api"] == RUNTIME_API_VERSION
    assert labels["io.heliovision.component"] == "runtime"
    config = image.attrs["Config"]
    assert config["User"] == "helio:video"
    assert config["StopSignal"] == "SIGTERM"
    assert "api/health" in " ".join(config["Healthcheck"]["Test"])
    assert not config.get("Volumes")  # no image VOLUME to leak a duplicate mount
    out = docker_client.containers.run(
        image.id, entrypoint=["sh", "-c", "id; python -c 'import PySide6' 2>&1 | tail -1; "
                              "python -c 'import docker' 2>&1 | tail -1; ls /usr/lib/*/libGL* 2>&1 | head -1"],
        network_mode="none", remove=True, labels=dict(session_labels))
    text = out.decode()
    assert "uid=10001(helio)" in text and "(video)" in text, text
    assert "No module named 'PySide6'" in text and "No module named 'docker'" in text, text
    assert "No such file" in text, text  # no GL libraries
    # The entry point passes helio-runtime's arguments through, and the version stamp holds.
    out = docker_client.containers.run(image.id, command=["--version"], network_mode="none", remove=True,
                                       labels=dict(session_labels))
    assert "helio-runtime 0.1.0" in out.decode(), out


def test_real_runtime_in_device_image_update_and_rollback(engine, device_profile, device_images, video_source):
    profile = device_profile
    status = engine.start(profile)
    assert status.state == "running" and status.mismatches == ()
    ok, why = engine.wait_healthy(profile, status.container_id, profile.health_timeout_s)
    assert ok, why
    body = api(profile, "/api/status")
    assert body["runtime_version"] == "0.1.0" and body["source"]["state"] == "live"
    if video_source[0]:
        assert body["source"]["spec"].endswith("conveyor.mp4?loop=1&paced=1") or "conveyor" in json.dumps(body["source"])
    assert engine.runtime_status(profile).health == "healthy"

    # v1 -> v2: the runtime answers with the new version, on the same data volume.
    report = engine.update(profile, device_images["0.2.0"])
    assert report.success, report.summary()
    assert api(profile, "/api/status")["runtime_version"] == "0.2.0"
    # The image supports handover: the new runtime loaded beside the old before it stopped.
    assert any(s.name == "start new (handover)" and s.ok for s in report.steps), report.summary()
    stop_step = next(s for s in report.steps if s.name == "stop previous")
    # SIGTERM handled: no waiting out the 10 s timeout (about 0.3-0.9 s here; more on a loaded machine).
    assert stop_step.duration_s < profile.stop_timeout_s - 2, stop_step

    # An image whose health check fails: rolled back automatically, 0.2.0 serves again.
    v2 = report.profile
    bad = engine.update(v2, device_images["broken"])
    assert bad.rolled_back and not bad.success, bad.summary()
    print(report.summary(), bad.summary(), sep="\n")
    assert api(profile, "/api/status")["runtime_version"] == "0.2.0"
    assert engine.runtime_status(v2).state == "running"

    # A clean stop: the runtime exits 0 on SIGTERM well inside the timeout.
    t = time.monotonic()
    stopped = engine.stop(v2)
    assert time.monotonic() - t < v2.stop_timeout_s - 2 and stopped.exit_code in (0, 143), stopped


def test_new_runtime_dying_during_handover_never_stops_the_old(engine, device_profile, device_images,
                                                              docker_client, tmp_path):
    # Same image, but its entry point dies at once: the old runtime must keep running untouched.
    (tmp_path / "Dockerfile.device").write_text(
        f"FROM {device_images['0.2.0']}\nLABEL org.opencontainers.image.version=0.4.0\n"
        'ENTRYPOINT ["python", "-c", "raise SystemExit(\'missing camera driver\')"]\n')
    engine.build_image(tmp_path, "helio-test/device:0.4.0-dies")
    profile = device_profile
    status = engine.start(profile)
    ok, why = engine.wait_healthy(profile, status.container_id, profile.health_timeout_s)
    assert ok, why
    before = engine._container(profile.runtime_container_name)
    report = engine.update(profile, "helio-test/device:0.4.0-dies")
    assert report.rolled_back and not report.success, report.summary()
    step = next(s for s in report.steps if s.name == "start new (handover)")
    assert not step.ok and "exited" in step.message and "missing camera driver" in step.message
    assert not any(s.name == "stop previous" for s in report.steps)
    after = engine._container(profile.runtime_container_name)
    assert after["Id"] == before["Id"] and after["State"]["StartedAt"] == before["State"]["StartedAt"]
    assert api(profile, "/api/status")["runtime_version"] == "0.1.0"
    docker_client.images.remove("helio-test/device:0.4.0-dies", force=True)


_UPDATER = r"""
import os, signal, sys
from helio_gui.engine import connect, RuntimeProfile
engine = connect(sys.argv[1], state_dir=sys.argv[2])
def progress(p):
    if p.stage == "stop":  # handover: the new runtime is loaded beside the old one
        os.kill(os.getpid(), signal.SIGKILL)
engine.update(RuntimeProfile.load(sys.argv[3]), sys.argv[4], progress=progress)
"""


def test_updater_killed_during_handover_is_finished_by_recover(engine, device_profile, device_images,
                                                               docker_engine, tmp_path):
    import os
    import subprocess
    import sys

    profile = device_profile
    status = engine.start(profile)
    ok, why = engine.wait_healthy(profile, status.container_id, profile.health_timeout_s)
    assert ok, why
    path = tmp_path / "profile.json"
    profile.save(path)
    proc = subprocess.run([sys.executable, "-c", _UPDATER, docker_engine.base_url, str(engine.state_dir), str(path),
                           device_images["0.2.0"]], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == -9, proc.stderr
    assert engine.journal(profile).read()["phase"] == "handover"
    report = engine.recover(profile)
    assert report.outcome == "finished", report.summary()
    assert engine._container(profile.previous_container_name) is None
    wait_for(lambda: engine.probe_runtime(profile)[0] and api(profile, "/api/status")["runtime_version"] == "0.2.0",
             60, what="0.2.0 serving after the handover was finished")


def test_device_image_runs_with_a_read_only_root(engine, device_profile, device_images, docker_client):
    # The image writes nothing outside /data (the volume) and /tmp (a tmpfs): it runs, serves
    # frames and stores results with the root filesystem read-only.
    profile = device_profile.model_copy(update={"read_only_root": True})
    status = engine.start(profile)
    assert status.mismatches == ()
    ok, why = engine.wait_healthy(profile, status.container_id, profile.health_timeout_s)
    assert ok, why
    info = docker_client.api.inspect_container(status.container_id)
    assert info["HostConfig"]["ReadonlyRootfs"] is True and "/tmp" in info["HostConfig"]["Tmpfs"]
    run = docker_client.api.exec_create(status.container_id, ["sh", "-c", "touch /opt/helio/x 2>&1; touch /tmp/x && "
                                                               "echo tmp-writable; ls /data"])
    out = docker_client.api.exec_start(run).decode()
    assert "Read-only file system" in out and "tmp-writable" in out and "results" in out, out
    # Without a data volume there is nowhere to store results: refused before anything starts.
    engine.remove(profile)
    with pytest.raises(Exception, match="needs a data volume"):
        engine.start(profile.model_copy(update={"data_volume": None}))
