"""`helio-runtime`: the headless vision runtime (see docs/runtime-api.md)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("helio_gui.runtime")


def validate_recipe(path: str) -> int:
    """Checks one recipe file: prints `file:line: field: message` lines and returns 1 on error.

    It builds the tools exactly as the runtime does (reference images are loaded), so a recipe
    that passes here also starts."""
    from helio_gui.runtime.pipeline import load_recipe_file
    from helio_gui.vision.recipe import RecipeError

    p = Path(path)
    if not p.is_file():
        print(f"{path}:0: : the file does not exist or is not a file", file=sys.stderr)
        return 1
    try:
        recipe = load_recipe_file(p).recipe
    except RecipeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{path}: ok: recipe {recipe.name!r} version {recipe.version}, {len(recipe.tools)} tool(s)")
    return 0


STOP_DEADLINE_S = 0.85


def _exit_now(code: int | None = None) -> None:
    """Ends the process at once (flushing logs). Without a code: the stop deadline passed."""
    if code is None:
        log.warning("the orderly stop took over %.2f s; exiting now (every reported result is committed)",
                    STOP_DEADLINE_S)
        code = 0
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def serve(runtime, cfg) -> int:
    from aiohttp import web

    from helio_gui.runtime.app import make_app

    app = make_app(runtime, cfg.token, max_body=cfg.max_body)
    # A short shutdown timeout: open MJPEG/SSE streams are ended by on_shutdown and a trigger still
    # waiting is failed by runtime.stop; with hundreds of connections open, 0.2 s per connection
    # stage took 0.6-1.4 s in all under load, and SIGTERM must finish within a second.
    runner = web.AppRunner(app, shutdown_timeout=0.05, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, shutdown_timeout=0.05)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"helio-runtime: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}; "
              "choose another --port or stop what uses it", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signalled_at: list[float] = []

    def on_signal() -> None:
        if not signalled_at:
            signalled_at.append(time.monotonic())
            # The orderly stop usually takes 0.05-0.4 s, but hundreds of open connections on a
            # busy CPU can stretch it past the 1 s budget. Every result is committed before it
            # is reported (WAL, synchronous=FULL), so exiting here loses nothing a client saw.
            deadline = threading.Timer(STOP_DEADLINE_S, _exit_now)
            deadline.daemon = True
            deadline.start()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    _watch_parent(loop, on_signal)
    runtime.start()
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else cfg.port
    log.info("listening on http://%s:%s (source %s, recipe %s v%s, data %s)", cfg.host, port,
             runtime.source_spec, runtime.recipe.recipe.name, runtime.recipe.recipe.version, cfg.data_dir)
    print(f"helio-runtime listening on http://{cfg.host}:{port}", flush=True)
    await stop.wait()
    t0 = signalled_at[0] if signalled_at else time.monotonic()
    log.info("stop requested; handling began after %.0f ms", (time.monotonic() - t0) * 1000)
    # Capture/inspection stop on their own thread (the default executor may be full of API calls
    # waiting for the store) while the open streams are ended; then the store is checkpointed
    # and the process exits. Every result was committed before it was published, so nothing a
    # client saw is lost. The per-connection graceful shutdown and interpreter teardown are
    # skipped: with hundreds of connections on a busy CPU they took 0.6-4 s, and the kernel
    # closes the sockets anyway.
    stopper = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stop")
    capture_done = loop.run_in_executor(stopper, runtime.stop, 0.3)
    await site.stop()
    await runner.shutdown()  # on_shutdown: SSE and MJPEG streams end
    t1 = time.monotonic()
    await capture_done
    t2 = time.monotonic()
    runtime.store.close()
    t3 = time.monotonic()
    log.info("stopped in %.0f ms (streams %.0f, capture and loop %.0f more, store %.0f)", (t3 - t0) * 1000,
             (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
    _exit_now(0)
    return 0  # not reached


def _watch_parent(loop: asyncio.AbstractEventLoop, on_signal) -> None:
    """Stops the runtime, as SIGTERM would, once the process named by HELIO_EXIT_WITH_PARENT is gone.

    The GUI sets it for its embedded runtime: a GUI killed with SIGKILL (or crashed) runs no
    clean-up, and its runtime would otherwise keep the camera and the port forever."""
    try:
        parent = int(os.environ.get("HELIO_EXIT_WITH_PARENT", "0"))
    except ValueError:
        parent = 0
    if parent <= 0:
        return

    def watch() -> None:
        # Reparenting (to init or a subreaper) is the one signal that needs no permissions.
        while os.getppid() == parent:
            time.sleep(0.5)
        log.warning("the process that started this runtime (pid %s) is gone: stopping", parent)
        loop.call_soon_threadsafe(on_signal)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """The `helio-runtime` entry point. Returns the exit code when it does not serve (bad
    options, --validate-recipe, cannot listen); after serving, SIGTERM/SIGINT end the process
    with `os._exit(0)` once everything is stored and closed."""
    from helio_gui.runtime.config import ConfigError, DataDirError, build_parser, config_from_args

    # Until the event loop takes over SIGTERM, a stop request during start-up still exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.validate_recipe:
        return validate_recipe(args.validate_recipe)
    try:
        cfg = config_from_args(args)
    except DataDirError as exc:
        print(f"helio-runtime: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"helio-runtime: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from helio_gui.runtime.pipeline import Runtime
    from helio_gui.runtime.store import ResultStore, Retention, StoreError
    from helio_gui.vision.recipe import RecipeError
    from helio_gui.vision.sources import SourceError

    try:
        store = ResultStore(cfg.data_dir, Retention(cfg.max_reject_images, cfg.max_reject_bytes))
    except StoreError as exc:
        print(f"helio-runtime: {exc}", file=sys.stderr)
        return 1
    try:
        runtime = Runtime(cfg.source, cfg.recipe, store, data_dir=cfg.data_dir,
                          stall_timeout_s=cfg.stall_timeout_s)
    except SourceError as exc:
        store.close()
        print(f"helio-runtime: bad source {cfg.source!r}: {exc}", file=sys.stderr)
        return 2
    except RecipeError as exc:
        store.close()
        print(f"helio-runtime: the recipe is invalid:\n{exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        store.close()
        print(f"helio-runtime: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(runtime, cfg))  # after a stop, serve() ends the process itself
    finally:
        runtime.stop(timeout=0.3)


if __name__ == "__main__":
    sys.exit(main())
