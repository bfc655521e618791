"""Progress reports and the pull-progress arithmetic (bytes-weighted, per layer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Progress:
    """One progress report: `fraction` is 0..1 or None when unknown."""

    stage: str
    message: str
    fraction: float | None = None
    cancellable: bool = True


ProgressFn = Callable[[Progress], None]


def report(progress: ProgressFn | None, stage: str, message: str,
           fraction: float | None = None, cancellable: bool = True) -> None:
    """Call `progress` if given; a failing callback never breaks the operation."""
    if progress is None:
        return
    try:
        progress(Progress(stage, message, fraction, cancellable))
    except Exception:  # the GUI's bug must not abort an update half-way
        pass


@dataclass
class _Layer:
    total: int | None = None
    downloaded: int = 0
    extracted: int = 0
    done: bool = False


@dataclass
class PullProgress:
    """Folds `docker pull` JSON events into one bytes-weighted fraction.

    Each layer counts by its size; downloading and extracting are each half of a layer's
    weight. Layers whose size is not known yet weigh as the mean known layer. The fraction
    never goes backwards (new layers appearing would otherwise make a bar jump back).
    Errors inside the stream (`error` / `errorDetail`) are returned by `feed` as a message.
    """

    layers: dict[str, _Layer] = field(default_factory=dict)
    last_fraction: float = 0.0
    status: str = ""
    started: bool = False

    def feed(self, event: dict) -> str | None:
        """Take one event; return an error message if the event reports a failure."""
        if "errorDetail" in event or "error" in event:
            detail = event.get("errorDetail") or {}
            return str(detail.get("message") or event.get("error") or "unknown pull error")
        status = str(event.get("status", ""))
        layer_id = event.get("id")
        self.status = status
        if not layer_id or status.startswith(("Pulling from", "Digest", "Status")):
            return None
        layer = self.layers.setdefault(str(layer_id), _Layer())
        if status in ("Downloading", "Extracting", "Download complete", "Pull complete"):
            self.started = True
        detail = event.get("progressDetail") or {}
        total = detail.get("total")
        current = detail.get("current")
        if status == "Downloading":
            if total:
                layer.total = int(total)
            if current is not None:
                layer.downloaded = int(current)
        elif status in ("Verifying Checksum", "Download complete"):
            if layer.total:
                layer.downloaded = layer.total
            else:
                layer.downloaded = -1  # finished, size unknown
        elif status == "Extracting":
            if total and not layer.total:
                layer.total = int(total)
            if layer.total:
                layer.downloaded = layer.total
            if current is not None:
                layer.extracted = int(current)
        elif status in ("Pull complete", "Already exists"):
            layer.done = True
        return None

    def fraction(self) -> float | None:
        """Bytes-weighted fraction 0..1 over all layers seen, or None before any transfer.

        The engine announces every layer before transferring any, so nothing is reported
        until the first transfer: the layer set is complete by then."""
        if not self.layers or not self.started:
            return None
        known = [l.total for l in self.layers.values() if l.total]
        mean = (sum(known) / len(known)) if known else 1.0
        weight_sum = 0.0
        done_sum = 0.0
        for layer in self.layers.values():
            weight = float(layer.total or mean)
            weight_sum += weight
            if layer.done:
                done_sum += weight
                continue
            if layer.downloaded < 0:
                dl = 1.0
            else:
                dl = min(1.0, layer.downloaded / weight) if layer.total else 0.0
            ex = min(1.0, layer.extracted / weight) if layer.total else 0.0
            done_sum += weight * (dl + ex) / 2.0
        value = done_sum / weight_sum if weight_sum else 0.0
        self.last_fraction = max(self.last_fraction, min(1.0, value))
        return self.last_fraction
