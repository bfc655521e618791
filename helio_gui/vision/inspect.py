"""Runs a recipe's tools on one part."""

from __future__ import annotations

import logging
from pathlib import Path

from .recipe import Recipe
from .tools import Tool, ToolSetupError, build
from .trigger import PartEvent
from .types import Frame, Inspection, ToolResult

log = logging.getLogger(__name__)

__all__ = ["Inspector", "ToolSetupError"]


class Inspector:
    """Built once per recipe (tools load their references here); `inspect` per part.

    Raises `ToolSetupError` at construction if a tool cannot be set up (missing template image),
    so a recipe change can be refused before it replaces the running one.
    """

    def __init__(self, recipe: Recipe, base_dir: str | Path | None = None):
        if base_dir is not None and recipe.base_dir is None:
            recipe = recipe.model_copy()
            recipe.base_dir = str(base_dir)
        self.recipe = recipe
        self.tools: list[Tool] = []
        for i, cfg in enumerate(recipe.tools):
            try:
                self.tools.append(build(cfg, recipe))
            except ToolSetupError as exc:
                exc.index = i
                raise
            except Exception as exc:  # any other failure still names the tool it came from
                raise ToolSetupError(f"tool {cfg.name!r}: cannot be set up: {exc}", index=i) from exc

    def inspect(self, frame: Frame, event: PartEvent | None = None) -> Inspection:
        """All tools on the part in `event` (or on the whole frame); a tool that raises is a FAIL
        with defect `tool_error`, never a crash of the loop."""
        h, w = frame.image.shape[:2]
        anchor = (event.box if event is not None and event.box is not None else None) or (0, 0, w, h)
        results = []
        for tool in self.tools:
            try:
                results.append(tool.run(frame.image, anchor))
            except Exception as exc:  # one bad tool must not stop the line
                log.exception("tool %s failed", tool.name)
                results.append(ToolResult(tool.name, False, "tool_error", {"error": str(exc)[:200]}))
        return Inspection(frame_id=frame.frame_id, frame_ts=frame.timestamp, tools=tuple(results),
                          part_region=event.region if event is not None else None,
                          recipe_name=self.recipe.name, recipe_version=self.recipe.version,
                          frame_size=(w, h))
