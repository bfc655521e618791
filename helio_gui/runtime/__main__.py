"""`helio-runtime`: the headless vision runtime (see docs/runtime-api.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
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


async def serve(runtime, cfg) -> int:
    from aiohttp import web

    from helio_gui.runtime.app import make_app

    app = make_app(runtime, cfg.token, max_body=cfg.max_body)
    # A short shutdown timeout: open MJPEG/SSE streams are ended by on_shutdown, nothing else is
    # worth waiting for, and SIGTERM must finish within a second.
    runner = web.AppRunner(app, shutdown_timeout=0.2, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, shutdown_timeout=0.2)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(f"helio-runtime: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}; "
              "choose another --port or stop what uses it", file=sys.stderr)
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runtime.start()
    port = site._server.sockets[0].getsockname()[1] if site._server and site._server.sockets else cfg.port
    log.info("listening on http://%s:%s (source %s, recipe %s v%s, data %s)", cfg.host, port,
             runtime.source_spec, runtime.recipe.recipe.name, runtime.recipe.recipe.version, cfg.data_dir)
    print(f"helio-runtime listening on http://{cfg.host}:{port}", flush=True)
    await stop.wait()
    t0 = time.monotonic()
    # Capture and inspection stop first (every stored result is already committed), then the
    # server ends the open streams.
    await loop.run_in_executor(None, runtime.stop, 0.3)  # worst case ~0.8 s in all
    await runner.cleanup()
    runtime.store.close()
    log.info("stopped in %.0f ms", (time.monotonic() - t0) * 1000)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `helio-runtime` entry point; returns the process exit code."""
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
        return asyncio.run(serve(runtime, cfg))
    finally:
        runtime.stop(timeout=0.3)


if __name__ == "__main__":
    sys.exit(main())
