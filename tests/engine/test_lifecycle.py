"""Connection, lifecycle, logs and stats on the real private engine (busybox runtimes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from helio_gui.engine import EngineError, RuntimeProfile, connect
from helio_gui.engine.connection import check_api_version

from .conftest import http_json, wait_for

pytestmark = pytest.mark.engine


def test_connect_reports_engine_and_negotiated_api(engine):
    info = engine.info()
    assert info["api_version"] >= "1.40"
    # Negotiated, never pinned: the client speaks what the engine speaks.
    assert engine.client.api.api_version == info["api_version"]


def test_connect_honours_docker_host(docker_engine, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", docker_engine.base_url)
    eng = connect(state_dir=tmp_path)
    try:
        assert eng.base_url == docker_engine.base_url
    finally:
        eng.close()


def test_connect_honours_docker_context(docker_engine, monkeypatch, tmp_path):
    config = tmp_path / "dockercfg"
    meta = config / "contexts" / "meta" / hashlib.sha256(b"helio-line").hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps(
        {"Name": "helio-line", "Metadata": {}, "Endpoints": {"docker": {"Host": docker_engine.base_url}}}))
    (config / "config.json").write_text(json.dumps({"currentContext": "helio-line"}))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    eng = connect(state_dir=tmp_path)
    try:
        assert eng.base_url == docker_engine.base_url
        assert eng.info()["version"]
    finally:
        eng.close()


def test_connect_daemon_not_running_says_start_it(tmp_path):
    with pytest.raises(EngineError) as err:
        connect(f"unix://{tmp_path}/nothing.sock", state_dir=tmp_path)
    assert "not running" in str(err.value) or "not installed" in str(err.value)
    assert "systemctl start docker" in err.value.hint or "apt-get install" in err.value.hint


def test_connect_permission_denied_says_join_docker_group(docker_engine, tmp_path):
    # A real unprivileged process (nobody) on the real socket: no fake.
    code = ("import sys; from helio_gui.engine import connect, EngineError\n"
            "try:\n connect(sys.argv[1], state_dir='/tmp')\nexcept EngineError as e:\n print(e)\n")
    os.chmod(tmp_path, 0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code,
         docker_engine.base_url],
        capture_output=True, text=True, timeout=60, cwd=os.getcwd(),
        env={**os.environ, "HOME": str(tmp_path), "PYTHONPATH": os.getcwd()})
    assert "Permission denied" in result.stdout, result.stdout + result.stderr
    assert "docker` group" in result.stdout


def test_engine_too_old_is_refused_with_a_hint():
    with pytest.raises(EngineError, match="too old"):
        check_api_version("1.24", "1.12.0")
    check_api_version("1.41", "20.10.24")  # current Debian engine passes
    check_api_version("1.47", "27.0")


def test_start_status_stop_restart_remove(engine, profile, docker_client, session_labels):
    assert engine.runtime_status(profile).state == "missing"
    status = engine.start(profile)
    assert status.state == "running"
    assert status.version == "1.0.0"
    assert status.mismatches == ()
    container = docker_client.containers.get(profile.runtime_container_name)
    labels = container.labels
    assert labels["io.heliovision.role"] == "runtime"
    assert labels["io.heliovision.profile"] == profile.name
    assert all(labels[k] == v for k, v in session_labels.items())
    host = container.attrs["HostConfig"]
    assert host["Init"] is True and host["NetworkMode"] == "host"
    # Health is read fresh each time: it goes from starting to healthy without us reloading anything.
    wait_for(lambda: engine.runtime_status(profile).health == "healthy", 15, what="healthy")
    assert http_json(profile.base_url + "/api/status")["runtime_version"] == "1.0.0"
    assert engine.runtime_status(profile).uptime_s >= 0

    t = time.monotonic()
    status = engine.stop(profile)
    stop_s = time.monotonic() - t
    assert status.state == "exited"
    assert stop_s < 3, f"stop took {stop_s:.2f} s: init=True should make it fast"

    status = engine.restart(profile)
    assert status.state == "running" and status.container_id == container.id  # same container, profile unchanged
    engine.remove(profile)
    assert engine.runtime_status(profile).state == "missing"


def test_changed_profile_recreates_from_profile_not_from_inspect(engine, profile, fake_images):
    first = engine.start(profile)
    changed = profile.model_copy(update={"env": {"HELIO_LOG_LEVEL": "debug"}})
    assert any("HELIO_LOG_LEVEL" in m for m in engine.runtime_status(changed).mismatches)
    second = engine.restart(changed)
    assert second.container_id != first.container_id
    assert second.mismatches == ()
    engine.remove(profile)


def test_missing_camera_device_refused_before_anything_starts(engine, profile):
    bad = profile.model_copy(update={"devices": ["/dev/video97"]})
    with pytest.raises(EngineError, match="/dev/video97"):
        engine.start(bad)
    assert engine.runtime_status(bad).state == "missing"


def test_stop_honours_timeout_without_client_read_timeout(docker_engine, profile, tmp_path):
    # A short client timeout and a longer stop timeout: docker-py must not time out first.
    eng = connect(docker_engine.base_url, state_dir=tmp_path, timeout=2)
    stubborn = profile.model_copy(update={"init": False, "command": ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]})
    try:
        eng.start(stubborn)
        t = time.monotonic()
        status = eng.stop(stubborn, timeout=4)
        elapsed = time.monotonic() - t
        assert status.state == "exited"
        assert 3.5 < elapsed < 10, elapsed
        assert status.exit_code == 137  # killed after the timeout
    finally:
        eng.remove(stubborn)
        eng.close()


def test_restart_loop_detected(engine, profile):
    crashing = profile.model_copy(update={"command": ["sh", "-c", "echo crashing; exit 3"], "restart_policy": "always"})
    try:
        engine.start(crashing)
        status = wait_for(lambda: (s := engine.runtime_status(crashing)).restart_loop and s, 20, what="restart loop")
        assert status.restart_count >= 1 or status.state == "restarting"
    finally:
        engine.remove(crashing)


def test_logs_tail_and_follow_across_recreate(engine, profile, fake_images):
    engine.start(profile)
    wait_for(lambda: engine.probe_runtime(profile)[0], 10, what="v1 serving")
    tail = list(engine.logs(profile, tail=50, follow=False))
    assert any("helio runtime 1.0.0 starting" in line for line in tail), tail

    lines: list[str] = []
    stop = threading.Event()

    def follow():
        for line in engine.logs(profile, tail=10, follow=True, stop=stop):
            lines.append(line)

    reader = threading.Thread(target=follow, name="log-follow")
    reader.start()
    try:
        wait_for(lambda: any("1.0.0 starting" in l for l in lines), 10, what="first lines")
        # Silence longer than the follow's read timeout: the stream ends and is re-attached.
        time.sleep(2.5)
        http_json(profile.base_url + "/api/status")
        wait_for(lambda: any("/api/status" in l for l in lines), 10, what="request log after idle")
        # Recreate the container (an update): the follow moves to the new one by itself.
        report = engine.update(profile, fake_images["v2"])
        assert report.success, report.summary()
        wait_for(lambda: any("2.0.0 starting" in l for l in lines), 10, what="lines of the new container")
        assert sum("1.0.0 starting" in l for l in lines) == 1  # no line repeated on re-attach
    finally:
        stop.set()
        reader.join(timeout=10)
        engine.remove(profile)
    assert not reader.is_alive()


def test_stats_one_shot_rate_limited(engine, profile):
    engine.start(profile)
    try:
        first = engine.stats(profile)
        assert first.mem_bytes > 0
        again = engine.stats(profile)
        assert again.taken_at == first.taken_at  # within a second: the cached reading
        time.sleep(1.05)
        second = engine.stats(profile)
        assert second.taken_at > first.taken_at
        assert second.cpu_percent is not None and second.cpu_percent >= 0
    finally:
        engine.remove(profile)
