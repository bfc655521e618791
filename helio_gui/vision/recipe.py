"""Inspection recipes: TOML or YAML files, typed with pydantic, errors with file and line.

A recipe names a trigger (how parts are found in the stream) and a list of tools (what is
checked on each part). Regions of interest are fractions `[x, y, w, h]` of an anchor: the part's
box from the trigger (`anchor = "part"`, the default; the whole frame when there is no part) or
the whole frame (`anchor = "frame"`). Areas and distances are frame pixels.

Adding a tool type (e.g. an ONNX classifier): write a config model here with
`type: Literal["onnx_classifier"]`, add it to `ToolConfig`, and register its implementation with
`@register_tool("onnx_classifier")` in `tools.py`. Nothing else changes.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

# -- building blocks -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HsvRange(_Strict):
    """OpenCV HSV: hue 0-179, saturation and value 0-255. lower hue > upper hue wraps (reds)."""

    lower: tuple[int, int, int]
    upper: tuple[int, int, int]

    @field_validator("lower", "upper")
    @classmethod
    def _in_range(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        h, s, val = v
        if not (0 <= h <= 179 and 0 <= s <= 255 and 0 <= val <= 255):
            raise ValueError("expected [hue 0-179, saturation 0-255, value 0-255]")
        return v


class Segmentation(_Strict):
    """Which pixels are foreground: gray threshold and/or HSV ranges (any matching pixel).
    With neither, Otsu's threshold on gray with the given polarity."""

    threshold: int | None = Field(default=None, ge=0, le=255)
    polarity: Literal["bright", "dark"] = "bright"
    hsv: list[HsvRange] = Field(default_factory=list, max_length=16)
    blur: int = Field(default=0, ge=0, le=31)  # Gaussian kernel before thresholding, 0 = none
    open_px: int = Field(default=1, ge=0, le=25)  # morphological opening: removes speckle
    close_px: int = Field(default=2, ge=0, le=50)  # closing: fills small holes and gaps


Roi = Annotated[tuple[float, float, float, float], Field(description="[x, y, w, h] as fractions")]


class _ToolBase(_Strict):
    name: str = Field(min_length=1, max_length=64)
    roi: Roi = (0.0, 0.0, 1.0, 1.0)
    anchor: Literal["part", "frame"] = "part"

    @field_validator("roi")
    @classmethod
    def _roi_ok(cls, v):
        x, y, w, h = v
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 and 0 < h <= 1
                and x + w <= 1.0001 and y + h <= 1.0001):
            raise ValueError("roi is [x, y, w, h] as fractions 0-1 of the anchor, with x+w <= 1 and y+h <= 1")
        return v


class Tolerance(_Strict):
    nominal: float = Field(gt=0)
    tolerance: float = Field(ge=0)  # ± in the same unit

    @property
    def low(self) -> float:
        return self.nominal - self.tolerance

    @property
    def high(self) -> float:
        return self.nominal + self.tolerance


def _not_below(lower_name: str):
    """A field validator: the field (an upper limit) must not be below `lower_name` (checked
    before it), so a limit pair that can never be met is refused at the limit's own line."""
    def check(cls, v, info: ValidationInfo):
        low = info.data.get(lower_name)
        if v is not None and low is not None and v < low:
            raise ValueError(f"must not be below {lower_name} ({low:g}): no value could be within both limits")
        return v
    return check


MAX_TOOLS = 64


# -- tools -------------------------------------------------------------------------------------


class BlobTool(_ToolBase):
    """Presence / blob count: foreground blobs in the ROI within area limits, counted."""

    type: Literal["blob"]
    segment: Segmentation = Field(default_factory=Segmentation)
    min_area: float = Field(default=20, ge=0)
    max_area: float | None = Field(default=None, gt=0)
    expected_count: int | None = Field(default=None, ge=0)
    min_count: int | None = Field(default=None, ge=0)
    max_count: int | None = Field(default=None, ge=0)
    defect: str = "missing_feature"
    too_many_defect: str | None = None  # defect when more than allowed (default: same as defect)

    _max_area_ok = field_validator("max_area")(classmethod(_not_below("min_area")))

    @model_validator(mode="after")
    def _counts(self):
        if self.expected_count is None and self.min_count is None and self.max_count is None:
            self.min_count = 1
        if self.min_count is not None and self.max_count is not None and self.min_count > self.max_count:
            raise ValueError("min_count must not exceed max_count")
        return self


