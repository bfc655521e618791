"""Settings: source, recipe editor with inline errors, alarm thresholds, runtime profile, PIN."""

from __future__ import annotations

import glob

from PySide6 import QtCore, QtGui, QtWidgets

from ..client import ApiError
from .config import GuiConfig, hash_pin
from .theme import COLORS
from .widgets import Card
from .workers import TaskRunner

SOURCE_KINDS = [("demo", "Demo footage"), ("camera", "USB camera"), ("file", "Video file"),
                ("folder", "Image folder"), ("url", "RTSP / HTTP URL")]


def discover_cameras() -> list[str]:
    """V4L2 capture devices present right now."""
    return sorted(glob.glob("/dev/video*"))


def source_spec(kind: str, value: str) -> str | None:
    """The runtime's --source spec for a choice in the form; raises ValueError with what to fix."""
    value = value.strip()
    if kind == "demo":
        return None
    if not value:
        raise ValueError("Choose a camera, file, folder or URL first.")
    if kind == "camera":
        return value if value.startswith(("camera:", "/dev/")) or value.isdigit() else f"camera:{value}"
    if kind == "file":
        return f"file:{value}"
    if kind == "folder":
        return f"folder:{value}"
    if not value.startswith(("rtsp://", "http://", "https://")):
        raise ValueError("A stream URL starts with rtsp://, http:// or https://")
    return value


def source_choice(spec: str | None) -> tuple[str, str]:
    """The form's (kind, value) for a runtime --source spec: the inverse of `source_spec`."""
    if not spec:
        return "demo", ""
    for prefix, kind in (("file:", "file"), ("folder:", "folder"), ("camera:", "camera")):
        if spec.startswith(prefix):
            return kind, spec[len(prefix):]  # options (?loop=1...) stay: Apply gives them back
    if spec.startswith("/dev/") or spec.isdigit():
        return "camera", spec
    return "url", spec


