"""Each tool on images with known content: measurements, verdicts, defects, regions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import zxingcpp

from helio_gui.vision.inspect import Inspector
from helio_gui.vision.recipe import parse_recipe
from helio_gui.vision.tools import TOOL_TYPES, ToolSetupError
from helio_gui.vision.trigger import PartEvent, PartTrigger
from helio_gui.vision.types import Frame, Region


def _frame(img, fid=1):
    return Frame(image=img, frame_id=fid, timestamp=1000.0 + fid, monotonic=float(fid))


def _inspect(recipe_text, img, base_dir=None, event=None):
    r = parse_recipe(recipe_text, "toml", base_dir=base_dir)
    return Inspector(r).inspect(_frame(img), event)


def test_every_recipe_tool_type_has_an_implementation():
    from helio_gui.vision.recipe import TOOL_MODELS
    assert set(TOOL_MODELS) <= set(TOOL_TYPES)


def test_dimension_measures_length_and_width_in_mm():
    img = np.zeros((200, 300, 3), np.uint8)
    box = cv2.boxPoints(((150, 100), (160, 60), 20))  # 160 x 60 px, rotated 20 degrees
    cv2.fillPoly(img, [box.astype(np.int32)], (220, 220, 220))
    text = """name = "d"
[[tools]]
name = "size"
type = "dimension"
anchor = "frame"
px_per_mm = 4.0
length = { nominal = 40.0, tolerance = 1.0 }
width = { nominal = 15.0, tolerance = 1.0 }
segment = { threshold = 100 }
"""
    ins = _inspect(text, img)
    m = ins.measurements
    assert m["size.length_mm"] == pytest.approx(40.0, abs=0.6)
    assert m["size.width_mm"] == pytest.approx(15.0, abs=0.6)
    assert ins.passed
    ins = _inspect(text.replace("nominal = 40.0", "nominal = 35.0"), img)
    assert not ins.passed and ins.defects == ("wrong_size",)
    assert ins.tools[0].regions[0].kind == "polygon" and "mm" in ins.tools[0].regions[0].label


def test_blob_counts_within_area_limits_and_reports_missing():
    img = np.full((100, 200, 3), 200, np.uint8)
    for x in (30, 80, 130):
        cv2.circle(img, (x, 50), 8, (20, 20, 20), -1)  # area about 200
    cv2.circle(img, (175, 50), 2, (20, 20, 20), -1)  # too small to count
    text = """name = "b"
[[tools]]
name = "holes"
type = "blob"
anchor = "frame"
segment = { threshold = 100, polarity = "dark", open_px = 0 }
min_area = 100
max_area = 400
expected_count = 3
"""
    ins = _inspect(text, img)
    assert ins.passed and ins.measurements["holes.count"] == 3
    cv2.circle(img, (80, 50), 9, (200, 200, 200), -1)
    ins = _inspect(text, img)
    assert not ins.passed and ins.defects == ("missing_feature",) and ins.measurements["holes.count"] == 2


def test_color_class_flags_the_wrong_colour_as_wrong_part():
    text = """name = "c"
[[tools]]
name = "colour"
type = "color_class"
anchor = "frame"
expected = "white"
classes.white = [{ lower = [0, 0, 180], upper = [179, 50, 255] }]
classes.red = [{ lower = [170, 120, 80], upper = [10, 255, 255] }]
"""
    white = np.full((50, 50, 3), 235, np.uint8)
    red = np.zeros((50, 50, 3), np.uint8)
    red[:] = (30, 30, 220)
    assert _inspect(text, white).passed
    ins = _inspect(text, red)
    assert not ins.passed and ins.defects == ("wrong_part",) and ins.measurements["colour.class"] == "red"


def test_level_reports_over_and_under_fill():
    text = """name = "l"
[[tools]]
name = "fill"
type = "level"
anchor = "frame"
segment = { threshold = 80, polarity = "dark", open_px = 0, close_px = 0 }
min_level = 0.4
max_level = 0.6
"""
    def bottle(top):
        img = np.full((100, 40, 3), 230, np.uint8)
        img[top:] = 30
        return img
    assert _inspect(text, bottle(50)).passed
    assert _inspect(text, bottle(20)).defects == ("overfilled",)
    assert _inspect(text, bottle(80)).defects == ("underfilled",)


def test_template_aligns_a_shifted_part_and_finds_the_defect(tmp_path):
    rng = np.random.default_rng(1)
    ref = cv2.GaussianBlur((rng.random((120, 160)) * 255).astype(np.uint8), (0, 0), 3)
    ref = cv2.normalize(ref, None, 0, 255, cv2.NORM_MINMAX)
    cv2.imwrite(str(tmp_path / "golden.png"), ref)
    text = """name = "t"
