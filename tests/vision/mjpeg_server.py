"""A tiny real MJPEG-over-HTTP camera for tests, whose behaviour can be switched:
"live" (a new image each time), "freeze" (the same JPEG again and again), "hang" (the
connection stays open, nothing is sent), "down" (connections are refused or closed)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


class MjpegCamera:
    def __init__(self, fps: float = 25.0, size=(160, 120)):
        self.fps = fps
        self.size = size
        self.mode = "live"
        self.connections = 0
        self._stop = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if cam.mode == "down" or cam._stop.is_set():
                    self.connection.close()
                    return
                cam.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                n = 0
                frozen = None
                try:
                    while not cam._stop.is_set():
                        mode = cam.mode
                        if mode == "down":
                            return
                        if mode == "hang":
                            time.sleep(0.05)
                            continue
                        if mode == "freeze" and frozen is not None:
                            jpg = frozen
                        else:
                            img = np.zeros((cam.size[1], cam.size[0], 3), np.uint8)
                            cv2.putText(img, str(n), (10, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
                            img[:, n % cam.size[0]] = (0, 255, 0)
                            jpg = cv2.imencode(".jpg", img)[1].tobytes()
                            frozen = jpg
                        n += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1.0 / cam.fps)
                except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
                    return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mjpeg-camera", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2)
        # Handler threads notice the stop flag within one frame period.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(
                t.name.startswith("Thread-") and t.is_alive() and t is not threading.current_thread()
                for t in threading.enumerate() if "process_request" in str(getattr(t, "_target", ""))):
            time.sleep(0.05)
