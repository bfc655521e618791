"""build_image: streamed output, a failing step, and cancel (real builds on the private engine)."""

from __future__ import annotations

import threading
import time

import docker.errors
import pytest

from helio_gui.engine import Cancelled, EngineError, Progress

pytestmark = pytest.mark.engine


def _context(tmp_path, busybox_image, body: str):
    (tmp_path / "Dockerfile.device").write_text(f"FROM {busybox_image}\n{body}\n")
    (tmp_path / "secret.txt").write_text("not for the image")
    (tmp_path / ".dockerignore").write_text("secret.txt\n")
    return tmp_path


def test_build_streams_output_and_honours_dockerignore(engine, busybox_image, docker_client, tmp_path):
    ctx = _context(tmp_path, busybox_image, "COPY . /ctx/\nRUN echo built-ok && ls /ctx")
    seen: list[Progress] = []
    image_id = engine.build_image(ctx, "helio-test/build:ok", progress=seen.append, network_mode="none")
    assert docker_client.images.get("helio-test/build:ok").id == image_id
    messages = "\n".join(p.message for p in seen)
    assert "built-ok" in messages and "Dockerfile.device" in messages
    assert "secret.txt" not in messages  # excluded by .dockerignore
    fractions = [p.fraction for p in seen if p.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    docker_client.images.remove("helio-test/build:ok", force=True)


def test_build_failure_is_an_error_with_the_output(engine, busybox_image, tmp_path):
    ctx = _context(tmp_path, busybox_image, "RUN echo about-to-fail && false")
    with pytest.raises(EngineError) as err:
        engine.build_image(ctx, "helio-test/build:fails", network_mode="none")
    assert "Building helio-test/build:fails failed" in str(err.value)
    assert "about-to-fail" in err.value.hint


def test_build_cancel_stops_a_long_step(engine, busybox_image, docker_client, tmp_path):
    ctx = _context(tmp_path, busybox_image, "RUN echo long-step-started && sleep 60 && echo never")
    cancel = threading.Event()

    def progress(p: Progress):
        if "long-step-started" in p.message:
            cancel.set()

    t = time.monotonic()
    with pytest.raises(Cancelled):
        engine.build_image(ctx, "helio-test/build:cancelled", progress=progress, cancel=cancel, network_mode="none")
    assert time.monotonic() - t < 30
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get("helio-test/build:cancelled")
