"""Live view: 1-4 feeds, the last part's verdict, overlay layers."""

from __future__ import annotations

import collections
import time

from PySide6 import QtCore, QtWidgets

from .feed_view import FeedView
from .presenter import RuntimePresenter
from .widgets import Card, VerdictBanner

STATS_LAG_S = 5.0  # how long a result may be missing from polled stats before they win


class LivePanel(QtWidgets.QWidget):
    def __init__(self, presenters: list[RuntimePresenter], side_width: int = 340, kiosk: bool = False,
                 parent=None):
        super().__init__(parent)
        self.presenters = presenters
        self.feeds: list[FeedView] = []
        outer = QtWidgets.QHBoxLayout(self)
        outer.setContentsMargins(12, 12, 12, 12)
        outer.setSpacing(12)
        grid_host = QtWidgets.QWidget()
        grid = QtWidgets.QGridLayout(grid_host)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(8)
        cols = 1 if len(presenters) == 1 else 2
        for i, pres in enumerate(presenters[:4]):
            view = FeedView(pres.name)
            self.feeds.append(view)
            grid.addWidget(view, i // cols, i % cols)
            pres.frame_ready.connect(lambda p=pres, v=view: v.set_frame(p.take_frame()))
            view.display_box_changed.connect(pres.set_display_box)
            pres.result_received.connect(view.set_overlay)
            pres.stream_changed.connect(lambda s, r, v=view: self._stream_state(v, s, r))
            pres.status_changed.connect(lambda st, v=view: self._status(v, st))
        outer.addWidget(grid_host, 1)

        side = QtWidgets.QVBoxLayout()
        side.setSpacing(8 if kiosk else 12)
        self.banner = VerdictBanner()
        self.banner.setMinimumWidth(300)
        side.addWidget(self.banner)
        info = Card("Last part")
        self.part_info = QtWidgets.QLabel("No part inspected yet")
        self.part_info.setWordWrap(True)
        self.part_info.setAlignment(QtCore.Qt.AlignmentFlag.AlignTop)
        # The measurements list gives way (its last lines are cut) before the window outgrows a
        # 1280x800 kiosk screen; the verdict, counts and layers above and below stay whole.
        self.part_info.setSizePolicy(QtWidgets.QSizePolicy.Policy.Preferred, QtWidgets.QSizePolicy.Policy.Ignored)
        self.part_info.setMinimumHeight(60)
        info.add(self.part_info)
        side.addWidget(info, 1)
        counts = Card("This shift")
        self.counts = QtWidgets.QLabel("–")
        self.counts.setStyleSheet("font-size: 20px; font-weight: 600;")
        counts.add(self.counts)
        side.addWidget(counts)
        layers = Card("Overlay layers")
        self.layer_boxes = {}
        for key, text in (("regions", "Regions && measurements"), ("labels", "Labels"), ("badges", "fps / latency / age")):
            cb = QtWidgets.QCheckBox(text)
            cb.setChecked(True)
            if kiosk:
                cb.setMinimumHeight(48)  # a touch target, never squeezed by the side column
            cb.toggled.connect(lambda on, k=key: [f.set_layer(k, on) for f in self.feeds])
            layers.add(cb)
            self.layer_boxes[key] = cb
        hint = QtWidgets.QLabel("Wheel or pinch to zoom, drag to pan, double-tap to reset")
        hint.setProperty("role", "muted")
        hint.setWordWrap(True)
        if kiosk:
            # Touch: pinch and double-tap are what fingers do anyway; the row is needed for a
            # 1280x800 screen to hold the alarm row and 48 px checkboxes.
            layers.setToolTip(hint.text())
            hint.hide()
        layers.add(hint)
        side.addWidget(layers)
        side_host = QtWidgets.QWidget()
        side_host.setLayout(side)
        side_host.setFixedWidth(side_width)
        outer.addWidget(side_host)
        self._counts: dict | None = None  # shift totals shown (from stats, plus results since)
        self._last_counted_id = -1
        self._recent_results: collections.deque = collections.deque()
        if presenters:
            presenters[0].result_received.connect(self.show_result)
            presenters[0].result_received.connect(self._count_result)
            presenters[0].stats_changed.connect(self.show_counts)

    def _stream_state(self, view: FeedView, state: str, reason: str) -> None:
        if state == "live":
            view.set_status("live", lost=False)
        elif state in ("reconnecting", "stopped"):
            view.set_status(reason or state, lost=True)

    def _status(self, view: FeedView, st: dict) -> None:
        lat = (st.get("latency_ms") or {}).get("p50")
        view.source_latency_ms = float(lat) if isinstance(lat, (int, float)) else None
        src = st.get("source") or {}
        if src.get("state") and src.get("state") != "live":
            view.set_status(f"camera {src.get('state')}: {src.get('reason') or ''}".strip(), lost=True)

    def show_result(self, r: dict) -> None:
        defects = ", ".join(r.get("defects") or []) or "none"
        self.banner.set_verdict(r.get("verdict", ""), f"part #{r.get('id', '?')}")
        meas = r.get("measurements") or {}
        lines = [f"<b>Part #{r.get('id')}</b> · frame {r.get('frame_id')}", f"Defects: <b>{defects}</b>"]
        for k, v in list(meas.items())[:8]:
            lines.append(f"{k}: <b>{v:.2f}</b>" if isinstance(v, float) else f"{k}: <b>{v}</b>")
        self.part_info.setText("<br>".join(lines))

    def show_counts(self, s: dict) -> None:
        """Adopts the runtime's shift totals, unless they lag the results already counted here."""
        stats = {k: int(s.get(k) or 0) for k in ("total", "pass", "fail")}
        now = time.monotonic()
        while self._recent_results and now - self._recent_results[0] > STATS_LAG_S:
            self._recent_results.popleft()
        mine = self._counts
        # Stats polled every 2 s may predate the latest results: keep our count while the gap is
        # no more than the results seen in the last few seconds. A larger gap is a new shift.
        if mine is not None and 0 < mine["total"] - stats["total"] <= len(self._recent_results):
            return
        self._counts = stats
        self._render_counts()

    def _count_result(self, r: dict) -> None:
        # The "This shift" card moves with the verdict banner, on the same result event.
        rid = r.get("id")
        if self._counts is None or not isinstance(rid, int) or rid <= self._last_counted_id:
            self._last_counted_id = rid if isinstance(rid, int) else self._last_counted_id
            return
        self._last_counted_id = rid
        self._counts["total"] += 1
        key = {"PASS": "pass", "FAIL": "fail"}.get(str(r.get("verdict", "")).upper())
        if key:
            self._counts[key] += 1
        self._recent_results.append(time.monotonic())
        self._render_counts()

    def _render_counts(self) -> None:
        c = self._counts or {"total": 0, "pass": 0, "fail": 0}
        ytxt = f"{c['pass'] / c['total'] * 100:.1f} %" if c["total"] else "–"
        self.counts.setText(f"Total {c['total']}  ·  Yield {ytxt}\nPASS {c['pass']}  ·  FAIL {c['fail']}")

    def shutdown(self) -> None:
        for f in self.feeds:
            f.shutdown()