[[tools]]
name = "golden"
type = "template"
anchor = "frame"
reference = "golden.png"
align = "phase"
diff_threshold = 60
min_defect_area = 40
"""
    shifted = np.roll(np.roll(ref, 3, axis=0), -4, axis=1)
    good = cv2.cvtColor(shifted, cv2.COLOR_GRAY2BGR)
    ins = _inspect(text, good, base_dir=tmp_path)
    assert ins.passed, ins.measurements
    assert ins.measurements["golden.shift_x"] == pytest.approx(-4, abs=1)
    bad = good.copy()
    cv2.rectangle(bad, (60, 50), (75, 62), (255, 255, 255), -1)
    ins = _inspect(text, bad, base_dir=tmp_path)
    assert not ins.passed and ins.defects == ("surface_defect",) and ins.measurements["golden.defects"] == 1
    defect_box = [r for r in ins.tools[0].regions if r.label == "defect"][0]
    (x1, y1), (x2, y2) = defect_box.points
    assert x1 <= 62 and x2 >= 73 and y1 <= 52 and y2 >= 60
    with pytest.raises(ToolSetupError, match="missing or unreadable"):
        _inspect(text.replace("golden.png", "nope.png"), good, base_dir=tmp_path)


def _qr(text, size=160):
    img = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode),
                                          scale=4) if hasattr(zxingcpp, "create_barcode") else None
    arr = np.array(img)
    canvas = np.full((arr.shape[0] + 40, arr.shape[1] + 40), 255, np.uint8)
    canvas[20:20 + arr.shape[0], 20:20 + arr.shape[1]] = arr
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def test_barcode_reads_and_checks_the_pattern():
    text = """name = "q"
[[tools]]
name = "code"
type = "barcode"
anchor = "frame"
formats = ["QRCode"]
expected = "HV-\\\\d{5}"
"""
    ins = _inspect(text, _qr("HV-12345"))
    assert ins.passed and ins.measurements["code.code"] == "HV-12345"
    assert ins.measurements["code.format"] == "QRCode"
    ins = _inspect(text, _qr("XX-1"))
    assert ins.defects == ("code_mismatch",)
    ins = _inspect(text, np.full((100, 100, 3), 255, np.uint8))
    assert ins.defects == ("code_unreadable",)


def test_part_anchored_roi_follows_the_trigger_box():
    img = np.full((100, 300, 3), 30, np.uint8)
    img[40:60, 200:260] = (30, 30, 220)  # a red part at x 200-260
    ev = PartEvent(_frame(img), Region("box", ((200.0, 40.0), (260.0, 60.0))), 1)
    text = """name = "p"
