"""`RuntimeClient`: blocking JSON calls to the runtime API (docs/runtime-api.md).

Every call has a timeout. The GUI calls these from worker threads, never the GUI thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import requests

from .errors import ApiError, RuntimeUnreachable

DEFAULT_TIMEOUT = (2.0, 5.0)  # (connect, read) seconds


class RuntimeClient:
    """Client of one runtime at `base_url` (e.g. ``http://127.0.0.1:8750``) with its token."""

    def __init__(self, base_url: str, token: str = "", timeout: tuple[float, float] = DEFAULT_TIMEOUT):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"runtime URL {base_url!r} is not an http(s) URL; use e.g. http://127.0.0.1:8750")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # requests.Session is not documented thread-safe: one per thread.
        self._local = threading.local()

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        p = urlsplit(self.base_url)
        return p.port or (443 if p.scheme == "https" else 80)

    def headers(self) -> dict[str, str]:
        """The auth header for requests made outside this class (the streams)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def url(self, path: str) -> str:
        return self.base_url + path

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            # Imported on first use (a worker thread): requests and its dependencies cost the GUI's
            # cold start 0.1-0.4 s before the window could show, and nothing there needs them.
            import requests

            s = requests.Session()
            s.trust_env = False  # never route 127.0.0.1 through a proxy from the environment
            self._local.session = s
        return s

    def close(self) -> None:
        """Closes this thread's HTTP session."""
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()
            self._local.session = None

    def request(self, method: str, path: str, *, params=None, json=None, data=None,
                headers=None, timeout=None, stream=False, auth=True) -> requests.Response:
        """One HTTP call; raises `RuntimeUnreachable` or `ApiError` (status >= 400)."""
        import requests

        h = dict(self.headers() if auth else {})
        h.update(headers or {})
        try:
            resp = self._session().request(method, self.url(path), params=params, json=json, data=data,
                                           headers=h, timeout=timeout or self.timeout, stream=stream)
        except requests.Timeout as exc:
            raise RuntimeUnreachable(
                f"the runtime at {self.base_url} did not answer {method} {path} in time; "
                "it may be overloaded or stuck — check its logs or restart it") from exc
        except requests.ConnectionError as exc:
            detail = "connection refused" if "refused" in str(exc).lower() else "no connection"
            raise RuntimeUnreachable(
                f"cannot connect to the runtime at {self.base_url} ({detail}); is it running? "
                "Start it (Runtime tab) or check the address and port") from exc
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {"error": resp.text[:300]}
            msg = body.get("error") or f"HTTP {resp.status_code}"
            if resp.status_code == 401:
                msg = f"the runtime refused the token ({msg}); give the right token (--token) or reconnect"
            raise ApiError(f"{method} {path}: {msg}", resp.status_code, body)
        return resp

    def _json(self, method: str, path: str, **kw) -> Any:
        resp = self.request(method, path, **kw)
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(f"{method} {path}: the runtime answered with something that is not JSON",
                           resp.status_code) from exc

    # -- endpoints ---------------------------------------------------------------------------
    def health(self) -> dict:
        """GET /api/health. Returns the JSON for both 200 and 503 (``ok`` tells which)."""
        try:
            return self._json("GET", "/api/health", auth=False)
        except ApiError as exc:
            if exc.status == 503:
                return dict(exc.body, ok=False)
            raise

    def status(self) -> dict:
        """GET /api/status."""
        return self._json("GET", "/api/status")

    def stats(self, bucket_s: int = 60, buckets: int = 60) -> dict:
        """GET /api/stats: counters, defects, trend buckets and the shift."""
        return self._json("GET", "/api/stats", params={"bucket_s": bucket_s, "buckets": buckets})

    def results(self, limit: int = 50, before_id: int | None = None, verdict: str | None = None,
                since: float | None = None, until: float | None = None) -> dict:
        """GET /api/results, newest first."""
        params: dict[str, Any] = {"limit": limit}
        for k, v in (("before_id", before_id), ("verdict", verdict), ("since", since), ("until", until)):
            if v is not None:
                params[k] = v
        return self._json("GET", "/api/results", params=params)

    def result_image(self, result_id: int) -> bytes | None:
        """JPEG bytes of a kept reject image, or None when the runtime kept none (404)."""
        try:
            return self.request("GET", f"/api/results/{int(result_id)}/image").content
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def export_csv(self, dest_path: str, since: float | None = None, until: float | None = None,
                   progress: Callable[[int], None] | None = None,
                   cancel: threading.Event | None = None) -> int:
        """Streams GET /api/results.csv into `dest_path`; returns bytes written.

        Writes to a temporary name and renames at the end, so a cancelled or failed export
        never leaves a half file under the chosen name. `progress(bytes_so_far)`.
        """
        import os

        params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
        resp = self.request("GET", "/api/results.csv", params=params, stream=True, timeout=(2.0, 30.0))
        tmp = f"{dest_path}.part"
        written = 0
        try:
            with open(tmp, "wb") as fh:
                for chunk in resp.iter_content(64 * 1024):
                    if cancel is not None and cancel.is_set():
                        raise InterruptedError("CSV export cancelled; nothing was saved")
                    fh.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(written)
            os.replace(tmp, dest_path)
        except BaseException:
            resp.close()
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return written

    def recipe(self) -> dict:
        """GET /api/recipe: ``{"name", "version", "format", "text"}``."""
        return self._json("GET", "/api/recipe")

    def put_recipe(self, text: str, fmt: str = "toml") -> dict:
        """PUT /api/recipe. A 422 raises `ApiError` whose `.errors` carry line numbers."""
        ctype = "application/yaml" if fmt == "yaml" else "application/toml"
        return self._json("PUT", "/api/recipe", data=text.encode("utf-8"), headers={"Content-Type": ctype})

    def shift(self, action: str, name: str | None = None) -> dict:
        """POST /api/shift with action ``start`` or ``reset``."""
        if action not in ("start", "reset"):
            raise ValueError("shift action must be 'start' or 'reset'")
        body = {"action": action}
        if name:
            body["name"] = name
        return self._json("POST", "/api/shift", json=body)

    def trigger(self) -> dict:
        """POST /api/trigger: inspect the newest frame as one part."""
        return self._json("POST", "/api/trigger")
