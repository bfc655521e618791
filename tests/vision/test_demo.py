"""The demo footage and recipe: every part counted once, exactly the known rejects."""

from __future__ import annotations

import json
from pathlib import Path

from helio_gui.vision.annotate import draw_overlay
from helio_gui.vision.inspect import Inspector
from helio_gui.vision.recipe import load_recipe
from helio_gui.vision.sources import iter_frames
from helio_gui.vision.trigger import PartTrigger

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def _run(passes: int = 1):
    recipe = load_recipe(DEMO / "demo_recipe.toml")
    trig, insp = PartTrigger(recipe.trigger), Inspector(recipe)
    out = []
    for _ in range(passes):  # a second pass continues the same tracks, like a looping source
        for frame in iter_frames(f"file:{DEMO / 'demo_conveyor.mp4'}"):
            for ev in trig.update(frame):
                out.append((frame, ev, insp.inspect(frame, ev)))
    return out


def test_demo_counts_every_part_once_with_the_known_rejects():
    truth = json.loads((DEMO / "demo_truth.json").read_text())
    results = _run()
    assert len(results) == truth["parts_total"] == 14
    got = [(fr.source_pos, ins.defects[0] if ins.defects else None) for fr, _ev, ins in results]
    want = [(p["cross_frame"], p["defect"]) for p in truth["parts"]]
    assert [d for _f, d in got] == [d for _f, d in want]
    for (gf, _), (wf, _) in zip(got, want):
        assert abs(gf - wf) <= 2  # fires as the centre crosses the line
    assert sum(1 for *_x, ins in results if not ins.passed) == truth["rejects_total"] == 4
    assert len({ev.track_id for _f, ev, _i in results}) == len(results)


def test_demo_loops_seamlessly():
    results = _run(passes=2)
    assert len(results) == 28
    assert sum(1 for *_x, ins in results if not ins.passed) == 8


def test_overlay_is_a_new_image_with_verdict_and_regions():
    frame, ev, ins = next(r for r in _run() if not r[2].passed)
    before = frame.image.copy()
    out = draw_overlay(frame.image, ins)
    assert (frame.image == before).all()  # never draws on its input
    assert out.shape == frame.image.shape and out is not frame.image
    x1, y1, x2, y2 = ev.box
    assert (out[y1:y2, x1:x2] != before[y1:y2, x1:x2]).any()  # the part box was drawn
    badge = out[10:30, 10:60].reshape(-1, 3).mean(axis=0)
    assert badge[2] > 150 and badge[1] < 120  # a red FAIL mark
