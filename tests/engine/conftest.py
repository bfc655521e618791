"""Engine test fixtures: small busybox 'runtimes' whose health we control, and an Engine."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import docker.errors
import pytest

from helio_gui import RUNTIME_API_VERSION
from helio_gui.engine import HealthCheckConfig, RuntimeProfile, connect

# A busybox httpd stands in for the runtime: it serves /api/health (a real-frame answer, or
# nothing for the "broken" version) and /api/status with the runtime version.
_FAKE_RUNTIME = """
FROM {base}
ARG VERSION
ARG HEALTHY=1
ARG API={api}
RUN busybox mkdir -p /www/api && \\
    echo "{{\\"runtime_version\\": \\"$VERSION\\"}}" > /www/api/status && \\
    if [ "$HEALTHY" = 1 ]; then echo '{{"ok": true, "frame_age_s": 0.04, "source_state": "live"}}' > /www/api/health; fi
{labels}
HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD wget -q -O- http://127.0.0.1:$HELIO_PORT/api/health || exit 1
CMD ["sh", "-c", "echo helio runtime $RUNTIME_VERSION starting; exec httpd -f -vv -p $HELIO_HOST:$HELIO_PORT -h /www"]
"""


def _labels(version: str, api: str) -> str:
    return (f'LABEL org.opencontainers.image.version="{version}" org.opencontainers.image.revision="test" '
            f'io.heliovision.runtime-api="{api}" io.heliovision.component="runtime"\n'
            f'ENV RUNTIME_VERSION={version}')


def build_fake_runtime(client, base: str, tag: str, version: str, *, healthy: bool = True,
                       labelled: bool = True, api: str = RUNTIME_API_VERSION) -> str:
    try:
        client.images.get(tag)
        return tag  # built already (prune tests may remove some: they are rebuilt on demand)
    except docker.errors.ImageNotFound:
        pass
    dockerfile = _FAKE_RUNTIME.format(base=base, api=api, labels=_labels(version, api) if labelled else
                                      f"ENV RUNTIME_VERSION={version}")
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, network_mode="none",
                        buildargs={"VERSION": version, "HEALTHY": "1" if healthy else "0"})
    return tag


@pytest.fixture
def fake_images(docker_client, busybox_image) -> dict[str, str]:
    """Tags of small runtime images: v1, v2 (healthy), broken (health never ok), unlabelled, api2."""
    return {
        "v1": build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:1.0.0", "1.0.0"),
        "v2": build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:2.0.0", "2.0.0"),
        "broken": build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:3.0.0-broken",
                                     "3.0.0", healthy=False),
        "unlabelled": build_fake_runtime(docker_client, busybox_image, "helio-test/not-ours:1", "9.9.9",
                                         labelled=False),
        "api2": build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:api2", "5.0.0",
                                   api="2.0"),
    }


@pytest.fixture
def engine(docker_engine, tmp_path):
    eng = connect(docker_engine.base_url, state_dir=tmp_path / "state")
    yield eng
    eng.close()


@pytest.fixture
def profile(fake_images, session_labels, port, request) -> RuntimeProfile:
    """A profile for the v1 fake runtime on a free port, unique per test."""
    name = "t" + str(abs(hash(request.node.nodeid)) % 10**8)
    return RuntimeProfile(
        name=name, image=fake_images["v1"], port=port, labels=dict(session_labels),
        healthcheck=HealthCheckConfig(interval_s=0.5, timeout_s=2, retries=2, start_period_s=0.5),
        health_timeout_s=15, stop_timeout_s=5,
    )


def http_json(url: str, timeout: float = 2.0) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


# -- the real device image (build helpers shared with tests/e2e and benchmarks: tests/support) ----
from tests.support.device_image import (REPO, DeviceImageError, build_device_images,  # noqa: E402
                                        device_build_context)  # noqa: F401 - kept importable from here


@pytest.fixture(scope="session")
def device_images(docker_engine, debian_base_image, tmp_path_factory) -> dict[str, str]:
    """The real Dockerfile.device built on the local Debian base: 0.1.0 and 0.2.0 (the second
    build reuses every layer but the version stamp), plus 0.3.0 whose health check always fails."""
    from helio_gui.engine import connect

    eng = connect(docker_engine.base_url, state_dir=tmp_path_factory.mktemp("build-state"))
    try:
        return build_device_images(eng, debian_base_image, tmp_path_factory.mktemp("device-context"),
                                   tmp_path_factory.mktemp("broken-context"))
    except DeviceImageError as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        eng.close()


@pytest.fixture(scope="session")
def video_source() -> tuple[str | None, list]:
    """(HELIO_SOURCE, mounts): the real conveyor video when the shared data is here, else the
    demo clip shipped in the image (source None)."""
    from helio_gui.engine import Mount

    shared = Path(os.environ.get("HELIO_SHARED_DATA", REPO.parent / "shared" / "data"))
    video = shared / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"
    if video.is_file():
        return "file:/video/conveyor.mp4?loop=1&paced=1", [Mount(source=str(video), target="/video/conveyor.mp4")]
    return None, []
