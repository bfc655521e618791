"""Stats: counters, yield, parts/min, defect Pareto, yield trend, reject filmstrip, shift, CSV export."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import cv2
import numpy as np

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
import pyqtgraph as pg  # noqa: E402
from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402

from .feed_view import qimage_from_array  # noqa: E402
from .presenter import RuntimePresenter  # noqa: E402
from .theme import COLORS  # noqa: E402
from .widgets import BigNumber, Card, confirm  # noqa: E402
from .workers import TaskRunner  # noqa: E402

pg.setConfigOptions(antialias=True, background="#1c2229", foreground="#c9d1d9")


def _decode_thumb(jpeg: bytes | None, width: int = 200):
    if not jpeg:
        return None
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h = max(1, int(img.shape[0] * width / img.shape[1]))
    return img, cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA)


TREND_MIN_SPAN_S = 10 * 60


def trend_x_range(ts: list[float], shift_start: float | None, window_start: float | None, bucket_s: float,
                  now: float) -> tuple[float, float]:
    """The yield trend's time axis: from the shift's start (but no earlier than the runtime's bucket
    window, the last hour) to now, at least 10 minutes wide, so a fresh shift fills it left to right
    instead of showing one dot at the end of an empty hour. `ts` are the bucket starts with parts."""
    left = now
    if shift_start:
        left = shift_start // bucket_s * bucket_s
        if window_start is not None:
            left = max(left, window_start)
    if ts:
        left = min(left, min(ts))
    left -= bucket_s / 2
    right = max([now, *ts]) + bucket_s / 2
    return left, max(right, left + TREND_MIN_SPAN_S)


class StatsPanel(QtWidgets.QWidget):
    def __init__(self, presenter: RuntimePresenter, runner: TaskRunner, roles, parent=None):
        super().__init__(parent)
        self.presenter, self.runner, self.roles = presenter, runner, roles
        self._images: dict[int, np.ndarray] = {}  # full reject images by result id (for enlarge)
        self._thumb_ids: list[int] = []
        self._export_cancel: threading.Event | None = None
        outer = QtWidgets.QVBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        outer.setSpacing(12)

        row = QtWidgets.QHBoxLayout()
        self.n_total, self.n_pass, self.n_fail = BigNumber("Total"), BigNumber("Pass"), BigNumber("Fail")
        self.n_yield, self.n_ppm = BigNumber("Yield"), BigNumber("Parts / min")
        for w in (self.n_total, self.n_pass, self.n_fail, self.n_yield, self.n_ppm):
            row.addWidget(w)
        outer.addLayout(row)

        charts = QtWidgets.QHBoxLayout()
        pareto_card = Card("Defects by type (Pareto)")
        self.pareto = pg.PlotWidget()
        self.pareto.setMouseEnabled(False, False)
        self.pareto.hideButtons()
        self.pareto.showGrid(y=True, alpha=0.2)
        self.pareto.setMinimumHeight(140)
        self.pareto_empty = pg.TextItem("No defects this shift", color=COLORS["muted"], anchor=(0.5, 0.5))
        self.pareto_empty.setPos(0.5, 0.5)
        pareto_card.add(self.pareto, 1)
        charts.addWidget(pareto_card, 1)
        trend_card = Card("Yield trend (% per minute)")
        self.trend = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem()})
        self.trend.setMouseEnabled(False, False)
        self.trend.hideButtons()
        self.trend.showGrid(x=True, y=True, alpha=0.2)
        self.trend.setYRange(0, 100)
        self.trend.setMinimumHeight(140)
        self.trend_curve = self.trend.plot([], [], pen=pg.mkPen(COLORS["pass"], width=3), symbol="o", symbolSize=6,
                                           symbolBrush=COLORS["pass"])
        trend_card.add(self.trend, 1)
        charts.addWidget(trend_card, 1)
        outer.addLayout(charts, 1)

        film = Card("Last rejects (tap to enlarge)")
        self.filmstrip = QtWidgets.QListWidget()
        self.filmstrip.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.filmstrip.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.filmstrip.setWrapping(False)
        self.filmstrip.setIconSize(QtCore.QSize(150, 90))
        self.filmstrip.setFixedHeight(136)
        self.filmstrip.setMovement(QtWidgets.QListView.Movement.Static)
        self.filmstrip.itemClicked.connect(self._enlarge)
        film.add(self.filmstrip)
        outer.addWidget(film)

        bottom = QtWidgets.QHBoxLayout()
        shift = Card("Shift")
        self.shift_label = QtWidgets.QLabel("–")
        shift.add(self.shift_label)
        srow = QtWidgets.QHBoxLayout()
        self.btn_shift_start = QtWidgets.QPushButton("Start new shift")
        self.btn_shift_reset = QtWidgets.QPushButton("Reset counters")
        self.btn_shift_reset.setProperty("kind", "danger")
        self.btn_shift_start.clicked.connect(lambda: self._shift("start"))
        self.btn_shift_reset.clicked.connect(lambda: self._shift("reset"))
        srow.addWidget(self.btn_shift_start)
        srow.addWidget(self.btn_shift_reset)
        shift.layout_.addLayout(srow)
        bottom.addWidget(shift, 1)
        export = Card("Export results (CSV)")
        erow = QtWidgets.QHBoxLayout()
        now = QtCore.QDateTime.currentDateTime()
        self.since = QtWidgets.QDateTimeEdit(now.addSecs(-8 * 3600))
        self.until = QtWidgets.QDateTimeEdit(now.addSecs(3600))
        for w in (self.since, self.until):
            w.setDisplayFormat("yyyy-MM-dd HH:mm")
            w.setCalendarPopup(True)
        erow.addWidget(QtWidgets.QLabel("From"))
        erow.addWidget(self.since, 1)
        erow.addWidget(QtWidgets.QLabel("to"))
        erow.addWidget(self.until, 1)
        export.layout_.addLayout(erow)
        erow = QtWidgets.QHBoxLayout()
        self.btn_export = QtWidgets.QPushButton("Export…")
        self.btn_export.setProperty("kind", "primary")
        self.btn_export.clicked.connect(self._export_clicked)
        self.btn_export_cancel = QtWidgets.QPushButton("Cancel")
        self.btn_export_cancel.setEnabled(False)
        self.btn_export_cancel.clicked.connect(self.cancel_export)
        self.export_progress = QtWidgets.QProgressBar()
        self.export_progress.setRange(0, 1)
        self.export_progress.setValue(0)
        self.export_progress.setTextVisible(False)
        erow.addWidget(self.export_progress, 1)
        erow.addWidget(self.btn_export)
        erow.addWidget(self.btn_export_cancel)
        export.layout_.addLayout(erow)
        self.export_status = QtWidgets.QLabel("")
        self.export_status.setProperty("role", "muted")
        export.add(self.export_status)
        bottom.addWidget(export, 2)
        outer.addLayout(bottom)

        presenter.stats_changed.connect(self.show_stats)
        presenter.result_received.connect(self._on_result)
        roles.role_changed.connect(self._apply_role)
        self._apply_role(roles.role)
        self._rejects_loaded = False
        if presenter.last_stats:
            self.show_stats(presenter.last_stats)

    def _apply_role(self, role: str) -> None:
        eng = role == "engineer"
        for b in (self.btn_shift_start, self.btn_shift_reset):
            b.setEnabled(eng)
            b.setToolTip("" if eng else "Engineer only: unlock with the PIN")

    # -- stats -------------------------------------------------------------------------------
    def show_stats(self, s: dict) -> None:
        self.n_total.set(str(s.get("total", 0)))
        self.n_pass.set(str(s.get("pass", 0)), COLORS["pass"])
        self.n_fail.set(str(s.get("fail", 0)), COLORS["fail"])
        y = s.get("yield")
        self.n_yield.set(f"{y * 100:.1f}%" if isinstance(y, (int, float)) else "–")
        ppm = s.get("parts_per_min")
        self.n_ppm.set(f"{ppm:.1f}" if isinstance(ppm, (int, float)) else "–")
        defects = sorted((s.get("defects") or {}).items(), key=lambda kv: -kv[1])
        self.pareto.clear()
        self.pareto_empty.setVisible(not defects)
        if not defects:
            # Nothing to rank: no 0..1 axes with fractional "defect" ticks, just say so.
            self.pareto.getAxis("bottom").setTicks([[]])
            self.pareto.getAxis("left").setTicks([[]])
            self.pareto.setXRange(0, 1, padding=0)
            self.pareto.setYRange(0, 1, padding=0)
            self.pareto.addItem(self.pareto_empty)
        else:
            self.pareto.getAxis("left").setTicks(None)
            xs = list(range(len(defects)))
            ys = [v for _, v in defects]
            self.pareto.addItem(pg.BarGraphItem(x=xs, height=ys, width=0.6, brush=COLORS["fail"]))
            total = sum(ys)
            cum = np.cumsum(ys) / total * max(ys)
            self.pareto.plot(xs, cum, pen=pg.mkPen(COLORS["warn"], width=2), symbol="o", symbolSize=6,
                             symbolBrush=COLORS["warn"])
            self.pareto.getAxis("bottom").setTicks([[(i, k) for i, (k, _) in enumerate(defects)]])
            self.pareto.setXRange(-0.8, max(2, len(defects)) - 0.2, padding=0)
        buckets = [b for b in (s.get("buckets") or []) if b.get("total")]
        shift = s.get("shift") or {}
        if buckets:
            self.trend_curve.setData([b["t"] for b in buckets], [100.0 * b["pass"] / b["total"] for b in buckets])
        window = (s.get("buckets") or [{}])[0].get("t")
        self.trend.setXRange(*trend_x_range([b["t"] for b in buckets], shift.get("started_at"), window,
                                            float(s.get("bucket_s") or 60), time.time()), padding=0)
        if shift:
            started = shift.get("started_at")
            when = dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M") if started else "?"
            self.shift_label.setText(f"<b>{shift.get('name') or 'Shift ' + str(shift.get('id', ''))}</b>"
                                     f" — started {when}")
        if not self._rejects_loaded:
            self._rejects_loaded = True
            self.runner.run(lambda: self.presenter.client.results(limit=12, verdict="FAIL"),
                            on_done=self._got_rejects, on_error=lambda m: None)

    def _got_rejects(self, page: dict) -> None:
        for r in reversed(page.get("items") or []):
            self._on_result(r)

    def _on_result(self, r: dict) -> None:
        if r.get("verdict") != "FAIL" or not r.get("image_url") or r.get("id") in self._thumb_ids:
            return
        rid = int(r["id"])
        self._thumb_ids.append(rid)
        defects = ", ".join(r.get("defects") or [])
        client = self.presenter.client
        self.runner.run(lambda: (rid, defects, _decode_thumb(client.result_image(rid))),
                        on_done=self._add_thumb, on_error=lambda m: None)

    def _add_thumb(self, item) -> None:
        rid, defects, decoded = item
        if decoded is None:
            return
        full, thumb = decoded
        self._images[rid] = full
        qimg = qimage_from_array(thumb).copy()  # the list keeps the pixmap; no numpy tie needed
        it = QtWidgets.QListWidgetItem(QtGui.QIcon(QtGui.QPixmap.fromImage(qimg)), f"#{rid} {defects}")
        it.setData(QtCore.Qt.ItemDataRole.UserRole, rid)
        # Thumbs finish decoding in any order (worker threads; the first page plus live results):
        # place each by id so the strip always reads newest first.
        row = 0
        while (row < self.filmstrip.count()
               and self.filmstrip.item(row).data(QtCore.Qt.ItemDataRole.UserRole) > rid):
            row += 1
        self.filmstrip.insertItem(row, it)
        while self.filmstrip.count() > 12:
            old = self.filmstrip.takeItem(self.filmstrip.count() - 1)
            self._images.pop(old.data(QtCore.Qt.ItemDataRole.UserRole), None)

    def _enlarge(self, item: QtWidgets.QListWidgetItem) -> None:
        rid = item.data(QtCore.Qt.ItemDataRole.UserRole)
        img = self._images.get(rid)
        if img is None:
            return
        dlg = QtWidgets.QDialog(self)
        dlg.setObjectName("RejectDialog")
        dlg.setWindowTitle(f"Reject #{rid}")
        lay = QtWidgets.QVBoxLayout(dlg)
        lbl = QtWidgets.QLabel()
        pm = QtGui.QPixmap.fromImage(qimage_from_array(img).copy())
        lbl.setPixmap(pm.scaled(1100, 680, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                QtCore.Qt.TransformationMode.SmoothTransformation))
        lay.addWidget(lbl)
        lay.addWidget(QtWidgets.QLabel(item.text()))
        close = QtWidgets.QPushButton("Close")
        close.clicked.connect(dlg.accept)
        lay.addWidget(close)
        self.enlarged = dlg
        dlg.open()

    # -- shift -------------------------------------------------------------------------------
    def _shift(self, action: str) -> None:
        if not self.roles.is_engineer:
            return
        if action == "reset" and not confirm(self, "Reset counters", "Reset the counters of the current shift?\n"
                                             "Stored results are kept.", "Reset"):
            return
        if action == "start" and not confirm(self, "Start new shift", "End the current shift and start a new one?",
                                             "Start shift"):
            return
        self.runner.run(self.presenter.client.shift, action, on_done=lambda s: self.presenter.poll(),
                        on_error=lambda m: QtWidgets.QMessageBox.warning(self, "Shift", m))

    # -- export ------------------------------------------------------------------------------
    def _export_clicked(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export results", "results.csv", "CSV (*.csv)")
        if path:
            self.start_export(path)

    def start_export(self, path: str, since: float | None = None, until: float | None = None) -> None:
        """Exports off the GUI thread, with progress and cancel."""
        since = since if since is not None else self.since.dateTime().toSecsSinceEpoch()
        until = until if until is not None else self.until.dateTime().toSecsSinceEpoch()
        if until <= since:
            self.export_status.setText("The end of the range must be after its start.")
            return
        cancel = self._export_cancel = threading.Event()
        self.export_progress.setRange(0, 0)  # busy: the total size is not known up front
        self.btn_export.setEnabled(False)
        self.btn_export_cancel.setEnabled(True)
        self.export_status.setText("Exporting…")
        t0 = time.monotonic()

        def progress(n: int) -> None:
            self.runner.post(lambda v: self.export_status.setText(f"Exporting… {v / 1024:.0f} KiB"), n)

        def work():
            if self.runner.cancel_all.is_set():
                cancel.set()
            return self.presenter.client.export_csv(path, since, until, progress=progress, cancel=cancel)

        self.runner.run(work, on_done=lambda n: self._export_done(f"Saved {n / 1024:.0f} KiB to {path} "
                                                                    f"in {time.monotonic() - t0:.1f} s"),
                        on_error=lambda m: self._export_done(f"Export failed: {m}"))

    def cancel_export(self) -> None:
        if self._export_cancel is not None:
            self._export_cancel.set()

    def _export_done(self, msg: str) -> None:
        self.export_progress.setRange(0, 1)
        self.export_progress.setValue(1)
        self.btn_export.setEnabled(True)
        self.btn_export_cancel.setEnabled(False)
        self.export_status.setText(msg)
        self._export_cancel = None

    def shutdown(self) -> None:
        self.cancel_export()