[[tools]]
name = "colour"
type = "color_class"
expected = "red"
classes.red = [{ lower = [170, 120, 80], upper = [10, 255, 255] }]
min_fraction = 0.9
"""
    assert _inspect(text, img, event=ev).passed
    assert not _inspect(text, img).passed  # the whole frame is mostly belt


def test_a_tool_that_raises_is_a_fail_not_a_crash(monkeypatch):
    r = parse_recipe('name="x"\n[[tools]]\nname="h"\ntype="blob"\n', "toml")
    insp = Inspector(r)
    monkeypatch.setattr(insp.tools[0], "run", lambda *_a: 1 / 0)
    ins = insp.inspect(_frame(np.zeros((10, 10, 3), np.uint8)))
    assert not ins.passed and ins.defects == ("tool_error",)


def _moving(n, step, start, y=50, w=320, size=30, direction=1):
    frames = []
    for i in range(n):
        img = np.full((100, w, 3), 30, np.uint8)
        x = start + direction * step * i
        cv2.rectangle(img, (int(x), y - size // 2), (int(x) + size, y + size // 2), (230, 230, 230), -1)
        frames.append(_frame(img, i + 1))
    return frames


def test_line_trigger_fires_once_per_part_and_never_twice():
    r = parse_recipe('name="x"\n[trigger]\nmode="line"\nmin_area=200\ndownscale=0.5\n', "toml")
    trig = PartTrigger(r.trigger)
    events = [e for f in _moving(60, 6, -40) for e in trig.update(f)]
    assert len(events) == 1
    ev = events[0]
    cx = (ev.box[0] + ev.box[2]) / 2
    assert abs(cx - 160) <= 10  # the centre just crossed the middle line
    # The part stops on the line and jitters back and forth: still counted once.
    jitter = [_moving(1, 0, 150 + (4 if i % 2 else -4))[0] for i in range(20)]
    assert [e for f in jitter for e in trig.update(f)] == []


def test_zone_trigger_counts_two_parts_moving_right_to_left():
    r = parse_recipe('name="x"\n[trigger]\nmode="zone"\ndirection="right_to_left"\nmin_area=200\n', "toml")
    trig = PartTrigger(r.trigger)
    a = _moving(70, 5, 330, direction=-1)
    b = _moving(70, 5, 330, direction=-1)
    frames = []
    for i in range(70):  # second part 30 frames behind the first
        img = a[i].image.copy()
        if i >= 30:
            img = np.maximum(img, b[i - 30].image)
        frames.append(_frame(img, i + 1))
    events = [e for f in frames for e in trig.update(f)]
    assert [e.track_id for e in events] == [1, 2]


def test_every_frame_and_external_modes():
    every = PartTrigger(parse_recipe('name="x"\n[trigger]\nmode="every_frame"\n', "toml").trigger)
    ext = PartTrigger(parse_recipe('name="x"\n[trigger]\nmode="external"\n', "toml").trigger)
    frames = _moving(5, 10, 0)
    assert [len(every.update(f)) for f in frames] == [1] * 5
    assert [len(ext.update(f)) for f in frames] == [0] * 5


@pytest.mark.parametrize("angle,ok", [(0.0, True), (2.0, True), (9.0, False), (-12.0, False)])
def test_edge_measures_the_angle_of_a_label_top(angle, ok):
    img = np.full((200, 200, 3), 30, np.uint8)
    box = cv2.boxPoints(((100, 140), (300, 120), angle))  # a wide red band whose top is at y~80
    cv2.fillPoly(img, [box.astype(np.int32)], (30, 30, 220))
    text = """name = "e"
[[tools]]
name = "label_edge"
type = "edge"
anchor = "frame"
roi = [0.2, 0.0, 0.6, 1.0]
segment = { hsv = [{ lower = [170, 120, 80], upper = [10, 255, 255] }], open_px = 0, close_px = 0 }
max_angle = 4.0
min_position = 0.3
max_position = 0.5
defect = "label_crooked"
"""
    ins = _inspect(text, img)
    m = ins.measurements
    # Image y grows downwards, so a positive cv2 angle is a negative slope in image rows.
    assert abs(abs(m["label_edge.angle_deg"]) - abs(angle)) < 1.0, m
    assert 0.3 < m["label_edge.position"] < 0.5 or not ok
    assert ins.passed is ok
    if not ok:
        assert ins.defects == ("label_crooked",)


def test_edge_scans_from_the_side():
    img = np.full((100, 100, 3), 0, np.uint8)
    img[:, 60:] = 255  # a vertical edge at x = 60
    text = """name = "e"
[[tools]]
name = "side"
type = "edge"
anchor = "frame"
segment = { threshold = 128, open_px = 0, close_px = 0 }
scan = "left_right"
min_position = 0.55
max_position = 0.65
"""
    ins = _inspect(text, img)
    assert ins.passed and ins.measurements["side.position"] == pytest.approx(0.6, abs=0.02)
    assert ins.measurements["side.angle_deg"] == pytest.approx(0, abs=0.5)
    assert _inspect(text, np.zeros((100, 100, 3), np.uint8)).defects == ("edge_missing",)


def test_trigger_forgets_tracks_when_the_frame_size_changes():
    trig = PartTrigger(parse_recipe('name="x"\n[trigger]\nmode="zone"\nmin_area=200\n', "toml").trigger)
    first = _moving(3, 5, 100)
    assert sum(len(trig.update(f)) for f in first) == 1
    bigger = np.full((120, 400, 3), 30, np.uint8)
    cv2.rectangle(bigger, (100, 40), (130, 70), (230, 230, 230), -1)
    assert len(trig.update(_frame(bigger, 10))) == 1  # a new stream: the part is new
