"""The real `helio-runtime` process on real footage: API contract, stream readers, durability,
signals, bad input."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import threading
import time
import urllib.request

import cv2
import pytest

from tests.runtime.proc import CONVEYOR_RECIPE, RuntimeProcess, runtime_command

pytestmark = pytest.mark.slow


def sse_events(proc: RuntimeProcess, *, until, timeout: float, last_event_id: int | None = None,
               collected: list | None = None):
    """Reads /api/events until `until(events)` is true; returns [(event, id, data), ...]."""
    headers = {"Authorization": f"Bearer {proc.token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    req = urllib.request.Request(proc.base + "/api/events", headers=headers)
    events = collected if collected is not None else []
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        ev, eid, data = None, None, None
        while time.monotonic() < deadline:
            line = resp.readline()
            if not line:
                break
            line = line.decode().rstrip("\n")
            if line == "":
                if data is not None:
                    events.append((ev, eid, json.loads(data)))
                    if until(events):
                        return events
                ev, eid, data = None, None, None
            elif line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("id: "):
                eid = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]
    return events


def results_of(events):
    return [e for e in events if e[0] == "result"]


@pytest.fixture
def conveyor_runtime(tmp_path, port, conveyor_video):
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{conveyor_video}?loop=1&paced=1",
                        recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_healthy()
        yield proc


def test_conveyor_counts_each_part_once_and_reports_over_every_channel(tmp_path, port, conveyor_video):
    """One pass of the clip (paced, no loop): 3 white housings pass and 2 orange cones are wrong
    parts (counted by eye on frames every 1/3 s)."""
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{conveyor_video}?loop=0&paced=1",
                        recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_healthy()
        events = sse_events(proc, until=lambda ev: len(results_of(ev)) >= 5, timeout=25)
        res = results_of(events)
        assert len(res) == 5, f"expected 5 parts, got {[(r[2]['verdict'], r[2]['frame_id']) for r in res]}"
        statuses = [e for e in events if e[0] == "status"]
        assert statuses and statuses[0][2]["source"]["state"] in ("live", "ended")
        for _, eid, body in res:
            assert eid == body["id"] and body["frame_id"] > 0 and body["frame_ts"] <= body["ts"]
            assert body["frame_size"] == [960, 540] and body["regions"]
        proc.wait_until(lambda: proc.status()["source"]["state"] == "ended", 15, "the clip to end")
        time.sleep(0.3)
        st, stats = proc.json("GET", "/api/stats?bucket_s=10&buckets=6")
        assert st == 200
        assert (stats["total"], stats["pass"], stats["fail"]) == (5, 3, 2)
        assert stats["defects"] == {"wrong_part": 2} and abs(stats["yield"] - 0.6) < 1e-9
        assert sum(b["total"] for b in stats["buckets"]) == 5 and stats["parts_per_min"] > 0
        st, page = proc.json("GET", "/api/results?limit=2&verdict=FAIL")
        assert st == 200 and len(page["items"]) == 2 and page["next_before_id"] is None
        fail = page["items"][0]
        assert fail["defects"] == ["wrong_part"] and fail["image_url"] == f"/api/results/{fail['id']}/image"
        st, headers, jpeg = proc.request("GET", fail["image_url"])
        assert st == 200 and headers["Content-Type"] == "image/jpeg"
        assert cv2.imdecode(__import__("numpy").frombuffer(jpeg, "uint8"), cv2.IMREAD_COLOR).shape == (540, 960, 3)
        passed = proc.json("GET", "/api/results?verdict=PASS")[1]["items"][0]
        assert passed["image_url"] is None
        assert proc.request("GET", f"/api/results/{passed['id']}/image")[0] == 404
        st, headers, csv_text = proc.request("GET", "/api/results.csv")
        assert st == 200 and headers["Content-Type"].startswith("text/csv")
        assert len(csv_text.decode().strip().splitlines()) == 6
        # A reconnecting client replays what it missed after its last id.
        replay = sse_events(proc, last_event_id=res[1][1], until=lambda ev: len(results_of(ev)) >= 3, timeout=5)
        assert [e[1] for e in results_of(replay)] == [r[1] for r in res[2:]]
        # Health turns 503 once the source has ended and frames are stale.
        proc.wait_until(lambda: proc.json("GET", "/api/health", token=None)[0] == 503, 6, "health 503 after the end")
        code, took = proc.terminate()
        assert code == 0


def test_ffmpeg_ffprobe_and_opencv_read_the_real_stream(conveyor_runtime):
    proc = conveyor_runtime
    url = f"{proc.base}/stream.mjpg?token={proc.token}&fps=30"
    out = subprocess.run(["ffprobe", "-v", "error", "-rw_timeout", "5000000", "-show_entries",
                          "stream=codec_name,width,height", "-of", "json", url],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)["streams"][0]
    assert (s["codec_name"], s["width"], s["height"]) == ("mjpeg", 960, 540)
    out = subprocess.run(["ffmpeg", "-v", "error", "-rw_timeout", "5000000", "-i", url + "&overlay=1",
                          "-frames:v", "30", "-f", "null", "-"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        frames = [cap.read() for _ in range(10)]
    finally:
        cap.release()
    assert all(ok for ok, _ in frames) and frames[-1][1].shape == (540, 960, 3)
    # Every reader above has gone: the runtime frees their viewers within seconds.
    proc.wait_until(lambda: proc.status()["stream"]["clients"] == 0, 8, "vanished viewers to be freed")
    stream = proc.status()["stream"]
    assert 0 < stream["encodes"] <= stream["frames_seen"] * 2, stream  # two variants at most (raw, overlay)
    st = proc.status()
    assert st["source"]["state"] == "live" and st["fps_processed"] > 10, st
    assert st["latency_ms"]["p95"] is not None and st["recipe"]["name"] == "conveyor-housings"
    # The stream needs the token like everything else.
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{proc.base}/stream.mjpg?token=wrong", timeout=5)
    assert err.value.code == 401


def test_tokens_limits_and_malformed_requests(conveyor_runtime):
    proc = conveyor_runtime
    assert proc.json("GET", "/api/health", token=None)[0] == 200
    st, body = proc.json("GET", "/api/status", token=None)
    assert st == 401 and "token" in body["error"]
    st, body = proc.json("GET", "/api/status", token="wrong")
    assert st == 401 and "wrong token" in body["error"]
    st, body = proc.json("POST", "/api/shift", b"{not json", headers={"Content-Type": "application/json"})
    assert st == 400 and "not valid JSON" in body["error"]
    st, body = proc.json("POST", "/api/shift", {"action": "explode"})
    assert st == 400 and "'start', 'reset'" in body["error"]
    st, body = proc.json("PUT", "/api/recipe", b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/toml"})
    assert st == 413 and "limit" in body["error"]
    st, body = proc.json("GET", "/api/results?limit=abc")
    assert st == 400 and "limit" in body["error"]
    st, body = proc.json("GET", "/api/nothing-here")
    assert st == 404 and body["error"]
    st, body = proc.json("PUT", "/api/recipe", b"name='x'", headers={"Content-Type": "text/plain"})
    assert st == 415 and "application/toml" in body["error"]
    # Still serving after all that.
    assert proc.json("GET", "/api/status")[0] == 200 and proc.proc.poll() is None


def test_bad_recipe_is_refused_and_the_old_one_keeps_running(conveyor_runtime):
    proc = conveyor_runtime
    st, old = proc.json("GET", "/api/recipe")
    assert st == 200 and old["format"] == "toml" and "conveyor-housings" in old["text"]
    bad = old["text"].replace('expected = "white"', 'expected = "white"\nbogus_field = 3')
    st, body = proc.json("PUT", "/api/recipe", bad.encode(), headers={"Content-Type": "application/toml"})
    assert st == 422, body
    assert body["errors"] and any("bogus_field" in (e["field"] + e["message"]) for e in body["errors"])
    assert all(isinstance(e["line"], int) for e in body["errors"])
    assert proc.json("GET", "/api/recipe")[1]["text"] == old["text"]
    before = proc.status()["frames_processed"]
    time.sleep(0.5)
    st = proc.status()
    assert st["frames_processed"] > before and st["recipe"] == {"name": "conveyor-housings", "version": "1", "problem": None}
    good = old["text"].replace('version = "1"', 'version = "2"')
    st, body = proc.json("PUT", "/api/recipe", good.encode(), headers={"Content-Type": "application/toml"})
    assert st == 200 and body == {"name": "conveyor-housings", "version": "2"}
    proc.wait_until(lambda: proc.status()["recipe"]["version"] == "2", 5, "the new recipe to run")
    # A recipe that parses but cannot be built (missing template image) is refused too.
    missing = good.replace('version = "2"', 'version = "3"') + (
        '\n[[tools]]\nname = "golden"\ntype = "template"\nreference = "no-such-reference.png"\n')
    st, body = proc.json("PUT", "/api/recipe", missing.encode(), headers={"Content-Type": "application/toml"})
    assert st == 422 and "no-such-reference.png" in body["error"], body
    assert proc.status()["recipe"]["version"] == "2"
    # YAML works the same way.
    import tomllib

    import yaml
    data = tomllib.loads(good)
    data["version"] = "4"
    st, body = proc.json("PUT", "/api/recipe", yaml.safe_dump(data).encode(),
                         headers={"Content-Type": "application/yaml"})
    assert st == 200 and body["version"] == "4", body
    assert proc.json("GET", "/api/recipe")[1]["format"] == "yaml"
    proc.wait_until(lambda: proc.status()["recipe"]["version"] == "4", 5, "the YAML recipe to run")


def test_external_trigger_and_shift_counters_survive_restart(tmp_path, port, conveyor_video):
    data = tmp_path / "data"
    with RuntimeProcess(data, port, source=f"file:{conveyor_video}?loop=1&paced=1",
                        recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_healthy()
        st, shift = proc.json("POST", "/api/shift", {"action": "start", "name": "early"})
        assert st == 200 and shift["name"] == "early" and shift["total"] == 0
        for _ in range(3):
            st, body = proc.json("POST", "/api/trigger")
            assert st == 200 and body["result"]["frame_id"] > 0, body
        stats = proc.json("GET", "/api/stats")[1]
        assert stats["shift"]["name"] == "early" and stats["total"] >= 3
        total = stats["total"]
        code, _ = proc.terminate()
        assert code == 0
    with RuntimeProcess(data, port, source=f"file:{conveyor_video}?loop=1&paced=1",
                        recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_healthy()
        stats = proc.json("GET", "/api/stats")[1]
        assert stats["shift"]["id"] == shift["id"] and stats["shift"]["name"] == "early"
        assert stats["total"] >= total
        st, reset = proc.json("POST", "/api/shift", {"action": "reset"})
        assert st == 200 and reset["total"] == 0 and reset["id"] == shift["id"]


def test_kill_9_loses_nothing_any_client_saw(tmp_path, port, conveyor_video):
    """A folder source at 40 parts/s; an SSE client and a results poller record every id they
    see; the runtime is killed with SIGKILL mid-run; every seen id is in the database."""
    folder = tmp_path / "parts"
    folder.mkdir()
    cap = cv2.VideoCapture(str(conveyor_video))
    for i in range(40):
        cap.set(cv2.CAP_PROP_POS_FRAMES, i * 20)
        ok, img = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"part{i:03d}.jpg"), img)
    cap.release()
    data = tmp_path / "data"
    proc = RuntimeProcess(data, port, source=f"folder:{folder}?rate=40&loop=1", recipe=CONVEYOR_RECIPE)
    try:
        proc.wait_healthy()
        seen_sse: list = []
        seen_poll: set[int] = set()
        stop = threading.Event()

        def poll():
            while not stop.is_set():
                try:
                    items = proc.json("GET", "/api/results?limit=20", timeout=2)[1]["items"]
                    seen_poll.update(i["id"] for i in items)
                except Exception:
                    return
        poller = threading.Thread(target=poll, name="poller")
        poller.start()
        reader_err: list = []

        def read():
            try:
                sse_events(proc, until=lambda ev: False, timeout=30, collected=seen_sse)
            except Exception as exc:  # the kill ends the stream
                reader_err.append(exc)
        reader = threading.Thread(target=read, name="sse")
        reader.start()
        proc.wait_until(lambda: len(results_of(seen_sse)) >= 60, 15, "60 results over SSE")
        proc.proc.kill()
        proc.proc.wait(5)
        stop.set()
        poller.join(5)
        reader.join(10)
        assert not reader.is_alive()
    finally:
        proc.close()
    seen = {e[1] for e in results_of(seen_sse)} | seen_poll
    db = sqlite3.connect(data / "results.sqlite3")
    stored = {r[0] for r in db.execute("SELECT id FROM results")}
    db.close()
    assert len(seen) >= 60
    assert seen <= stored, f"results a client saw are missing after kill -9: {sorted(seen - stored)}"


def test_sigterm_with_open_streams_exits_0_within_1_s(conveyor_runtime):
    proc = conveyor_runtime
    socks = []
    for path in ("/stream.mjpg?fps=30", "/api/events"):
        s = socket.create_connection(("127.0.0.1", proc.port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {proc.token}\r\n\r\n".encode())
        assert b"200" in s.recv(100)
        socks.append(s)
    try:
        time.sleep(0.5)
        code, took = proc.terminate()
    finally:
        for s in socks:
            s.close()
    assert code == 0, proc.log()
    assert took < 1.0, f"exit took {took:.2f} s"
    assert "stopped in" in proc.log()


def test_corrupt_and_non_image_files_are_counted_not_fatal(tmp_path, port, conveyor_video):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cap = cv2.VideoCapture(str(conveyor_video))
    for i in range(3):
        ok, img = cap.read()
        cv2.imwrite(str(folder / f"good{i}.jpg"), img)
    cap.release()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    with RuntimeProcess(tmp_path / "data", port, source=f"folder:{folder}?rate=20&loop=0",
                        recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_up()
        proc.wait_until(lambda: proc.proc.poll() is not None or proc.json("GET", "/api/status")[1]["source"]["state"]
                        == "ended", 15, "the folder to end")
        assert proc.proc.poll() is None, proc.log()
        st = proc.status()
        assert st["source"]["files_skipped"] >= 2, st["source"]
        assert proc.json("GET", "/api/stats")[1]["total"] == 3


def test_missing_source_file_is_reported_not_fatal(tmp_path, port):
    with RuntimeProcess(tmp_path / "data", port, source=str(tmp_path / "nope.mp4"), recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_up()
        st = proc.wait_until(lambda: proc.proc.poll() is None and
                             proc.json("GET", "/api/status")[1]["source"]["state"] in ("failed", "reconnecting"),
                             10, "the missing file to be reported")
        status = proc.status()["source"]
        assert "nope.mp4" in status["reason"] or status["reason"], status
        st, body = proc.json("GET", "/api/health", token=None)
        assert st == 503 and body["ok"] is False and body["reason"]


def test_generated_token_and_cli(tmp_path, port, conveyor_video):
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{conveyor_video}", recipe=CONVEYOR_RECIPE,
                        token=None) as proc:
        proc.wait_healthy()
        token_file = tmp_path / "data" / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        proc.token = token_file.read_text().strip()
        assert len(proc.token) >= 20 and proc.json("GET", "/api/status")[0] == 200
    out = subprocess.run(runtime_command() + ["--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "0.1.0" in out.stdout
    out = subprocess.run(runtime_command() + ["--validate-recipe", str(CONVEYOR_RECIPE)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(CONVEYOR_RECIPE.read_text().replace("min_fraction = 0.15", "min_fraction = 7"))
    out = subprocess.run(runtime_command() + ["--validate-recipe", str(bad)], capture_output=True, text=True,
                         timeout=30)
    line_no = next(i for i, l in enumerate(bad.read_text().splitlines(), 1) if "min_fraction" in l)
    assert out.returncode == 1 and f"{bad}:{line_no}: " in out.stderr and "min_fraction" in out.stderr, out.stderr
    out = subprocess.run(runtime_command() + ["--port", "notaport", "--data-dir", str(tmp_path / "d2")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "not a TCP port" in out.stderr