class ColorClassTool(_ToolBase):
    """Colour class: the class whose HSV ranges cover most of the ROI; not `expected` → defect."""

    type: Literal["color_class"]
    classes: dict[str, Annotated[list[HsvRange], Field(max_length=16)]] = Field(min_length=1, max_length=32)
    expected: str | list[str]
    min_fraction: float = Field(default=0.05, gt=0, le=1)  # of the ROI, for a class to count
    defect: str = "wrong_part"

    @model_validator(mode="after")
    def _expected_known(self):
        wanted = [self.expected] if isinstance(self.expected, str) else self.expected
        unknown = [w for w in wanted if w not in self.classes]
        if unknown:
            raise ValueError(f"expected class {', '.join(unknown)} is not one of the classes: "
                             f"{', '.join(self.classes)}")
        return self


class DimensionTool(_ToolBase):
    """Length / width of the largest outline in the ROI (cv2.minAreaRect), in mm."""

    type: Literal["dimension"]
    segment: Segmentation = Field(default_factory=Segmentation)
    px_per_mm: float = Field(default=1.0, gt=0)
    length: Tolerance | None = None
    width: Tolerance | None = None
    min_area: float = Field(default=50, ge=0)
    defect: str = "wrong_size"


class TemplateTool(_ToolBase):
    """Golden template: align the ROI to a reference image, threshold the difference, report
    defect regions of at least `min_defect_area` pixels."""

    type: Literal["template"]
    reference: str  # image path, relative to the recipe file's folder
    align: Literal["none", "phase", "ecc"] = "phase"
    diff_threshold: int = Field(default=40, ge=1, le=255)
    min_defect_area: float = Field(default=30, ge=1)
    max_defects: int = Field(default=0, ge=0)
    blur: int = Field(default=3, ge=0, le=31)
    defect: str = "surface_defect"


class BarcodeTool(_ToolBase):
    """Barcode / QR / DataMatrix with zxing-cpp; the whole text must match `expected` (a regex,
    `re.fullmatch`). `formats` are zxing-cpp `BarcodeFormat` names, e.g. QRCode, DataMatrix."""

    type: Literal["barcode"]
    formats: list[str] = Field(default_factory=list)  # zxingcpp.BarcodeFormat names; [] = all
    expected: str | None = None
    min_codes: int = Field(default=1, ge=1)
    try_harder: bool = True
    defect: str = "code_unreadable"
    mismatch_defect: str = "code_mismatch"

    @field_validator("expected")
    @classmethod
    def _regex(cls, v):
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v):
        import zxingcpp

        known = {n for n in dir(zxingcpp.BarcodeFormat) if not n.startswith("_") and n[0].isupper()}
        bad = [f for f in v if f not in known]
        if bad:
            raise ValueError(f"unknown format {', '.join(bad)}; allowed: {', '.join(sorted(known))}")
        return v


class LevelTool(_ToolBase):
    """Fill level: in the ROI, the first row from the top where at least `row_fraction` of the
    pixels are foreground; its position (fraction of ROI height) must lie in [min_level, max_level]."""

    type: Literal["level"]
    segment: Segmentation = Field(default_factory=lambda: Segmentation(polarity="dark"))
    row_fraction: float = Field(default=0.5, gt=0, le=1)
    min_level: float = Field(default=0.0, ge=0, le=1)  # level nearer the top than this: overfilled
    max_level: float = Field(default=1.0, ge=0, le=1)  # further down than this: underfilled
    over_defect: str = "overfilled"
    under_defect: str = "underfilled"
    defect: str = "underfilled"  # also used when no level is found at all

    _max_level_ok = field_validator("max_level")(classmethod(_not_below("min_level")))


