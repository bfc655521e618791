"""Renders the demo conveyor clip the runtime shows by default (no third-party footage).

    .venv/bin/python resources/demo/make_demo.py [--out resources/demo]

Writes `demo_conveyor.mp4` (640x360, 30 fps, 20 s, mp4v) and `demo_truth.json` (every part, the
frame its centre crosses the trigger line, and its defect). Deterministic: the same seed gives
the same parts in the same places. The clip loops seamlessly (the belt pattern and the part
schedule both repeat every 600 frames), and each part crosses the centre line exactly once per
pass. `demo_recipe.toml` next to it inspects the clip.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

W, H, FPS, N_FRAMES = 640, 360, 30, 600
SPEED = 4  # px per frame; 4 * 600 = 2400 is a multiple of the belt pattern period (16)
BELT_Y1, BELT_Y2 = 34, 326
SEED = 20261203
PART_L, PART_W = 80, 44  # px; the recipe calibrates 2 px/mm: 40 x 22 mm
LINE_X = W // 2
# Which parts are defective, and how (index in the schedule -> defect).
DEFECTS = {3: "wrong_part", 6: "wrong_size", 9: "missing_feature", 12: "wrong_part"}
N_PARTS = 14


def _schedule(rng: np.random.Generator) -> list[dict]:
    parts = []
    for k in range(N_PARTS):
        # Crossings fall in frames 27..573 (±4): a single pass counts every part, none at the seam.
        spawn = -65 + k * 42 + int(rng.integers(-4, 5))
        parts.append({
            "index": k,
            "spawn": spawn,  # frame at which the part's left edge enters at x = -length
            "defect": DEFECTS.get(k),
            "dy": int(rng.integers(-10, 11)),
            "angle": float(rng.uniform(-3.0, 3.0)),
            "shade": int(rng.integers(-8, 9)),
        })
    return parts


def _sprite(part: dict) -> tuple[np.ndarray, np.ndarray]:
    """BGR image and alpha (float) of one part, drawn at 4x and scaled down for smooth edges."""
    s = 4
    length = int(PART_L * 1.3) if part["defect"] == "wrong_size" else PART_L
    pad = 10
    cw, ch = (length + 2 * pad) * s, (PART_W + 2 * pad) * s
    body = np.zeros((ch, cw, 3), np.uint8)
    alpha = np.zeros((ch, cw), np.uint8)
    if part["defect"] == "wrong_part":
        base = np.array([40, 125, 235], np.int16)  # orange (BGR)
    else:
        base = np.array([222, 225, 228], np.int16) + part["shade"]
    x1, y1, x2, y2 = pad * s, pad * s, (pad + length) * s, (pad + PART_W) * s
    r = 12 * s
    # Rounded body: a rectangle with a rounded front (the direction of travel is +x).
    cv2.rectangle(alpha, (x1, y1), (x2 - r, y2), 255, -1)
    cv2.rectangle(alpha, (x2 - r, y1 + r), (x2, y2 - r), 255, -1)
    cv2.circle(alpha, (x2 - r, y1 + r), r, 255, -1)
    cv2.circle(alpha, (x2 - r, y2 - r), r, 255, -1)
    # A small spigot on the nose, like a moulded housing.
    cv2.rectangle(alpha, (x2 - 2 * s, (y1 + y2) // 2 - 6 * s), (x2 + 4 * s, (y1 + y2) // 2 + 6 * s), 255, -1)
    # Top-lit shading: lighter towards the top edge.
    grad = np.linspace(14, -18, ch).astype(np.int16)[:, None, None]
    body[:] = np.clip(base[None, None, :] + grad, 0, 255).astype(np.uint8)
    # Parting line and the screw hole (the "feature" the recipe checks).
    cv2.line(body, (x1 + 6 * s, y2 - 6 * s), (x2 - r, y2 - 6 * s), tuple(int(c) - 30 for c in base), s)
    if part["defect"] != "missing_feature":
        hc = (x1 + int(0.42 * PART_L * s), (y1 + y2) // 2)
        cv2.circle(body, hc, 7 * s, (60, 60, 64), -1)
        cv2.circle(body, hc, 4 * s, (120, 120, 125), -1)
        cv2.line(body, (hc[0] - 3 * s, hc[1]), (hc[0] + 3 * s, hc[1]), (50, 50, 55), s)
    small = cv2.resize(body, (cw // s, ch // s), interpolation=cv2.INTER_AREA)
    a = cv2.resize(alpha, (cw // s, ch // s), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    m = cv2.getRotationMatrix2D((small.shape[1] / 2, small.shape[0] / 2), part["angle"], 1.0)
    small = cv2.warpAffine(small, m, (small.shape[1], small.shape[0]), flags=cv2.INTER_LINEAR)
    a = cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), flags=cv2.INTER_LINEAR)
    return small, a


def _belt(offset: int) -> np.ndarray:
    """The background at a belt offset: dark textured belt between two metal rails."""
    img = np.empty((H, W, 3), np.uint8)
    img[:] = (38, 40, 42)
    xs = (np.arange(W) - offset) % 16
    ys = np.arange(BELT_Y1, BELT_Y2) % 16
    # A faint diamond weave, moving with the belt.
    weave = ((np.abs(xs[None, :] - 8) + np.abs(ys[:, None] - 8)) < 5).astype(np.int16) * 7
    img[BELT_Y1:BELT_Y2] = np.clip(img[BELT_Y1:BELT_Y2].astype(np.int16) + weave[:, :, None], 0, 255)
    # Rails: brushed metal with a highlight; static (they do not move with the belt).
    for y0, y1 in ((0, BELT_Y1), (BELT_Y2, H)):
        g = np.linspace(150, 110, y1 - y0).astype(np.uint8)
        img[y0:y1] = np.stack([g + 8, g + 6, g], axis=1)[:, None, :]
        cv2.line(img, (0, y0 + 6), (W, y0 + 6), (200, 200, 195), 2)
    # Bolts on the rails every 120 px.
    for x in range(40, W, 120):
        cv2.circle(img, (x, BELT_Y1 // 2), 5, (90, 92, 95), -1)
        cv2.circle(img, (x, (BELT_Y2 + H) // 2), 5, (90, 92, 95), -1)
    return img


def _paste(frame: np.ndarray, sprite: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    h, w = alpha.shape
    fx1, fy1, fx2, fy2 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if fx1 >= fx2 or fy1 >= fy2:
        return
    sx1, sy1 = fx1 - x, fy1 - y
    a = alpha[sy1:sy1 + fy2 - fy1, sx1:sx1 + fx2 - fx1, None]
    roi = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    # A soft shadow first, offset down-right, then the part.
    sh = cv2.GaussianBlur(a[:, :, 0], (0, 0), 3)[:, :, None] * 0.45
    frame[fy1:fy2, fx1:fx2] = (roi * (1 - sh)).astype(np.uint8)
    roi = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    spr = sprite[sy1:sy1 + fy2 - fy1, sx1:sx1 + fx2 - fx1].astype(np.float32)
    frame[fy1:fy2, fx1:fx2] = (roi * (1 - a) + spr * a).astype(np.uint8)


def render(out_dir: Path, seed: int = SEED) -> dict:
    """Writes the clip and the truth file into `out_dir`; returns the truth."""
    rng = np.random.default_rng(seed)
    parts = _schedule(rng)
    sprites = [_sprite(p) for p in parts]
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / "demo_conveyor.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    if not writer.isOpened():
        raise SystemExit("OpenCV cannot write mp4v here")
    truth_parts = []
    for p, (spr, _a) in zip(parts, sprites):
        # x of the sprite's left edge at frame t: -spr_w + SPEED * (t - spawn); centre crosses LINE_X
        cross = p["spawn"] + (LINE_X - spr.shape[1] / 2 + spr.shape[1]) / SPEED
        truth_parts.append({"index": p["index"], "defect": p["defect"],
                            "cross_frame": int(math.ceil(cross)) % N_FRAMES})
    for t in range(N_FRAMES):
        frame = _belt(SPEED * t)
        for p, (spr, a) in zip(parts, sprites):
            # This pass's part and its copies one period earlier and later (seamless loop).
            for shift in (-N_FRAMES, 0, N_FRAMES):
                x = -spr.shape[1] + SPEED * (t + shift - p["spawn"])
                if -spr.shape[1] < x < W:
                    y = (BELT_Y1 + BELT_Y2) // 2 - spr.shape[0] // 2 + p["dy"]
                    _paste(frame, spr, a, x, y)
        writer.write(frame)
        if t % 100 == 0:
            print(f"frame {t}/{N_FRAMES}", file=sys.stderr)
    writer.release()
    truth = {
        "video": video.name, "width": W, "height": H, "fps": FPS, "frames": N_FRAMES, "seed": seed,
        "parts_total": len(parts),
        "rejects_total": sum(1 for p in parts if p["defect"]),
        "defects": {d: sum(1 for p in parts if p["defect"] == d) for d in sorted(set(DEFECTS.values()))},
        "parts": sorted(truth_parts, key=lambda q: q["cross_frame"]),
    }
    (out_dir / "demo_truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    truth = render(Path(args.out), args.seed)
    size = (Path(args.out) / truth["video"]).stat().st_size
    print(f"wrote {truth['video']} ({size / 1e6:.2f} MB): {truth['parts_total']} parts, "
          f"{truth['rejects_total']} rejects {truth['defects']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
