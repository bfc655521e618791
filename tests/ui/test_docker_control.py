"""Runtime control buttons on a real container on the private engine (start, stop, update)."""

from __future__ import annotations

import pytest
from PySide6 import QtWidgets

from helio_gui.engine import HealthCheckConfig, RuntimeProfile, connect
from helio_gui.ui.backends import DockerBackend
from helio_gui.ui.config import DEFAULT_PIN
from helio_gui.ui.control import RuntimeControlPanel
from helio_gui.ui.roles import RoleModel, hash_pin
from helio_gui.ui.workers import TaskRunner
from tests.engine.conftest import build_fake_runtime

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def container_state(client, name):
    try:
        c = client.containers.get(name)
    except Exception:  # noqa: BLE001 - gone
        return "missing"
    c.reload()  # fresh, never the cached snapshot
    return c.status


@pytest.fixture
def panel(qtbot, qapp, docker_engine, docker_client, busybox_image, session_labels, port, tmp_path):
    from helio_gui.ui import theme

    old_style = qapp.styleSheet()
    theme.apply(qapp)  # styled like the app, for the screenshot
    v1 = build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:1.0.0", "1.0.0")
    profile = RuntimeProfile(name=f"gui{port}", image=v1, port=port, labels=dict(session_labels),
                             healthcheck=HealthCheckConfig(interval_s=0.5, timeout_s=2, retries=2, start_period_s=0.5),
                             health_timeout_s=20, stop_timeout_s=5)
    eng = connect(docker_engine.base_url, state_dir=tmp_path / "state")
    backend = DockerBackend(profile, eng, profile_path=str(tmp_path / "profile.json"))
    runner = TaskRunner()
    roles = RoleModel(hash_pin(DEFAULT_PIN))
    p = RuntimeControlPanel(backend, runner, roles)
    qtbot.addWidget(p)
    p.skip_confirm = True
    yield p, backend, profile
    qapp.setStyleSheet(old_style)
    p.shutdown()
    runner.shutdown()
    roles.shutdown()
    try:
        eng.remove(backend.profile)
    finally:
        eng.close()


def press(qtbot, panel, button, action, timeout=60000):
    qtbot.waitUntil(button.isEnabled, timeout=10000)  # buttons follow the container's state
    with qtbot.waitSignal(panel.action_finished, timeout=timeout) as sig:
        button.click()
    assert sig.args[0] == action
    return sig.args[1], sig.args[2]


def test_buttons_start_stop_and_update_a_real_container(qtbot, panel, docker_client, busybox_image, tmp_path,
                                                       screenshot_dir):
    (screenshot_dir / "gui").mkdir(exist_ok=True)
    p, backend, profile = panel
    name = profile.runtime_container_name
    # An operator's press does nothing.
    p.btn_start.click()
    assert not p._busy and container_state(docker_client, name) == "missing"
    assert p.roles.unlock(DEFAULT_PIN)
    ok, msg = press(qtbot, p, p.btn_start, "start")
    assert ok, msg
    assert container_state(docker_client, name) == "running"
    qtbot.waitUntil(lambda: p.fields["state"].text() == "RUNNING", timeout=10000)
    qtbot.waitUntil(lambda: p.fields["version"].text() == "1.0.0", timeout=10000)
    assert "connected" in p.engine_line.text()
    qtbot.waitUntil(lambda: "starting" in p.log_view.toPlainText(), timeout=10000)  # the container's own log

    ok, msg = press(qtbot, p, p.btn_stop, "stop")
    assert ok, msg
    assert container_state(docker_client, name) in ("exited", "missing")

    # Update from an image file (what a USB stick brings): the real engine loads and swaps it.
    v2 = build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:2.0.0", "2.0.0")
    tar = tmp_path / "runtime-2.0.0.tar"
    with open(tar, "wb") as fh:
        for chunk in docker_client.images.get(v2).save(named=True):
            fh.write(chunk)
    press(qtbot, p, p.btn_start, "start")
    stages = []
    orig = p._show_progress
    p._show_progress = lambda prog: (stages.append(prog[0]), orig(prog))
    p.update_kind.setCurrentIndex(p.update_kind.findData("file"))
    p.update_value.setText(str(tar))
    ok, msg = press(qtbot, p, p.btn_update, "update", timeout=120000)
    assert ok, msg
    assert stages, "no stage names were shown during the update"
    c = docker_client.containers.get(name)
    assert "2.0.0" in (c.image.tags[0] if c.image.tags else "") or c.labels.get("org.opencontainers.image.version") == "2.0.0"
    qtbot.waitUntil(lambda: p.fields["version"].text() == "2.0.0", timeout=15000)
    assert backend.profile.image.endswith("2.0.0")
    p.resize(1090, 736)  # the page's area in a 1280x800 window
    p.grab().save(str(screenshot_dir / "gui" / "runtime_docker_after_update.png"))


def test_update_with_a_missing_file_fails_clearly_and_changes_nothing(qtbot, panel, docker_client, tmp_path):
    p, backend, profile = panel
    p.roles.unlock(DEFAULT_PIN)
    press(qtbot, p, p.btn_start, "start")
    p.update_kind.setCurrentIndex(p.update_kind.findData("file"))
    p.update_value.setText(str(tmp_path / "nope.tar"))
    ok, msg = press(qtbot, p, p.btn_update, "update")
    assert not ok and "not a file" in msg
    assert container_state(docker_client, profile.runtime_container_name) == "running"


