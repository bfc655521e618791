"""Engine: lifecycle, images, logs, stats, and the health-gated update with rollback."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import docker
import docker.errors

from .. import RUNTIME_API_VERSION
from .connection import check_api_version, open_client, resolve_engine, translate
from .errors import Cancelled, EngineError, ImageRejected
from .journal import Journal
from .profile import (API_LABEL, COMPONENT_LABEL, PREVIOUS_IMAGE_LABEL, PROFILE_LABEL, REVISION_LABEL,
                      ROLE_LABEL, VERSION_LABEL, RuntimeProfile)
from .progress import ProgressFn, PullProgress, report

_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armhf": "arm"}


# -- value types ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RuntimeStatus:
    """A fresh reading of the runtime container (never a cached snapshot)."""

    state: str  # missing, created, running, restarting, paused, exited, dead
    health: str = "none"  # healthy, unhealthy, starting, none
    uptime_s: float | None = None
    restart_count: int = 0
    restart_loop: bool = False
    image: str = ""
    version: str | None = None
    digest: str | None = None
    container_id: str | None = None
    exit_code: int | None = None
    error: str = ""
    mismatches: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass(frozen=True)
class RuntimeStats:
    """One stats reading. `cpu_percent` is None on the first reading (needs two samples)."""

    cpu_percent: float | None
    mem_bytes: int
    mem_limit: int
    taken_at: float


@dataclass(frozen=True)
class ImageVersion:
    """A runtime image present on the engine."""

    image_id: str
    tags: tuple[str, ...]
    version: str | None
    revision: str | None
    api_version: str | None
    created: str
    size: int
    in_use: bool = False
    rollback: bool = False


@dataclass
class Step:
    name: str
    ok: bool
    message: str = ""
    duration_s: float = 0.0


@dataclass
class UpdateReport:
    """What an update, rollback or recovery did, step by step."""

    image: str
    outcome: str = "pending"  # updated, rolled_back, refused, failed, finished, cancelled, restored
    success: bool = False
    rolled_back: bool = False
    steps: list[Step] = field(default_factory=list)
    profile: RuntimeProfile | None = None  # the profile now in force: save it
    version: str | None = None

    def add(self, name: str, ok: bool, message: str = "", started: float | None = None) -> Step:
        step = Step(name, ok, message, (time.monotonic() - started) if started else 0.0)
        self.steps.append(step)
        return step

    def summary(self) -> str:
        lines = [f"{self.outcome}: {self.image}"]
        for step in self.steps:
            lines.append(f"  [{'ok' if step.ok else 'FAILED'}] {step.name}: {step.message}")
        return "\n".join(lines)


def connect(base_url: str | None = None, *, state_dir: str | os.PathLike | None = None,
            timeout: float = 120) -> "Engine":
    """Connect to the engine (explicit URL, else DOCKER_HOST, else the current docker context).

    Raises EngineError saying what to do when the engine is not installed, not running,
    not accessible (join the `docker` group) or too old.
    """
    url, tls, origin = resolve_engine(base_url)
    engine = Engine(url, tls, state_dir=state_dir, timeout=timeout)
    try:
        engine.info()
    except EngineError as exc:
        engine.close()
        if origin == "the default local socket":
            raise
        # Say which setting chose this engine: the fix is often there, not in the engine.
        other = ("unset DOCKER_HOST to use the local engine" if origin == "DOCKER_HOST"
                 else "`docker context use default` goes back to the local engine")
        raise EngineError(f"{exc.message} (engine address {url} from {origin})",
                          f"{exc.hint} Or {other}.".strip()) from exc
    except BaseException:
        engine.close()
        raise
    return engine


class Engine:
    """Blocking control of the runtime container. One docker client per thread."""

    def __init__(self, base_url: str, tls_kwargs: dict | None = None, *,
                 state_dir: str | os.PathLike | None = None, timeout: float = 120) -> None:
        self.base_url = base_url
        self._tls = tls_kwargs or {}
        self._timeout = timeout
        self._local = threading.local()
        self._held = threading.local()  # runtime locks this thread holds (see _exclusive)
        self._clients: list[docker.DockerClient] = []
        self._clients_lock = threading.Lock()
        self._stats_cache: dict[str, tuple[RuntimeStats, dict]] = {}
        self._stats_lock = threading.Lock()
        if state_dir is None:
            import platformdirs

            state_dir = Path(platformdirs.user_state_dir("helio-gui")) / "engine"
        self.state_dir = Path(state_dir)

    # -- plumbing --------------------------------------------------------------------------
    @property
    def client(self) -> docker.DockerClient:
        # docker-py clients (requests sessions) are not thread-safe: one per thread.
        client = getattr(self._local, "client", None)
        if client is None:
            client = open_client(self.base_url, self._tls, self._timeout)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Close every client this engine opened."""
        with self._clients_lock:
            for client in self._clients:
                try:
                    client.close()
                except Exception:
                    pass
            self._clients.clear()
        self._local = threading.local()

    @contextmanager
    def _doing(self, what: str):
        try:
            yield
        except (EngineError, Cancelled):
            raise
        except docker.errors.NotFound as exc:
            raise EngineError(f"Not found while {what}: {exc.explanation}", "") from exc
        except Exception as exc:
            raise translate(exc, self.base_url, what) from exc

    @contextmanager
    def _exclusive(self, profile: RuntimeProfile, what: str):
        """One controller at a time per runtime container, across threads and processes (two
        GUIs on one device): an flock beside the update journal, so its scope is the journal's.
        Re-entrant within a thread; released by the kernel if the process dies."""
        key = profile.runtime_container_name
        held: dict = self._held.__dict__.setdefault("names", {})
        if key in held:
            held[key] += 1
            try:
                yield
            finally:
                held[key] -= 1
            return
        path = self.state_dir / f"{key}.lock"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            if what == "stop":
                # Stopping the line must never depend on our own bookkeeping.
                yield
                return
            raise EngineError(
                f"The engine state folder {self.state_dir} cannot be used ({exc.strerror or exc}); it holds "
                f"the update journal and the lock, so this {what} was refused.",
                "Make that folder writable, or give the console another state folder; nothing was changed.") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = {}
                try:
                    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except (OSError, ValueError):
                    pass
                since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", time.time())))
                raise EngineError(
                    f"Another {holder.get('what', 'operation')} of the runtime {key} is in progress "
                    f"(process {holder.get('pid', '?')}, since {since}); this {what} was refused.",
                    "Wait for it to finish (its progress shows in the console that started it); "
                    "nothing was changed.") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0)
            held[key] = 1
            try:
                yield
            finally:
                del held[key]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def info(self) -> dict:
        """Engine version, API version, architecture; raises EngineError if too old."""
        with self._doing("asking the engine for its version"):
            version = self.client.version()
        check_api_version(version.get("ApiVersion", "0"), version.get("Version", ""))
        return {
            "version": version.get("Version"),
            "api_version": version.get("ApiVersion"),
            "negotiated_api": self.client.api.api_version,
            "os": version.get("Os"),
            "arch": version.get("Arch"),
            "base_url": self.base_url,
        }

    def journal(self, profile: RuntimeProfile) -> Journal:
        return Journal(self.state_dir / f"{profile.name}.update.json")

    def _container(self, name_or_id: str) -> dict | None:
        """Fresh inspect of a container, or None if it does not exist."""
        try:
            return self.client.api.inspect_container(name_or_id)
        except docker.errors.NotFound:
            return None

    def containers(self, profile: RuntimeProfile | None = None) -> list[dict]:
        """Inspect of every runtime container (of `profile`, if given), found by label."""
        labels = [f"{ROLE_LABEL}=runtime"]
        if profile is not None:
            labels.append(f"{PROFILE_LABEL}={profile.name}")
        with self._doing("listing runtime containers"):
            found = self.client.api.containers(all=True, filters={"label": labels})
            return [c for c in (self._container(item["Id"]) for item in found) if c]

    # -- status ----------------------------------------------------------------------------
    def runtime_status(self, profile: RuntimeProfile) -> RuntimeStatus:
        """State, health, uptime, restarts, version and digest read fresh from the engine."""
        with self._doing("reading the runtime status"):
            info = self._container(profile.runtime_container_name)
            if info is None:
                return RuntimeStatus(state="missing")
            image_info = self._image_or_none(info["Image"])
        return self._status_from(info, image_info, profile)

    def _status_from(self, info: dict, image_info: dict | None, profile: RuntimeProfile | None) -> RuntimeStatus:
        state = info["State"]
        uptime = None
        if state.get("Running") and state.get("StartedAt"):
            uptime = max(0.0, time.time() - _parse_time(state["StartedAt"]))
        restart_count = int(info.get("RestartCount", 0))
        restart_loop = bool(state.get("Restarting")) or (restart_count >= 3 and (uptime is None or uptime < 60))
        labels = (image_info or {}).get("Config", {}).get("Labels") or {}
        digests = (image_info or {}).get("RepoDigests") or []
        return RuntimeStatus(
            state=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status", "none"),
            uptime_s=uptime,
            restart_count=restart_count,
            restart_loop=restart_loop,
            image=info["Config"].get("Image", ""),
            version=labels.get(VERSION_LABEL),
            digest=digests[0] if digests else info["Image"],
            container_id=info["Id"],
            exit_code=state.get("ExitCode") if not state.get("Running") else None,
            error=state.get("Error", ""),
            mismatches=tuple(self.mismatches(profile, info)) if profile else (),
        )

    def mismatches(self, profile: RuntimeProfile, info: dict) -> list[str]:
        """How the running container differs from the profile (inspect is only for this check)."""
        want = profile.create_kwargs()
        cfg, host = info["Config"], info["HostConfig"]
        out = []
        if cfg.get("Image") != want["image"]:
            out.append(f"image is {cfg.get('Image')}, profile says {want['image']}")
        env = dict(item.split("=", 1) for item in cfg.get("Env") or [] if "=" in item)
        for key, value in want["environment"].items():
            if env.get(key) != value:
                out.append(f"env {key} is {env.get(key)!r}, profile says {value!r}")
        labels = cfg.get("Labels") or {}
        for key, value in want["labels"].items():
            if labels.get(key) != value:
                out.append(f"label {key} is {labels.get(key)!r}, profile says {value!r}")
        if host.get("NetworkMode") != want["network_mode"]:
            out.append(f"network is {host.get('NetworkMode')}, profile says {want['network_mode']}")
        if bool(host.get("ReadonlyRootfs")) != bool(want.get("read_only")):
            out.append("read-only root differs from the profile")
        if bool(host.get("Init")) != bool(want["init"]):
            out.append("init differs from the profile")
        have_devices = {f"{d['PathOnHost']}:{d['PathInContainer']}:{d['CgroupPermissions']}" for d in host.get("Devices") or []}
        for dev in want["devices"]:
            if dev not in have_devices:
                out.append(f"device {dev} missing")
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, profile: RuntimeProfile) -> RuntimeStatus:
        """Start the runtime; create it from the profile if missing or if it no longer matches.

        A container that no longer matches is replaced only once its successor is created and
        started; if that fails the old one is put back as it was (the line keeps its runtime).
        """
        profile.check_host()
        with self._exclusive(profile, "start"), self._doing("starting the runtime"):
            if self.journal(profile).read() is not None or self._container(profile.previous_container_name):
                # A crashed update first: finish or undo it, then start what it left in place.
                from .update import run_recover

                run_recover(self, profile, None)
            info = self._container(profile.runtime_container_name)
            if info is not None and self.mismatches(profile, info):
                # The profile changed (or someone edited the container): recreate from the profile.
                self._replace(profile, info)
            elif info is None:
                self._verify_present(profile.image)
                self.check_port_free(profile)
                container = self.client.containers.create(**profile.create_kwargs())
                self.client.api.start(container.id)
            else:
                if not info["State"].get("Running"):
                    self.check_port_free(profile)
                self.client.api.start(info["Id"])
        return self.runtime_status(profile)

    def check_port_free(self, profile: RuntimeProfile) -> None:
        """Raise EngineError if another program holds the profile's port. Only checkable when the
        engine runs on this machine with host networking; call it only while no runtime of the
        profile is running (that one holds the port legitimately)."""
        if profile.network_mode != "host" or not self.base_url.startswith("unix://"):
            return
        host = "0.0.0.0" if profile.host in ("", "::") else profile.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the runtime's server does
            try:
                sock.bind((host, profile.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    return  # another problem (address not on this machine...): the runtime reports it
                raise EngineError(
                    f"Port {profile.port} on {host} is already in use by another program, so the runtime "
                    "could not listen there.",
                    f"Stop that program (`ss -ltnp 'sport = :{profile.port}'` shows it) or choose another "
                    "port in the runtime profile; nothing was started.") from None

    def _replace(self, profile: RuntimeProfile, old: dict) -> None:
        """Recreate the runtime from `profile`, keeping `old` aside (as `-previous`, which
        recover() understands after a crash) until the new one has started."""
        api = self.client.api
        self._verify_present(profile.image)  # before anything is touched
        if old["State"].get("Restarting"):
            # In its restart back-off it cannot be renamed ("sandbox not found"); it serves nothing.
            api.stop(old["Id"], timeout=profile.stop_timeout_s)
            old = self._container(old["Id"]) or old
        was_running = bool(old["State"].get("Running"))
        api.rename(old["Id"], profile.previous_container_name)
        try:
            new_id = self.client.containers.create(**profile.create_kwargs()).id
        except Exception:
            api.rename(old["Id"], profile.runtime_container_name)
            raise
        try:
            if was_running:
                api.stop(old["Id"], timeout=profile.stop_timeout_s)
            api.start(new_id)
        except Exception as exc:
            # Put the old one back as it was; the caller gets the engine's reason.
            for step in (lambda: api.remove_container(new_id, force=True),
                         lambda: api.rename(old["Id"], profile.runtime_container_name),
                         lambda: api.start(old["Id"]) if was_running else None):
                try:
                    step()
                except Exception:
                    pass
            raise EngineError(f"The runtime could not be recreated from the profile: "
                              f"{translate(exc, self.base_url).message}",
                              "The previous container was put back; fix the profile and try again.") from exc
        api.remove_container(old["Id"], force=True)

    def stop(self, profile: RuntimeProfile, timeout: float | None = None) -> RuntimeStatus:
        """Stop the runtime: SIGTERM, then SIGKILL after `timeout` s (the profile's by default)."""
        timeout = profile.stop_timeout_s if timeout is None else timeout
        with self._exclusive(profile, "stop"), self._doing("stopping the runtime"):
            info = self._container(profile.runtime_container_name)
            if info is not None and info["State"].get("Running"):
                # docker-py adds `timeout` to the HTTP read timeout, so a slow stop never
                # surfaces as a client read timeout.
                self.client.api.stop(info["Id"], timeout=int(round(timeout)))
        return self.runtime_status(profile)

    def restart(self, profile: RuntimeProfile) -> RuntimeStatus:
        """Stop then start (recreating from the profile if it changed)."""
        with self._exclusive(profile, "restart"):
            self.stop(profile)
            return self.start(profile)

    def remove(self, profile: RuntimeProfile) -> None:
        """Remove the runtime container (its image and data volume stay)."""
        with self._exclusive(profile, "removal"), self._doing("removing the runtime"):
            info = self._container(profile.runtime_container_name)
            if info is not None:
                self.client.api.remove_container(info["Id"], force=True)

    # -- logs and stats --------------------------------------------------------------------
    def logs(self, profile: RuntimeProfile, tail: int = 200, follow: bool = True,
             stop: threading.Event | None = None, poll_s: float = 0.5) -> Iterator[str]:
        """Log lines of the runtime. With `follow`, survives the stream ending (read timeouts,
        engine restarts) and the container being recreated, until `stop` is set."""
        stop = stop or threading.Event()
        # A private client: this generator usually lives in its own thread, and a short read
        # timeout lets it notice `stop` even when the runtime is silent.
        client = open_client(self.base_url, self._tls, timeout=max(1.0, poll_s * 2))
        seen_id: str | None = None
        last_ts: str = ""
        try:
            while not stop.is_set():
                try:
                    info = client.api.inspect_container(profile.runtime_container_name)
                except docker.errors.NotFound:
                    info = None
                except Exception:
                    info = None
                if info is None:
                    if not follow:
                        return
                    stop.wait(poll_s)
                    continue
                kwargs: dict = {"stdout": True, "stderr": True, "timestamps": True}
                if info["Id"] != seen_id:
                    # A new container (first attach or recreated): its whole history up to `tail`.
                    if seen_id is None:
                        kwargs["tail"] = tail if tail is not None else "all"
                    else:
                        kwargs["tail"] = "all"
                    seen_id, last_ts = info["Id"], ""
                elif last_ts:
                    kwargs["since"] = _parse_time(last_ts[:19] + "." + last_ts[19:] + "Z")
                try:
                    if follow:
                        stream = client.api.logs(info["Id"], stream=True, follow=True, **kwargs)
                    else:
                        stream = iter(client.api.logs(info["Id"], stream=False, **kwargs).splitlines(keepends=True))
                    for line in _lines(stream):
                        ts, _, text = line.partition(" ")
                        ts = _ts_key(ts)
                        if last_ts and ts <= last_ts:
                            continue  # `since` is inclusive and second-granular: skip repeats
                        last_ts = ts
                        yield text
                        if stop.is_set():
                            return
                except Exception:
                    pass  # read timeout or engine gone: re-attach below
                if not follow:
                    return
                stop.wait(0.05)
        finally:
            client.close()

    def stats(self, profile: RuntimeProfile, min_interval_s: float = 1.0) -> RuntimeStats:
        """CPU % and memory, one-shot (no streaming connection), at most once per `min_interval_s`."""
        with self._doing("reading runtime stats"):
            info = self._container(profile.runtime_container_name)
            if info is None or not info["State"].get("Running"):
                raise EngineError("The runtime is not running, so it has no stats.", "Start it first.")
            cid = info["Id"]
            with self._stats_lock:
                cached = self._stats_cache.get(cid)
                if cached and time.monotonic() - cached[0].taken_at < min_interval_s:
                    return cached[0]
            try:
                raw = self.client.api.stats(cid, stream=False, one_shot=True)
            except docker.errors.InvalidVersion:
                raw = self.client.api.stats(cid, stream=False)
        cpu = raw.get("cpu_stats") or {}
        pre = (cached[1] if cached else None) or raw.get("precpu_stats") or {}
        cpu_percent = _cpu_percent(cpu, pre)
        mem = raw.get("memory_stats") or {}
        usage = int(mem.get("usage", 0)) - int((mem.get("stats") or {}).get("inactive_file", 0))
        result = RuntimeStats(cpu_percent, max(0, usage), int(mem.get("limit", 0)), time.monotonic())
        with self._stats_lock:
            self._stats_cache[cid] = (result, cpu)
        return result

    # -- images ----------------------------------------------------------------------------
    def _image_or_none(self, ref: str) -> dict | None:
        try:
            return self.client.api.inspect_image(ref)
        except docker.errors.NotFound:
            return None

    def _verify_present(self, ref: str) -> dict:
        info = self._image_or_none(ref)
        if info is None:
            raise ImageRejected(f"Image {ref} is not on this device.",
                                "Pull it, load it from a file, or build it first; nothing was stopped.")
        return info

    def verify_image(self, ref: str) -> dict:
        """Check an image is present, ours, API-compatible and for this architecture; return its inspect."""
        with self._doing(f"checking image {ref}"):
            info = self._verify_present(ref)
            engine_arch = self.client.version().get("Arch", "")
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(COMPONENT_LABEL) != "runtime" or API_LABEL not in labels:
            raise ImageRejected(
                f"Image {ref} is not a HelioVision runtime image (labels {COMPONENT_LABEL}=runtime and "
                f"{API_LABEL} missing).", "Build it from Dockerfile.device; nothing was stopped.")
        want_major = RUNTIME_API_VERSION.split(".")[0]
        have = str(labels[API_LABEL])
        if have.split(".")[0] != want_major:
            raise ImageRejected(
                f"Image {ref} speaks runtime API {have}; this console needs {want_major}.x.",
                "Use a runtime version made for this console (or update the console); nothing was stopped.")
        arch = _ARCH_ALIASES.get(info.get("Architecture", ""), info.get("Architecture", ""))
        engine_arch = _ARCH_ALIASES.get(engine_arch, engine_arch)
        if arch and engine_arch and arch != engine_arch:
            raise ImageRejected(f"Image {ref} is built for {arch}, this device is {engine_arch}.",
                                f"Build it with --platform linux/{engine_arch}; nothing was stopped.")
        return info

    def _stream(self, method: str, path: str, *, params: dict | None = None, data=None,
                headers: dict | None = None, cancel: threading.Event | None = None) -> Iterator[dict]:
        """POST to the engine and yield the decoded JSON events; `cancel` aborts the connection."""
        api = self.client.api
        response = api._post(api._url(path), params=params, data=data, headers=headers, stream=True, timeout=None)
        api._raise_for_status(response)
        done = threading.Event()
        watcher = None
        if cancel is not None:
            def watch() -> None:
                while not done.is_set():
                    if cancel.wait(0.1):
                        # Closing a socket from another thread does not wake a blocked read:
                        # shutdown does, and the engine aborts the job when the client goes.
                        try:
                            api._get_raw_response_socket(response).shutdown(socket.SHUT_RDWR)
                        except Exception:
                            pass
                        response.close()
                        return

            watcher = threading.Thread(target=watch, name="engine-cancel-watch", daemon=True)
            watcher.start()
        try:
            for event in api._stream_helper(response, decode=True):
                yield event
            if cancel is not None and cancel.is_set():
                raise Cancelled()
        except Cancelled:
            raise
        except Exception:
            if cancel is not None and cancel.is_set():
                raise Cancelled() from None
            raise
        finally:
            done.set()
            if watcher is not None:
                watcher.join(timeout=2)
            response.close()

    def build_image(self, context: str | os.PathLike, tag: str, buildargs: dict | None = None,
                    progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                    dockerfile: str = "Dockerfile.device", network_mode: str = "host",
                    labels: dict | None = None) -> str:
        """Build `dockerfile` in `context` (honours .dockerignore), streaming the output; return the image id."""
        from docker import utils

        context = Path(context)
        if not (context / dockerfile).is_file():
            raise EngineError(f"No {dockerfile} in {context}.", "Point the build at the project folder.")
        exclude = None
        ignore = context / ".dockerignore"
        if ignore.exists():
            exclude = [line.strip() for line in ignore.read_text().splitlines()
                       if line.strip() and not line.strip().startswith("#")]
        buildargs = dict(buildargs or {})
        if dockerfile == "Dockerfile.device":
            buildargs = {**_device_build_defaults(context), **buildargs}
        report(progress, "build", f"Sending build context {context}", None)
        tarball = utils.tar(str(context), exclude=exclude, dockerfile=(dockerfile, None))
        params = {"t": tag, "dockerfile": dockerfile, "rm": 1, "forcerm": 1, "networkmode": network_mode,
                  "buildargs": json.dumps(buildargs), "labels": json.dumps(labels or {})}
        image_id = None
        last_lines: list[str] = []
        with self._doing(f"building {tag}"):
            try:
                for event in self._stream("POST", "/build", params=params, data=tarball,
                                          headers={"Content-Type": "application/tar"}, cancel=cancel):
                    if "error" in event or "errorDetail" in event:
                        message = (event.get("errorDetail") or {}).get("message") or event.get("error")
                        tail = "\n".join(last_lines[-10:])
                        raise EngineError(f"Building {tag} failed: {message}", f"Last build output:\n{tail}")
                    if "aux" in event and isinstance(event["aux"], dict) and "ID" in event["aux"]:
                        image_id = event["aux"]["ID"]
                    text = str(event.get("stream", "")).rstrip()
                    if text:
                        last_lines.append(text)
                        fraction = None
                        if text.startswith("Step ") and "/" in text.split(" ", 2)[1]:
                            num, total = text.split(" ", 2)[1].split("/")
                            fraction = (int(num) - 1) / max(1, int(total))
                        report(progress, "build", text, fraction)
            finally:
                tarball.close()
            if image_id is None:
                image_id = self.client.api.inspect_image(tag)["Id"]
        report(progress, "build", f"Built {tag}", 1.0)
        return image_id

    def pull_image(self, ref: str, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> str:
        """Pull `ref` with bytes-weighted progress; errors inside the stream fail the pull. Returns the image id."""
        repo, tag = docker.utils.parse_repository_tag(ref)
        params = {"fromImage": repo, "tag": tag or "latest"}
        tracker = PullProgress()
        with self._doing(f"pulling {ref}"):
            # The engine reports most pull failures *inside* a 200 stream: read every event.
            for event in self._stream("POST", "/images/create", params=params, cancel=cancel):
                error = tracker.feed(event)
                if error:
                    raise EngineError(f"Pulling {ref} failed: {error}",
                                      "Check the image name and the registry connection; nothing was changed.")
                report(progress, "pull", f"{event.get('id', '')} {event.get('status', '')}".strip(), tracker.fraction())
            info = self._image_or_none(ref)
        if info is None:
            raise EngineError(f"Pulling {ref} ended without the image being present.", "Try the pull again.")
        report(progress, "pull", f"Pulled {ref}", 1.0)
        return info["Id"]

    def load_image(self, tar_path: str | os.PathLike, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> list[str]:
        """Load an image archive (`docker save` output, e.g. from a USB stick); return the loaded refs."""
        import tarfile

        tar_path = Path(tar_path)
        if not tar_path.is_file():
            raise EngineError(f"Image file {tar_path} does not exist.", "Choose the .tar file made with `docker save`.")
        try:
            with tarfile.open(tar_path) as tar:
                names = set(tar.getnames())
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise EngineError(f"{tar_path.name} is not a readable image archive ({exc}).",
                              "Copy the file again (it may be truncated) or make it with `docker save -o`; nothing was changed.") from None
        if "manifest.json" not in names and "./manifest.json" not in names:
            raise EngineError(f"{tar_path.name} is a tar file but not an image archive (no manifest.json).",
                              "Make it with `docker save -o FILE IMAGE`; nothing was changed.")
        size = tar_path.stat().st_size

        def chunks() -> Iterator[bytes]:
            sent = 0
            with open(tar_path, "rb") as fh:
                while True:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled()
                    block = fh.read(1 << 20)
                    if not block:
                        return
                    sent += len(block)
                    report(progress, "load", f"Loading {tar_path.name}: {sent >> 20} of {size >> 20} MB", sent / max(1, size))
                    yield block

        loaded: list[str] = []
        with self._doing(f"loading {tar_path.name}"):
            try:
                for event in self._stream("POST", "/images/load", params={"quiet": 0}, data=chunks(),
                                          headers={"Content-Type": "application/x-tar"}, cancel=cancel):
                    if "error" in event or "errorDetail" in event:
                        message = (event.get("errorDetail") or {}).get("message") or event.get("error")
                        raise EngineError(f"Loading {tar_path.name} failed: {message}",
                                          "The archive may be corrupt; copy it again. Nothing was changed.")
                    text = str(event.get("stream", ""))
                    for marker in ("Loaded image: ", "Loaded image ID: "):
                        if text.startswith(marker):
                            loaded.append(text[len(marker):].strip())
            except Cancelled:
                raise
            except docker.errors.APIError as exc:
                raise EngineError(f"Loading {tar_path.name} failed: {exc.explanation}",
                                  "The archive may be corrupt; copy it again. Nothing was changed.") from exc
        if not loaded:
            raise EngineError(f"Loading {tar_path.name} produced no image.", "Check the file; nothing was changed.")
        loaded = self._runtime_first(loaded)
        report(progress, "load", f"Loaded {', '.join(loaded)}", 1.0)
        return loaded

    def _runtime_first(self, refs: list[str]) -> list[str]:
        """Runtime images of a compatible API first (newest first), then anything else: callers
        update to refs[0], and an archive may hold helper images before the runtime."""
        def key(ref: str):
            try:
                info = self.client.api.inspect_image(ref)
            except Exception:
                return (2, 0.0)
            labels = (info.get("Config") or {}).get("Labels") or {}
            ours = labels.get(COMPONENT_LABEL) == "runtime" and \
                str(labels.get(API_LABEL, "")).split(".")[0] == RUNTIME_API_VERSION.split(".")[0]
            return (0 if ours else 1, -_parse_time(info.get("Created", "")))
        return sorted(refs, key=key)

    def list_versions(self, profile: RuntimeProfile) -> list[ImageVersion]:
        """Runtime images on the engine, newest first, marking the one in use and the rollback one."""
        with self._doing("listing runtime versions"):
            images = self.client.api.images(filters={"label": f"{COMPONENT_LABEL}=runtime"})
            current = self._container(profile.runtime_container_name)
        in_use = current["Image"] if current else None
        rollback = ((current or {}).get("Config", {}).get("Labels") or {}).get(PREVIOUS_IMAGE_LABEL)
        out = []
        for img in images:
            labels = img.get("Labels") or {}
            out.append(ImageVersion(
                image_id=img["Id"], tags=tuple(t for t in img.get("RepoTags") or [] if t != "<none>:<none>"),
                version=labels.get(VERSION_LABEL), revision=labels.get(REVISION_LABEL),
                api_version=labels.get(API_LABEL),
                created=datetime.fromtimestamp(img.get("Created", 0), timezone.utc).isoformat(),
                size=int(img.get("Size", 0)), in_use=img["Id"] == in_use, rollback=img["Id"] == rollback))
        out.sort(key=lambda v: v.created, reverse=True)
        return out

    def prune(self, profile: RuntimeProfile, keep: int = 0) -> list[str]:
        """Remove runtime images that are neither in use, the rollback image, the profile's image,
        used by any container, nor among the `keep` newest. Returns the removed image ids."""
        with self._exclusive(profile, "prune"):
            return self._prune(profile, keep)

    def _prune(self, profile: RuntimeProfile, keep: int) -> list[str]:
        versions = self.list_versions(profile)
        with self._doing("pruning runtime images"):
            protected = {self._image_or_none(profile.image)["Id"]} if self._image_or_none(profile.image) else set()
            for info in self.containers():
                protected.add(info["Image"])
                prev = (info["Config"].get("Labels") or {}).get(PREVIOUS_IMAGE_LABEL)
                if prev:
                    protected.add(prev)
            for item in self.client.api.containers(all=True):
                protected.add(item.get("ImageID", ""))
            removed = []
            for index, version in enumerate(versions):
                if version.in_use or version.rollback or version.image_id in protected or index < keep:
                    continue
                try:
                    self.client.api.remove_image(version.image_id, force=False, noprune=False)
                    removed.append(version.image_id)
                except docker.errors.APIError:
                    pass  # in use by something we did not see: keep it
        return removed

    # -- update ----------------------------------------------------------------------------
    def update(self, profile: RuntimeProfile, image_ref: str, progress: ProgressFn | None = None,
               cancel: threading.Event | None = None) -> UpdateReport:
        """Replace the runtime with `image_ref`, gated on health, rolling back on any failure.

        Refuses (nothing stops) if the image is missing, not ours, API-incompatible or for
        another architecture. The journal on disk lets `recover()` finish or undo it after a crash.
        """
        from .update import run_update

        try:
            lock = self._exclusive(profile, f"update to {image_ref}")
            lock.__enter__()
        except EngineError as exc:
            # Refused like a bad image: a report, nothing stopped.
            rep = UpdateReport(image=image_ref, outcome="refused", profile=profile)
            rep.add("lock runtime", False, str(exc))
            return rep
        try:
            return run_update(self, profile, image_ref, progress, cancel)
        finally:
            lock.__exit__(None, None, None)

    def rollback(self, profile: RuntimeProfile, progress: ProgressFn | None = None,
                 cancel: threading.Event | None = None) -> UpdateReport:
        """Go back to the image the current runtime replaced (an update in reverse, equally gated)."""
        with self._exclusive(profile, "rollback"):
            return self._rollback(profile, progress, cancel)

    def _rollback(self, profile: RuntimeProfile, progress: ProgressFn | None,
                  cancel: threading.Event | None) -> UpdateReport:
        with self._doing("finding the rollback image"):
            info = self._container(profile.runtime_container_name)
        previous = ((info or {}).get("Config", {}).get("Labels") or {}).get(PREVIOUS_IMAGE_LABEL)
        if not previous:
            raise EngineError("There is no previous version to roll back to.",
                              "Choose a version from the list of runtime versions instead.")
        with self._doing("finding the rollback image"):
            image = self._image_or_none(previous)
        if image is None:
            raise EngineError(f"The previous image {previous[:19]} is no longer on this device.",
                              "Load or pull that version again.")
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        return self.update(profile, tags[0] if tags else previous, progress, cancel)

    def recover(self, profile: RuntimeProfile, progress: ProgressFn | None = None) -> UpdateReport | None:
        """Finish or roll back an update interrupted by a crash (journal, or a leftover
        `-previous` container). Returns None when there was nothing to recover."""
        from .update import run_recover

        with self._exclusive(profile, "recovery"):
            return run_recover(self, profile, progress)

    # -- helpers used by update ------------------------------------------------------------
    def probe_runtime(self, profile: RuntimeProfile, timeout: float = 1.0) -> tuple[bool, str]:
        """GET /api/health: (True, '') only when the runtime reports a recent real frame."""
        try:
            with urllib.request.urlopen(profile.base_url + "/api/health", timeout=timeout) as resp:
                body = json.loads(resp.read() or b"{}")
                if resp.status == 200 and body.get("ok") is True:
                    return True, ""
                return False, f"health answered {resp.status}: {body}"
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read() or b"{}")
                return False, f"no real frame yet ({body.get('reason') or exc.code})"
            except Exception:
                return False, f"health answered {exc.code}"
        except Exception as exc:
            return False, f"runtime not answering on {profile.base_url} ({exc.__class__.__name__})"

    def log_tail(self, container_id: str, lines: int = 15) -> str:
        try:
            return self.client.api.logs(container_id, tail=lines).decode(errors="replace").strip()
        except Exception:
            return "(no logs)"

    def wait_healthy(self, profile: RuntimeProfile, container_id: str, timeout: float,
                     cancel: threading.Event | None = None,
                     progress: ProgressFn | None = None, stage: str = "health",
                     grace_s: float = 0.0) -> tuple[bool, str]:
        """Health gate: Docker health `healthy` (when the image defines one) AND a real frame
        reported by the runtime, within `timeout`. A restarting or exited container fails at once;
        Docker's `unhealthy` fails at once only after `grace_s` (it can still turn healthy, and
        after a handover the container's own start period is already over)."""
        with self._doing("waiting for the runtime to be healthy"):
            return self._wait_healthy(profile, container_id, timeout, cancel, progress, stage, grace_s)

    def _wait_healthy(self, profile, container_id, timeout, cancel, progress, stage, grace_s) -> tuple[bool, str]:
        start = time.monotonic()
        deadline = start + timeout
        first = self._container(container_id)
        if first is None:
            return False, "the container disappeared"
        restarts0 = int(first.get("RestartCount", 0))
        why = ""
        while True:
            info = self._container(container_id)
            if info is None:
                return False, "the container disappeared"
            state = info["State"]
            if state.get("Restarting") or int(info.get("RestartCount", 0)) > restarts0:
                return False, f"the runtime is restarting (crash loop). Last log lines:\n{self.log_tail(container_id)}"
            if state.get("Status") in ("exited", "dead"):
                return False, (f"the runtime exited with code {state.get('ExitCode')}. "
                               f"Last log lines:\n{self.log_tail(container_id)}")
            health = (state.get("Health") or {}).get("Status", "none")
            if health == "unhealthy" and time.monotonic() - start >= grace_s:
                log = ((state.get("Health") or {}).get("Log") or [{}])[-1].get("Output", "")
                last = log.strip().splitlines()[-1][:200] if log.strip() else "no output"
                return False, f"Docker reports the runtime unhealthy (last check: {last})"
            frame_ok, why = self.probe_runtime(profile)
            docker_ok = health in ("healthy", "none")
            if docker_ok and frame_ok:
                return True, f"healthy after {time.monotonic() - start:.1f} s"
            if not docker_ok:
                why = f"Docker health is {health}" + (f"; {why}" if why else "")
            if time.monotonic() > deadline:
                return False, (f"not healthy within {timeout:.0f} s ({why}). "
                               f"Last log lines:\n{self.log_tail(container_id)}")
            if cancel is not None and cancel.is_set():
                return False, "cancelled"
            elapsed = time.monotonic() - start
            report(progress, stage, f"Waiting for the runtime to be healthy: {why}", min(0.99, elapsed / timeout))
            time.sleep(0.1)


# -- small helpers -------------------------------------------------------------------------------
def _parse_time(text: str) -> float:
    """Docker RFC3339 with nanoseconds -> unix seconds."""
    text = text.strip().replace("Z", "+00:00")
    if "." in text:
        head, frac = text.split(".", 1)
        digits = "".join(ch for ch in frac if ch.isdigit())
        tz = frac[len(digits):]
        text = f"{head}.{digits[:6]}{tz}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _device_build_defaults(context: Path) -> dict[str, str]:
    """VERSION, RUNTIME_API and REVISION for Dockerfile.device, read from the context's sources,
    so an image built from the GUI carries labels that match the code inside it."""
    import re
    import subprocess

    out: dict[str, str] = {}
    try:
        text = (context / "helio_gui" / "__init__.py").read_text()
        for key, pattern in (("VERSION", r'__version__ = "([^"]+)"'), ("RUNTIME_API", r'RUNTIME_API_VERSION = "([^"]+)"')):
            match = re.search(pattern, text)
            if match:
                out[key] = match.group(1)
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", str(context), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            out["REVISION"] = rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _ts_key(ts: str) -> str:
    """RFC3339Nano trims trailing zeros, so compare '<seconds><9-digit fraction>' strings."""
    head, _, frac = ts.rstrip("Z").partition(".")
    return head + frac.ljust(9, "0")


def _lines(stream) -> Iterator[str]:
    buf = b""
    for chunk in stream:
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")
    if buf:
        yield buf.decode(errors="replace")


def _cpu_percent(cpu: dict, pre: dict) -> float | None:
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        sys_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None
    if sys_delta <= 0 or cpu_delta < 0:
        return None
    cpus = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    return round(cpu_delta / sys_delta * cpus * 100.0, 2)
