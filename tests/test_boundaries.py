"""The package boundaries: the runtime runs headless (no Qt), only the engine speaks Docker."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import helio_gui

PACKAGE = Path(helio_gui.__file__).parent


def _loaded_after_import(*modules: str) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _submodules(package: str) -> list[str]:
    root = PACKAGE / package
    return [
        "helio_gui." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted(root.rglob("*.py"))
        if path.name != "__main__.py" or package == "runtime"
    ]


def test_runtime_vision_engine_client_load_without_qt():
    modules = _submodules("vision") + _submodules("runtime") + _submodules("engine") + _submodules("client")
    loaded = _loaded_after_import(*modules)
    assert "PySide6" not in loaded, "a Qt-free package imported PySide6"
    assert "shiboken6" not in loaded


def test_runtime_and_vision_load_without_docker():
    loaded = _loaded_after_import(*(_submodules("vision") + _submodules("runtime") + _submodules("client")))
    assert "docker" not in loaded, "only helio_gui.engine may import docker"


def _imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_static_import_rules():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        part = path.relative_to(PACKAGE).parts[0]
        names = _imported_top_level_names(path)
        if "docker" in names and part != "engine":
            offenders.append(f"{path.relative_to(PACKAGE)} imports docker (only engine/ may)")
        if names & {"PySide6", "shiboken6", "pyqtgraph"} and part != "ui":
            offenders.append(f"{path.relative_to(PACKAGE)} imports Qt (only ui/ may)")
    assert not offenders, "\n".join(offenders)
