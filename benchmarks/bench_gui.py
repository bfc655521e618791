#!/usr/bin/env python3
"""GUI benchmark: a 1080p MJPEG source into one live feed, and embedded cold start.

    .venv/bin/python benchmarks/bench_gui.py                 # short run (about 1 minute)
    .venv/bin/python benchmarks/bench_gui.py --rss-minutes 10  # the record run
    .venv/bin/python benchmarks/bench_gui.py --full-decode     # without the reduced JPEG decode

Figures (targets from issue 5):
  frames painted per second at 1080p60        target: every source frame (60)
  display latency added by the GUI            target: <= 16.7 ms (frame decoded -> painted)
  GUI-thread CPU at 1080p30                   target: <= 20 % of one core
  resident memory over N minutes at 1080p30   target: flat within 2 %
  cold start to first painted frame (embedded mode)   target: <= 1.5 s

The source is a separate process serving pre-encoded 1080p JPEGs (real conveyor footage,
upscaled) over the runtime's MJPEG wire format, so the figures are the GUI's own: receiving,
decoding (reader thread), and painting (GUI thread). Qt uses DISPLAY if set, else offscreen.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "conveyor_videos" / "nivedha-sai__Object-recognition" / "conveyor_belt.mp4"


def make_jpegs(video: Path, n: int = 60) -> list[bytes]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        img = cv2.resize(img, (1920, 1080), interpolation=cv2.INTER_LINEAR)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    cap.release()
    if not out:
        sys.exit(f"cannot read frames from {video}; pass --video with a video file")
    return out


def serve(port: int, jpegs: list[bytes], fps: float, ready) -> None:
    """One-client MJPEG server paced at `fps` (a frame late is sent late, never skipped)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4)
    ready.set()
    while True:
        conn, _ = srv.accept()
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=helioframe\r\n"
                         b"Connection: close\r\n\r\n")
            t0 = time.monotonic()
            i = 0
            while True:
                jpg = jpegs[i % len(jpegs)]
                head = (f"--helioframe\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n"
                        f"X-Frame-Id: {i}\r\nX-Timestamp: {time.time():.6f}\r\n\r\n").encode()
                conn.sendall(head + jpg + b"\r\n")
                i += 1
                delay = t0 + i / fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except OSError:
            pass
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


FEED_SIZES = {"main": (714, 712),  # the live page's single feed in a 1280x800 main window
              "window": (1260, 780)}  # a bare FeedView filling a 1280x800 window (the older runs)
OPTS = {"feed_size": FEED_SIZES["main"], "reduce": True}


