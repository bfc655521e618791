"""The settings page as the engineer meets it (real widgets; the runtime is not contacted)."""

from __future__ import annotations

import pytest

from helio_gui.client import EmbeddedRuntime
from helio_gui.ui.backends import EmbeddedBackend
from helio_gui.ui.config import GuiConfig
from helio_gui.ui.presenter import RuntimePresenter
from helio_gui.ui.roles import RoleModel
from helio_gui.ui.settings import SettingsPanel, source_choice, source_spec
from helio_gui.ui.workers import TaskRunner


@pytest.fixture
def parts(qtbot, tmp_path):
    runner = TaskRunner()
    presenter = RuntimePresenter(runner, "http://127.0.0.1:9", "t")
    roles = RoleModel(GuiConfig().engineer_pin_sha256)
    yield runner, presenter, roles
    roles.shutdown()
    presenter.shutdown()
    runner.shutdown()


@pytest.mark.parametrize("spec, kind, value", [
    (None, "demo", ""), ("file:/media/clip.mp4", "file", "/media/clip.mp4"),
    ("folder:/media/parts?rate=5", "folder", "/media/parts?rate=5"), ("camera:0", "camera", "0"),
    ("/dev/video2", "camera", "/dev/video2"), ("rtsp://cam.local/s", "url", "rtsp://cam.local/s"),
])
def test_source_choice_is_the_inverse_of_source_spec(spec, kind, value):
    assert source_choice(spec) == (kind, value)
    if kind not in ("demo", "camera"):  # camera "0" and "camera:0" name the same device
        assert source_spec(kind, value) == spec


def test_settings_show_the_source_the_runtime_runs_on(qtbot, parts, tmp_path):
    """Started with --source (or a saved source), the Source card shows that source, not
    "Demo footage" with an empty, disabled box beside it."""
    runner, presenter, roles = parts
    rt = EmbeddedRuntime(source="file:/media/clip.mp4", data_dir=tmp_path / "d")
    panel = SettingsPanel(presenter, runner, roles, GuiConfig(), EmbeddedBackend(rt))
    qtbot.addWidget(panel)
    assert panel.source_kind.currentData() == "file"
    assert panel.source_value.currentText() == "/media/clip.mp4"
    panel.source_kind.setCurrentIndex(panel.source_kind.findData("demo"))
    assert not panel.source_value.isVisibleTo(panel)  # nothing to choose for the demo footage
    panel.shutdown()


def test_unreachable_runtime_says_it_is_retrying_first(qtbot, parts, port):
    """The status strip elides on the right: "reconnecting" and when must come first, the
    technical reason after."""
    runner, _presenter, _roles = parts
    p = RuntimePresenter(runner, f"http://127.0.0.1:{port}", "t")
    try:
        with qtbot.waitSignal(p.connection_changed, timeout=10000,
                              check_params_cb=lambda s, m: s == "reconnecting") as sig:
            p.start()
        msg = sig.args[1]
        assert msg.startswith("runtime unreachable · retrying in "), msg
        assert "connection refused" in msg
    finally:
        p.shutdown()


def test_pareto_says_no_defects_instead_of_empty_axes(qtbot, parts):
    from helio_gui.ui.stats import StatsPanel

    runner, presenter, roles = parts
    st = StatsPanel(presenter, runner, roles)
    qtbot.addWidget(st)
    st.show_stats({"total": 3, "pass": 3, "fail": 0, "defects": {}, "buckets": []})
    assert st.pareto_empty.isVisible() and st.pareto_empty in st.pareto.getPlotItem().items
    st.show_stats({"total": 4, "pass": 3, "fail": 1, "defects": {"wrong_part": 1}, "buckets": []})
    assert not st.pareto_empty.isVisible()
    ticks = st.pareto.getAxis("bottom")._tickLevels
    assert ticks and ticks[0][0][1] == "wrong_part"
    st.shutdown()
