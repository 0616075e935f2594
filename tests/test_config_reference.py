"""docs/config.md documents every configuration key, and nothing but configuration keys.

The reference's key tables are the markdown tables whose header starts with ``| key |``; each row's first cell
holds one backticked key. Every plugin key (its rules, its yaml) and every option the command line, the benchmark
and the tune modes read must have a row, and every row must name a key the code knows, so that the reference can
drift neither way. No training: this reads files and source only.
"""
import ast
import inspect
import os
import re

import yaml

import recbole
from recbole_lumos import benchmark, cli, config_schema, paths, tune

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "config.md")
COLUMNS = ["key", "type", "default", "allowed", "meaning"]
BACKTICKED = re.compile(r"`([^`]+)`")


def tables(text):
    """[(header cells, [row cells])] of every markdown table in ``text``."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append([cell.strip() for cell in lines[i].strip().strip("|").split("|")])
                i += 1
            found.append((block[0], block[2:]))  # block[1]: the |---| separator
        else:
            i += 1
    return found


def documented_rows():
    """{key: [row as {column: cell}, ...]} of every key table (a key may have a row in several modes' tables)."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    rows = {}
    for header, body in tables(text):
        if header[0] != "key":
            continue
        assert header == COLUMNS, f"a key table of docs/config.md has columns {header}, not {COLUMNS}"
        for cells in body:
            assert len(cells) == len(COLUMNS) and all(cells), f"incomplete row in docs/config.md: {cells}"
            keys = BACKTICKED.findall(cells[0])
            assert len(keys) == 1, f"the first cell of a row must be one `key`: {cells[0]!r}"
            rows.setdefault(keys[0], []).append(dict(zip(COLUMNS, cells)))
    assert rows, "docs/config.md has no '| key | type | default | allowed | meaning |' table"
    return rows


def other_table(first_column):
    """The first cells' backticked names of the tables whose header starts with ``first_column``."""
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return {name for header, body in tables(text) if header[0] == first_column
            for cells in body for name in BACKTICKED.findall(cells[0])[:1]}


def popped_settings(function):
    """The option names ``function`` takes out of its ``settings`` dict: each ``settings.pop("name", ...)`` in its
    source. The command line (cli.main), the benchmark and the tune modes read their own options this way; the
    settings left over are config keys passed on to the runs."""
    tree = ast.parse(inspect.getsource(function).lstrip())
    names = {node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "pop"
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "settings"
             and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)}
    assert names, f"found no settings.pop('...') in {function.__qualname__}: has the way it reads options changed?"
    return names


def mode_options():
    """Every option the command line and the two modes read. tune.SEARCH_SETTINGS are popped by a loop over that
    constant (and may also be set in a search file's ``tune`` section)."""
    return popped_settings(cli.main) | popped_settings(benchmark.benchmark) | popped_settings(tune.tune) | set(
        tune.SEARCH_SETTINGS)


def yaml_defaults():
    """The default of each key as LUMOS gets it: RecBole's overall.yaml < the plugin's overall, augment, LUMOS."""
    files = [os.path.join(os.path.dirname(recbole.__file__), "properties", "overall.yaml")]
    files += [str(paths.PROPERTIES / name) for name in ("overall.yaml", "augment.yaml", "model/LUMOS.yaml")]
    defaults = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            defaults.update(yaml.safe_load(f) or {})
    return defaults


def test_every_rule_key_is_documented():
    missing = set(config_schema.RULES) - set(documented_rows())
    assert not missing, f"keys of config_schema.RULES without a row in docs/config.md: {sorted(missing)}"


def test_every_plugin_yaml_key_is_documented():
    missing = config_schema.plugin_keys() - set(documented_rows())
    assert not missing, f"keys of the plugin's yaml without a row in docs/config.md: {sorted(missing)}"


def test_every_command_line_benchmark_and_tune_option_is_documented():
    missing = mode_options() - set(documented_rows())
    assert not missing, f"command-line, --benchmark or --tune options without a row in docs/config.md: {sorted(missing)}"


def test_every_documented_key_is_a_known_key():
    known = config_schema.plugin_keys() | set(config_schema.RULES) | mode_options() | config_schema.recbole_keys()
    unknown = set(documented_rows()) - known
    assert not unknown, f"docs/config.md documents keys no code reads: {sorted(unknown)}"


def test_documented_choices_are_the_rules_choices():
    """A value added to a choice (an aggregator, an attack) must be added to the reference's 'allowed' cell."""
    rows = documented_rows()
    for key, rule in config_schema.RULES.items():
        if rule.requirement.startswith("one of "):
            allowed = rule.requirement[len("one of "):].split(", ")
        elif rule.requirement.startswith("a list of distinct names among "):
            allowed = rule.requirement[len("a list of distinct names among "):].split(", ")
        else:
            continue
        cell = " ".join(row["allowed"] for row in rows[key])
        absent = [value for value in allowed if not re.search(rf"(?<![\w-]){re.escape(value)}(?![\w-])", cell)]
        assert not absent, f"docs/config.md's allowed cell of {key} lacks {absent}"


def test_documented_defaults_are_the_yaml_defaults():
    """The first backticked value of a default cell is the value LUMOS gets (other models' values may follow);
    the tune options' are tune.SEARCH_SETTINGS."""
    expected = {**yaml_defaults(), **tune.SEARCH_SETTINGS}
    wrong = {}
    for key, rows in documented_rows().items():
        if key not in expected:  # a mode option's code default (a path, a share of the cores) is described in words
            continue
        for row in rows:
            values = BACKTICKED.findall(row["default"])
            if not values or yaml.safe_load(values[0]) != expected[key]:
                wrong[key] = f"{row['default']!r} (expected `{expected[key]!r}` first)"
    assert not wrong, f"default cells of docs/config.md that differ from the yaml: {wrong}"


def test_plan_keys_and_samplers_are_documented():
    """The plan file's keys (each ``plan.get("...")`` / ``plan["..."]`` of benchmark.py) and the search file's
    samplers (tune.SAMPLERS) have their tables too."""
    source = inspect.getsource(benchmark)
    plan_keys = set(re.findall(r"\bplan(?:\.get\(|\[)\"(\w+)\"", source))
    assert plan_keys, "found no plan.get(\"...\") in benchmark.py: has the way it reads plans changed?"
    assert other_table("plan key") == plan_keys
    assert other_table("sampler") == set(tune.SAMPLERS)