def run_feed(app, jpegs, fps: float, seconds: float, warmup: float = 3.0, rss_every: float = 0.0):
    """Streams at `fps` into a FeedView of OPTS["feed_size"]; returns the measured figures."""
    from PySide6 import QtCore, QtWidgets

    from helio_gui.client import MjpegReader
    from helio_gui.ui.feed_view import FeedView

    port = free_port()
    ready = mp.Event()
    server = mp.Process(target=serve, args=(port, jpegs, fps, ready), daemon=True)
    server.start()
    ready.wait(10)

    class Bridge(QtCore.QObject):
        frame_ready = QtCore.Signal()

    bridge = Bridge()
    win = QtWidgets.QWidget()
    lay = QtWidgets.QVBoxLayout(win)
    view = FeedView("bench")
    lay.addWidget(view)
    lay.setContentsMargins(0, 0, 0, 0)
    view.setFixedSize(*OPTS["feed_size"])
    win.show()
    pending = [False]

    def on_frame():  # reader thread: one pending notification at most (as the presenter does)
        if not pending[0]:
            pending[0] = True
            bridge.frame_ready.emit()

    def pull():
        pending[0] = False
        view.set_frame(reader.take())

    bridge.frame_ready.connect(pull, QtCore.Qt.ConnectionType.QueuedConnection)
    reader = MjpegReader("127.0.0.1", port, "", on_frame=on_frame)
    if OPTS["reduce"]:  # as the live page wires it: decode no more pixels than the view shows
        reader.display_box = view.display_box()
        view.display_box_changed.connect(lambda w, h: setattr(reader, "display_box", (w, h)))
    latencies_decoded, latencies_received = [], []

    def on_painted(_fid):
        if rss_every:
            return  # the memory run keeps no growing per-frame lists of its own
        f = view.current_frame
        now = time.monotonic()
        latencies_decoded.append(now - f.decoded)
        latencies_received.append(now - f.received)

    view.frame_painted.connect(on_painted)
    reader.start()
    rss = []

    def spin(duration):
        end = time.monotonic() + duration
        next_rss = time.monotonic()
        while time.monotonic() < end:
            app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            if rss_every and time.monotonic() >= next_rss:
                rss.append((time.monotonic(), rss_bytes()))
                next_rss += rss_every
            time.sleep(0.0005)  # an event loop that sleeps when idle, like exec()

    spin(warmup)
    latencies_decoded.clear()
    latencies_received.clear()
    p0, d0, dr0 = view.frames_painted, reader.frames_decoded, reader.frames_dropped
    cpu0, t0 = time.thread_time(), time.monotonic()
    spin(seconds)
    cpu1, t1 = time.thread_time(), time.monotonic()
    dt = t1 - t0
    out = {
        "source_fps": fps,
        "decoded_fps": (reader.frames_decoded - d0) / dt,
        "painted_fps": (view.frames_painted - p0) / dt,
        "dropped": reader.frames_dropped - dr0,
        "decoded_size": view.current_frame.image.shape[1::-1] if view.current_frame is not None else None,
        "gui_cpu_pct": 100.0 * (cpu1 - cpu0) / dt,
        "lat_decoded_ms": sorted(1000 * x for x in latencies_decoded),
        "lat_received_ms": sorted(1000 * x for x in latencies_received),
        "rss": rss,
    }
    reader.stop()
    view.shutdown()
    win.close()
    win.deleteLater()
    server.terminate()
    server.join(5)
    return out


