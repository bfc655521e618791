"""Operator / engineer roles: PIN unlock, auto-lock after inactivity."""

from __future__ import annotations

import hmac

from PySide6 import QtCore, QtWidgets

from .config import hash_pin

OPERATOR, ENGINEER = "operator", "engineer"


class RoleModel(QtCore.QObject):
    """The current role. Any user input restarts the inactivity timer while unlocked."""

    role_changed = QtCore.Signal(str)

    def __init__(self, pin_sha256: str, auto_lock_s: float = 120.0, parent=None):
        super().__init__(parent)
        self.pin_sha256 = pin_sha256
        self.role = OPERATOR
        self.failed_attempts = 0
        self.timer = QtCore.QTimer(self)
        self.timer.setObjectName("AutoLockTimer")
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(auto_lock_s * 1000))
        self.timer.timeout.connect(self.lock)

    @property
    def is_engineer(self) -> bool:
        return self.role == ENGINEER

    def unlock(self, pin: str) -> bool:
        if hmac.compare_digest(hash_pin(pin), self.pin_sha256):
            self.failed_attempts = 0
            self.role = ENGINEER
            self.timer.start()
            self.role_changed.emit(self.role)
            return True
        self.failed_attempts += 1
        return False

    def lock(self) -> None:
        self.timer.stop()
        if self.role != OPERATOR:
            self.role = OPERATOR
            self.role_changed.emit(self.role)

    def touch(self) -> None:
        if self.role == ENGINEER:
            self.timer.start()  # restart: inactivity is counted from the last input

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() in (QtCore.QEvent.Type.MouseButtonPress, QtCore.QEvent.Type.KeyPress,
                         QtCore.QEvent.Type.TouchBegin, QtCore.QEvent.Type.Wheel):
            self.touch()
        return False

    def shutdown(self) -> None:
        self.timer.stop()


class PinDialog(QtWidgets.QDialog):
    """Numeric keypad PIN entry: usable on a touchscreen with no keyboard."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Engineer unlock")
        self.setObjectName("PinDialog")
        lay = QtWidgets.QVBoxLayout(self)
        title = QtWidgets.QLabel("Enter engineer PIN")
        title.setProperty("role", "title")
        lay.addWidget(title)
        self.edit = QtWidgets.QLineEdit()
        self.edit.setEchoMode(QtWidgets.QLineEdit.EchoMode.Password)
        self.edit.setMinimumHeight(56)
        lay.addWidget(self.edit)
        self.error = QtWidgets.QLabel("")
        self.error.setStyleSheet("color: #ff6b6b;")
        lay.addWidget(self.error)
        grid = QtWidgets.QGridLayout()
        keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "⌫", "0", "OK"]
        self.buttons = {}
        for i, k in enumerate(keys):
            b = QtWidgets.QPushButton(k)
            b.setMinimumSize(88, 64)
            b.clicked.connect(lambda _=False, k=k: self._key(k))
            if k == "OK":
                b.setProperty("kind", "primary")
            grid.addWidget(b, i // 3, i % 3)
            self.buttons[k] = b
        lay.addLayout(grid)
        cancel = QtWidgets.QPushButton("Cancel")
        cancel.clicked.connect(self.reject)
        lay.addWidget(cancel)

    def _key(self, k: str) -> None:
        if k == "⌫":
            self.edit.backspace()
        elif k == "OK":
            self.accept()
        else:
            self.edit.insert(k)

    def pin(self) -> str:
        return self.edit.text()
