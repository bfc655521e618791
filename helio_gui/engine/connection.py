"""Connecting to the Docker engine with errors a person can act on."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import docker
import requests

from .errors import EngineError

# Engine 19.03 speaks 1.40; we need `init`, health checks and one-shot stats (1.41 has them all,
# older engines work without one-shot). Anything older is refused with a clear message.
MIN_API_VERSION = "1.40"
DEFAULT_TIMEOUT_S = 120


def resolve_engine(base_url: str | None = None) -> tuple[str, dict, str]:
    """(address, client kwargs (TLS), where the address came from): explicit > DOCKER_HOST >
    the current docker context > the local socket. Raises EngineError, naming the source, for
    an address that is not valid, TLS settings that cannot be used, or a context that does not exist."""
    if base_url:
        return _checked(base_url, {}, "the console's settings")
    if os.environ.get("DOCKER_HOST"):
        origin = "DOCKER_HOST"
        try:
            params = docker.utils.kwargs_from_env()
        except docker.errors.DockerException as exc:
            raise EngineError(
                f"The Docker TLS settings are unusable (DOCKER_TLS_VERIFY / DOCKER_CERT_PATH="
                f"{os.environ.get('DOCKER_CERT_PATH', '~/.docker')}): {_short(str(exc), 160)}",
                "Put ca.pem, cert.pem and key.pem in DOCKER_CERT_PATH, or unset DOCKER_TLS_VERIFY.") from None
        url = params.pop("base_url", None) or os.environ["DOCKER_HOST"]
        return _checked(url, params, origin)
    from docker.context import ContextAPI
    from docker.context.config import get_current_context_name

    name = os.environ.get("DOCKER_CONTEXT") or get_current_context_name() or "default"
    origin = f"docker context {name!r}" + (" (DOCKER_CONTEXT)" if os.environ.get("DOCKER_CONTEXT") else "")
    if name != "default":
        try:
            context = ContextAPI.get_context(name)
        except Exception as exc:  # a damaged context store
            raise EngineError(f"The {origin} cannot be read ({_short(str(exc), 160)}).",
                              "Check it with `docker context ls`, or `docker context use default`.") from None
        if context is None:
            raise EngineError(f"The current {origin} does not exist.",
                              "Choose an existing one (`docker context ls`, `docker context use NAME`) "
                              "or go back to the local engine with `docker context use default`.")
        params = ContextAPI.kwargs_from_context(name)
        url = params.pop("base_url", None)
        if url:
            return _checked(url, params, origin)
    return _checked("unix:///var/run/docker.sock", {}, "the default local socket")


def resolve_base_url(base_url: str | None = None) -> tuple[str, dict]:
    """The engine address to use and the extra client kwargs (TLS): explicit > DOCKER_HOST > context."""
    url, params, _ = resolve_engine(base_url)
    return url, params


def _checked(url: str, params: dict, origin: str) -> tuple[str, dict, str]:
    try:
        docker.utils.parse_host(url, False, tls=bool(params.get("tls")))
    except Exception as exc:
        raise EngineError(
            f"The Docker engine address {url!r} from {origin} is not a valid engine address ({_short(str(exc), 120)}).",
            "Use unix:///var/run/docker.sock or tcp://HOST:2376 (with TLS), or unset DOCKER_HOST to use "
            "the local engine.") from None
    if url.startswith("ssh://"):
        try:
            import paramiko  # noqa: F401
        except ImportError:
            raise EngineError(f"The engine address {url} from {origin} needs SSH support (paramiko), which is "
                              "not installed.", "pip install paramiko, or use a unix:// or tcp:// address.") from None
    return url, params, origin


def api_version_tuple(version: str) -> tuple[int, ...]:
    """'1.41' -> (1, 41)."""
    return tuple(int(part) for part in str(version).split(".") if part.isdigit())


def check_api_version(api_version: str, server_version: str = "") -> None:
    """Raise EngineError if the engine's API is older than MIN_API_VERSION."""
    if api_version_tuple(api_version) < api_version_tuple(MIN_API_VERSION):
        raise EngineError(
            f"The Docker engine is too old (engine {server_version or '?'}, API {api_version}; "
            f"HelioVision needs API {MIN_API_VERSION} or newer, i.e. Docker 19.03+).",
            "Update Docker on this machine (Debian: apt-get install docker.io).",
        )


def translate(exc: BaseException, base_url: str, doing: str = "") -> EngineError:
    """Turn a docker/requests/OS exception into an EngineError with a hint."""
    what = f" while {doing}" if doing else ""
    if isinstance(exc, EngineError):
        return exc
    socket_path = base_url[len("unix://"):] if base_url.startswith("unix://") else None
    text = str(exc)
    if isinstance(exc, PermissionError) or "Permission denied" in text or "EACCES" in text:
        return EngineError(
            f"Permission denied on the Docker socket {socket_path or base_url}{what}.",
            "Add your user to the `docker` group (sudo usermod -aG docker $USER), then log out and in again.",
        )
    if isinstance(exc, (requests.exceptions.ConnectionError, ConnectionError, FileNotFoundError)) or \
            "Connection refused" in text or "No such file" in text or "Connection aborted" in text:
        if socket_path and not Path(socket_path).exists():
            if not _engine_installed():
                return EngineError(
                    f"Docker is not installed on this machine (no {socket_path}){what}.",
                    "Install it (Debian: apt-get install docker.io) or use the embedded runtime.",
                )
            return EngineError(
                f"The Docker engine is not running (no socket at {socket_path}){what}.",
                "Start it (sudo systemctl start docker) and try again.",
            )
        if not socket_path and ("refused" in text or "Errno 111" in text):
            return EngineError(
                f"Nothing answers at {base_url}{what} (connection refused).",
                "Check the address and that the engine there is running and listening on it.",
            )
        return EngineError(
            f"The Docker engine at {base_url} stopped answering{what} ({_short(text)}).",
            "Check that the engine is running (sudo systemctl status docker) and try again.",
        )
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return EngineError(f"The Docker engine at {base_url} did not answer in time{what}.",
                           "The engine may be overloaded; try again, or restart it.")
    if isinstance(exc, docker.errors.APIError):
        return EngineError(f"The Docker engine refused{what}: {_short(exc.explanation or text)}", "")
    return EngineError(f"Docker engine error{what}: {_short(text)}", "")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _engine_installed() -> bool:
    return bool(shutil.which("dockerd") or shutil.which("docker") or Path("/usr/bin/dockerd").exists()
                or Path("/usr/sbin/dockerd").exists())


def open_client(base_url: str, tls_kwargs: dict | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> docker.DockerClient:
    """A fresh DockerClient on `base_url` with API version negotiation (never pinned)."""
    socket_path = base_url[len("unix://"):] if base_url.startswith("unix://") else None
    if socket_path:
        if not os.path.exists(socket_path):
            raise translate(FileNotFoundError(errno.ENOENT, "No such file", socket_path), base_url, "connecting")
        if not os.access(socket_path, os.R_OK | os.W_OK):
            raise translate(PermissionError(errno.EACCES, "Permission denied", socket_path), base_url, "connecting")
    try:
        return docker.DockerClient(base_url=base_url, version="auto", timeout=timeout, **(tls_kwargs or {}))
    except docker.errors.DockerException as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        raise translate(cause if not isinstance(cause, docker.errors.DockerException) else exc,
                        base_url, "connecting") from exc
    except Exception as exc:
        raise translate(exc, base_url, "connecting") from exc
