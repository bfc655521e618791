"""RuntimeProfile: the saved, declarative description of the runtime container.

Containers are always created from a profile, never by copying an old container's inspect
output: image defaults (ENV, VOLUME) would leak in and allow-lists drop devices.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import EngineError

ROLE_LABEL = "io.heliovision.role"
PROFILE_LABEL = "io.heliovision.profile"
PREVIOUS_IMAGE_LABEL = "io.heliovision.previous-image"
COMPONENT_LABEL = "io.heliovision.component"
API_LABEL = "io.heliovision.runtime-api"
VERSION_LABEL = "org.opencontainers.image.version"
REVISION_LABEL = "org.opencontainers.image.revision"
# Set by Dockerfile.device: the image's entry point preloads, then waits for the port (see
# helio_gui/engine/device_entry.py), so the engine may start it before stopping the old one.
HANDOVER_LABEL = "io.heliovision.handover"
HANDOVER_READY = "helio-device-entry: ready for handover"

# Where the profile's host paths appear inside the container.
CONTAINER_DATA_DIR = "/data"
CONTAINER_RECIPE = "/etc/helio/recipe"


class HealthCheckConfig(BaseModel):
    """Docker health check. `test=None` keeps the image's own HEALTHCHECK command."""

    model_config = ConfigDict(extra="forbid")
    test: list[str] | None = None
    interval_s: float = 2.0
    timeout_s: float = 3.0
    retries: int = 3
    start_period_s: float = 30.0
    disabled: bool = False

    def to_docker(self) -> dict:
        if self.disabled:
            return {"test": ["NONE"]}
        ns = 1_000_000_000
        spec = {
            "interval": int(self.interval_s * ns),
            "timeout": int(self.timeout_s * ns),
            "retries": self.retries,
            "start_period": int(self.start_period_s * ns),
        }
        if self.test:
            spec["test"] = list(self.test)
        return spec


