"""RuntimeProfile: saved and loaded, clear errors, create request from the profile only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helio_gui.engine import EngineError, Mount, RuntimeProfile


def test_save_load_round_trip_and_clear_errors(tmp_path):
    profile = RuntimeProfile(name="line1", image="heliovision/runtime:0.1.0", devices=["/dev/null"],
                             mounts=[Mount(source=str(tmp_path), target="/video")], env={"HELIO_LOG_LEVEL": "debug"})
    path = tmp_path / "profile.json"
    profile.save(path)
    assert RuntimeProfile.load(path) == profile
    path.write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        RuntimeProfile.load(path)
    path.write_text(json.dumps({"image": "x", "port": 99999}))
    with pytest.raises(EngineError, match="port"):
        RuntimeProfile.load(path)
    with pytest.raises(EngineError, match="does not exist"):
        RuntimeProfile.load(tmp_path / "absent.json")


def test_create_request_comes_from_the_profile_only(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("name = 'x'\n")
    profile = RuntimeProfile(name="line1", image="img:1", devices=["/dev/null:/dev/video0"], recipe_file=str(recipe),
                             data_volume="helio-data", token="t", env={"EXTRA": "1"}, mem_limit_mb=512, cpus=1.5)
    kw = profile.create_kwargs()
    assert kw["network_mode"] == "host" and kw["init"] is True
    # Host networking: nothing the engine would reject for it.
    for key in ("hostname", "mac_address", "networking_config", "domainname"):
        assert key not in kw
    assert kw["devices"] == ["/dev/null:/dev/video0:rwm"] and kw["group_add"] == ["video"]
    assert kw["environment"]["HELIO_RECIPE"] == "/etc/helio/recipe.toml"
    assert kw["environment"]["HELIO_TOKEN"] == "t" and kw["environment"]["EXTRA"] == "1"
    assert kw["volumes"]["helio-data"] == {"bind": "/data", "mode": "rw"}
    assert kw["labels"]["io.heliovision.role"] == "runtime" and kw["labels"]["io.heliovision.profile"] == "line1"
    assert kw["mem_limit"] == "512m" and kw["nano_cpus"] == 1_500_000_000
    with pytest.raises(EngineError, match="/dev/video42"):
        profile.model_copy(update={"devices": ["/dev/video42"]}).check_host()
    with pytest.raises(ValueError):
        RuntimeProfile(image="x", devices=["video0"])


def test_engine_package_is_qt_free_and_runtime_is_docker_free():
    code = ("import sys, helio_gui.engine; assert 'PySide6' not in sys.modules, 'engine imported Qt'\n"
            "import helio_gui.engine.device_entry\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    # The device entry point runs inside the image, where docker is not installed: stdlib + runtime only.
    code = ("import sys, runpy; sys.argv = ['x', '--version']\n"
            "import importlib.util as u; spec = u.spec_from_file_location('e', 'helio_gui/engine/device_entry.py')\n"
            "m = u.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "assert 'docker' not in sys.modules and 'PySide6' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_device_dockerfile_builds_offline_with_buildkit_too():
    # A `# syntax=docker/dockerfile:...` line makes BuildKit (default builder since Docker 23)
    # pull the frontend image from Docker Hub before building: the wheelhouse build then fails in
    # an air-gapped factory. The classic builder ignores it, so only this check catches it.
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "Dockerfile.device").read_text()
    directives = [line for line in text.splitlines()[:5] if line.lower().replace(" ", "").startswith("#syntax=")]
    assert not directives, directives
    # Nothing architecture-specific may creep in (the arm64 build uses the same file).
    for word in ("x86_64", "amd64", "aarch64", "arm64"):
        assert word not in "\n".join(l for l in text.splitlines() if not l.startswith("#")), word