def pct(values, q):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def cold_start(runs: int) -> list[float]:
    """Wall time from launching `helio-gui` (embedded, demo footage) to its first painted frame."""
    times = []
    env = dict(os.environ)
    if not env.get("DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    env.setdefault("HELIO_GUI_CONFIG_DIR", "/tmp/helio-bench-gui/config")
    env.setdefault("HELIO_GUI_LOG_DIR", "/tmp/helio-bench-gui/log")
    for i in range(runs):
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "helio_gui.ui", "--print-timing", "--quit-after", "8",
                                 "--data-dir", f"/tmp/helio-bench-gui/data{i}"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        got = None
        try:
            for line in proc.stdout:
                if line.startswith("first frame painted"):
                    got = time.monotonic() - t0
                    break
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        times.append(got if got is not None else float("nan"))
    return times


def run_rates(app, jpegs, seconds: float) -> None:
    r60 = run_feed(app, jpegs, 60.0, seconds)
    print(f"\n1080p60: source {r60['source_fps']:.0f} fps, decoded {r60['decoded_fps']:.1f} fps, "
          f"painted {r60['painted_fps']:.1f} fps (target 60), dropped (latest wins) {r60['dropped']}; "
          f"decoded at {r60['decoded_size']}")
    ld, lr = r60["lat_decoded_ms"], r60["lat_received_ms"]
    print(f"  GUI latency decoded->painted: p50 {pct(ld, .5):.1f} ms, p95 {pct(ld, .95):.1f} ms, "
          f"max {max(ld, default=float('nan')):.1f} ms (target <= 16.7 ms)")
    print(f"  received->painted (incl. JPEG decode): p50 {pct(lr, .5):.1f} ms, p95 {pct(lr, .95):.1f} ms")
    print(f"  GUI-thread CPU at 60 fps: {r60['gui_cpu_pct']:.1f} % of a core")
    r30 = run_feed(app, jpegs, 30.0, seconds)
    print(f"\n1080p30: painted {r30['painted_fps']:.1f} fps, GUI-thread CPU {r30['gui_cpu_pct']:.1f} % of a core "
          f"(target <= 20 %)")


def run_rss(app, jpegs, minutes: float) -> None:
    rm = run_feed(app, jpegs, 30.0, minutes * 60, warmup=5.0, rss_every=2.0)
    samples = rm["rss"]
    if len(samples) < 10:
        print("\nRSS run too short for a figure (use --rss-minutes 1 or more)")
        return
    # Frames are 6 MB each, so single samples jump by whole frames; compare the medians of the
    # first and last tenth of the run (after warm-up) for the trend, and report the spread.
    vals = [v for _, v in samples]
    tenth = max(3, len(vals) // 10)
    first, last = statistics.median(vals[:tenth]), statistics.median(vals[-tenth:])
    per_min = []
    t0 = samples[0][0]
    for m in range(int(minutes) + 1):
        window = [v for t, v in samples if m * 60 <= t - t0 < (m + 1) * 60]
        if window:
            per_min.append(statistics.median(window) / 2**20)
    print(f"\nRSS over {minutes:g} min at 1080p30: median first tenth {first / 2**20:.1f} MiB, last tenth "
          f"{last / 2**20:.1f} MiB, change {100 * (last - first) / first:+.2f} % (target within 2 %); "
          f"min {min(vals) / 2**20:.1f}, max {max(vals) / 2**20:.1f} MiB")
    print("  per-minute medians (MiB): " + ", ".join(f"{v:.1f}" for v in per_min))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="footage to upscale to 1080p")
    ap.add_argument("--seconds", type=float, default=15.0, help="measuring time per fps run")
    ap.add_argument("--rss-minutes", type=float, default=0.5, help="minutes of the memory run (10 for the record)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--only-rss", action="store_true", help="only the memory run")
    ap.add_argument("--feed-size", default="main", help="the feed's size: main (its size on the live page "
                    "of a 1280x800 window, 714x712), window (1260x780), or WxH")
    ap.add_argument("--full-decode", action="store_true", help="always decode full size (no reduced JPEG decode)")
    args = ap.parse_args()
    try:
        OPTS["feed_size"] = FEED_SIZES.get(args.feed_size) or tuple(int(v) for v in args.feed_size.split("x"))
    except ValueError:
        ap.error("--feed-size: main, window, or WxH")
    OPTS["reduce"] = not args.full_decode

    if not os.environ.get("DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    mp.set_start_method("fork")
    from helio_gui.ui.memory import tune_allocator

    tuned = tune_allocator()  # as helio-gui does at start
    jpegs = make_jpegs(args.video)
    from PySide6 import QtWidgets

    from helio_gui.ui import theme

    app = QtWidgets.QApplication([])
    theme.apply(app)
    print(f"platform: {app.platformName()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"allocator tuned: {tuned}; feed {OPTS['feed_size'][0]}x{OPTS['feed_size'][1]}, "
          f"{'reduced' if OPTS['reduce'] else 'full'} decode; source 1920x1080 JPEG "
          f"(~{sum(map(len, jpegs)) // len(jpegs) // 1024} KiB/frame) from {args.video.name}")
    if not args.only_rss:
        run_rates(app, jpegs, args.seconds)
    run_rss(app, jpegs, args.rss_minutes)
    if not (args.skip_cold or args.only_rss):
        times = cold_start(args.cold_runs)
        print(f"\ncold start to first painted frame (embedded, demo footage): "
              + ", ".join(f"{t:.2f} s" for t in times)
              + f"; median {statistics.median(times):.2f} s (target <= 1.5 s), load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