class EdgeTool(_ToolBase):
    """Edge angle and position: in the ROI, the first foreground pixel of each column (or row)
    seen from `scan`'s side; a line fitted through them gives the angle (degrees), the position
    (fraction of the ROI across the scan) and the straightness (median residual, px). For
    skewed labels, tilted caps, a bent part."""

    type: Literal["edge"]
    segment: Segmentation = Field(default_factory=Segmentation)
    scan: Literal["top_down", "bottom_up", "left_right", "right_left"] = "top_down"
    min_points: float = Field(default=0.5, gt=0, le=1)  # share of columns that must show the edge
    max_angle: float = Field(default=5.0, ge=0, le=90)
    min_position: float = Field(default=0.0, ge=0, le=1)
    max_position: float = Field(default=1.0, ge=0, le=1)
    max_residual: float = Field(default=3.0, ge=0)
    defect: str = "misaligned"
    missing_defect: str = "edge_missing"

    _max_position_ok = field_validator("max_position")(classmethod(_not_below("min_position")))


ToolConfig = Annotated[
    Union[BlobTool, ColorClassTool, DimensionTool, TemplateTool, BarcodeTool, LevelTool, EdgeTool],
    Field(discriminator="type"),
]
TOOL_MODELS: dict[str, type[_ToolBase]] = {
    "blob": BlobTool, "color_class": ColorClassTool, "dimension": DimensionTool,
    "template": TemplateTool, "barcode": BarcodeTool, "level": LevelTool, "edge": EdgeTool,
}


class TriggerConfig(_Strict):
    """How parts are found. `line`: a part fires once when its centre crosses `line` (fraction
    of the ROI along `direction`); `zone`: once when it is fully inside the ROI; `every_frame`:
    each frame is a part (image folders); `external`: only `POST /api/trigger`."""

    mode: Literal["line", "zone", "every_frame", "external"] = "every_frame"
    roi: Roi = (0.0, 0.0, 1.0, 1.0)  # fractions of the frame where parts are looked for
    direction: Literal["left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top"] = "left_to_right"
    line: float = Field(default=0.5, gt=0, lt=1)
    segment: Segmentation = Field(default_factory=Segmentation)
    min_area: float = Field(default=400, ge=1)  # frame pixels
    max_area: float | None = Field(default=None, gt=0)
    downscale: float = Field(default=0.5, gt=0.05, le=1)  # the trigger looks at a smaller image
    max_distance: float = Field(default=120, gt=0)  # frame px a part may move between frames
    max_missed: int = Field(default=4, ge=0, le=100)  # frames a track survives unseen
    edge_margin: int = Field(default=3, ge=0)  # zone mode: px the box must stay inside the ROI
    pad: int = Field(default=8, ge=0)  # px added around the part box handed to the tools

    _max_area_ok = field_validator("max_area")(classmethod(_not_below("min_area")))

    @field_validator("roi")
    @classmethod
    def _roi_ok(cls, v):
        return _ToolBase._roi_ok(v)


class Recipe(_Strict):
    """One inspection recipe: a trigger and the tools run on every part."""

    name: str = Field(min_length=1, max_length=80)
    version: str = "1"
    description: str = ""
    trigger: TriggerConfig = Field(default_factory=TriggerConfig)
    # Every tool runs on every part: thousands (a 1 MB PUT holds ~15 000) would stall the line.
    tools: list[ToolConfig] = Field(default_factory=list, max_length=MAX_TOOLS)
    base_dir: str | None = Field(default=None, exclude=True)  # set by the loader, not the file

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, v):
        return str(v) if isinstance(v, int | float) else v

    @model_validator(mode="after")
    def _unique_names(self):
        seen: set[str] = set()
        for t in self.tools:
            if t.name in seen:
                raise ValueError(f"two tools are named {t.name!r}; tool names must be unique")
            seen.add(t.name)
        return self

    def resolve(self, path: str) -> Path:
        """A path from the recipe, relative to the recipe file's folder."""
        p = Path(path).expanduser()
        if not p.is_absolute() and self.base_dir:
            p = Path(self.base_dir) / p
        return p


# -- errors with lines -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecipeIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line if self.line is not None else '?'}: {self.field or '(recipe)'}: {self.message}"


