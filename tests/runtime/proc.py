"""Starts the real `helio-runtime` program as a child process for tests and benchmarks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONVEYOR_RECIPE = REPO / "examples" / "recipes" / "conveyor_belt.toml"


def runtime_command() -> list[str]:
    script = Path(sys.executable).parent / "helio-runtime"
    return [str(script)] if script.exists() else [sys.executable, "-m", "helio_gui.runtime"]


class RuntimeProcess:
    def __init__(self, data_dir: Path, port: int, *, source: str | None = None, recipe: Path | None = None,
                 token: str | None = "test-token", extra_env: dict | None = None, args: list[str] = ()):
        self.data_dir, self.port, self.token = Path(data_dir), port, token
        cmd = runtime_command() + ["--data-dir", str(data_dir), "--port", str(port), *args]
        if source:
            cmd += ["--source", source]
        if recipe:
            cmd += ["--recipe", str(recipe)]
        if token:
            cmd += ["--token", token]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIO_") or k == "HELIO_RESOURCES_DIR"}
        env.update(extra_env or {})
        self.log_path = self.data_dir.parent / f"runtime-{port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                token: str | None = "default", timeout: float = 10.0) -> tuple[int, dict, bytes]:
        h = dict(headers or {})
        tok = self.token if token == "default" else token
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, method: str, path: str, body=None, **kw) -> tuple[int, dict]:
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        status, _, raw = self.request(method, path, data, **kw)
        return status, json.loads(raw) if raw else {}

    def wait_healthy(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"helio-runtime exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, body = self.json("GET", "/api/health", token=None, timeout=2)
                last = body
                if status == 200:
                    return body
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"helio-runtime not healthy within {timeout} s (last {last}):\n{self.log()}")

    def wait_up(self, timeout: float = 20.0) -> None:
        """Waits until the API answers at all (healthy or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"helio-runtime exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.json("GET", "/api/health", token=None, timeout=2)
                return
            except (OSError, ValueError):
                time.sleep(0.1)
        raise AssertionError(f"helio-runtime did not answer within {timeout} s:\n{self.log()}")

    def wait_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.log()}")

    def status(self) -> dict:
        return self.json("GET", "/api/status")[1]

    def terminate(self, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        return code, time.monotonic() - t0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
