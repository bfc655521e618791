"""The embedded default: no source and no recipe given means the project's own demo footage and
demo recipe, found relative to the package or through HELIO_RESOURCES_DIR."""

from __future__ import annotations

import json
import shutil

import pytest

from helio_gui.runtime import config
from tests.runtime.proc import REPO, RuntimeProcess

DEMO = REPO / "resources" / "demo"


def test_resources_dir_honours_env(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()
    shutil.copy(DEMO / "demo_recipe.toml", tmp_path / "demo" / "demo_recipe.toml")
    (tmp_path / "demo" / "clip.mp4").write_bytes(b"")
    monkeypatch.setenv("HELIO_RESOURCES_DIR", str(tmp_path))
    assert config.resources_dir() == tmp_path
    assert config.demo_recipe() == tmp_path / "demo" / "demo_recipe.toml"
    assert config.demo_source() == f"file:{tmp_path / 'demo' / 'clip.mp4'}?loop=1&paced=1"
    monkeypatch.setenv("HELIO_RESOURCES_DIR", str(tmp_path / "nowhere"))
    assert config.resources_dir() == REPO / "resources"  # falls back to the source tree


@pytest.mark.slow
def test_default_launch_runs_the_demo(tmp_path, port):
    with RuntimeProcess(tmp_path / "data", port) as proc:
        proc.wait_healthy()
        st = proc.status()
        assert "demo_conveyor.mp4" in st["source"]["spec"] and "loop=1" in st["source"]["spec"]
        assert st["recipe"]["name"] == "demo-housings"
        assert (st["source"]["width"], st["source"]["height"]) == (640, 360)


@pytest.mark.slow
def test_demo_clip_counts_match_its_truth(tmp_path, port):
    """Unpaced single pass over the demo clip with the default (demo) recipe."""
    truth = json.loads((DEMO / "demo_truth.json").read_text())
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO / 'demo_conveyor.mp4'}?loop=0&paced=0") as proc:
        proc.wait_up()
        proc.wait_until(lambda: proc.status()["source"]["state"] == "ended", 30, "the demo clip to end")
        proc.wait_until(lambda: proc.status()["frames_processed"] >= truth["frames"] - 1, 5, "all frames processed")
        stats = proc.json("GET", "/api/stats")[1]
        assert stats["total"] == truth["parts_total"]
        assert stats["fail"] == truth["rejects_total"]
        assert stats["defects"] == truth["defects"]
        assert proc.status()["frames_dropped"] == 0  # unpaced: nothing dropped


def test_token_sources_in_order(tmp_path, monkeypatch):
    parser = config.build_parser()
    monkeypatch.delenv("HELIO_TOKEN", raising=False)
    monkeypatch.delenv("HELIO_TOKEN_FILE", raising=False)
    tf = tmp_path / "tok"
    tf.write_text("from-file\n")
    assert config.resolve_token(parser.parse_args(["--token", "flag"]), tmp_path) == "flag"
    assert config.resolve_token(parser.parse_args(["--token-file", str(tf)]), tmp_path) == "from-file"
    monkeypatch.setenv("HELIO_TOKEN_FILE", str(tf))
    assert config.resolve_token(parser.parse_args([]), tmp_path) == "from-file"
    monkeypatch.setenv("HELIO_TOKEN", "env")
    assert config.resolve_token(parser.parse_args([]), tmp_path) == "env"
    monkeypatch.delenv("HELIO_TOKEN")
    monkeypatch.delenv("HELIO_TOKEN_FILE")
    made = config.resolve_token(parser.parse_args([]), tmp_path)
    assert (tmp_path / "token").read_text().strip() == made  # generated once, then reused
    assert config.resolve_token(parser.parse_args([]), tmp_path) == made
    with pytest.raises(config.ConfigError, match="cannot read the token file"):
        config.resolve_token(parser.parse_args(["--token-file", str(tmp_path / "missing")]), tmp_path)
