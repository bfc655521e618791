"""Entry point of the device image (copied to /opt/helio/bin/helio-device-entry).

Runs inside the container, so it uses only the standard library and the runtime: it must not
import the `helio_gui.engine` package (which needs docker). It makes updates nearly seamless:

1. import everything the runtime needs (numpy, OpenCV, aiohttp: most of the start-up time)
   while the previous runtime is still serving on the same host port;
2. print the HANDOVER_READY marker, then wait until the port can be bound, i.e. the previous
   runtime has stopped (it releases the camera before it exits, so the camera is free too);
3. run `helio-runtime` with the given arguments.

When nothing holds the port (a normal start) step 2 takes no time. The wait is bounded by
HELIO_HANDOVER_WAIT_S (default 60 s); after that the runtime starts anyway and reports the
port conflict itself.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

HANDOVER_READY = "helio-device-entry: ready for handover"


def _preload() -> None:
    import importlib

    for name in ("numpy", "cv2", "aiohttp.web", "helio_gui.runtime.app", "helio_gui.runtime.pipeline",
                 "helio_gui.runtime.store", "helio_gui.vision.sources", "helio_gui.vision.inspect"):
        try:
            importlib.import_module(name)
        except Exception:  # the runtime reports real import problems itself, clearly
            pass


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the runtime's server does
        try:
            sock.bind((host, port))
            return True
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            return True  # another problem: let the runtime report it


def _option(argv: list[str], flag: str, env: str, default: str) -> str:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return os.environ.get(env, default)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # A stop request while we preload or wait is a clean exit (PID 1 would otherwise ignore it).
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if any(a in ("--version", "--help", "-h", "--validate-recipe") for a in argv):
        from helio_gui.runtime.__main__ import main as runtime_main

        return runtime_main(argv) or 0
    _preload()
    host = _option(argv, "--host", "HELIO_HOST", "127.0.0.1")
    port = int(_option(argv, "--port", "HELIO_PORT", "8750"))
    print(HANDOVER_READY, flush=True)
    if not _port_free(host, port):
        print(f"helio-device-entry: waiting for the previous runtime to release {host}:{port}", flush=True)
        deadline = time.monotonic() + float(os.environ.get("HELIO_HANDOVER_WAIT_S", "60"))
        while time.monotonic() < deadline and not _port_free(host, port):
            time.sleep(0.01)
    from helio_gui.runtime.__main__ import main as runtime_main

    return runtime_main(argv) or 0


if __name__ == "__main__":
    sys.exit(main())