def _air_gapped_context(dest, version: str):
    """A Dockerfile.device whose default base is a registry image this machine cannot reach, and a
    wheelhouse/ the build must see (the fake runtime stands in for the real one: the e2e test builds
    the real device image)."""
    from tests.engine.conftest import _FAKE_RUNTIME, _labels
    from helio_gui import RUNTIME_API_VERSION

    dest.mkdir(parents=True, exist_ok=True)
    (dest / "wheelhouse").mkdir()
    (dest / "wheelhouse" / "helio_dummy-0.0.0-py3-none-any.whl").write_bytes(b"not a real wheel")
    body = _FAKE_RUNTIME.format(base="${BASE_IMAGE}", api=RUNTIME_API_VERSION,
                                labels=_labels(version, RUNTIME_API_VERSION))
    body = body.replace("ARG VERSION\n", f"ARG VERSION={version}\nCOPY wheelhouse/ /wheels/\n"
                        "RUN test -s /wheels/helio_dummy-0.0.0-py3-none-any.whl\n")
    (dest / "Dockerfile.device").write_text("ARG BASE_IMAGE=registry.invalid/helio/python:3.11-slim\n" + body)
    return dest


def test_build_update_uses_the_base_image_field_and_remembers_it(qtbot, qapp, docker_engine, docker_client,
                                                                 busybox_image, session_labels, port, tmp_path,
                                                                 screenshot_dir):
    """Air-gapped: Update -> Build from Dockerfile.device with a local base image (the BASE_IMAGE
    build arg) builds, swaps the container, and the field is kept in the GUI config; without it the
    build fails saying what to do, and the running container is untouched."""
    from helio_gui.ui.config import GuiConfig

    v1 = build_fake_runtime(docker_client, busybox_image, "helio-test/fake-runtime:1.0.0", "1.0.0")
    profile = RuntimeProfile(name=f"guib{port}", image=v1, port=port, labels=dict(session_labels),
                             healthcheck=HealthCheckConfig(interval_s=0.5, timeout_s=2, retries=2, start_period_s=0.5),
                             health_timeout_s=20, stop_timeout_s=5)
    eng = connect(docker_engine.base_url, state_dir=tmp_path / "state")
    backend = DockerBackend(profile, eng)
    runner = TaskRunner()
    roles = RoleModel(hash_pin(DEFAULT_PIN))
    config = GuiConfig()
    from helio_gui.ui import theme

    old_style = qapp.styleSheet()
    theme.apply(qapp)  # styled like the app, for the screenshot
    p = RuntimeControlPanel(backend, runner, roles, config=config)
    qtbot.addWidget(p)
    p.skip_confirm = True
    built = []
    try:
        roles.unlock(DEFAULT_PIN)
        press(qtbot, p, p.btn_start, "start")
        ctx = _air_gapped_context(tmp_path / "ctx", "4.0.0")
        p.update_kind.setCurrentIndex(p.update_kind.findData("build"))
        p.update_value.setText(str(ctx))
        assert p.build_row.isVisibleTo(p)
        assert "wheelhouse/ found (1 wheels)" in p.wheelhouse_line.text()

        # No base image: Dockerfile.device's registry default cannot be fetched here.
        ok, msg = press(qtbot, p, p.btn_update, "update", timeout=120000)
        assert not ok
        assert "set Base image" in msg and "nothing was stopped" in msg, msg
        assert container_state(docker_client, profile.runtime_container_name) == "running"
        assert backend.profile.image == v1

        p.base_image.setText(busybox_image)
        ok, msg = press(qtbot, p, p.btn_update, "update", timeout=180000)
        assert ok, msg
        built.append(backend.profile.image)
        c = docker_client.containers.get(profile.runtime_container_name)
        assert c.labels.get("org.opencontainers.image.version") == "4.0.0"
        assert backend.profile.image.startswith("helio-runtime:local-")
        assert GuiConfig.load().build_base_image == busybox_image  # remembered across restarts
        p.resize(1090, 736)  # the page's area in a 1280x800 window
        (screenshot_dir / "gui").mkdir(exist_ok=True)
        p.grab().save(str(screenshot_dir / "gui" / "runtime_docker_build.png"))
        p2 = RuntimeControlPanel(backend, runner, roles, config=GuiConfig.load())
        qtbot.addWidget(p2)
        assert p2.base_image.text() == busybox_image
        p2.shutdown()
    finally:
        qapp.setStyleSheet(old_style)
        p.shutdown()
        runner.shutdown()
        roles.shutdown()
        try:
            eng.remove(backend.profile)
            for ref in built:
                docker_client.images.remove(ref, force=True)
        finally:
            eng.close()


@pytest.mark.qt_log_ignore("does not support propagateSizeHints")
def test_a_full_rollback_report_is_shown_without_scrolling(qtbot, panel):
    p, _backend, _profile = panel
    p.resize(1280, 760)
    p.show()
    qtbot.waitExposed(p)
    report = "\n".join(["Update to helio-test/fake-runtime:2.0.0 FAILED — rolled back to 1.0.0"] +
                       [f"  step {i}: {s}" for i, s in enumerate(
                           ["image loaded", "old container renamed", "new container created",
                            "new container started", "health check failed: 3 retries", "new container stopped",
                            "new container removed", "old container renamed back", "old container started",
                            "old container healthy again"], 1)])
    p._finished("update", False, report)
    QtWidgets.QApplication.processEvents()
    bar = p.result_box.verticalScrollBar()
    assert bar.maximum() == 0, f"the report scrolls ({bar.maximum()} px hidden) in a {p.result_box.height()} px box"
    assert p.result_box.height() >= 11 * p.result_line.fontMetrics().lineSpacing()
