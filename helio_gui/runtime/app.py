"""The local HTTP API (docs/runtime-api.md) over a running `Runtime`.

Handlers never block the loop: store queries and recipe builds run in the default executor,
frames come through the broadcaster, results through the event hub.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from helio_gui.runtime.broadcast import BOUNDARY, MjpegBroadcaster
from helio_gui.runtime.events import EventHub, format_event, is_close
from helio_gui.runtime.pipeline import Runtime, TriggerBusy, _fmt_of  # noqa: F401  (Runtime re-exported)
from helio_gui.runtime.store import StoreError

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", Runtime)
HUB = web.AppKey("hub", EventHub)
BROADCASTER = web.AppKey("broadcaster", MjpegBroadcaster)
TOKEN = web.AppKey("token", str)
STOPPING = web.AppKey("stopping", asyncio.Event)

STATUS_INTERVAL_S = 1.0
KEEPALIVE_S = 15.0
WRITE_TIMEOUT_S = 5.0  # a viewer that takes no data for this long is gone: free it


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _blocking(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# -- middlewares -------------------------------------------------------------------------------
@web.middleware
async def auth_and_errors(request: web.Request, handler):
    if request.path != "/api/health":
        token = request.app[TOKEN]
        given = ""
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        elif "token" in request.query:
            given = request.query["token"]
        if not given:
            return error(401, "a token is required: send 'Authorization: Bearer TOKEN' (or ?token= for "
                              "stream viewers); it is in DATA_DIR/token unless one was configured")
        # Header bytes that are not UTF-8 arrive as surrogates: compare them as bytes, never raise.
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                   token.encode("utf-8", "surrogateescape")):
            return error(401, "wrong token: use the runtime's token (DATA_DIR/token unless one was configured)")
    limit = request.app["max_body"]
    if request.content_length is not None and request.content_length > limit:
        return error(413, f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body is over the {limit}-byte limit")
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return error(exc.status, exc.reason)
        raise
    except StoreError as exc:
        return error(503, str(exc))


# -- handlers ----------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    ok, body = request.app[RUNTIME].health()
    return web.json_response(body, status=200 if ok else 503)


async def status(request: web.Request) -> web.Response:
    body = await _blocking(request.app[RUNTIME].status)
    body["stream"] = request.app[BROADCASTER].stats()
    body["event_clients"] = request.app[HUB].client_count
    return web.json_response(body)


def _query_number(request: web.Request, name: str, default, lo, hi, cast=float):
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}={raw!r} is not a number"}),
                                 content_type="application/json") from None
    if not lo <= value <= hi:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name}={raw!r} must be between {lo} and {hi}"}),
                                 content_type="application/json")
    return value


async def stream(request: web.Request) -> web.StreamResponse:
    overlay = request.query.get("overlay", "0") in ("1", "true", "yes")
    quality = _query_number(request, "quality", 80, 10, 100, int)
    # Encodes are shared per (overlay, quality): steps of 10 keep that to 20 variants at most
    # (21 viewers asking 10, 14, 18 ... cost 21 encodes per frame, 3.6x the CPU).
    quality = int(min(100, max(10, 10 * round(quality / 10))))
    fps = _query_number(request, "fps", 30.0, 0.1, 60.0)
    broadcaster = request.app[BROADCASTER]
    resp = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache"})
    await resp.prepare(request)
    viewer = broadcaster.subscribe(overlay=overlay, quality=quality, fps=fps)
    try:
        while not viewer.closed:
            try:
                await asyncio.wait_for(viewer.event.wait(), 1.0)
            except asyncio.TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                continue
            viewer.event.clear()
            part = viewer.take()
            if part is None:
                continue
            await asyncio.wait_for(resp.write(part), WRITE_TIMEOUT_S)
    except (ConnectionError, asyncio.TimeoutError):
        pass  # the viewer went away or stopped reading
    finally:
        broadcaster.unsubscribe(viewer)
        if request.transport is not None and viewer.closed is False:
            request.transport.close()
    return resp


async def events(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    runtime = request.app[RUNTIME]
    last_raw = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    last_id = None
    if last_raw:
        try:
            last_id = int(last_raw)
        except ValueError:
            return error(400, f"Last-Event-ID {last_raw!r} is not a result id (a whole number)")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)

    async def send(data: bytes) -> None:
        # Every write is bounded: a client that stops reading (during the replay too) is dropped
        # after WRITE_TIMEOUT_S and reconnects with Last-Event-ID, instead of holding a task forever.
        await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)

    # Subscribe before replaying so nothing stored in between is missed; duplicates are skipped.
    client = hub.subscribe()
    stopping = request.app[STOPPING]
    sent_up_to = last_id or 0
    if last_id is not None:
        newest = await _blocking(runtime.store.last_id)
        # An id from another database (wiped data dir) would otherwise hide every new result.
        sent_up_to = min(sent_up_to, newest)
    try:
        await send(b"retry: 1000\n\n")
        if last_id is not None:
            while True:
                batch = await _blocking(lambda: runtime.store.results(after_id=sent_up_to, limit=500,
                                                                      oldest_first=True))
                for item in batch:
                    await send(format_event("result", item, item["id"])[1])
                    sent_up_to = item["id"]
                if len(batch) < 500:
                    break
        loop = asyncio.get_running_loop()
        next_status = loop.time()
        last_write = loop.time()
        while not stopping.is_set():
            now = loop.time()
            if now >= next_status:
                body = await _blocking(runtime.status)
                await send(format_event("status", body)[1])
                next_status = now + STATUS_INTERVAL_S
                last_write = now
            elif now - last_write >= KEEPALIVE_S:
                await send(b": keepalive\n\n")
                last_write = now
            try:
                msg = await asyncio.wait_for(client.queue.get(), max(0.01, next_status - loop.time()))
            except asyncio.TimeoutError:
                continue
            if is_close(msg):
                break
            eid, data = msg
            if eid is not None and eid <= sent_up_to:
                continue
            await send(data)
            if eid is not None:
                sent_up_to = eid
            last_write = loop.time()
    except (ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        hub.unsubscribe(client)
    return resp


async def stats(request: web.Request) -> web.Response:
    bucket_s = _query_number(request, "bucket_s", 60.0, 1.0, 86400.0)
    buckets = _query_number(request, "buckets", 60, 1, 1440, int)
    body = await _blocking(lambda: request.app[RUNTIME].store.stats(bucket_s=bucket_s, buckets=buckets))
    return web.json_response(body)


async def results(request: web.Request) -> web.Response:
    limit = _query_number(request, "limit", 50, 1, 1000, int)
    before_id = _query_number(request, "before_id", None, 1, 2**62, int)
    since = _query_number(request, "since", None, 0, 1e11)
    until = _query_number(request, "until", None, 0, 1e11)
    verdict = request.query.get("verdict") or None
    if verdict is not None:
        verdict = verdict.upper()
        if verdict not in ("PASS", "FAIL"):
            return error(400, f"verdict={request.query['verdict']!r} must be PASS or FAIL")
    store = request.app[RUNTIME].store
    items = await _blocking(lambda: store.results(limit=limit + 1, before_id=before_id, verdict=verdict,
                                                  since=since, until=until))
    more = len(items) > limit
    items = items[:limit]
    return web.json_response({"items": items, "next_before_id": items[-1]["id"] if more and items else None})


async def results_csv(request: web.Request) -> web.Response:
    since = _query_number(request, "since", None, 0, 1e11)
    until = _query_number(request, "until", None, 0, 1e11)
    chunks = request.app[RUNTIME].store.csv_chunks(since=since, until=until)
    first = await _blocking(next, chunks)  # the header row; store errors still become a 503 here
    # Streamed piece by piece: memory stays flat however many results there are.
    resp = web.StreamResponse(headers={"Content-Type": "text/csv; charset=utf-8",
                                       "Content-Disposition": 'attachment; filename="results.csv"'})
    await resp.prepare(request)
    try:
        await asyncio.wait_for(resp.write(first.encode()), WRITE_TIMEOUT_S)
        while (chunk := await _blocking(next, chunks, None)) is not None:
            await asyncio.wait_for(resp.write(chunk.encode()), WRITE_TIMEOUT_S)
        await resp.write_eof()
    except (ConnectionError, asyncio.TimeoutError):
        pass  # the client went away or stopped reading
    return resp


async def result_image(request: web.Request) -> web.Response:
    try:
        rid = int(request.match_info["id"])
    except ValueError:
        return error(400, f"result id {request.match_info['id']!r} is not a whole number")
    if not 1 <= rid < 2**63:  # SQLite ids are signed 64-bit: anything else cannot exist
        return error(404, f"no result {rid}: result ids are whole numbers from 1")
    jpeg = await _blocking(request.app[RUNTIME].store.image, rid)
    if jpeg is None:
        return error(404, f"no image kept for result {rid} (only rejects keep one, within the retention limit)")
    return web.Response(body=jpeg, content_type="image/jpeg")


async def get_recipe(request: web.Request) -> web.Response:
    loaded = request.app[RUNTIME].recipe
    return web.json_response({"name": loaded.recipe.name, "version": str(loaded.recipe.version),
                              "format": loaded.fmt, "text": loaded.text})


async def put_recipe(request: web.Request) -> web.Response:
    from helio_gui.vision.recipe import RecipeError

    ctype = request.content_type
    fmt = {"application/toml": "toml", "text/toml": "toml", "application/yaml": "yaml",
           "application/x-yaml": "yaml", "text/yaml": "yaml", "text/x-yaml": "yaml"}.get(ctype)
    if fmt is None:
        fmt = request.query.get("format")
        if fmt not in ("toml", "yaml"):
            return error(415, f"Content-Type {ctype!r} is not a recipe type; send application/toml or "
                              "application/yaml")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "the recipe is not UTF-8 text")
    if not text.strip():
        return error(422, "the recipe is empty; the running recipe was kept", errors=[])
    runtime = request.app[RUNTIME]
    try:
        loaded = await _blocking(runtime.replace_recipe, text, fmt)
    except RecipeError as exc:
        issues = [{"line": i.line, "field": i.field, "message": i.message} for i in exc.issues]
        return error(422, f"recipe refused, the running recipe was kept: {exc}", errors=issues)
    return web.json_response({"name": loaded.recipe.name, "version": str(loaded.recipe.version)})


async def _json_body(request: web.Request) -> dict:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"the body is not valid JSON ({exc}); send a JSON object"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body must be a JSON object"}),
                                 content_type="application/json")
    return body


async def post_shift(request: web.Request) -> web.Response:
    body = await _json_body(request)
    action = body.get("action")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        return error(400, "name must be a string of at most 200 characters")
    store = request.app[RUNTIME].store
    if action == "start":
        shift = await _blocking(store.start_shift, name)
    elif action == "reset":
        shift = await _blocking(store.reset_shift, name)
    else:
        return error(400, f"action {action!r} is not one of 'start', 'reset'")
    return web.json_response(shift)


async def post_trigger(request: web.Request) -> web.Response:
    await _json_body(request)
    try:
        fut = request.app[RUNTIME].request_trigger()
    except TriggerBusy as exc:
        return error(429, f"too many triggers at once: {exc}")
    except RuntimeError as exc:
        return error(409, f"cannot inspect now: {exc}")
    try:
        # shield: the timeout must not cancel an inspection that has already started (its result
        # is being stored); only a trigger still waiting for its turn is withdrawn.
        result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), 5.0)
    except asyncio.TimeoutError:
        if fut.cancel():
            return error(504, "the trigger was not served within 5 s (too many at once, or the loop is "
                              "busy); nothing was inspected or stored: check /api/status and trigger again")
        try:  # it started just now: its result is being stored, so report it
            result = await asyncio.wait_for(asyncio.wrap_future(fut), 5.0)
        except asyncio.TimeoutError:
            return error(504, "the inspection started but did not finish within 10 s; check /api/status "
                              "and /api/results before triggering again")
        except RuntimeError as exc:
            return error(409, f"cannot inspect now: {exc}")
    except RuntimeError as exc:
        return error(409, f"cannot inspect now: {exc}")
    return web.json_response({"result": result})


# -- the app -----------------------------------------------------------------------------------
def make_app(runtime: Runtime, token: str, *, max_body: int = 1024 * 1024) -> web.Application:
    """The aiohttp application; starts the broadcaster and binds the hub when it starts up."""
    from helio_gui.vision.annotate import draw_overlay

    app = web.Application(middlewares=[auth_and_errors], client_max_size=max_body)
    app[RUNTIME] = runtime
    app[TOKEN] = token
    app["max_body"] = max_body
    hub = EventHub()
    app[HUB] = hub
    broadcaster = MjpegBroadcaster(runtime.slot, draw_overlay)
    app[BROADCASTER] = broadcaster
    runtime.on_result = lambda result: hub.publish("result", result, result["id"])

    app[STOPPING] = asyncio.Event()

    async def on_startup(app):
        hub.bind(asyncio.get_running_loop())
        broadcaster.start()

    async def on_shutdown(app):
        app[STOPPING].set()
        hub.close()
        broadcaster.stop(timeout=0.3)

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/status", status)
    app.router.add_get("/stream.mjpg", stream)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/stats", stats)
    app.router.add_get("/api/results", results)
    app.router.add_get("/api/results.csv", results_csv)
    app.router.add_get("/api/results/{id}/image", result_image)
    app.router.add_get("/api/recipe", get_recipe)
    app.router.add_put("/api/recipe", put_recipe)
    app.router.add_post("/api/shift", post_shift)
    app.router.add_post("/api/trigger", post_trigger)
    return app
