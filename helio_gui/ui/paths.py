"""Where the GUI keeps its settings and logs, and a quick early read of the settings.

Kept free of pydantic (and Qt) so `helio-gui` can start the embedded runtime before the heavy
imports: the runtime's start-up is the longest part of a cold start, so it starts first.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME, APP_AUTHOR = "helio-gui", "HelioVision"


def config_dir() -> Path:
    return Path(os.environ.get("HELIO_GUI_CONFIG_DIR") or platformdirs.user_config_dir(APP_NAME, APP_AUTHOR))


def log_dir() -> Path:
    return Path(os.environ.get("HELIO_GUI_LOG_DIR") or platformdirs.user_log_dir(APP_NAME, APP_AUTHOR))


def settings_path() -> Path:
    return config_dir() / "gui.yaml"


def early_settings(path: Path | None = None) -> dict:
    """`mode`, `source` and `recipe` from the settings file, read without validating it (so the
    runtime can be started before pydantic is imported). Anything unreadable gives {}; the full
    `GuiConfig.load()` that follows reports what is wrong."""
    import yaml

    path = path or settings_path()
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for key in ("mode", "source", "recipe"):
        value = data.get(key)
        if value is None or isinstance(value, str):
            out[key] = value
    return out