class SettingsPanel(QtWidgets.QWidget):
    recipe_applied = QtCore.Signal(bool, str)

    def __init__(self, presenter, runner: TaskRunner, roles, config: GuiConfig, backend=None,
                 alarm_config_changed=None, kiosk: bool = False, parent=None):
        super().__init__(parent)
        self.presenter, self.runner, self.roles, self.config, self.backend = presenter, runner, roles, config, backend
        self.alarm_config_changed = alarm_config_changed
        self.recipe_format = "toml"
        self.recipe_errors: list[dict] = []
        outer = QtWidgets.QHBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        outer.setSpacing(12)
        left = QtWidgets.QVBoxLayout()

        src = Card("Source")
        row = QtWidgets.QHBoxLayout()
        self.source_kind = QtWidgets.QComboBox()
        for key, text in SOURCE_KINDS:
            self.source_kind.addItem(text, key)
        self.source_value = QtWidgets.QComboBox()
        self.source_value.setEditable(True)
        self.source_kind.setMinimumWidth(170)
        self.source_value.setMinimumWidth(120)
        self.btn_browse = QtWidgets.QPushButton("Browse…")
        self.btn_browse.clicked.connect(self._browse)
        self.source_kind.currentIndexChanged.connect(self._kind_changed)
        row.addWidget(self.source_kind)
        row.addWidget(self.source_value, 1)
        src.layout_.addLayout(row)
        row2 = QtWidgets.QHBoxLayout()
        self.btn_source_apply = QtWidgets.QPushButton("Apply source")
        self.btn_source_apply.setProperty("kind", "primary")
        self.btn_source_apply.clicked.connect(self._apply_source)
        row2.addWidget(self.btn_browse)
        row2.addWidget(self.btn_source_apply, 1)
        src.layout_.addLayout(row2)
        self.source_msg = QtWidgets.QLabel("")
        self.source_msg.setWordWrap(True)
        src.add(self.source_msg)
        left.addWidget(src)

        alarms = Card("Alarm thresholds")
        form = QtWidgets.QFormLayout()
        a = config.alarms
        self.rate = QtWidgets.QDoubleSpinBox()
        self.rate.setRange(1, 100)
        self.rate.setSuffix(" % FAIL")
        self.rate.setValue(a.defect_rate_threshold * 100)
        self.window = QtWidgets.QSpinBox()
        self.window.setRange(5, 10000)
        self.window.setSuffix(" parts")
        self.window.setValue(a.window_parts)
        self.down = QtWidgets.QDoubleSpinBox()
        self.down.setRange(0.5, 600)
        self.down.setSuffix(" s")
        self.down.setValue(a.runtime_down_s)
        form.addRow("Defect rate above", self.rate)
        form.addRow("over the last", self.window)
        form.addRow("Runtime down after", self.down)
        alarms.layout_.addLayout(form)
        self.btn_alarm_save = QtWidgets.QPushButton("Save thresholds")
        self.btn_alarm_save.clicked.connect(self._save_alarms)
        alarms.add(self.btn_alarm_save)
        left.addWidget(alarms)

        prof = Card("Runtime profile")
        self.profile_text = QtWidgets.QLabel("")
        self.profile_text.setWordWrap(True)
        self.profile_text.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        prof.add(self.profile_text)
        self.cfg_path = QtWidgets.QLabel(f"Settings: {GuiConfig.path()}")
        self.cfg_path.setProperty("role", "muted")
        self.cfg_path.setWordWrap(True)
        prof.add(self.cfg_path)
        left.addWidget(prof)

        pin = Card("Engineer PIN")
        prow = QtWidgets.QHBoxLayout()
        self.new_pin = QtWidgets.QLineEdit()
        self.new_pin.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.new_pin.setPlaceholderText("new PIN (4+ digits)")
        self.btn_pin = QtWidgets.QPushButton("Change PIN")
        self.btn_pin.clicked.connect(self._change_pin)
        prow.addWidget(self.new_pin, 1)
        prow.addWidget(self.btn_pin)
        pin.layout_.addLayout(prow)
        left.addWidget(pin)
        left.addStretch(1)
        lhost = QtWidgets.QWidget()
        lhost.setLayout(left)
        lhost.setFixedWidth(480 if kiosk else 400)
        outer.addWidget(lhost)

        rec = Card("Recipe")
        rrow = QtWidgets.QHBoxLayout()
        self.recipe_name = QtWidgets.QLabel("–")
        self.recipe_name.setProperty("role", "title")
        self.recipe_name.setWordWrap(True)
        self.recipe_name.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        self.btn_reload = QtWidgets.QPushButton("Reload")
        self.btn_reload.clicked.connect(self.load_recipe)
        self.btn_apply = QtWidgets.QPushButton("Validate && apply")
        self.btn_apply.setProperty("kind", "primary")
        self.btn_apply.clicked.connect(self.apply_recipe)
        rrow.addWidget(self.recipe_name, 1)
        rrow.addWidget(self.btn_reload)
        rrow.addWidget(self.btn_apply)
        rec.layout_.addLayout(rrow)
        self.editor = QtWidgets.QPlainTextEdit()
        self.editor.setMinimumWidth(300)
        self.editor.setLineWrapMode(QtWidgets.QPlainTextEdit.LineWrapMode.NoWrap)
        rec.add(self.editor, 1)
        self.error_list = QtWidgets.QListWidget()
        self.error_list.setMaximumHeight(120)
        self.error_list.itemClicked.connect(self._goto_error)
        rec.add(self.error_list)
        self.recipe_msg = QtWidgets.QLabel("")
        self.recipe_msg.setWordWrap(True)
        rec.add(self.recipe_msg)
        outer.addWidget(rec, 1)

        roles.role_changed.connect(self._apply_role)
        self._apply_role(roles.role)
        self.source_msg.hide()
        self._show_current_source()
        self._show_profile()
        # The recipe is read once the runtime answers (it may still be starting).
        self._recipe_loaded = False
        presenter.connection_changed.connect(self._on_connection)
        if presenter.connection == "connected":
            self._on_connection("connected", "")

    def _on_connection(self, state: str, message: str) -> None:
        if state == "connected" and not self._recipe_loaded:
            self._recipe_loaded = True
            self.load_recipe()

    def _apply_role(self, role: str) -> None:
        eng = role == "engineer"
        for w in (self.source_kind, self.source_value, self.btn_browse, self.btn_source_apply, self.btn_apply,
                  self.btn_alarm_save, self.rate, self.window, self.down, self.new_pin, self.btn_pin):
            w.setEnabled(eng)
        self.editor.setReadOnly(not eng)

    def _show_profile(self) -> None:
        b = self.backend
        if b is None:
            self.profile_text.setText(f"Connected to a runtime at {self.presenter.base_url} (not managed here).")
        elif b.kind == "embedded":
            rt = b.rt
            self.profile_text.setText(f"<b>Embedded</b> child process<br>API {rt.base_url}<br>"
                                      f"source: {rt.source or 'demo footage'}")
            self.profile_text.setToolTip(f"data: {rt.data_dir}")
        else:
            p = b.profile
            self.profile_text.setText(f"<b>Docker</b> profile <b>{p.name}</b><br>image {p.image}<br>"
                                      f"source {getattr(p, 'source', '')}")

    # -- source ------------------------------------------------------------------------------
    def _show_current_source(self) -> None:
        """The form starts on the source the runtime runs on (the child's, else the saved one)."""
        b = self.backend
        spec = b.rt.source if b is not None and getattr(b, "kind", "") == "embedded" else self.config.source
        kind, value = source_choice(spec)
        i = self.source_kind.findData(kind)
        with QtCore.QSignalBlocker(self.source_kind):
            self.source_kind.setCurrentIndex(max(0, i))
        self._kind_changed()
        if value:
            self.source_value.setEditText(value)

    def _kind_changed(self, *_):
        kind = self.source_kind.currentData()
        self.source_value.clear()
        if kind == "camera":
            cams = discover_cameras()
            self.source_value.addItems(cams)
            if not cams:
                self.source_value.lineEdit().setPlaceholderText("no cameras found under /dev/video*")
        elif kind == "url":
            self.source_value.lineEdit().setPlaceholderText("rtsp://camera.local/stream")
        elif kind in ("file", "folder"):
            self.source_value.lineEdit().setPlaceholderText("choose with Browse…")
        self.source_value.setEnabled(kind != "demo" and self.roles.is_engineer)
        self.source_value.setVisible(kind != "demo")  # nothing to choose for the demo footage
        self.btn_browse.setEnabled(kind in ("file", "folder") and self.roles.is_engineer)

    def _browse(self) -> None:
        kind = self.source_kind.currentData()
        if kind == "folder":
            path = QtWidgets.QFileDialog.getExistingDirectory(self, "Image folder")
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Video file", "", "Video (*.mp4 *.avi *.mkv *.mov)")
        if path:
            self.source_value.setEditText(path)

    def _apply_source(self) -> None:
        try:
            spec = source_spec(self.source_kind.currentData(), self.source_value.currentText())
        except ValueError as exc:
            self._msg(self.source_msg, str(exc), False)
            return
        if self.backend is None:
            self._msg(self.source_msg, "This runtime is not managed by this window; change its source where it runs.", False)
            return
        self._msg(self.source_msg, "Restarting the runtime on the new source…", True)
        self.runner.run(self.backend.set_source, spec, on_done=lambda m: self._source_done(spec, m),
                        on_error=lambda m: self._msg(self.source_msg, m, False))

    def _source_done(self, spec, msg: str) -> None:
        self.config.source = spec
        try:
            self.config.save()
        except OSError as exc:
            msg += f" (not saved: {exc})"
        self._msg(self.source_msg, msg, True)
        self._show_profile()

    # -- recipe ------------------------------------------------------------------------------
    def load_recipe(self) -> None:
        self.runner.run(self.presenter.client.recipe, on_done=self._got_recipe,
                        on_error=lambda m: self._msg(self.recipe_msg, f"Cannot read the recipe: {m}", False))

    def _got_recipe(self, r: dict) -> None:
        self.recipe_format = r.get("format") or "toml"
        self.recipe_name.setText(f"{r.get('name', '?')} · version {r.get('version', '?')} · {self.recipe_format}")
        self.editor.setPlainText(r.get("text") or "")
        self._set_errors([])

    def apply_recipe(self) -> None:
        text = self.editor.toPlainText()
        fmt = self.recipe_format
        client = self.presenter.client
        self._msg(self.recipe_msg, "Validating…", True)

        def put():
            # The 422 carries line numbers: hand them back as plain data, not as an exception.
            try:
                return {"ok": True, "recipe": client.put_recipe(text, fmt)}
            except ApiError as exc:
                if exc.status == 422:
                    return {"ok": False, "errors": exc.errors, "message": str(exc)}
                raise

        self.runner.run(put, on_done=self._recipe_done,
                        on_error=lambda m: self._recipe_done({"ok": False, "errors": [], "message": m}))

    def _recipe_done(self, r: dict) -> None:
        if r["ok"]:
            rec = r["recipe"]
            self._set_errors([])
            self.recipe_name.setText(f"{rec.get('name', '?')} · version {rec.get('version', '?')} · {self.recipe_format}")
            self._msg(self.recipe_msg, "Recipe applied: the runtime now inspects with it.", True)
            self.recipe_applied.emit(True, "")
            return
        self._set_errors(r["errors"])
        n = len(r["errors"])
        detail = f"{n} error{'s' if n != 1 else ''} marked in the editor." if n else r["message"]
        self._msg(self.recipe_msg, f"Not applied — the old recipe keeps running. {detail}", False)
        self.recipe_applied.emit(False, "; ".join(f"line {e.get('line')}: {e.get('message')}" for e in r["errors"])
                                 or r["message"])

    def _set_errors(self, errors: list[dict]) -> None:
        self.recipe_errors = errors
        self.error_list.clear()
        sels = []
        for e in errors:
            line = e.get("line")
            self.error_list.addItem(f"line {line}: {e.get('field') or ''}: {e.get('message')}")
            if isinstance(line, int) and line >= 1:
                block = self.editor.document().findBlockByNumber(line - 1)
                sel = QtWidgets.QTextEdit.ExtraSelection()
                sel.cursor = QtGui.QTextCursor(block)
                sel.format.setBackground(QtGui.QColor("#5c1a1a"))
                sel.format.setProperty(QtGui.QTextFormat.Property.FullWidthSelection, True)
                sels.append(sel)
        self.editor.setExtraSelections(sels)
        self.error_list.setVisible(bool(errors))

    def _goto_error(self, item) -> None:
        e = self.recipe_errors[self.error_list.row(item)]
        if isinstance(e.get("line"), int):
            block = self.editor.document().findBlockByNumber(e["line"] - 1)
            self.editor.setTextCursor(QtGui.QTextCursor(block))
            self.editor.setFocus()

    # -- alarms, pin -------------------------------------------------------------------------
    def _save_alarms(self) -> None:
        a = self.config.alarms
        a.defect_rate_threshold = self.rate.value() / 100
        a.window_parts = self.window.value()
        a.runtime_down_s = self.down.value()
        try:
            path = self.config.save()
            self._msg(self.source_msg, f"Alarm thresholds saved to {path}", True)
        except OSError as exc:
            self._msg(self.source_msg, f"Thresholds apply now but were not saved: {exc}", False)
        if self.alarm_config_changed:
            self.alarm_config_changed()

    def _change_pin(self) -> None:
        pin = self.new_pin.text()
        if len(pin) < 4 or not pin.isdigit():
            self._msg(self.source_msg, "The PIN must be at least 4 digits.", False)
            return
        self.config.engineer_pin_sha256 = self.roles.pin_sha256 = hash_pin(pin)
        self.new_pin.clear()
        try:
            self.config.save()
            self._msg(self.source_msg, "PIN changed.", True)
        except OSError as exc:
            self._msg(self.source_msg, f"PIN changed for this session only: {exc}", False)

    def _msg(self, label: QtWidgets.QLabel, text: str, ok: bool) -> None:
        label.setText(text)
        label.setVisible(bool(text))
        label.setStyleSheet(f"color: {COLORS['pass'] if ok else COLORS['fail']};")

    def shutdown(self) -> None:
        pass
