"""The GUI's own settings (alarm thresholds, PIN, mode, source), in the platform's config dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

DEFAULT_PIN = "1234"


from .paths import config_dir, log_dir  # noqa: E402,F401 - re-exported (paths has no pydantic)


def hash_pin(pin: str) -> str:
    return hashlib.sha256(("helio:" + pin).encode()).hexdigest()


class AlarmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    defect_rate_threshold: float = Field(0.25, ge=0.0, le=1.0)  # fraction of FAIL in the window
    window_parts: int = Field(40, ge=5, le=10000)
    min_parts: int = Field(10, ge=1, le=10000)  # no rate alarm on the first few parts of a shift
    runtime_down_s: float = Field(3.0, ge=0.5, le=600)


class GuiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: str = Field("auto", pattern="^(auto|embedded|docker|remote)$")
    source: str | None = None
    recipe: str | None = None
    runtime_url: str | None = None
    profile_path: str | None = None
    engineer_pin_sha256: str = hash_pin(DEFAULT_PIN)
    auto_lock_s: float = Field(120.0, ge=10, le=3600)
    alarms: AlarmConfig = AlarmConfig()
    # Runtime → Update → Build: the BASE_IMAGE build arg (a local image on an air-gapped
    # machine); None keeps Dockerfile.device's default, a registry image.
    build_base_image: str | None = None

    @classmethod
    def path(cls) -> Path:
        return config_dir() / "gui.yaml"

    @classmethod
    def load(cls, path: Path | None = None) -> "GuiConfig":
        """Reads the config; a missing file gives defaults, a broken one raises ValueError."""
        path = path or cls.path()
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text("utf-8")) or {}
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"{path}: {exc}\nFix or delete the file to start from defaults.") from exc

    def save(self, path: Path | None = None) -> Path:
        path = path or self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False), "utf-8")
        os.replace(tmp, path)
        return path
