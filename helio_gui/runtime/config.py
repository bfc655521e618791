"""`helio-runtime` settings from flags and environment variables, and where the demo lives."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import platformdirs

import helio_gui
from helio_gui import RUNTIME_API_VERSION, __version__

DEFAULT_PORT = 8750
DEFAULT_MAX_BODY = 1024 * 1024  # recipes are text; nothing legitimate is bigger


class ConfigError(ValueError):
    """A setting is invalid; the message says which and what is allowed."""


class DataDirError(ConfigError):
    """The data directory cannot be used (read-only, full, wrong kind of file); exit code 1."""


@dataclass
class RuntimeConfig:
    source: str
    recipe: Path | None  # None: the saved PUT recipe or the demo recipe
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str = ""
    log_level: str = "INFO"
    max_body: int = DEFAULT_MAX_BODY
    max_reject_images: int = 2000
    max_reject_bytes: int = 500 * 1024 * 1024
    stall_timeout_s: float = 1.0


def resources_dir() -> Path | None:
    """The `resources/` folder: $HELIO_RESOURCES_DIR, package data, the source tree, or
    `<prefix>/share/heliovision/resources` (where a non-editable install can put it)."""
    candidates = []
    if os.environ.get("HELIO_RESOURCES_DIR"):
        candidates.append(Path(os.environ["HELIO_RESOURCES_DIR"]))
    pkg = Path(helio_gui.__file__).resolve().parent
    candidates += [pkg / "resources", pkg.parent / "resources",
                   Path(sys.prefix) / "share" / "heliovision" / "resources"]
    for c in candidates:
        if (c / "demo").is_dir():
            return c
    return None


def _demo_file(suffixes: tuple[str, ...], what: str, prefer: str = "") -> Path:
    res = resources_dir()
    if res is None:
        raise ConfigError(f"no {what} given and the demo resources were not found; pass --"
                          f"{'source' if what == 'source' else 'recipe'} or set HELIO_RESOURCES_DIR "
                          "to the folder that holds demo/")
    files = sorted(p for p in (res / "demo").iterdir() if p.suffix.lower() in suffixes)
    preferred = [p for p in files if prefer and prefer in p.stem]
    if preferred or files:
        return (preferred or files)[0]
    raise ConfigError(f"no demo {what} in {res / 'demo'}; pass one explicitly")


def demo_source() -> str:
    """The demo clip, looping and paced like a camera."""
    return f"file:{_demo_file(('.mp4', '.avi', '.mkv', '.webm'), 'source')}?loop=1&paced=1"


def demo_recipe() -> Path:
    return _demo_file((".toml", ".yaml", ".yml"), "recipe", prefer="demo")


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("heliovision")) / "runtime"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="helio-runtime",
        description="HelioVision headless vision runtime: capture, inspect, store, serve the local API. "
                    "Every option also reads its HELIO_* environment variable.")
    p.add_argument("--source", default=env("HELIO_SOURCE"), help="source spec (default: the demo clip) [HELIO_SOURCE]")
    p.add_argument("--recipe", default=env("HELIO_RECIPE"), help="recipe file, TOML or YAML [HELIO_RECIPE]")
    p.add_argument("--data-dir", default=env("HELIO_DATA_DIR"), help="results, shifts, token [HELIO_DATA_DIR]")
    p.add_argument("--host", default=env("HELIO_HOST", "127.0.0.1"), help="listen address [HELIO_HOST]")
    p.add_argument("--port", default=env("HELIO_PORT", str(DEFAULT_PORT)), help="listen port [HELIO_PORT]")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--token", default=None, help="API token [HELIO_TOKEN]")
    tok.add_argument("--token-file", default=None, help="file holding the API token [HELIO_TOKEN_FILE]")
    p.add_argument("--log-level", default=env("HELIO_LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR [HELIO_LOG_LEVEL]")
    p.add_argument("--validate-recipe", metavar="FILE", help="check a recipe file and exit (1 on error)")
    p.add_argument("--version", action="version",
                   version=f"helio-runtime {__version__} (runtime API {RUNTIME_API_VERSION})")
    return p


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def resolve_token(args: argparse.Namespace, data_dir: Path) -> str:
    """Token from --token, --token-file, HELIO_TOKEN, HELIO_TOKEN_FILE, or DATA_DIR/token (made
    with mode 0600 when absent)."""
    token_file = args.token_file
    token = args.token
    if token is None and token_file is None:
        token = os.environ.get("HELIO_TOKEN") or None
        token_file = os.environ.get("HELIO_TOKEN_FILE") or None
    if token is not None:
        if not token.strip():
            raise ConfigError("the token is empty; give a non-empty token or none to generate one")
        return token.strip()
    if token_file is not None:
        try:
            value = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"the token file {token_file} is empty")
        return value
    path = data_dir / "token"
    try:
        if path.exists():
            value = path.read_text().strip()
            if value:
                return value
        value = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        os.chmod(path, 0o600)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise DataDirError(f"cannot read or create the token file {path}: {reason}; make the data "
                           "directory writable (or fix that file), or pass --token / --token-file") from None
    return value


def config_from_args(args: argparse.Namespace) -> RuntimeConfig:
    """Validated settings; raises ConfigError with a message a person can act on."""
    try:
        port = int(args.port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ConfigError(f"port {args.port!r} is not a TCP port number (0-65535)") from None
    level = str(args.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"log level {args.log_level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {data_dir}: {exc.strerror}") from None
    recipe = Path(args.recipe) if args.recipe else None
    if recipe is not None and not recipe.is_file():
        raise ConfigError(f"recipe file {recipe} does not exist; pass an existing TOML or YAML file")
    source = args.source or demo_source()
    return RuntimeConfig(
        source=source, recipe=recipe, data_dir=data_dir, host=args.host, port=port,
        token=resolve_token(args, data_dir), log_level=level,
        max_body=_env_int("HELIO_MAX_BODY", DEFAULT_MAX_BODY),
        max_reject_images=_env_int("HELIO_REJECT_IMAGES_MAX", 2000),
        max_reject_bytes=_env_int("HELIO_REJECT_IMAGES_MAX_BYTES", 500 * 1024 * 1024),
    )
