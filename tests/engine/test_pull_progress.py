"""Pull progress arithmetic on recorded `docker pull` event sequences (no engine needed)."""

from __future__ import annotations

from helio_gui.engine import PullProgress

# Recorded from a real `docker pull` (two layers of 30 MB and 10 MB, one already present).
RECORDED = [
    {"status": "Pulling from helio/runtime", "id": "2.0.0"},
    {"status": "Already exists", "id": "aaa", "progressDetail": {}},
    {"status": "Pulling fs layer", "id": "bbb", "progressDetail": {}},
    {"status": "Pulling fs layer", "id": "ccc", "progressDetail": {}},
    {"status": "Downloading", "id": "ccc", "progressDetail": {"current": 5_000_000, "total": 10_000_000}},
    {"status": "Downloading", "id": "bbb", "progressDetail": {"current": 3_000_000, "total": 30_000_000}},
    {"status": "Downloading", "id": "bbb", "progressDetail": {"current": 30_000_000, "total": 30_000_000}},
    {"status": "Verifying Checksum", "id": "bbb", "progressDetail": {}},
    {"status": "Download complete", "id": "bbb", "progressDetail": {}},
    {"status": "Extracting", "id": "bbb", "progressDetail": {"current": 15_000_000, "total": 30_000_000}},
    {"status": "Downloading", "id": "ccc", "progressDetail": {"current": 10_000_000, "total": 10_000_000}},
    {"status": "Download complete", "id": "ccc", "progressDetail": {}},
    {"status": "Pull complete", "id": "bbb", "progressDetail": {}},
    {"status": "Extracting", "id": "ccc", "progressDetail": {"current": 10_000_000, "total": 10_000_000}},
    {"status": "Pull complete", "id": "ccc", "progressDetail": {}},
    {"status": "Digest: sha256:abc"},
    {"status": "Status: Downloaded newer image for helio/runtime:2.0.0"},
]


def fractions(events):
    tracker = PullProgress()
    out = []
    for event in events:
        assert tracker.feed(event) is None
        out.append(tracker.fraction())
    return tracker, out


def test_bytes_weighted_and_monotonic():
    tracker, out = fractions(RECORDED)
    known = [f for f in out if f is not None]
    assert known == sorted(known), "progress must never go backwards"
    assert known[-1] == 1.0
    # Layers are announced before any transfer: no fraction yet (aaa alone would read 100 %).
    assert out[1:4] == [None, None, None]
    # ccc half downloaded; aaa and bbb sizes unknown -> each weighs as the mean known (10 MB):
    # done = 10 (aaa) + 10 * 0.25 (ccc: half of its download half) = 12.5 of 30.
    assert abs(out[4] - 12.5 / 30) < 1e-9
    # bbb's size becomes known (30 MB; mean now 20): 24 of 60 = 0.40 would go backwards: held.
    assert out[5] == out[4]
    # bbb fully downloaded: done = 20 (aaa) + 30 * 0.5 + 10 * 0.25 = 37.5 of 60.
    assert abs(out[6] - 37.5 / 60) < 1e-9


def test_error_inside_a_200_stream_is_reported():
    tracker = PullProgress()
    for event in RECORDED[:5]:
        assert tracker.feed(event) is None
    error = tracker.feed({"errorDetail": {"message": "unexpected EOF"}, "error": "unexpected EOF"})
    assert error == "unexpected EOF"
    assert tracker.feed({"error": "manifest unknown"}) == "manifest unknown"


def test_no_layers_yet_is_unknown():
    tracker = PullProgress()
    tracker.feed({"status": "Pulling from helio/runtime", "id": "2.0.0"})
    assert tracker.fraction() is None
