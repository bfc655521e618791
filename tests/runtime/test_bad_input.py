"""A new user's bad input against the real `helio-runtime` process: damaged data directories,
full disks, hostile images and requests. Every case must give a clear error, keep running and
lose nothing already stored. Uses the project's own demo clip, so it needs no shared data."""

from __future__ import annotations

import json
import time
import os
import subprocess
from pathlib import Path

import pytest

from helio_gui.runtime.config import resources_dir
from tests.runtime.proc import RuntimeProcess, runtime_command

DEMO = resources_dir() / "demo"
DEMO_CLIP = DEMO / "demo_conveyor.mp4"
DEMO_RECIPE = DEMO / "demo_recipe.toml"


@pytest.fixture
def tiny_fs(tmp_path):
    """A 4 MB tmpfs: a disk that fills up (needs root, as on the device and in CI)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as exc:
        pytest.skip(f"cannot mount a small tmpfs to simulate a full disk: {exc}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def fill(path: Path) -> None:
    """Fills the file system holding `path` to the last byte."""
    fd = os.open(path / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        for chunk in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("meta", ["", '{"format": "toml", "base_d', "\x00\x00\x00"])
def test_damaged_saved_recipe_holds_inspection_until_a_recipe_is_sent(tmp_path, port, meta):
    """recipe.active.json cut short (power loss during a PUT) must not crash-loop the runtime,
    nor may it judge parts by another recipe: frames flow, nothing is inspected, health says
    why (an update's health gate then rolls back), and a PUT recipe resumes inspection."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "recipe.active").write_text(DEMO_RECIPE.read_text())
    (data / "recipe.active.json").write_text(meta)
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}?loop=1&paced=1") as proc:
        proc.wait_up()
        proc.wait_until(lambda: (proc.status()["frames_processed"] or 0) > 90, 30, "frames to flow")
        status = proc.status()
        assert "recipe.active" in (status["recipe"]["problem"] or "")
        assert proc.json("GET", "/api/stats")[1]["total"] == 0, "no part may be judged without its recipe"
        code, health = proc.json("GET", "/api/health")
        assert code == 503 and "PUT /api/recipe" in health["reason"], health
        assert "recipe.active" in proc.log()  # the log names the damaged file
        code, body = proc.json("PUT", "/api/recipe", DEMO_RECIPE.read_bytes(),
                               headers={"Content-Type": "application/toml"})
        assert code == 200, body
        proc.wait_healthy()
        assert proc.status()["recipe"]["problem"] is None
        proc.wait_until(lambda: proc.json("GET", "/api/stats")[1]["total"] > 0, 30, "parts to be inspected again")


def test_recipe_put_on_a_full_disk_is_refused_clearly_and_the_old_recipe_runs(tiny_fs, port):
    data = tiny_fs / "data"
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=DEMO_RECIPE) as proc:
        proc.wait_healthy()
        fill(tiny_fs)
        new = DEMO_RECIPE.read_text().replace('version = "1"', 'version = "2"')
        status, body = proc.json("PUT", "/api/recipe", new.encode(),
                                 headers={"Content-Type": "application/toml"})
        assert status == 503, body
        assert "recipe" in body["error"] and "space" in body["error"], body
        assert proc.json("GET", "/api/recipe")[1]["version"] == "1"
        assert proc.status()["recipe"]["version"] == "1"
        (tiny_fs / "ballast").unlink()
        status, body = proc.json("PUT", "/api/recipe", new.encode(),
                                 headers={"Content-Type": "application/toml"})
        assert status == 200, body
        assert json.loads((data / "recipe.active.json").read_text())["format"] == "toml"
        assert proc.status()["recipe"]["version"] == "2"


