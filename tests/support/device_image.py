"""The real device image for tests and benchmarks: a build context like the repository's plus an
offline wheelhouse, and the session's image builds (used by tests/engine, tests/e2e, benchmarks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from helio_gui import RUNTIME_API_VERSION

REPO = Path(__file__).resolve().parents[2]
WHEEL_CACHE = Path(os.environ.get("HELIO_TEST_CACHE_DIR", "/var/cache/helio-test"))


class DeviceImageError(RuntimeError):
    """The device image cannot be built here; the message says why and what to do."""


def wheelhouse() -> Path:
    """Wheels for the image's dependencies, downloaded on this host once and cached (the build
    container cannot verify this machine's package index; air-gapped factories build this way)."""
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
        raise DeviceImageError("could not download the wheelhouse for the device image build "
                               f"(pip download into {partial}):\n{result.stderr[-2000:]}")
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
    shutil.copytree(wheelhouse(), dest / "wheelhouse", ignore=shutil.ignore_patterns(".complete"))
    return dest


def build_device_images(engine, base_image: str, context_dir: Path, broken_dir: Path,
                        prefix: str = "helio-test/device") -> dict[str, str]:
    """Dockerfile.device on `base_image`: `0.1.0` and `0.2.0` (the second reuses every layer but
    the version stamp), and `broken` (0.3.0 on top of 0.2.0, a health check that always fails)."""
    context = device_build_context(context_dir)
    tags = {}
    for version in ("0.1.0", "0.2.0"):
        tag = f"{prefix}:{version}"
        engine.build_image(context, tag, {"BASE_IMAGE": base_image, "VERSION": version,
                                          "REVISION": "test", "RUNTIME_API": RUNTIME_API_VERSION})
        tags[version] = tag
    broken_dir.mkdir(parents=True, exist_ok=True)
    (broken_dir / "Dockerfile.device").write_text(
        f"FROM {tags['0.2.0']}\nLABEL org.opencontainers.image.version=0.3.0\n"
        'HEALTHCHECK --interval=1s --retries=1 CMD ["python", "-c", "raise SystemExit(1)"]\n')
    engine.build_image(broken_dir, f"{prefix}:0.3.0-broken")
    tags["broken"] = f"{prefix}:0.3.0-broken"
    return tags
