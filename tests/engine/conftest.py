"""Engine test fixtures: small busybox 'runtimes' whose health we control, and an Engine."""

from __future__ import annotations

import io
import json
import os
import shutil
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


# -- the real device image -------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
WHEEL_CACHE = Path(os.environ.get("HELIO_TEST_CACHE_DIR", "/var/cache/helio-test"))


def _wheelhouse() -> Path:
    """Wheels for the image's dependencies, downloaded on this host once and cached (the build
    container cannot verify this machine's package index; air-gapped factories build this way)."""
    import hashlib
    import subprocess
    import sys
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"] + ["setuptools>=68", "wheel"]
    key = hashlib.sha256("\n".join(deps).encode()).hexdigest()[:12]
    target = WHEEL_CACHE / f"wheelhouse-{key}"
    if (target / ".complete").exists():
        return target
    partial = target.with_suffix(".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(partial),
                             "--only-binary=:all:", *deps], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"could not download the wheelhouse for the device image build:\n{result.stderr[-2000:]}",
                    pytrace=False)
    (partial / ".complete").write_text("\n".join(deps))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def device_build_context(dest: Path) -> Path:
    """A build context like the repository's (what .dockerignore lets through) plus a wheelhouse."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md", "Dockerfile.device", ".dockerignore"):
        shutil.copy(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "helio_gui", dest / "helio_gui", ignore=ignore)
    shutil.copytree(REPO / "resources", dest / "resources", ignore=ignore)
    shutil.copytree(_wheelhouse(), dest / "wheelhouse", ignore=shutil.ignore_patterns(".complete"))
    return dest


@pytest.fixture(scope="session")
def device_images(docker_engine, debian_base_image, tmp_path_factory) -> dict[str, str]:
    """The real Dockerfile.device built on the local Debian base: 0.1.0 and 0.2.0 (the second
    build reuses every layer but the version stamp), plus 0.3.0 whose health check always fails."""
    from helio_gui.engine import connect

    context = device_build_context(tmp_path_factory.mktemp("device-context"))
    eng = connect(docker_engine.base_url, state_dir=tmp_path_factory.mktemp("build-state"))
    tags = {}
    try:
        for version in ("0.1.0", "0.2.0"):
            tag = f"helio-test/device:{version}"
            eng.build_image(context, tag, {"BASE_IMAGE": debian_base_image, "VERSION": version,
                                           "REVISION": "test", "RUNTIME_API": RUNTIME_API_VERSION})
            tags[version] = tag
        broken = tmp_path_factory.mktemp("broken-context")
        (broken / "Dockerfile.device").write_text(
            f"FROM {tags['0.2.0']}\nLABEL org.opencontainers.image.version=0.3.0\n"
            'HEALTHCHECK --interval=1s --retries=1 CMD ["python", "-c", "raise SystemExit(1)"]\n')
        eng.build_image(broken, "helio-test/device:0.3.0-broken")
        tags["broken"] = "helio-test/device:0.3.0-broken"
    finally:
        eng.close()
    return tags


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