def test_validate_recipe_agrees_with_the_start(tmp_path, port):
    """A recipe whose template image is missing passed --validate-recipe but then stopped the
    runtime from starting: validation builds the tools as the runtime does."""
    import cv2
    import numpy as np

    recipe = tmp_path / "tmpl.toml"
    recipe.write_text('name = "tmpl"\n\n[[tools]]\nname = "face"\ntype = "template"\n'
                      'reference = "golden.png"\n')
    out = subprocess.run(runtime_command() + ["--validate-recipe", str(recipe)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1, out
    assert f"{recipe}:6: tools[0].reference: " in out.stderr and "golden.png" in out.stderr, out.stderr
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO_CLIP}", recipe=recipe) as proc:
        assert proc.proc.wait(30) == 1
        assert f"{recipe}:6: tools[0].reference" in proc.log()
    cv2.imwrite(str(tmp_path / "golden.png"), np.full((40, 60), 128, np.uint8))
    out = subprocess.run(runtime_command() + ["--validate-recipe", str(recipe)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out


def _raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_odd_requests_get_clear_json_errors_not_500(tmp_path, port):
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO_CLIP}?loop=1&paced=1",
                        recipe=DEMO_RECIPE) as proc:
        proc.wait_healthy()
        # A token with bytes that are not UTF-8 gave 500 (the comparison raised).
        status, body = _raw_http(port, b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                       b"Authorization: Bearer \xff\xfe\r\n\r\n")
        assert status == 401 and "wrong token" in json.loads(body)["error"], body
        # A result id beyond SQLite's integers gave 500 (OverflowError).
        for rid in ("99999999999999999999999", "0", "-1"):
            status, body = proc.json("GET", f"/api/results/{rid}/image")
            assert status == 404 and ("no result" in body["error"] or "no image" in body["error"]), (rid, body)
        assert "Traceback" not in proc.log(), proc.log()
        assert proc.proc.poll() is None


def test_sse_client_that_stops_reading_during_replay_is_freed(tmp_path, port):
    """Replaying the store to a client that never reads blocked forever (no write timeout): one
    stuck connection and hub subscription per such client."""
    import socket

    from helio_gui.runtime.store import ResultStore
    from tests.runtime.test_store import make_inspection

    data = tmp_path / "data"
    store = ResultStore(data)
    store._db.execute("PRAGMA synchronous=OFF")  # seeding only; the runtime reopens with FULL
    big = {f"m{i}": 1234.5678 for i in range(150)}  # ~3 kB per event: the replay outgrows every buffer
    for i in range(4000):
        ins = make_inspection(i + 1, passed=True)
        ins.tools[0].measurements.update(big)
        store.add(ins)
    store.close()
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=DEMO_RECIPE) as proc:
        proc.wait_healthy()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(f"GET /api/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {proc.token}\r\n"
                      "Last-Event-ID: 0\r\n\r\n".encode())
            proc.wait_until(lambda: proc.status()["event_clients"] == 1, 10, "the replaying client")
            proc.wait_until(lambda: proc.status()["event_clients"] == 0, 15, "the stuck client to be freed")
        finally:
            s.close()
        assert proc.proc.poll() is None


def test_trigger_burst_neither_kills_the_loop_nor_stores_what_it_refused(tmp_path, port):
    """1500 triggers at once: those not served within 5 s got 504, and the loop then crashed on
    their cancelled futures (InvalidStateError): no frame was inspected again, health 503 forever.
    Now the queue is bounded (429 beyond it) and a 504 is withdrawn, never stored."""
    import asyncio

    import aiohttp

    recipe = tmp_path / "external.toml"
    recipe.write_text(DEMO_RECIPE.read_text().replace('mode = "line"', 'mode = "external"'))
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=recipe) as proc:
        proc.wait_healthy()

        async def burst(n: int) -> list:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             headers={"Authorization": f"Bearer {proc.token}"}) as s:
                async def one():
                    async with s.post(proc.base + "/api/trigger", timeout=aiohttp.ClientTimeout(total=60)) as r:
                        return r.status, await r.json()
                return await asyncio.gather(*[one() for _ in range(n)])

        answers = asyncio.run(burst(1500))
        codes = [c for c, _ in answers]
        assert set(codes) <= {200, 429, 504}, set(codes)
        assert 429 in codes, "more triggers than the queue holds were all accepted"
        assert all("nothing was inspected" in b["error"] for c, b in answers if c == 504)
        assert all("too many triggers" in b["error"] for c, b in answers if c == 429)
        ok_ids = {b["result"]["id"] for c, b in answers if c == 200}
        # Exactly the answered triggers were stored: a 504 is never counted behind the caller's back.
        proc.wait_until(lambda: proc.json("GET", "/api/stats")[1]["total"] == len(ok_ids), 10,
                        f"{len(ok_ids)} stored parts")
        time.sleep(1.0)
        assert proc.json("GET", "/api/stats")[1]["total"] == len(ok_ids)
        # And the loop is alive: frames are still processed and a new trigger is served.
        proc.wait_healthy(5)
        assert proc.json("POST", "/api/trigger")[0] == 200
        assert "InvalidStateError" not in proc.log() and "inspection loop error" not in proc.log()


@pytest.fixture
def read_only_dir(tiny_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True, capture_output=True, timeout=10)
    return tiny_fs


