"""Recipe parsing: TOML and YAML, errors naming file, line, field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from helio_gui.vision.recipe import Recipe, RecipeError, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[2]

GOOD_TOML = """\
name = "t"
version = 3

[trigger]
mode = "line"
direction = "left_to_right"

[[tools]]
name = "hole"
type = "blob"
segment = { threshold = 90, polarity = "dark" }
expected_count = 1

[[tools]]
name = "ref"
type = "template"
reference = "golden.png"
"""

GOOD_YAML = """\
name: t
version: "3"
trigger:
  mode: zone
  roi: [0.1, 0.1, 0.8, 0.8]
tools:
  - name: colour
    type: color_class
    expected: white
    classes:
      white: [{lower: [0, 0, 150], upper: [179, 60, 255]}]
  - name: code
    type: barcode
    formats: [QRCode, DataMatrix]
    expected: "ABC-\\\\d+"
"""


def test_good_toml_and_yaml_parse():
    r = parse_recipe(GOOD_TOML, "toml", base_dir="/recipes")
    assert isinstance(r, Recipe) and r.version == "3" and r.trigger.mode == "line"
    assert [t.type for t in r.tools] == ["blob", "template"]
    assert r.resolve(r.tools[1].reference) == Path("/recipes/golden.png")
    y = parse_recipe(GOOD_YAML, "yaml")
    assert y.trigger.roi == (0.1, 0.1, 0.8, 0.8) and y.tools[1].formats == ["QRCode", "DataMatrix"]


def test_load_resolves_relative_paths_against_the_recipe_folder(tmp_path):
    p = tmp_path / "sub" / "r.toml"
    p.parent.mkdir()
    p.write_text(GOOD_TOML)
    r = load_recipe(p)
    assert r.resolve("golden.png") == (p.parent / "golden.png").resolve()


def _issues(text, fmt="toml"):
    with pytest.raises(RecipeError) as exc:
        parse_recipe(text, fmt, source_name=f"r.{fmt}")
    return exc.value


def test_toml_errors_name_line_field_and_allowed_values():
    text = GOOD_TOML.replace('direction = "left_to_right"', 'direction = "sideways"\nspeed = 3')
    err = _issues(text)
    by_field = {i.field: i for i in err.issues}
    assert by_field["trigger.direction"].line == 6
    assert "left_to_right" in by_field["trigger.direction"].message
    assert by_field["trigger.speed"].line == 7
    assert "allowed:" in by_field["trigger.speed"].message and "direction" in by_field["trigger.speed"].message
    assert "r.toml:6: trigger.direction:" in str(err)


def test_toml_error_in_second_array_table_and_inline_table():
    text = GOOD_TOML.replace('reference = "golden.png"', 'reference = "golden.png"\nalign = "magic"')
    text = text.replace('polarity = "dark"', 'polarity = "grey"')
    err = _issues(text)
    lines = {i.field: i.line for i in err.issues}
    assert lines["tools[1].align"] == 18
    assert lines["tools[0].segment.polarity"] == 11


def test_unknown_tool_type_lists_the_types():
    err = _issues(GOOD_TOML.replace('type = "template"', 'type = "magic"'))
    assert err.issues[0].field == "tools[1]" and "magic" in err.issues[0].message
    assert "blob" in err.issues[0].message and "barcode" in err.issues[0].message


def test_yaml_errors_use_node_marks():
    err = _issues(GOOD_YAML.replace("mode: zone", "mode: zones").replace("expected: white", "expected: black"), "yaml")
    lines = {i.field: (i.line, i.message) for i in err.issues}
    assert lines["trigger.mode"][0] == 4
    assert lines["tools[0]"][0] == 7 and "black" in lines["tools[0]"][1]


def test_yaml_extra_field_and_bad_regex():
    text = GOOD_YAML.replace("    formats:", "    colour: red\n    formats:").replace('"ABC-\\\\d+"', '"ABC-("')
    err = _issues(text, "yaml")
    fields = {i.field: i for i in err.issues}
    assert fields["tools[1].colour"].line == 14
    assert fields["tools[1].expected"].line == 16 and "regular expression" in fields["tools[1].expected"].message


def test_syntax_errors_have_lines():
    assert _issues('name = "x"\n[trigger\n').issues[0].line == 2
    assert _issues("name: x\ntools: [\n  - a: b\n", "yaml").issues[0].line is not None


def test_missing_file_and_duplicate_tool_names(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "none.toml")
    dup = GOOD_TOML.replace('name = "ref"', 'name = "hole"')
    assert "unique" in str(_issues(dup))


@pytest.mark.parametrize("path", ["resources/demo/demo_recipe.toml", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "examples" / "recipes").glob("*.*"))])
def test_shipped_recipes_are_valid(path):
    load_recipe(REPO / path)


@pytest.mark.parametrize("body,field,line", [
    ('[[tools]]\nname = "a"\ntype = "blob"\nmin_area = 100\nmax_area = 10\n', "tools[0].max_area", 6),
    ('[trigger]\nmin_area = 900\nmax_area = 50\n', "trigger.max_area", 4),
    ('[[tools]]\nname = "a"\ntype = "level"\nmin_level = 0.8\nmax_level = 0.2\n', "tools[0].max_level", 6),
    ('[[tools]]\nname = "a"\ntype = "edge"\nmin_position = 0.7\nmax_position = 0.1\n',
     "tools[0].max_position", 6),
])
def test_limit_pairs_that_can_never_be_met_are_refused(body, field, line):
    """min_area 100 with max_area 10 used to load, and the tool then failed every part."""
    with pytest.raises(RecipeError) as info:
        parse_recipe('name = "x"\n' + body, "toml", "r.toml")
    issue = info.value.issues[0]
    assert (issue.field, issue.line) == (field, line), issue
    assert "must not be below" in issue.message


def test_alias_bombs_and_deep_nesting_are_refused_quickly():
    """18 kB of YAML aliases stood for 9 million colour ranges: validation ran for minutes (a
    1 MB PUT for hours) before the expanded size was bounded."""
    import time

    n = 3000
    bomb = "\n".join(["r: &r {lower: [0, 0, 0], upper: [10, 10, 10]}",
                      "h: &h [" + ", ".join(["*r"] * n) + "]",
                      "t: &t {name: a, type: color_class, expected: w, classes: {w: *h}}",
                      "name: x", "tools: [" + ", ".join(["*t"] * n) + "]"])
    t0 = time.monotonic()
    with pytest.raises(RecipeError, match="expands to .* values"):
        parse_recipe(bomb, "yaml")
    assert time.monotonic() - t0 < 5
    with pytest.raises(RecipeError, match="nested far too deeply"):
        parse_recipe("name: x\ntools: " + "[" * 50000 + "]" * 50000, "yaml")
    with pytest.raises(RecipeError, match="nested far too deeply"):
        parse_recipe('name = "x"\nv = ' + "[" * 50000 + "]" * 50000, "toml")
    # Aliases as people use them (a shared colour range) still work.
    ok = parse_recipe("name: x\ntools:\n  - name: c\n    type: color_class\n    expected: w\n"
                      "    classes: {w: [&white {lower: [0, 0, 150], upper: [179, 60, 255]}], v: [*white]}\n",
                      "yaml")
    assert ok.tools[0].classes["v"][0].lower == (0, 0, 150)


def test_recipe_sizes_are_bounded():
    """A 1 MB PUT could hold ~15 000 tools, each run on every part: the line would stall."""
    many = 'name = "x"\n' + "".join(f'[[tools]]\nname = "t{i}"\ntype = "blob"\n' for i in range(65))
    with pytest.raises(RecipeError) as info:
        parse_recipe(many, "toml", "r.toml")
    issue = info.value.issues[0]
    assert (issue.field, issue.line) == ("tools", 2) and "at most 64" in issue.message, issue
    ranges = ",".join(["{lower = [0, 0, 0], upper = [1, 1, 1]}"] * 17)
    with pytest.raises(RecipeError, match="at most 16"):
        parse_recipe(f'name = "x"\n[trigger.segment]\nhsv = [{ranges}]\n', "toml")
    parse_recipe('name = "x"\n' + "".join(f'[[tools]]\nname = "t{i}"\ntype = "blob"\n' for i in range(64)), "toml")
