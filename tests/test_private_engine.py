"""The private test engine itself: real dockerd, real containers, stale-daemon recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import private_engine as pe


@pytest.mark.engine
def test_container_lifecycle_on_private_engine(docker_client, busybox_image, session_labels):
    container = docker_client.containers.create(
        busybox_image, ["sh", "-c", "echo hello-helio; exec sleep 60"],
        labels=session_labels, network_mode="none", init=True,
    )
    try:
        container.start()
        container.reload()
        assert container.attrs["State"]["Running"] is True
        assert container.attrs["HostConfig"]["NetworkMode"] == "none"
        deadline = time.monotonic() + 10
        while b"hello-helio" not in container.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"hello-helio" in container.logs()
        started = time.monotonic()
        container.stop(timeout=10)
        took = time.monotonic() - started
        container.reload()
        assert container.attrs["State"]["Running"] is False
        assert took < 5, f"stop took {took:.1f}s: init should forward SIGTERM"
    finally:
        container.remove(force=True)


@pytest.mark.engine
def test_private_engine_is_not_the_users(docker_engine):
    if docker_engine.external:
        pytest.skip("HELIO_TEST_DOCKER_HOST names an engine explicitly")
    assert docker_engine.base_url == f"unix://{docker_engine.socket}"
    info = docker_engine.client().info()
    assert info["DockerRootDir"] == str(docker_engine.root / "data")
    networks = {n.name for n in docker_engine.client().networks.list()}
    assert "bridge" not in networks


@pytest.mark.engine
def test_stale_daemon_from_killed_run_is_cleaned_up(tmp_path):
    # A second private engine in its own dir: killed with SIGKILL, it leaves its pidfile and
    # socket behind; the next start must notice, clean up and come up, not hang.
    root = Path("/var/tmp") / f"helio-stale-{os.getpid()}"
    first = pe.PrivateEngine(root=root).start()
    try:
        pid = int(first.pidfile.read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pe._is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        first._proc.wait(timeout=10)
        first._proc = None
        assert first.pidfile.exists(), "a killed dockerd leaves its pidfile behind"
        # Release the lock as the dead run's exit would.
        os.close(first._lock_fd)
        first._lock_fd = None
        started = time.monotonic()
        second = pe.PrivateEngine(root=root).start()
        try:
            assert second.client().ping()
            assert time.monotonic() - started < 30
        finally:
            second.stop()
    finally:
        first.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_missing_dockerd_is_a_clear_failure(tmp_path, monkeypatch):
    monkeypatch.delenv("HELIO_TEST_DOCKER_HOST", raising=False)
    engine = pe.PrivateEngine(root=tmp_path, dockerd=str(tmp_path / "no-such-dockerd"))
    with pytest.raises(pe.EngineUnavailable, match="docker.io"):
        engine.start()


def test_not_root_is_a_clear_failure(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("already not root: the engine fixture itself shows the message")
    runuser = "/usr/sbin/runuser"
    if not Path(runuser).exists():
        pytest.fail("runuser (util-linux) is needed to run a check as an unprivileged user")
    repo = Path(__file__).resolve().parent.parent
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from tests.support import private_engine as pe\n"
        "from pathlib import Path\n"
        "try:\n"
        "    pe.PrivateEngine(root=Path('/tmp/helio-nobody-engine')).start()\n"
        "except pe.EngineUnavailable as exc:\n"
        "    print(exc); sys.exit(3)\n" % str(repo)
    )
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": "/tmp"}
    # The venv's interpreter may live under /root; Debian's python3 is readable by anyone.
    result = subprocess.run([runuser, "-u", "nobody", "--", "/usr/bin/python3", "-c", code],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 3, result.stderr
    assert "needs root" in result.stdout and "sudo scripts/run-tests" in result.stdout
