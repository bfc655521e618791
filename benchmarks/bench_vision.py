"""Vision benchmark and real-data figures (run on demand, not in the test suite).

    .venv/bin/python benchmarks/bench_vision.py [--data ../shared/data] [--repeat 3]

Prints:
- unpaced throughput of trigger + inspection on conveyor_belt.mp4 with its recipe, as a ratio to
  the raw decode rate of the same file measured in the same run (target >= 0.5), best of N;
- the parts it counts and rejects there;
- the demo clip's counts against its truth file;
- per-class accuracy of examples/recipes/coke_bottling.toml on coke_bottling_line/;
- how many zxing blackbox photos decode to their expected text.
Ctrl-C cancels between stages.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helio_gui.vision.evaluate import count_parts, decode_rate, score_labelled_folders  # noqa: E402
from helio_gui.vision.recipe import load_recipe  # noqa: E402

COKE_EXPECT = {
    "Normal": "PASS",
    "BottleCapMissing": "cap_missing",
    "BottleOverfilled": "overfilled",
    "BottleUnderfilled": "underfilled",
    "LabelMissing": "label_missing",
    "LabelNotPrinted": "label_missing",
    "BottleMissing": "bottle_missing",
    "MultipleFaults": "FAIL",
    "BottleDeformed": "FAIL",
    "LabelNotStraight": "label_crooked",
}


def raw_decode_fps(path: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    t0 = time.perf_counter()
    while True:
        ok, _img = cap.read()
        if not ok:
            break
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return n, n / dt


def bench_conveyor(data: Path, repeat: int) -> None:
    video = data / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"
    if not video.exists():
        print(f"conveyor: skipped ({video} missing)")
        return
    recipe = load_recipe(REPO / "examples" / "recipes" / "conveyor_belt.toml")
    best_raw = best_pipe = 0.0
    ins = []
    ratios = []
    for i in range(repeat):
        # Interleaved so both see the same machine load.
        n_raw, raw = raw_decode_fps(video)
        ins, n, dt = count_parts(recipe, f"file:{video}")
        best_raw, best_pipe = max(best_raw, raw), max(best_pipe, n / dt)
        ratios.append((n / dt) / raw)
        print(f"  run {i + 1}: raw decode {raw:7.1f} fps ({n_raw} frames), pipeline {n / dt:7.1f} fps, "
              f"ratio {ratios[-1]:.2f}")
    ratio = best_pipe / best_raw
    ratios.sort()
    print(f"conveyor_belt.mp4 throughput: pipeline {best_pipe:.1f} fps / raw decode {best_raw:.1f} fps "
          f"= {ratio:.2f} best-of-{repeat}, median per-run ratio {ratios[len(ratios) // 2]:.2f}  "
          f"(target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})")
    per_frame_costs(REPO / "examples" / "recipes" / "conveyor_belt.toml", video, "conveyor_belt.mp4")
    fails = [i for i in ins if not i.passed]
    print(f"conveyor_belt.mp4 counts: {len(ins)} parts, {len(ins) - len(fails)} pass, {len(fails)} fail "
          f"({', '.join(sorted({d for i in fails for d in i.defects}))}); by eye: 5 parts, 2 wrong (cones)")


def per_frame_costs(recipe_path: Path, video: Path, label: str) -> None:
    """Milliseconds per frame for the trigger and per part for the inspection (p50 / p95 / max):
    the vision share of the runtime's capture-to-result latency."""
    import numpy as np

    from helio_gui.vision.inspect import Inspector
    from helio_gui.vision.sources import iter_frames
    from helio_gui.vision.trigger import PartTrigger

    recipe = load_recipe(recipe_path)
    trig, insp = PartTrigger(recipe.trigger), Inspector(recipe)
    t_trig, t_insp = [], []
    for frame in iter_frames(f"file:{video}"):
        t0 = time.perf_counter()
        events = trig.update(frame)
        t1 = time.perf_counter()
        t_trig.append(t1 - t0)
        for ev in events:
            insp.inspect(frame, ev)
            t_insp.append(time.perf_counter() - t1)
    tt, ti = np.array(t_trig) * 1000, np.array(t_insp) * 1000
    print(f"{label}: trigger per frame p50 {np.percentile(tt, 50):.2f} ms, p95 {np.percentile(tt, 95):.2f} ms; "
          f"inspection per part p50 {np.percentile(ti, 50):.2f} ms, max {ti.max():.2f} ms ({len(ti)} parts)")


def bench_demo() -> None:
    demo = REPO / "resources" / "demo"
    truth = json.loads((demo / "demo_truth.json").read_text())
    ins, n, dt = count_parts(load_recipe(demo / "demo_recipe.toml"), f"file:{demo / truth['video']}")
    fails = sum(1 for i in ins if not i.passed)
    per_frame_costs(demo / "demo_recipe.toml", demo / truth["video"], "demo clip")
    print(f"demo clip: {len(ins)} parts / {fails} rejects (truth {truth['parts_total']} / "
          f"{truth['rejects_total']}), {n / dt:.0f} fps unpaced")


def bench_coke(data: Path) -> None:
    root = data / "coke_bottling_line" / "Images"
    if not root.is_dir():
        print("coke: skipped (folder missing)")
        return
    scores = score_labelled_folders(load_recipe(REPO / "examples" / "recipes" / "coke_bottling.toml"),
                                    root, COKE_EXPECT)
    print("coke_bottling_line per-class accuracy (centre bottle):")
    print(f"  {'class':20s} {'expected':16s} {'right':>5s} {'of':>3s} {'acc':>6s}")
    for s in scores:
        print(f"  {s.label:20s} {s.expect:16s} {s.correct:5d} {s.total:3d} {s.accuracy:6.0%}")
    tot, ok = sum(s.total for s in scores), sum(s.correct for s in scores)
    print(f"  {'all':20s} {'':16s} {ok:5d} {tot:3d} {ok / tot:6.0%}")


def bench_zxing(data: Path) -> None:
    root = data / "zxing_barcodes" / "blackbox"
    if not root.is_dir():
        print("zxing: skipped (folder missing)")
        return
    t0 = time.perf_counter()
    rates = decode_rate(root)
    dt = time.perf_counter() - t0
    print("zxing blackbox photos decoded to the expected text:")
    for name, (ok, total) in rates.items():
        print(f"  {name:14s} {ok:3d} / {total:3d}")
    ok, total = sum(a for a, _b in rates.values()), sum(b for _a, b in rates.values())
    print(f"  {'all':14s} {ok:3d} / {total:3d} = {ok / total:.0%}  ({dt / total * 1000:.0f} ms per photo)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="HelioVision vision benchmark")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    data = Path(args.data)
    try:
        bench_conveyor(data, args.repeat)
        bench_demo()
        bench_coke(data)
        bench_zxing(data)
    except KeyboardInterrupt:
        print("cancelled")
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
