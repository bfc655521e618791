"""ResultStore on a real SQLite file: durability settings, shifts, retention, paging, CSV."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time

import pytest

from helio_gui.runtime.store import ResultStore, Retention
from helio_gui.vision.types import Inspection, Region, ToolResult


def make_inspection(frame_id: int, passed: bool, defect: str = "wrong_part") -> Inspection:
    tool = ToolResult(tool="colour", passed=passed, defect=None if passed else defect,
                      measurements={"hue": 12.5, "code": "ABC"},
                      regions=(Region("box", ((1.0, 2.0), (30.0, 40.0)), label="x", ok=passed, tool="colour"),))
    return Inspection(frame_id=frame_id, frame_ts=1000.0 + frame_id, tools=(tool,), recipe_name="r",
                      recipe_version="3", frame_size=(960, 540))


def test_wal_and_full_sync(tmp_path):
    store = ResultStore(tmp_path)
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    store.close()


def test_results_shifts_and_stats_survive_reopen(tmp_path):
    store = ResultStore(tmp_path)
    for i in range(1, 11):
        store.add(make_inspection(i, passed=i % 3 != 0, defect="cap_missing" if i == 3 else "wrong_part"))
    s = store.stats(bucket_s=60, buckets=5)
    assert (s["total"], s["pass"], s["fail"]) == (10, 7, 3)
    assert s["defects"] == {"wrong_part": 2, "cap_missing": 1}
    assert sum(b["total"] for b in s["buckets"]) == 10 and len(s["buckets"]) == 5
    assert s["parts_per_min"] > 0
    store.close()

    again = ResultStore(tmp_path)  # a restart: counters come back from the database
    s = again.stats()
    assert (s["total"], s["fail"]) == (10, 3)
    reset = again.reset_shift()
    assert reset["total"] == 0 and reset["id"] == s["shift"]["id"]
    assert again.stats()["defects"] == {}
    again.add(make_inspection(11, passed=True))
    started = again.start_shift("night")
    assert started["name"] == "night" and started["id"] != s["shift"]["id"] and started["total"] == 0
    assert again.count() == 11  # resets never delete results
    again.close()


def test_paging_filters_and_json_shape(tmp_path):
    store = ResultStore(tmp_path)
    for i in range(1, 8):
        store.add(make_inspection(i, passed=i % 2 == 0))
    page = store.results(limit=3)
    assert [r["id"] for r in page] == [7, 6, 5]
    page2 = store.results(limit=3, before_id=page[-1]["id"])
    assert [r["id"] for r in page2] == [4, 3, 2]
    fails = store.results(limit=50, verdict="FAIL")
    assert {r["verdict"] for r in fails} == {"FAIL"} and len(fails) == 4
    r = store.get(7)
    assert r["regions"][0]["points"] == [[1.0, 2.0], [30.0, 40.0]]
    assert r["measurements"] == {"colour.hue": 12.5, "colour.code": "ABC"}
    assert r["frame_size"] == [960, 540] and r["defects"] == ["wrong_part"]
    assert store.results(after_id=5, oldest_first=True)[0]["id"] == 6
    assert store.results(since=time.time() + 10) == []
    rows = list(csv.reader(io.StringIO(store.csv())))
    assert rows[0][0] == "id" and len(rows) == 8 and rows[1][4] == "FAIL"
    store.close()


def test_reject_image_retention_by_count_and_bytes(tmp_path):
    store = ResultStore(tmp_path, Retention(max_images=3, max_bytes=10_000))
    ids = [store.add(make_inspection(i, passed=False), jpeg=b"\xff\xd8" + bytes(1000) + b"\xff\xd9")["id"]
           for i in range(5)]
    assert store.image(ids[0]) is None and store.image(ids[1]) is None
    assert store.image(ids[4]).startswith(b"\xff\xd8")
    assert store.get(ids[0])["image_url"] is None
    assert store.get(ids[4])["image_url"] == f"/api/results/{ids[4]}/image"
    big = store.add(make_inspection(9, passed=False), jpeg=bytes(6000))["id"]
    assert store.image_stats()["bytes"] <= 10_000 and store.image(big) is not None
    store.close()


def test_unwritable_data_dir_is_a_clear_error(tmp_path):
    from helio_gui.runtime.store import StoreError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="data directory"):
        ResultStore(blocker / "sub")


def test_committed_results_survive_kill_9_of_a_writer(tmp_path):
    """A writer that prints each id after add() returns is killed -9; every printed id is stored."""
    code = f"""
import sys
from tests.runtime.test_store import make_inspection
from helio_gui.runtime.store import ResultStore
s = ResultStore({str(tmp_path)!r})
i = 0
while True:
    i += 1
    r = s.add(make_inspection(i, passed=i % 2 == 0), jpeg=b"x" * 5000 if i % 2 else None)
    print(r["id"], flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    seen = []
    try:
        deadline = time.monotonic() + 20
        while len(seen) < 150 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(int(line))
    finally:
        proc.kill()
        proc.wait(timeout=5)
    assert len(seen) >= 150, "the writer did not get going"
    store = ResultStore(tmp_path)
    assert set(seen) <= store.all_ids()
    store.close()
