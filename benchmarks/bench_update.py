"""Feed gap and lost results during a runtime update, with the real device image.

    sudo .venv/bin/python benchmarks/bench_update.py [--rounds 3] [--engine-dir DIR]

Starts its own private engine (tests/support/private_engine.py), builds Dockerfile.device on the
local Debian base (cached layers after the first run), runs the real runtime on the real
conveyor video (or the demo clip), and measures, for each update:
  - feed gap: the longest time between two frames received on /stream.mjpg across the update
    (the last frame from the old runtime to the first from the new, reconnecting at once);
  - results lost: results seen on /api/events (SSE) missing from the store afterwards, plus
    holes in the stored id sequence;
for our update (create the new container while the old runs, stop with SIGTERM under
docker-init, start, health gate) and, in the same run, a Watchtower-style update (stop with
the default 10 s timeout, remove, then create and start). Target: gap <= 1.0 s, 0 lost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helio_gui import RUNTIME_API_VERSION  # noqa: E402
from helio_gui.engine import HealthCheckConfig, Mount, RuntimeProfile, connect  # noqa: E402
from tests.support.private_engine import PrivateEngine, debian_base_image  # noqa: E402

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FrameWatcher(threading.Thread):
    """Reads /stream.mjpg and records the arrival time of every frame; reconnects at once."""

    def __init__(self, port: int) -> None:
        super().__init__(name="bench-mjpeg", daemon=True)
        self.port = port
        self.times: list[float] = []
        self.connections = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", f"/stream.mjpg?token={TOKEN}&fps=30&quality=50")
                resp = conn.getresponse()
                if resp.status != 200:
                    raise OSError(resp.status)
                self.connections += 1
                while not self.stop.is_set():
                    line = resp.readline()
                    if not line:
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                        while resp.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        resp.read(length)
                        self.times.append(time.monotonic())
                conn.close()
            except Exception:
                time.sleep(0.01)  # the port is closed during the swap: retry at once

    def gap(self, start: float, end: float) -> float:
        ts = [t for t in self.times if start - 1.0 <= t <= end]
        return max((b - a for a, b in zip(ts, ts[1:])), default=float("nan"))


class ResultWatcher(threading.Thread):
    """Reads /api/events and records every result id; resumes with Last-Event-ID."""

    def __init__(self, port: int) -> None:
        super().__init__(name="bench-sse", daemon=True)
        self.port = port
        self.ids: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3)
                headers = {"Authorization": f"Bearer {TOKEN}"}
                if self.ids:
                    headers["Last-Event-ID"] = str(self.ids[-1])
                conn.request("GET", "/api/events", headers=headers)
                resp = conn.getresponse()
                event, rid = None, None
                while not self.stop.is_set():
                    line = resp.readline()
                    if not line:
                        break
                    line = line.strip()
                    if not line:  # end of one message: fields may come in any order
                        if event == b"result" and rid is not None and (not self.ids or rid > self.ids[-1]):
                            self.ids.append(rid)
                        event, rid = None, None
                    elif line.startswith(b"event:"):
                        event = line.split(b":", 1)[1].strip()
                    elif line.startswith(b"id:"):
                        rid = int(line.split(b":", 1)[1])
                conn.close()
            except Exception:
                time.sleep(0.05)


def stored_ids(profile: RuntimeProfile) -> list[int]:
    ids: list[int] = []
    before = None
    while True:
        url = profile.base_url + "/api/results?limit=500" + (f"&before_id={before}" if before else "")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            body = json.loads(resp.read())
        ids += [item["id"] for item in body["items"]]
        before = body.get("next_before_id")
        if not before:
            return sorted(ids)


def watchtower_update(engine, profile: RuntimeProfile, image: str) -> RuntimeProfile:
    """What Watchtower does: stop (default timeout), remove, create from config, start."""
    api = engine.client.api
    old = engine._container(profile.runtime_container_name)
    api.stop(old["Id"], timeout=10)
    api.remove_container(old["Id"])
    new_profile = profile.model_copy(update={"image": image})
    cid = engine.client.containers.create(**new_profile.create_kwargs()).id
    api.start(cid)
    return new_profile


def measure(name: str, engine, profile: RuntimeProfile, do_update) -> dict:
    frames, results = FrameWatcher(profile.port), ResultWatcher(profile.port)
    frames.start()
    results.start()
    time.sleep(4)  # steady state, some results
    start = time.monotonic()
    new_profile = do_update()
    # Until the new runtime streams again (Watchtower has no gate of its own).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (frames.times and frames.times[-1] > start and frames.connections >= 2):
        time.sleep(0.05)
    time.sleep(4)  # new runtime in steady state
    end = time.monotonic()
    frames.stop.set()
    results.stop.set()
    frames.join(5)
    results.join(5)
    stored = stored_ids(new_profile)
    seen = set(results.ids)
    lost_seen = sorted(seen - set(stored))
    holes = sorted(set(range(stored[0], stored[-1] + 1)) - set(stored)) if stored else []
    out = {"method": name, "gap_s": round(frames.gap(start, end), 3), "update_s": None,
           "results_seen": len(seen), "results_lost": len(lost_seen) + len(holes),
           "frames": len([t for t in frames.times if start <= t <= end])}
    return out, new_profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine-dir", default=os.environ.get("HELIO_BENCH_ENGINE_DIR", "/var/tmp/helio-bench-engine"))
    args = parser.parse_args()

    from tests.support.device_image import device_build_context

    private = PrivateEngine(root=Path(args.engine_dir)).start()
    client = private.client()
    engine = connect(private.base_url, state_dir=tempfile.mkdtemp(prefix="helio-bench-state-"))
    volume = f"helio-bench-{uuid.uuid4().hex[:8]}"
    profile = None
    try:
        base = debian_base_image(client)
        with tempfile.TemporaryDirectory() as tmp:
            context = device_build_context(Path(tmp) / "ctx")
            t = time.monotonic()
            images = {}
            for version in ("0.1.0", "0.2.0"):
                images[version] = f"helio-bench/device:{version}"
                engine.build_image(context, images[version], {"BASE_IMAGE": base, "VERSION": version,
                                                              "RUNTIME_API": RUNTIME_API_VERSION})
            print(f"device images built in {time.monotonic() - t:.1f} s")
        video = REPO.parent / "shared" / "data" / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"
        source, mounts = (("file:/video/conveyor.mp4?loop=1&paced=1", [Mount(source=str(video), target="/video/conveyor.mp4")])
                          if video.is_file() else (None, []))
        # The conveyor video comes with its own recipe (parts are counted, so results flow).
        recipe = str(REPO / "examples" / "recipes" / "conveyor_belt.toml") if source else None
        print(f"source: {video if source else 'demo clip in the image'}")
        port = free_port()
        profile = RuntimeProfile(name="bench", image=images["0.1.0"], port=port, token=TOKEN, source=source,
                                 recipe_file=recipe,
                                 mounts=mounts, data_volume=volume, labels={"io.heliovision.bench": "1"},
                                 healthcheck=HealthCheckConfig(interval_s=1, start_period_s=10), health_timeout_s=90)
        engine.start(profile)
        ok, why = engine.wait_healthy(profile, profile.runtime_container_name, 90)
        assert ok, why
        rows = []
        for rnd in range(args.rounds):
            for method in ("helio", "watchtower"):
                target = images["0.2.0"] if profile.image == images["0.1.0"] else images["0.1.0"]
                if method == "helio":
                    def run(p=profile, target=target):
                        t0 = time.monotonic()
                        report = engine.update(p, target)
                        assert report.success, report.summary()
                        run.update_s = time.monotonic() - t0
                        return report.profile
                else:
                    def run(p=profile, target=target):
                        t0 = time.monotonic()
                        new = watchtower_update(engine, p, target)
                        run.update_s = time.monotonic() - t0
                        return new
                row, profile = measure(method, engine, profile, run)
                row["update_s"] = round(run.update_s, 2)
                row["round"] = rnd + 1
                rows.append(row)
                print(f"round {rnd + 1} {method:10s} feed gap {row['gap_s']:.3f} s  results lost {row['results_lost']}"
                      f" (of {row['results_seen']} seen)  update call {row['update_s']:.2f} s")
                ok, why = engine.wait_healthy(profile, profile.runtime_container_name, 90)
                assert ok, why
        for method in ("helio", "watchtower"):
            gaps = sorted(r["gap_s"] for r in rows if r["method"] == method)
            lost = sum(r["results_lost"] for r in rows if r["method"] == method)
            print(f"{method:10s} feed gap: min {gaps[0]:.3f} s, median {gaps[len(gaps) // 2]:.3f} s, "
                  f"max {gaps[-1]:.3f} s; results lost: {lost}  (target gap <= 1.0 s, 0 lost)")
        return 0
    finally:
        if profile is not None:
            try:
                engine.remove(profile)
            except Exception:
                pass
        try:
            client.volumes.get(volume).remove(force=True)
        except Exception:
            pass
        engine.close()
        client.close()
        private.stop()


if __name__ == "__main__":
    sys.exit(main())
