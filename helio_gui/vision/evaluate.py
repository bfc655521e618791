"""Scoring a recipe against labelled data: per-class accuracy, part counts, barcode decode rate.

Used by the tests and by `benchmarks/bench_vision.py`; also handy when tuning a recipe on a
labelled set of images (`folder/<label>/*.jpg`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from .inspect import Inspector
from .recipe import BarcodeTool, Recipe
from .sources import SourceConfig, iter_frames
from .tools import Barcode
from .trigger import PartTrigger
from .types import Inspection


@dataclass
class ClassScore:
    label: str
    expect: str  # a defect type, "PASS", or "FAIL" (any defect)
    total: int = 0
    correct: int = 0
    wrong: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (file, defects)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def _is_correct(expect: str, ins: Inspection) -> bool:
    if expect == "PASS":
        return ins.passed
    if expect == "FAIL":
        return not ins.passed
    return expect in ins.defects


def score_labelled_folders(recipe: Recipe, root: Path, expect: dict[str, str],
                           cancel: threading.Event | None = None) -> list[ClassScore]:
    """Runs `recipe` on every image of `root/<label>/` (one image = one part) and scores it:
    a class is right when the expected defect is among the found ones ("PASS": no defect,
    "FAIL": any defect)."""
    insp = Inspector(recipe)
    scores = []
    for label, want in expect.items():
        sc = ClassScore(label, want)
        folder = root / label
        if not folder.is_dir():
            continue
        for frame in iter_frames(SourceConfig(kind="folder", path=str(folder))):
            if cancel is not None and cancel.is_set():
                return scores
            ins = insp.inspect(frame)
            sc.total += 1
            if _is_correct(want, ins):
                sc.correct += 1
            else:
                sc.wrong.append((frame.source_name, ins.defects))
        scores.append(sc)
    return scores


def count_parts(recipe: Recipe, source: str | SourceConfig, *, progress: Callable[[int], None] | None = None,
                cancel: threading.Event | None = None) -> tuple[list[Inspection], int, float]:
    """Trigger + inspection over every frame of a file (unpaced, no drops).
    Returns (inspections, frames, seconds)."""
    trig, insp = PartTrigger(recipe.trigger), Inspector(recipe)
    out: list[Inspection] = []
    n = 0
    t0 = time.perf_counter()
    for frame in iter_frames(source):
        if cancel is not None and cancel.is_set():
            break
        n += 1
        for ev in trig.update(frame):
            out.append(insp.inspect(frame, ev))
        if progress is not None and n % 100 == 0:
            progress(n)
    return out, n, time.perf_counter() - t0


def decode_rate(root: Path, folders: Iterable[str] | None = None) -> dict[str, tuple[int, int]]:
    """zxing blackbox layout (`<folder>/<n>.png` + `<n>.txt` expected text): per folder
    (decoded to the expected text, total), using the barcode tool's decoder on the whole image."""
    tool = Barcode(BarcodeTool(name="code", type="barcode"), Recipe(name="decode"))
    out: dict[str, tuple[int, int]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folders is not None and folder.name not in folders:
            continue
        ok = total = 0
        for img_path in sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg")):
            txt = img_path.with_suffix(".txt")
            if not txt.exists():
                continue
            expected = txt.read_text(encoding="utf-8", errors="replace").strip()
            img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
            total += 1
            if img is None:
                continue
            if any(r.text.strip() == expected
                   for r in tool.decode(img, lambda rs: any(r.text.strip() == expected for r in rs))):
                ok += 1
        out[folder.name] = (ok, total)
    return out