@pytest.mark.parametrize("case", ["read-only", "token is a folder"])
def test_unusable_data_dir_is_a_clear_exit_1(tmp_path, port, read_only_dir, case):
    """A read-only data dir (or a folder where the token file goes) gave a traceback."""
    data = read_only_dir if case == "read-only" else tmp_path / "data"
    if case != "read-only":
        (data / "token").mkdir(parents=True)
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}", recipe=DEMO_RECIPE, token=None) as proc:
        assert proc.proc.wait(30) == 1, proc.log()
        log = proc.log()
    assert "Traceback" not in log, log
    assert f"{data / 'token'}" in log and "--token" in log, log


LOAD_SCRIPT = """
import asyncio, sys
import aiohttp
base, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     headers={"Authorization": "Bearer " + token}) as s:
        async def trig():
            try:
                async with s.post(base + "/api/trigger", timeout=aiohttp.ClientTimeout(total=20)) as r:
                    body = await r.json()
                    if r.status == 200:
                        print(body["result"]["id"], flush=True)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                pass
        async def view(path):
            try:
                async with s.get(base + path, timeout=aiohttp.ClientTimeout(total=20)) as r:
                    async for _ in r.content.iter_chunked(65536):
                        pass
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
        await asyncio.gather(*[trig() for _ in range(n)], *[view("/stream.mjpg?overlay=1") for _ in range(4)],
                             *[view("/api/events") for _ in range(2)])
asyncio.run(main())
"""


def test_sigterm_during_a_trigger_burst_exits_0_within_1_s(tmp_path, port):
    """SIGTERM with 800 triggers queued, MJPEG and SSE clients open took 6.7 s: the loop served
    the whole queue first, and the stop waited behind API calls in the default executor."""
    import signal
    import sys
    import threading

    recipe = tmp_path / "external.toml"
    recipe.write_text(DEMO_RECIPE.read_text().replace('mode = "line"', 'mode = "external"'))
    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=recipe) as proc:
        proc.wait_healthy()
        # The load runs in its own process, so this one only watches the clock.
        load = subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT, proc.base, proc.token, "800"],
                                stdout=subprocess.PIPE, text=True)
        try:
            proc.wait_until(lambda: proc.status()["parts_inspected"] >= 10, 15, "triggers being served")
            exited: list[float] = []
            waiter = threading.Thread(target=lambda: (proc.proc.wait(), exited.append(time.monotonic())))
            waiter.start()
            t0 = time.monotonic()
            proc.proc.send_signal(signal.SIGTERM)
            waiter.join(10)
            out, _ = load.communicate(timeout=30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(5)
        assert proc.proc.poll() == 0, proc.log()
        took = exited[0] - t0
        assert took < 1.0, f"exit took {took:.2f} s:\n{proc.log()}"
    # Every trigger answered 200 is stored.
    ok_ids = {int(line) for line in out.split()}
    from helio_gui.runtime.store import ResultStore
    store = ResultStore(tmp_path / "data")
    try:
        assert ok_ids and ok_ids <= store.all_ids()
    finally:
        store.close()


def test_folder_faster_than_the_loop_inspects_every_image(tmp_path, port):
    """A folder at rate=200 inspected 13 of 40 images: the other 27 parts were silently dropped
    (latest frame wins is right for a camera, wrong when every image is a part)."""
    import cv2

    folder = tmp_path / "parts"
    folder.mkdir()
    cap = cv2.VideoCapture(str(DEMO_CLIP))
    for i in range(40):
        ok, img = cap.read()
        assert ok
        cv2.imwrite(str(folder / f"img{i:03d}.jpg"), img)
    cap.release()
    with RuntimeProcess(tmp_path / "data", port, source=f"folder:{folder}?rate=200&loop=0",
                        recipe=DEMO_RECIPE) as proc:
        proc.wait_up()
        proc.wait_until(lambda: proc.status()["source"]["state"] == "ended", 30, "the folder to end")
        proc.wait_until(lambda: proc.json("GET", "/api/stats")[1]["total"] >= 40, 5, "40 parts")
        st = proc.status()
        assert st["source"]["capture_dropped"] == 0 and st["frames_dropped"] == 0, st
        names = [r["source_name"] for r in proc.json("GET", "/api/results?limit=100")[1]["items"]]
        assert sorted(names) == sorted(f"img{i:03d}.jpg" for i in range(40))


def test_concurrent_recipe_puts_leave_the_saved_and_the_running_recipe_equal(tmp_path, port):
    """Two PUTs at once could save one recipe and run the other: after a restart the line
    would silently change recipe."""
    from concurrent.futures import ThreadPoolExecutor

    with RuntimeProcess(tmp_path / "data", port, source=f"file:{DEMO_CLIP}?loop=1&paced=1") as proc:
        proc.wait_healthy()
        texts = [DEMO_RECIPE.read_text().replace('version = "1"', f'version = "{v}"') for v in range(2, 26)]

        def put(text):
            return proc.json("PUT", "/api/recipe", text.encode(), headers={"Content-Type": "application/toml"})[0]

        for _ in range(3):
            with ThreadPoolExecutor(12) as pool:
                assert set(pool.map(put, texts)) == {200}
            running = proc.status()["recipe"]["version"]
            assert proc.json("GET", "/api/recipe")[1]["version"] == running
            saved = (tmp_path / "data" / "recipe.active").read_text()
            assert f'version = "{running}"' in saved, running


def test_full_disk_makes_health_fail_until_results_are_stored_again(tiny_fs, port):
    """With the disk full every part failed to store (not counted) while health said ok."""
    data = tiny_fs / "data"
    recipe = tiny_fs.parent / "every.toml"  # every frame is a part: the disk fills at once
    recipe.write_text(DEMO_RECIPE.read_text().replace('mode = "line"', 'mode = "every_frame"'))
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=recipe) as proc:
        proc.wait_healthy()
        before = proc.json("GET", "/api/stats")[1]["total"]
        fill(tiny_fs)

        def unhealthy():
            status, body = proc.json("GET", "/api/health", token=None)
            return status == 503 and "cannot be stored" in body["reason"] and body
        body = proc.wait_until(unhealthy, 10, "health to report the store failure")
        assert "full" in body["reason"] or "space" in body["reason"], body
        assert proc.json("GET", "/api/stats")[1]["total"] >= before  # nothing stored was lost
        (tiny_fs / "ballast").unlink()
        proc.wait_healthy(10)


