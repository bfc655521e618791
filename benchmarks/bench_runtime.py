"""Runtime benchmarks on real footage; prints its figures.

    .venv/bin/python benchmarks/bench_runtime.py [--seconds 10]

1. Unpaced throughput of the inspection loop on conveyor_belt.mp4 with its recipe, as a ratio
   to the raw decode rate of the same file measured in the same run (target >= 0.5).
2. Capture-to-result latency p50/p95 of the real `helio-runtime` process when paced at 30 fps
   (target p95 <= 15 ms): the demo clip (30 fps) and conveyor_belt.mp4 re-timed to 30 fps.
3. CPU of the runtime process serving /stream.mjpg at 720p to 0, 1 and 3 clients, with the
   number of JPEG encodes per frame (one encode per frame, whatever the number of clients).

Derived clips go to a temporary folder (never into the repo).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402

from tests.runtime.proc import CONVEYOR_RECIPE, RuntimeProcess  # noqa: E402

SHARED = Path(os.environ.get("HELIO_SHARED_DATA", REPO.parent / "shared" / "data"))
CONVEYOR = SHARED / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"
DEMO = REPO / "resources" / "demo" / "demo_conveyor.mp4"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def raw_decode_fps(path: Path) -> tuple[float, int]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    t0 = time.perf_counter()
    while cap.read()[0]:
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return n / dt, n


def unpaced_throughput(path: Path, recipe: Path, work: Path) -> tuple[float, int, dict]:
    """The real Runtime (capture thread, trigger, inspector, store) in this process, unpaced."""
    from helio_gui.runtime.pipeline import Runtime
    from helio_gui.runtime.store import ResultStore

    store = ResultStore(work / "unpaced")
    rt = Runtime(f"file:{path}?loop=0&paced=0", recipe, store, data_dir=work / "unpaced")
    t0 = time.perf_counter()
    rt.start()
    deadline = time.monotonic() + 120
    while not rt.capture.ended and time.monotonic() < deadline:
        time.sleep(0.002)
    # ended is set after the last frame was handed over; let the loop finish it
    last = -1
    while rt.frames_processed != last:
        last = rt.frames_processed
        time.sleep(0.02)
    dt = time.perf_counter() - t0 - 0.02
    n = rt.frames_processed
    stats = store.stats()
    rt.stop()
    store.close()
    return n / dt, n, stats


def retime(src: Path, dst: Path, fps: int, scale: str | None = None) -> Path:
    vf = [f"setpts=PTS*{90 / fps:.6f}"] if "conveyor" in src.name else []
    if scale:
        vf.append(f"scale={scale}")
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(src)]
    if vf:
        cmd += ["-vf", ",".join(vf)]
    cmd += ["-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-an", str(dst)]
    subprocess.run(cmd, check=True, timeout=300)
    return dst


def paced_latency(path: Path, recipe: Path | None, work: Path, seconds: float, name: str) -> dict:
    port = free_port()
    with RuntimeProcess(work / f"lat-{name}", port, source=f"file:{path}?loop=1&paced=1", recipe=recipe) as proc:
        proc.wait_healthy()
        time.sleep(seconds)
        st = proc.status()
        proc.terminate()
    return st


class Viewer(threading.Thread):
    def __init__(self, port: int, token: str, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.token, self.stop = port, token, stop
        self.bytes = 0
        self.parts = 0

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(f"GET /stream.mjpg?fps=30&quality=80 HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {self.token}\r\n\r\n".encode())
        try:
            while not self.stop.is_set():
                data = s.recv(1 << 20)
                if not data:
                    break
                self.bytes += len(data)
                self.parts += data.count(b"--helioframe\r\n")
        finally:
            s.close()


def mjpeg_cpu(clip720: Path, work: Path, seconds: float) -> list[dict]:
    port = free_port()
    rows = []
    with RuntimeProcess(work / "mjpeg", port, source=f"file:{clip720}?loop=1&paced=1", recipe=CONVEYOR_RECIPE) as proc:
        proc.wait_healthy()
        time.sleep(1.0)
        for clients in (0, 1, 3):
            stop = threading.Event()
            viewers = [Viewer(port, proc.token, stop) for _ in range(clients)]
            for v in viewers:
                v.start()
            time.sleep(1.0)  # settle
            s0 = proc.status()["stream"]
            c0, t0 = cpu_seconds(proc.proc.pid), time.monotonic()
            p0 = sum(v.parts for v in viewers)
            time.sleep(seconds)
            c1, t1 = cpu_seconds(proc.proc.pid), time.monotonic()
            s1 = proc.status()["stream"]
            parts = sum(v.parts for v in viewers) - p0
            stop.set()
            for v in viewers:
                v.join(5)
            frames = s1["frames_seen"] - s0["frames_seen"]
            encodes = s1["encodes"] - s0["encodes"]
            rows.append({"clients": clients, "cpu_percent": 100 * (c1 - c0) / (t1 - t0),
                         "frames": frames, "encodes": encodes,
                         "encodes_per_frame": encodes / frames if frames else 0.0,
                         "parts_per_client_per_s": parts / max(1, clients) / (t1 - t0),
                         "encode_ms_avg": s1["encode_ms_avg"]})
            time.sleep(1.5)  # viewers gone before the next round
        proc.terminate()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time per figure")
    args = ap.parse_args()
    if not CONVEYOR.exists():
        print(f"missing {CONVEYOR}; set HELIO_SHARED_DATA", file=sys.stderr)
        return 1
    print(f"machine: {os.cpu_count()} CPUs, OpenCV {cv2.__version__}, threads {cv2.getNumThreads()}")
    with tempfile.TemporaryDirectory(prefix="helio-bench-") as tmp:
        work = Path(tmp)

        print("\n[1] unpaced throughput, conveyor_belt.mp4 + examples/recipes/conveyor_belt.toml")
        decode_fps, n = raw_decode_fps(CONVEYOR)
        loop_fps, m, stats = unpaced_throughput(CONVEYOR, CONVEYOR_RECIPE, work)
        print(f"    raw decode      {decode_fps:8.1f} fps ({n} frames)")
        print(f"    runtime loop    {loop_fps:8.1f} fps ({m} frames; parts {stats['total']}, "
              f"pass {stats['pass']}, fail {stats['fail']}, defects {stats['defects']})")
        print(f"    ratio           {loop_fps / decode_fps:8.2f}   (target >= 0.5)")

        print(f"\n[2] capture-to-result latency, real helio-runtime process paced at 30 fps, {args.seconds:.0f} s each")
        conveyor30 = retime(CONVEYOR, work / "conveyor30.mp4", 30)
        for name, clip, recipe in (("demo clip 640x360 + demo recipe", DEMO, None),
                                   ("conveyor 960x540 re-timed to 30 fps + its recipe", conveyor30, CONVEYOR_RECIPE)):
            st = paced_latency(clip, recipe, work, args.seconds, name.split()[0])
            lat, rl = st["latency_ms"], st["result_latency_ms"]
            print(f"    {name}:")
            print(f"      every frame  p50 {lat['p50']:6.2f} ms  p95 {lat['p95']:6.2f} ms  max {lat['max']:6.2f} ms"
                  f"   (target p95 <= 15 ms)")
            if rl.get("p50") is not None:
                print(f"      part frames  p50 {rl['p50']:6.2f} ms  p95 {rl['p95']:6.2f} ms  max {rl['max']:6.2f} ms"
                      f"   ({st['parts_inspected']} parts, stored with fsync)")
            print(f"      fps in {st['source']['fps_in']}, processed {st['fps_processed']}, "
                  f"dropped {st['frames_dropped']}")

        print(f"\n[3] CPU of the runtime process serving MJPEG at 1280x720 (30 fps source, q80), {args.seconds:.0f} s each")
        clip720 = retime(CONVEYOR, work / "conveyor720.mp4", 30, scale="1280:720")
        for row in mjpeg_cpu(clip720, work, args.seconds):
            print(f"    {row['clients']} client(s): CPU {row['cpu_percent']:5.1f} % of one core, "
                  f"{row['encodes']} encodes for {row['frames']} frames "
                  f"({row['encodes_per_frame']:.2f} per frame), "
                  f"{row['parts_per_client_per_s']:.1f} parts/s per client, encode {row['encode_ms_avg']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