class Mount(BaseModel):
    """An extra bind mount (e.g. a video file used as the source)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    target: str
    read_only: bool = True


class RuntimeProfile(BaseModel):
    """Everything needed to (re)create the runtime container, and nothing copied from one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    image: str
    container_name: str | None = None
    devices: list[str] = Field(default_factory=list, description="host[:container[:perms]]")
    source: str | None = None
    recipe_file: str | None = None
    data_volume: str | None = Field(default=None, description="named volume or absolute host path, mounted at /data")
    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=1, le=65535)
    token: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    mounts: list[Mount] = Field(default_factory=list)
    command: list[str] | None = None
    restart_policy: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    init: bool = True
    network_mode: Literal["host", "none"] = "host"
    healthcheck: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    mem_limit_mb: int | None = Field(default=None, ge=16)
    cpus: float | None = Field(default=None, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    read_only_root: bool = Field(default=False, description="read-only root filesystem, tmpfs on /tmp; needs data_volume")
    stop_timeout_s: int = Field(default=10, ge=0)
    health_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("devices")
    @classmethod
    def _device_syntax(cls, value: list[str]) -> list[str]:
        for dev in value:
            if not dev.startswith("/"):
                raise ValueError(f"device {dev!r} must be an absolute host path such as /dev/video0")
        return value

    # -- derived ---------------------------------------------------------------------------
    @property
    def runtime_container_name(self) -> str:
        return self.container_name or f"helio-runtime-{self.name}"

    @property
    def previous_container_name(self) -> str:
        return f"{self.runtime_container_name}-previous"

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    def all_labels(self) -> dict[str, str]:
        labels = dict(self.labels)
        labels[ROLE_LABEL] = "runtime"
        labels[PROFILE_LABEL] = self.name
        return labels

    def environment(self) -> dict[str, str]:
        env = {"HELIO_HOST": self.host, "HELIO_PORT": str(self.port), "HELIO_DATA_DIR": CONTAINER_DATA_DIR}
        if self.source:
            env["HELIO_SOURCE"] = self.source
        if self.recipe_file:
            env["HELIO_RECIPE"] = CONTAINER_RECIPE + Path(self.recipe_file).suffix
        if self.token:
            env["HELIO_TOKEN"] = self.token
        env.update(self.env)
        return env

    def check_host(self) -> None:
        """Raise EngineError if a device, recipe or mount the profile names does not exist."""
        for dev in self.devices:
            host_path = dev.split(":", 1)[0]
            if not os.path.exists(host_path):
                raise EngineError(
                    f"Camera device {host_path} does not exist on this machine.",
                    "Plug the camera in (check `ls /dev/video*`) or fix the device in the runtime profile.",
                )
        if self.recipe_file and not Path(self.recipe_file).is_file():
            raise EngineError(f"Recipe file {self.recipe_file} does not exist.",
                              "Choose an existing recipe file in the runtime profile.")
        for mount in self.mounts:
            if not os.path.exists(mount.source):
                raise EngineError(f"Mount source {mount.source} does not exist.",
                                  "Fix or remove that mount in the runtime profile.")
        if self.read_only_root and not self.data_volume:
            raise EngineError("A read-only root filesystem needs a data volume (the runtime stores results in /data).",
                              "Set a data volume in the runtime profile, or turn the read-only root off.")
        if self.data_volume and self.data_volume.startswith("/") and not Path(self.data_volume).is_dir():
            raise EngineError(f"Data folder {self.data_volume} does not exist.",
                              "Create it or choose a named volume for the data.")

    def create_kwargs(self, image: str | None = None, extra_labels: dict[str, str] | None = None) -> dict:
        """Keyword arguments for `client.containers.create`, from this profile only."""
        volumes: dict[str, dict] = {}
        if self.data_volume:
            volumes[self.data_volume] = {"bind": CONTAINER_DATA_DIR, "mode": "rw"}
        if self.recipe_file:
            volumes[str(Path(self.recipe_file).resolve())] = {
                "bind": CONTAINER_RECIPE + Path(self.recipe_file).suffix, "mode": "ro"}
        for mount in self.mounts:
            volumes[str(Path(mount.source).resolve())] = {"bind": mount.target, "mode": "ro" if mount.read_only else "rw"}
        devices = []
        for dev in self.devices:
            parts = dev.split(":")
            host = parts[0]
            target = parts[1] if len(parts) > 1 and parts[1] else host
            perms = parts[2] if len(parts) > 2 else "rwm"
            devices.append(f"{host}:{target}:{perms}")
        labels = self.all_labels()
        labels.update(extra_labels or {})
        kwargs: dict = {
            "image": image or self.image,
            "name": self.runtime_container_name,
            "environment": self.environment(),
            "labels": labels,
            "network_mode": self.network_mode,
            "init": self.init,
            "healthcheck": self.healthcheck.to_docker(),
            "volumes": volumes,
            "devices": devices,
            "stop_signal": "SIGTERM",
            "detach": True,
        }
        # Host networking: the engine rejects hostname/aliases/MAC, so none are ever set.
        if self.restart_policy != "no":
            kwargs["restart_policy"] = {"Name": self.restart_policy}
        if self.command:
            kwargs["command"] = list(self.command)
        if self.mem_limit_mb:
            kwargs["mem_limit"] = f"{self.mem_limit_mb}m"
        if self.cpus:
            kwargs["nano_cpus"] = int(self.cpus * 1e9)
        if self.read_only_root:
            # Nothing but /data (the volume) and /tmp is writable: a compromised or buggy runtime
            # cannot alter the image's files, and the image needs no other writes (checked in tests).
            kwargs["read_only"] = True
            kwargs["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}
        if devices:
            # The runtime runs as a non-root user in the `video` group of the image.
            kwargs["group_add"] = ["video"]
        return kwargs

    # -- persistence -----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "RuntimeProfile":
        """Read a profile saved by `save`; raise EngineError saying which field is wrong."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise EngineError(f"Runtime profile {path} does not exist.", "Create one in the engine settings.") from None
        except json.JSONDecodeError as exc:
            raise EngineError(f"Runtime profile {path} is not valid JSON (line {exc.lineno}: {exc.msg}).",
                              "Fix or delete the file; the settings dialog writes a fresh one.") from None
        try:
            return cls.model_validate(data)
        except Exception as exc:
            raise EngineError(f"Runtime profile {path} is invalid: {exc}", "Fix the named field.") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file, fsync, rename) so a crash never leaves half a profile."""
        write_json_atomic(Path(path), self.model_dump(mode="json"))


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to `path` durably: temp file in the same folder, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