def test_csv_export_of_a_big_store_streams_in_flat_memory(tmp_path, port):
    """A 168 MB CSV (20 000 results) raised the runtime's peak memory by 800 MB and held the
    store lock for 10 s (no part could be stored meanwhile); it is now streamed in pieces."""
    import sqlite3

    from helio_gui.runtime.store import ResultStore

    data = tmp_path / "data"
    ResultStore(data).close()  # the real schema
    db = sqlite3.connect(data / "results.sqlite3")
    meas = json.dumps({f"m{i}": 1234.5678 for i in range(300)})
    with db:
        db.executemany("INSERT INTO results (ts, frame_id, frame_ts, verdict, defects, measurements, recipe_name, "
                       "recipe_version, frame_w, frame_h, regions, shift_id, source_name) "
                       "VALUES (?, ?, ?, 'PASS', '[]', ?, 'r', '1', 960, 540, '[]', 1, '')",
                       ((1e9 + i, i, 1e9 + i, meas) for i in range(12000)))
    db.close()
    recipe = tmp_path / "external.toml"
    recipe.write_text(DEMO_RECIPE.read_text().replace('mode = "line"', 'mode = "external"'))
    with RuntimeProcess(data, port, source=f"file:{DEMO_CLIP}?loop=1&paced=1", recipe=recipe) as proc:
        proc.wait_healthy()

        def peak_kb() -> int:
            status = Path(f"/proc/{proc.proc.pid}/status").read_text()
            return int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])
        before = peak_kb()
        status, headers, body = proc.request("GET", "/api/results.csv", timeout=60)
        grown_mb = (peak_kb() - before) / 1024
        assert status == 200 and headers.get("Transfer-Encoding") == "chunked", headers
        lines = body.decode().splitlines()
        assert len(lines) == 12001 and lines[0].startswith("id,time_utc") and lines[-1].startswith("12000,")
        # Before: about 5x the CSV (rows, strings, one body); now a few pieces of 250 rows.
        print(f"CSV {len(body) / 1e6:.0f} MB, peak memory grew {grown_mb:.0f} MB")
        assert grown_mb < len(body) / 2e6, f"peak memory grew by {grown_mb:.0f} MB for a {len(body) / 1e6:.0f} MB CSV"
        # A time range still filters.
        status, _, body = proc.request("GET", f"/api/results.csv?since={1e9 + 100}&until={1e9 + 110}")
        assert status == 200 and len(body.decode().splitlines()) == 11
