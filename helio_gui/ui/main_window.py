"""The main window: status strip, alarm banner, navigation, and the four screens."""

from __future__ import annotations

import time

from PySide6 import QtCore, QtGui, QtWidgets

from .alarms import AlarmBanner, AlarmModel, DefectRateWindow
from .config import GuiConfig, log_dir
from .live import LivePanel
from .presenter import RuntimePresenter
from .roles import PinDialog, RoleModel
from .theme import COLORS
from .widgets import ElidedLabel
from .workers import TaskRunner

SCREENS = ("live", "stats", "runtime", "settings")


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, runtimes: list[tuple[str, str, str]], backend=None, config: GuiConfig | None = None,
                 kiosk: bool = False, mode_text: str = "", parent=None):
        """`runtimes`: (name, base_url, token) per feed (1-4); `backend` controls the first one."""
        super().__init__(parent)
        self.setObjectName("MainWindow")
        self.setWindowTitle("HelioVision Operator")
        self.config = config or GuiConfig()
        self.kiosk = kiosk
        self.backend = backend
        self._closing_allowed = not kiosk
        self.runner = TaskRunner(self)
        self.presenters = [RuntimePresenter(self.runner, url, token, name, parent=self)
                           for name, url, token in runtimes[:4]]
        self.presenter = self.presenters[0]
        self.roles = RoleModel(self.config.engineer_pin_sha256, self.config.auto_lock_s, self)
        QtWidgets.QApplication.instance().installEventFilter(self.roles)
        self.alarms = AlarmModel(log_dir() / "alarms.log", self)
        self.defect_window = DefectRateWindow(self.config.alarms.window_parts)

        central = QtWidgets.QWidget()
        root = QtWidgets.QVBoxLayout(central)
        root.setContentsMargins(0, 0, 0, 0)
        root.setSpacing(0)
        root.addWidget(self._build_strip(mode_text))
        self.banner = AlarmBanner(self.alarms)
        self.banner.acknowledge_clicked.connect(lambda: self.alarms.acknowledge_all(self.roles.role))
        root.addWidget(self.banner)
        body = QtWidgets.QHBoxLayout()
        body.setSpacing(0)
        nav = QtWidgets.QWidget()
        nav.setObjectName("NavBar")
        nav.setFixedWidth(190)
        nlay = QtWidgets.QVBoxLayout(nav)
        nlay.setContentsMargins(0, 8, 0, 8)
        nlay.setSpacing(2)
        self.stack = QtWidgets.QStackedWidget()
        self.live = LivePanel(self.presenters, side_width=400 if kiosk else 340, kiosk=kiosk)
        self._pages: dict[str, QtWidgets.QWidget] = {"live": self.live}
        self._page_index: dict[str, int] = {"live": self.stack.addWidget(self.live)}
        self.nav_buttons: dict[str, QtWidgets.QPushButton] = {}
        group = QtWidgets.QButtonGroup(self)
        pages = [("live", "▶  Live"), ("stats", "▦  Statistics")]
        if backend is not None:
            pages.append(("runtime", "⚙  Runtime"))
        pages.append(("settings", "☰  Settings"))
        for key, text in pages:
            b = QtWidgets.QPushButton(text)
            b.setProperty("kind", "nav")
            b.setCheckable(True)
            group.addButton(b)
            b.clicked.connect(lambda _=False, k=key: self._show_page(k))
            nlay.addWidget(b)
            self.nav_buttons[key] = b
        self.nav_buttons["live"].setChecked(True)
        nlay.addStretch(1)
        self.btn_exit = QtWidgets.QPushButton("Exit")
        self.btn_exit.clicked.connect(self._exit_clicked)
        nlay.addWidget(self.btn_exit)
        body.addWidget(nav)
        body.addWidget(self.stack, 1)
        root.addLayout(body, 1)
        self.setCentralWidget(central)

        self.down_timer = QtCore.QTimer(self)
        self.down_timer.setObjectName("RuntimeDownTimer")
        self.down_timer.setSingleShot(True)
        self.down_timer.timeout.connect(self._runtime_down)
        for p in self.presenters:
            p.connection_changed.connect(lambda s, m, p=p: self._connection(p, s, m))
            p.status_changed.connect(lambda st, p=p: self._source_alarm(p, st))
        self.presenter.result_received.connect(self._rate_alarm)
        for f in self.live.feeds:
            f.frozen_changed.connect(lambda on, f=f: self._frozen_alarm(f, on))
        self.roles.role_changed.connect(self._role_changed)
        self._role_changed(self.roles.role)
        self.down_timer.start(int(self.config.alarms.runtime_down_s * 1000))  # until first connect
        if kiosk:
            self.setWindowFlag(QtCore.Qt.WindowType.FramelessWindowHint, True)
            self.setWindowFlag(QtCore.Qt.WindowType.WindowCloseButtonHint, False)

    # -- pages: the live view first; the others are built when first needed (or just after the
    # first frame), so the charting library and friends do not delay the first painted frame.
    def _page(self, key: str):
        if key not in self._pages:
            if key == "stats":
                from .stats import StatsPanel

                panel = StatsPanel(self.presenter, self.runner, self.roles)
            elif key == "runtime":
                from .control import RuntimeControlPanel

                panel = RuntimeControlPanel(self.backend, self.runner, self.roles, self.presenter, self.config,
                                            kiosk=self.kiosk)
            elif key == "settings":
                from .settings import SettingsPanel

                panel = SettingsPanel(self.presenter, self.runner, self.roles, self.config, self.backend,
                                      alarm_config_changed=self._alarm_config_changed, kiosk=self.kiosk)
            else:
                raise ValueError(f"no page {key!r}")
            self._pages[key] = panel
            self._page_index[key] = self.stack.addWidget(self._scrollable(panel))
        return self._pages[key]

    def _show_page(self, key: str) -> None:
        self._page(key)
        self.stack.setCurrentIndex(self._page_index[key])
        self.nav_buttons[key].setChecked(True)

    def build_pages(self) -> None:
        for key in self.nav_buttons:
            if not getattr(self, "_shut", False):
                self._page(key)

    @property
    def stats(self):
        return self._page("stats")

    @property
    def control(self):
        return self._page("runtime") if self.backend is not None else None

    @property
    def settings(self):
        return self._page("settings")

    def _scrollable(self, panel: QtWidgets.QWidget) -> QtWidgets.QScrollArea:
        # A page never forces the window past the screen: it scrolls instead (by finger in kiosk).
        area = QtWidgets.QScrollArea()
        area.setWidgetResizable(True)
        area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        area.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        area.setWidget(panel)
        if self.kiosk:
            QtWidgets.QScroller.grabGesture(area.viewport(),
                                            QtWidgets.QScroller.ScrollerGestureType.LeftMouseButtonGesture)
        return area

    def start(self) -> None:
        for p in self.presenters:
            p.start()
        # Build the other pages once the live view is up (first frame, or 2 s at the latest).
        self._pages_timer = QtCore.QTimer(self)
        self._pages_timer.setObjectName("BuildPages")
        self._pages_timer.setSingleShot(True)
        self._pages_timer.timeout.connect(self.build_pages)
        self._pages_timer.start(2000)
        feed = self.live.feeds[0] if self.live.feeds else None
        if feed is not None:
            def first(_fid):
                feed.frame_painted.disconnect(first)
                self._pages_timer.start(50)
            feed.frame_painted.connect(first)

    def show_screen(self, key: str) -> None:
        if key not in self.nav_buttons:
            raise ValueError(f"no screen {key!r}; choose one of {', '.join(self.nav_buttons)}")
        self._show_page(key)

    # -- strip -------------------------------------------------------------------------------
    def _build_strip(self, mode_text: str) -> QtWidgets.QWidget:
        strip = QtWidgets.QWidget()
        strip.setObjectName("StatusStrip")
        strip.setFixedHeight(64 if not self.kiosk else 80)
        lay = QtWidgets.QHBoxLayout(strip)
        lay.setContentsMargins(16, 6, 12, 6)
        title = QtWidgets.QLabel("HelioVision <span style='color:#388bfd'>Operator</span>")
        title.setStyleSheet("font-size: 22px; font-weight: 700;")
        lay.addWidget(title)
        lay.addSpacing(24)
        self.conn_dot = QtWidgets.QLabel("●")
        self.conn_label = ElidedLabel("connecting…")
        self.conn_label.setStyleSheet("font-size: 16px;")
        lay.addWidget(self.conn_dot)
        lay.addWidget(self.conn_label, 1)
        self.mode_label = QtWidgets.QLabel(mode_text)
        self.mode_label.setProperty("role", "muted")
        lay.addWidget(self.mode_label)
        lay.addSpacing(12)
        self.role_button = QtWidgets.QPushButton()
        self.role_button.setMinimumWidth(190 if not self.kiosk else 250)
        self.role_button.clicked.connect(self._role_clicked)
        lay.addWidget(self.role_button)
        self.clock = QtWidgets.QLabel()
        self.clock.setStyleSheet("font-size: 20px; font-weight: 600; padding-left: 12px;")
        lay.addWidget(self.clock)
        self.clock_timer = QtCore.QTimer(self)
        self.clock_timer.setObjectName("ClockTimer")
        self.clock_timer.timeout.connect(lambda: self.clock.setText(time.strftime("%H:%M:%S")))
        self.clock_timer.start(1000)
        self.clock.setText(time.strftime("%H:%M:%S"))
        self._set_conn("connecting", "connecting to the runtime…")
        return strip

    def _set_conn(self, state: str, message: str) -> None:
        color = {"connected": COLORS["pass"], "reconnecting": COLORS["fail"]}.get(state, COLORS["warn"])
        self.conn_dot.setStyleSheet(f"color: {color}; font-size: 22px;")
        self.conn_label.setText(message)

    # -- roles -------------------------------------------------------------------------------
    def _role_clicked(self) -> None:
        if self.roles.is_engineer:
            self.roles.lock()
            return
        dlg = PinDialog(self)
        self.pin_dialog = dlg
        dlg.accepted.connect(lambda: self._try_pin(dlg.pin()))
        dlg.open()

    def _try_pin(self, pin: str) -> None:
        if not self.roles.unlock(pin):
            QtWidgets.QMessageBox.warning(self, "Engineer unlock", "Wrong PIN.")

    def _role_changed(self, role: str) -> None:
        eng = role == "engineer"
        self.role_button.setText("Engineer · Lock" if eng else "Operator · Unlock")
        self.role_button.setProperty("kind", "primary" if eng else "")
        self.role_button.style().unpolish(self.role_button)
        self.role_button.style().polish(self.role_button)
        # In kiosk mode only an engineer may leave; on a desktop anyone may close the window.
        self.btn_exit.setVisible(eng or not self.kiosk)

    def _exit_clicked(self) -> None:
        self._closing_allowed = True
        self.close()

    # -- alarms ------------------------------------------------------------------------------
    def _connection(self, p: RuntimePresenter, state: str, message: str) -> None:
        if p is self.presenter:
            self._set_conn(state, message)
        if state == "connected":
            self.down_timer.stop()
            self.alarms.clear("runtime_down")
        elif state == "reconnecting" and not self.down_timer.isActive() and "runtime_down" not in self.alarms.alarms:
            self.down_timer.start(int(self.config.alarms.runtime_down_s * 1000))

    def _runtime_down(self) -> None:
        if self.presenter.connection != "connected":
            self.alarms.raise_("runtime_down", f"RUNTIME DOWN — {self.presenter.connection_message}")

    def _source_alarm(self, p: RuntimePresenter, st: dict) -> None:
        src = st.get("source") or {}
        state = src.get("state")
        key = f"camera_lost:{p.name}"
        if state in ("failed", "reconnecting", "stalled", "ended"):
            self.alarms.raise_(key, f"CAMERA {state.upper()} on {p.name}: {src.get('reason') or 'no frames'}")
        elif state == "live":
            self.alarms.clear(key)

    def _frozen_alarm(self, f, on: bool) -> None:
        key = f"feed_frozen:{f.title}"
        if on:
            self.alarms.raise_(key, f"FEED FROZEN — {f.title}: no new frame for over 1 s")
        else:
            self.alarms.clear(key)

    def _rate_alarm(self, r: dict) -> None:
        a = self.config.alarms
        self.defect_window.add(int(r.get("id", 0)), r.get("verdict") == "FAIL")
        w = self.defect_window
        if w.count >= a.min_parts and w.rate > a.defect_rate_threshold:
            self.alarms.raise_("defect_rate", f"DEFECT RATE {w.rate * 100:.0f}% over the last {w.count} parts "
                                              f"(limit {a.defect_rate_threshold * 100:.0f}%)")
        elif w.rate <= a.defect_rate_threshold * 0.8:
            self.alarms.clear("defect_rate")  # hysteresis: no flapping right at the limit

    def _alarm_config_changed(self) -> None:
        old = list(self.defect_window.verdicts)
        self.defect_window = DefectRateWindow(self.config.alarms.window_parts)
        self.defect_window.verdicts.extend(old)

    # -- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stops every timer, stream thread and worker this window owns (idempotent)."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        QtWidgets.QApplication.instance().removeEventFilter(self.roles)
        self.clock_timer.stop()
        self.down_timer.stop()
        if hasattr(self, "_pages_timer"):
            self._pages_timer.stop()
        self.roles.shutdown()
        for p in self.presenters:
            p.shutdown()
        for page in self._pages.values():
            page.shutdown()
        self.runner.shutdown()
        # The backend (and an embedded runtime) belongs to whoever made it: main() stops it.

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:
        if self.kiosk and not self._closing_allowed:
            ev.ignore()  # kiosk: no way out but the engineer's Exit button
            return
        self.shutdown()
        ev.accept()
