"""Runtime control: engine status, runtime state, Start/Stop/Restart/Update/Rollback, logs, CPU/memory."""

from __future__ import annotations

import functools
import threading

from PySide6 import QtCore, QtGui, QtWidgets

from .backends import ControlError, wheelhouse_info
from .theme import COLORS
from .widgets import Card, confirm, fmt_bytes, fmt_duration
from .workers import TaskRunner

UPDATE_SOURCES = [("registry", "Registry reference", "e.g. registry.local/helio-runtime:0.2.0"),
                  ("file", "Image file (.tar)", "path to an image saved with docker save"),
                  ("build", "Build from Dockerfile.device", "project folder containing Dockerfile.device")]


class RuntimeControlPanel(QtWidgets.QWidget):
    action_finished = QtCore.Signal(str, bool, str)  # action, ok, message (tests wait on it)
    RESULT_MAX_LINES = 14

    def _fit_result_box(self) -> None:
        fm = self.result_line.fontMetrics()
        limit = self.RESULT_MAX_LINES * fm.lineSpacing() + 8
        w = max(200, self.result_box.viewport().width())
        need = self.result_line.heightForWidth(w) if self.result_line.text() else 0
        self.result_box.setFixedHeight(min(limit, max(need, 0) + 4))
        self.result_box.setVisible(bool(self.result_line.text()))  # no empty sliver when idle

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._fit_result_box()

    def __init__(self, backend, runner: TaskRunner, roles, presenter=None, config=None, kiosk: bool = False,
                 parent=None):
        """`config`: the GuiConfig that remembers the build's base image (saved when an update starts).
        `kiosk`: the cards stack (touch sizes do not fit side by side in 1280 px)."""
        super().__init__(parent)
        self.backend, self.runner, self.roles, self.presenter = backend, runner, roles, presenter
        self.config = config
        self._busy = False
        self._cancel: threading.Event | None = None
        self._status_busy = False
        self._log_stop: threading.Event | None = None
        self._log_lines: list[str] = []
        self._pending_log: list[str] = []
        self._pending_lock = threading.Lock()
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        outer.setSpacing(12)

        self.engine_line = QtWidgets.QLabel("Engine: checking…")
        self.engine_line.setProperty("role", "title")
        self.engine_line.setWordWrap(True)
        outer.addWidget(self.engine_line)

        top = QtWidgets.QBoxLayout(QtWidgets.QBoxLayout.Direction.TopToBottom if kiosk
                                   else QtWidgets.QBoxLayout.Direction.LeftToRight)
        state = Card("Runtime")
        form = QtWidgets.QGridLayout()
        self.fields = {}
        for i, (key, label) in enumerate((("state", "State"), ("health", "Health"), ("version", "Version"),
                                          ("uptime", "Uptime"), ("restarts", "Restarts"), ("cpu", "CPU"),
                                          ("mem", "Memory"), ("api", "API"))):
            name = QtWidgets.QLabel(label)
            name.setProperty("role", "muted")
            val = QtWidgets.QLabel("–")
            val.setStyleSheet("font-size: 18px; font-weight: 600;")
            val.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addWidget(name, i % 4, (i // 4) * 2)
            form.addWidget(val, i % 4, (i // 4) * 2 + 1)
            self.fields[key] = val
        state.layout_.addLayout(form)
        state.layout_.addStretch(1)
        top.addWidget(state, 3)

        actions = Card("Actions")
        grid = QtWidgets.QGridLayout()
        self.btn_start = QtWidgets.QPushButton("Start")
        self.btn_stop = QtWidgets.QPushButton("Stop")
        self.btn_restart = QtWidgets.QPushButton("Restart")
        self.btn_update = QtWidgets.QPushButton("Update")
        self.btn_rollback = QtWidgets.QPushButton("Rollback")
        self.btn_start.setProperty("kind", "primary")
        self.btn_stop.setProperty("kind", "danger")
        for i, b in enumerate((self.btn_start, self.btn_stop, self.btn_restart, self.btn_update, self.btn_rollback)):
            b.setMinimumWidth(130)
            grid.addWidget(b, i // 3, i % 3)
        self.btn_start.clicked.connect(lambda: self.do("start"))
        self.btn_stop.clicked.connect(lambda: self.do("stop"))
        self.btn_restart.clicked.connect(lambda: self.do("restart"))
        self.btn_update.clicked.connect(lambda: self.do("update"))
        self.btn_rollback.clicked.connect(lambda: self.do("rollback"))
        actions.layout_.addLayout(grid)
        src = QtWidgets.QHBoxLayout()
        self.update_kind = QtWidgets.QComboBox()
        for key, text, _ in UPDATE_SOURCES:
            self.update_kind.addItem(text, key)
        self.update_value = QtWidgets.QLineEdit()
        self.update_kind.currentIndexChanged.connect(self._kind_changed)
        self.update_value.setPlaceholderText(UPDATE_SOURCES[0][2])
        self.update_value.textChanged.connect(self._show_wheelhouse)
        src.addWidget(self.update_kind)
        src.addWidget(self.update_value, 1)
        actions.layout_.addLayout(src)
        # Build only: the base image (a local one on an air-gapped machine) and whether the
        # context's wheelhouse/ makes pip offline.
        self.build_row = QtWidgets.QWidget()
        self.build_row.setObjectName("BuildRow")
        self.build_row.setStyleSheet("#BuildRow, #BuildRow QLabel { background: transparent; }")
        brow = QtWidgets.QGridLayout(self.build_row)
        brow.setContentsMargins(0, 0, 0, 0)
        blabel = QtWidgets.QLabel("Base image")
        blabel.setProperty("role", "muted")
        self.base_image = QtWidgets.QLineEdit((config.build_base_image or "") if config is not None else "")
        self.base_image.setPlaceholderText("empty: Dockerfile.device's default (from a registry)")
        self.base_image.setToolTip("A local image with python3 (e.g. loaded with docker load) so the build needs "
                                   "no registry; passed as the BASE_IMAGE build arg.")
        self.wheelhouse_line = QtWidgets.QLabel("")
        self.wheelhouse_line.setProperty("role", "muted")
        self.wheelhouse_line.setWordWrap(True)
        brow.addWidget(blabel, 0, 0)
        brow.addWidget(self.base_image, 0, 1)
        brow.addWidget(self.wheelhouse_line, 1, 0, 1, 2)
        brow.setColumnStretch(1, 1)
        self.build_row.setVisible(False)
        actions.add(self.build_row)
        prog = QtWidgets.QHBoxLayout()
        self.stage = QtWidgets.QLabel("Idle")
        self.stage.setMinimumWidth(160)
        self.progress = QtWidgets.QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        self.btn_cancel = QtWidgets.QPushButton("Cancel")
        self.btn_cancel.setEnabled(False)
        self.btn_cancel.clicked.connect(self.cancel)
        prog.addWidget(self.stage)
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.btn_cancel)
        actions.layout_.addLayout(prog)
        self.result_line = QtWidgets.QLabel("")
        self.result_line.setWordWrap(True)
        self.result_line.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop | QtCore.Qt.AlignmentFlag.AlignLeft)
        self.result_line.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        # An update's step-by-step report (a rollback: ~10 lines) is shown whole: the box grows
        # with its text up to RESULT_MAX_LINES, and only a longer report scrolls.
        self.result_box = QtWidgets.QScrollArea()
        self.result_box.setWidgetResizable(True)
        self.result_box.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        self.result_box.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.result_box.setStyleSheet("QScrollArea, QScrollArea > QWidget > QWidget { background: transparent; }")
        self.result_box.setWidget(self.result_line)
        self._fit_result_box()
        actions.add(self.result_box)
        self.role_hint = QtWidgets.QLabel("Operator: read-only. Unlock as engineer to control the runtime.")
        self.role_hint.setProperty("role", "muted")
        actions.add(self.role_hint)
        top.addWidget(actions, 4)
        outer.addLayout(top)

        logs = Card("Runtime log")
        lrow = QtWidgets.QHBoxLayout()
        self.follow = QtWidgets.QCheckBox("Follow")
        self.follow.setChecked(True)
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("Search the log…")
        self.search.returnPressed.connect(self.find_next)
        self.btn_find = QtWidgets.QPushButton("Find next")
        self.btn_find.clicked.connect(self.find_next)
        self.search_status = QtWidgets.QLabel("")
        self.search_status.setProperty("role", "muted")
        lrow.addWidget(self.follow)
        lrow.addWidget(self.search, 1)
        lrow.addWidget(self.btn_find)
        lrow.addWidget(self.search_status)
        logs.layout_.addLayout(lrow)
        self.log_view = QtWidgets.QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setMinimumHeight(160)  # the page scrolls rather than squeeze the log to a line
        self.log_view.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.WidgetWidth)
        logs.add(self.log_view, 1)
        outer.addWidget(logs, 1)

        self.timer = QtCore.QTimer(self)
        self.timer.setObjectName("ControlPoll")
        self.timer.setInterval(1000)  # stats one-shot at most once a second
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.log_timer = QtCore.QTimer(self)
        self.log_timer.setObjectName("LogFlush")
        self.log_timer.setInterval(200)  # log lines are batched: one append per tick, not per line
        self.log_timer.timeout.connect(self._flush_logs)
        self.log_timer.start()
        roles.role_changed.connect(self._apply_role)
        self._apply_role(roles.role)
        self.refresh()
        self.start_logs()
        if presenter is not None:
            presenter.status_changed.connect(self._runtime_status)

    # -- status ------------------------------------------------------------------------------
    def _apply_role(self, role: str) -> None:
        eng = role == "engineer"
        can_update = getattr(self.backend, "can_update", False)
        running = getattr(self, "_state", "") in ("running", "restarting")
        self.btn_start.setEnabled(eng and not self._busy and not running)
        for b in (self.btn_stop, self.btn_restart):
            b.setEnabled(eng and not self._busy and running)
        for b in (self.btn_update, self.btn_rollback):
            b.setEnabled(eng and can_update and not self._busy)
        self.update_kind.setEnabled(eng and can_update)
        self.update_value.setEnabled(eng and can_update)
        self.base_image.setEnabled(eng and can_update)
        self.role_hint.setVisible(not eng)
        if eng and not can_update:
            self.role_hint.setText("Update and rollback replace a container image: they need Docker mode.")
            self.role_hint.setVisible(True)
        elif not eng:
            self.role_hint.setText("Operator: read-only. Unlock as engineer to control the runtime.")

    def _kind_changed(self, i: int) -> None:
        self.update_value.setPlaceholderText(UPDATE_SOURCES[i][2])
        self.build_row.setVisible(UPDATE_SOURCES[i][0] == "build")
        self._show_wheelhouse()

    def _show_wheelhouse(self) -> None:
        if self.update_kind.currentData() == "build":
            self.wheelhouse_line.setText(wheelhouse_info(self.update_value.text().strip()))

    def _remember_base_image(self, base: str) -> None:
        if self.config is None or (self.config.build_base_image or "") == base:
            return
        self.config.build_base_image = base or None
        try:
            self.config.save()
        except OSError as exc:
            self.result_line.setText(f"Base image not saved in the settings: {exc}")
            self._fit_result_box()

    def refresh(self) -> None:
        if self._status_busy:
            return
        self._status_busy = True
        self.runner.run(self.backend.status, on_done=self._show_status, on_error=self._status_error)

    def _status_error(self, msg: str) -> None:
        self._status_busy = False
        self.engine_line.setText(f"Engine: {msg}")
        self.engine_line.setStyleSheet(f"color: {COLORS['fail']};")

    def _show_status(self, st: dict) -> None:
        self._status_busy = False
        self.last_status = st
        engine = st.get("engine") or ""
        self.engine_line.setText(f"{self.backend.describe()} — engine: {engine}")
        self.engine_line.setStyleSheet(f"color: {COLORS['fail']};" if engine.startswith("error") else "")
        state = st.get("state") or "–"
        if state != getattr(self, "_state", None):
            self._state = state
            self._apply_role(self.roles.role)
        if st.get("restart_loop"):
            state += " (restart loop!)"
        color = COLORS["pass"] if state == "running" else COLORS["warn"] if state in ("restarting", "created") else COLORS["fail"]
        self.fields["state"].setText(state.upper())
        self.fields["state"].setStyleSheet(f"font-size: 18px; font-weight: 700; color: {color};")
        if st.get("health"):
            self.fields["health"].setText(str(st["health"]))
        if st.get("version"):
            self.fields["version"].setText(str(st["version"]))
        self.fields["uptime"].setText(fmt_duration(st.get("uptime_s")))
        self.fields["restarts"].setText(str(st.get("restarts", "–")))
        cpu = st.get("cpu_percent")
        self.fields["cpu"].setText(f"{cpu:.0f} %" if isinstance(cpu, (int, float)) else "–")
        self.fields["mem"].setText(fmt_bytes(st.get("mem_bytes")))

    def _runtime_status(self, st: dict) -> None:
        # The runtime's own view (from its API) fills what the process/container view cannot.
        if st.get("runtime_version"):
            self.fields["version"].setText(str(st["runtime_version"]))
        if st.get("api_version"):
            self.fields["api"].setText(str(st["api_version"]))
        src = st.get("source") or {}
        age = st.get("last_frame_age_s")
        if src:
            health = "healthy" if src.get("state") == "live" and (age is None or age < 3) else f"unhealthy: {src.get('state')}"
            if not getattr(self, "last_status", {}).get("health"):
                self.fields["health"].setText(health)

    # -- actions -----------------------------------------------------------------------------
    def do(self, action: str) -> None:
        if self._busy or not self.roles.is_engineer:
            return
        texts = {"stop": ("Stop the runtime?", "Inspection stops until it is started again.", "Stop"),
                 "restart": ("Restart the runtime?", "Inspection pauses for a few seconds.", "Restart"),
                 "update": ("Update the runtime?", "The new image is fetched first; the runtime is replaced only "
                            "when it is present, and put back if the new one is not healthy.", "Update"),
                 "rollback": ("Roll back the runtime?", "The previous image is started in place of the current one.",
                              "Roll back")}
        if action in texts and not self.skip_confirm:
            title, text, ok = texts[action]
            if not confirm(self, title, text, ok):
                return
        self.run_action(action)

    skip_confirm = False  # tests drive the real buttons without a modal dialog

    def run_action(self, action: str) -> None:
        self._busy = True
        self._apply_role(self.roles.role)
        cancel = self._cancel = threading.Event()
        self.btn_cancel.setEnabled(action == "update")
        self.stage.setText(action.capitalize() + "…")
        self.progress.setRange(0, 0)
        self.result_line.setText("")
        self._fit_result_box()

        def progress(stage: str, message: str, fraction) -> None:
            self.runner.post(self._show_progress, (stage, message, fraction))

        fn = getattr(self.backend, action)
        if action == "update":
            kind, base = self.update_kind.currentData(), self.base_image.text().strip()
            if kind == "build":
                self._remember_base_image(base)
                fn = functools.partial(fn, base_image=base or None)
            args = (kind, self.update_value.text().strip(), progress, cancel)
        else:
            args = (progress, cancel)
        self.runner.run(fn, *args, on_done=lambda msg: self._finished(action, True, msg),
                        on_error=lambda msg: self._finished(action, False, msg))

    def _show_progress(self, p) -> None:
        stage, message, fraction = p
        self.stage.setText(stage)
        self.result_line.setText(message)
        self._fit_result_box()
        if fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(fraction * 1000))

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.stage.setText("Cancelling…")

    def _finished(self, action: str, ok: bool, msg: str) -> None:
        self._busy = False
        self._cancel = None
        self.btn_cancel.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if ok else 0)
        self.stage.setText(("Done: " if ok else "Failed: ") + action)
        self.result_line.setText(msg)
        self.result_line.setStyleSheet("" if ok else f"color: {COLORS['fail']};")
        self._fit_result_box()
        self._apply_role(self.roles.role)
        self.refresh()
        self.action_finished.emit(action, ok, msg)

    # -- logs --------------------------------------------------------------------------------
    def start_logs(self) -> None:
        stop = self._log_stop = threading.Event()
        backend = self.backend

        def pump():
            for line in backend.logs(stop):
                with self._pending_lock:
                    self._pending_log.append(line)
                    if len(self._pending_log) > 5000:
                        del self._pending_log[:1000]
                if stop.is_set():
                    break

        self._log_thread = threading.Thread(target=pump, name="LogPump", daemon=True)
        self._log_thread.start()

    def _flush_logs(self) -> None:
        with self._pending_lock:
            lines, self._pending_log = self._pending_log, []
        if not lines:
            return
        bar = self.log_view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.log_view.appendPlainText("\n".join(lines))
        self._log_lines.extend(lines)
        del self._log_lines[:-5000]
        if self.follow.isChecked() or at_end:
            bar.setValue(bar.maximum())

    def find_next(self) -> bool:
        text = self.search.text()
        if not text:
            return False
        self.follow.setChecked(False)  # searching pins the view where the match is
        found = self.log_view.find(text)
        if not found:
            self.log_view.moveCursor(QtGui.QTextCursor.MoveOperation.Start)
            found = self.log_view.find(text)
        n = sum(text.lower() in l.lower() for l in self._log_lines)
        self.search_status.setText(f"{n} lines match" if found else "not found")
        return found

    def shutdown(self) -> None:
        self.timer.stop()
        self.log_timer.stop()
        if self._cancel is not None:
            self._cancel.set()
        if self._log_stop is not None:
            self._log_stop.set()
            self._log_thread.join(5)