class RecipeError(ValueError):
    """An invalid recipe; `.issues` lists each problem, `str()` is one line per issue."""

    def __init__(self, issues: list[RecipeIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


def _allowed_fields(data: Any, loc: tuple) -> list[str] | None:
    """Field names of the model that holds `loc[-1]`, for 'extra field' messages."""
    model: type[BaseModel] | None = Recipe
    cur = data
    steps = list(loc[:-1])
    i = 0
    while i < len(steps) and model is not None:
        step = steps[i]
        ann = model.model_fields.get(step) if isinstance(step, str) else None
        if ann is None:
            return None
        cur = cur.get(step) if isinstance(cur, dict) else None
        if step == "tools":
            i += 1  # the index
            if i < len(steps) and isinstance(cur, list) and isinstance(steps[i], int) and steps[i] < len(cur):
                cur = cur[steps[i]]
                model = TOOL_MODELS.get(cur.get("type")) if isinstance(cur, dict) else None
                if i + 1 < len(steps) and steps[i + 1] == getattr(cur, "get", lambda _k: None)("type"):
                    i += 1  # pydantic's union tag
            i += 1
            continue
        sub = ann.annotation
        model = sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None
        i += 1
    return sorted(k for k in model.model_fields if k != "base_dir") if model else None


def _clean_loc(data: Any, loc: tuple) -> tuple:
    """Drops pydantic's union tags from a location so it follows the file's structure."""
    out: list = []
    cur = data
    for step in loc:
        if isinstance(cur, list) and isinstance(step, int):
            out.append(step)
            cur = cur[step] if step < len(cur) else None
        elif isinstance(cur, dict):
            if step in cur:
                out.append(step)
                cur = cur[step]
            elif step == cur.get("type") or (isinstance(step, str) and step.startswith(("function-", "tagged-union"))):
                continue
            else:
                out.append(step)
                cur = None
        else:
            out.append(step)
            cur = None
    return tuple(out)


def _message(err: dict, data: Any, loc: tuple) -> str:
    etype = err.get("type", "")
    msg = err.get("msg", "invalid")
    if etype == "extra_forbidden":
        allowed = _allowed_fields(data, loc)
        return "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    if etype == "union_tag_invalid":
        tag = (err.get("ctx") or {}).get("tag", "?")
        return f"unknown tool type {tag!r}; allowed: {', '.join(TOOL_MODELS)}"
    if etype == "union_tag_not_found":
        return f"missing 'type'; allowed: {', '.join(TOOL_MODELS)}"
    if etype == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


class _YamlLines:
    def __init__(self, text: str):
        try:
            self.root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            self.root = None

    def line(self, loc: tuple) -> int | None:
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for step in loc:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for k, v in node.value:
                    if k.value == step:
                        best, nxt = k.start_mark.line + 1, v
                        break
                if nxt is None:
                    return best
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                node = node.value[step]
                best = node.start_mark.line + 1
            else:
                return best
        return best


class _TomlLines:
    """tomllib gives no positions: find the line of a table header or key by scanning."""

    _header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _key = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=""")

    def __init__(self, text: str):
        self.tables: dict[tuple, int] = {}
        self.keys: dict[tuple, int] = {}
        self._counts: dict[tuple, int] = {}  # array-of-tables path -> elements so far
        current: tuple = ()
        for n, raw in enumerate(text.splitlines(), start=1):
            m = self._header.match(raw)
            if m:
                parts = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
                if m.group(1) == "[[":
                    key = self._resolve(parts[:-1]) + (parts[-1],)
                    idx = self._counts.get(key, 0)
                    self._counts[key] = idx + 1
                    current = key + (idx,)
                else:
                    current = self._resolve(parts)
                self.tables.setdefault(current, n)
                continue
            k = self._key.match(raw)
            if k:
                parts = tuple(p.strip().strip("\"'") for p in k.group(1).split("."))
                for depth in range(1, len(parts) + 1):
                    self.keys.setdefault(current + parts[:depth], n)

    def _resolve(self, parts: tuple) -> tuple:
        # `[tools.segment]` after `[[tools]]` means the latest tools element.
        out: tuple = ()
        for p in parts:
            out = out + (p,)
            if out in self._counts:
                out = out + (self._counts[out] - 1,)
        return out

    def line(self, loc: tuple) -> int | None:
        for end in range(len(loc), 0, -1):
            sub = tuple(loc[:end])
            if sub in self.keys:
                return self.keys[sub]
            if sub in self.tables:
                return self.tables[sub]
            if sub + (0,) in self.tables:  # an array of tables as a whole: its first [[header]]
                return self.tables[sub + (0,)]
        return None


# A real recipe has a few hundred values. YAML aliases can make a few kB stand for billions of
# them (each validated: hours of CPU and gigabytes), so the expanded size is bounded first.
MAX_RECIPE_VALUES = 100_000


def _expanded_size(root) -> int:
    """How many values a composed YAML document holds with every alias expanded (memoised on
    the shared nodes, so it is cheap however large the answer)."""
    memo: dict[int, int] = {}

    def size(node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a cycle (a recursive alias) counts once instead of looping
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(v) for v in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k) + size(v) for k, v in node.value)
        memo[key] = n
        return n

    return 0 if root is None else size(root)


def parse_recipe(text: str, fmt: str = "toml", source_name: str = "<recipe>",
                 base_dir: str | Path | None = None) -> Recipe:
    """Parses recipe text (`fmt` "toml" or "yaml"); raises `RecipeError` naming line and field."""
    fmt = fmt.lower().lstrip(".")
    if fmt in ("yml",):
        fmt = "yaml"
    if fmt not in ("toml", "yaml"):
        raise RecipeError([RecipeIssue(source_name, None, "", f"unknown recipe format {fmt!r}; use toml or yaml")])
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise RecipeError([RecipeIssue(source_name, int(m.group(1)) if m else None, "",
                                           f"TOML syntax error: {exc}")]) from None
        except RecursionError:
            raise RecipeError([RecipeIssue(source_name, None, "", "the TOML is nested far too deeply to be a "
                                           "recipe (a recipe is a few levels deep)")]) from None
        lines = _TomlLines(text)
    else:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            size = _expanded_size(root)
            if size > MAX_RECIPE_VALUES:
                raise RecipeError([RecipeIssue(source_name, None, "",
                                               f"the recipe expands to {size if size < 10**12 else 'over 10^12'} "
                                               f"values (YAML aliases?); at most {MAX_RECIPE_VALUES} are "
                                               "allowed: write the values out or use fewer aliases")])
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RecipeError([RecipeIssue(source_name, mark.line + 1 if mark else None, "",
                                           f"YAML syntax error: {getattr(exc, 'problem', exc)}")]) from None
        except RecursionError:
            raise RecipeError([RecipeIssue(source_name, None, "", "the YAML is nested far too deeply to be a "
                                           "recipe (a recipe is a few levels deep)")]) from None
        lines = _YamlLines(text)
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(source_name, 1, "", "a recipe is a table/mapping with name, trigger and tools")])
    if "base_dir" in data:
        raise RecipeError([RecipeIssue(source_name, lines.line(("base_dir",)), "base_dir",
                                       "unknown field (set by the loader, not the file)")])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors():
            loc = _clean_loc(data, tuple(err["loc"]))
            field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
            issues.append(RecipeIssue(source_name, lines.line(loc), field, _message(err, data, tuple(err["loc"]))))
        raise RecipeError(issues) from None
    recipe.base_dir = str(base_dir) if base_dir is not None else None
    return recipe


def recipe_line(text: str, fmt: str, loc: tuple) -> int | None:
    """The line of `text` (a TOML or YAML recipe) that holds the field at `loc`, e.g.
    `("tools", 0, "reference")`; None when it cannot be found."""
    try:
        lines = _YamlLines(text) if fmt.lower().lstrip(".") in ("yaml", "yml") else _TomlLines(text)
        return lines.line(tuple(loc))
    except Exception:  # a line number is a courtesy; never let it hide the real error
        return None


def load_recipe(path: str | Path) -> Recipe:
    """Reads a `.toml`, `.yaml` or `.yml` recipe; relative paths in it resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([RecipeIssue(str(p), None, "", "file not found (check the path)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([RecipeIssue(str(p), None, "", f"cannot read: {exc}")]) from None
    fmt = "yaml" if p.suffix.lower() in (".yaml", ".yml") else "toml"
    return parse_recipe(text, fmt=fmt, source_name=str(p), base_dir=p.resolve().parent)


def recipe_format(path_or_type: str) -> str:
    """"toml" or "yaml" from a file name or a content type."""
    s = path_or_type.lower()
    return "yaml" if ("yaml" in s or s.endswith(".yml")) else "toml"
