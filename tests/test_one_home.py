"""One home for every default (issue 14): the config schema (``ftbench/config.schema.yaml``).

Code downstream of the config receives values and does not invent them. A function parameter, a
dataclass field or an ``argparse`` option named like a schema key that has a default may have no
default, ``None`` (not given), or the schema's own (a call of ``ftbench.schema``'s ``schema_default``,
``task_default`` or ``hardware_default``); a ``.get(key, fallback)`` of such a key, a literal passed
for it or a literal fallback (``x if x is not None else 8``, ``x or 8``) is a second home and fails
here. A name that only collides with a schema key is allowed below, each with its reason."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import pytest
import yaml

from ftbench.config import (
    check_config_files,
    custom_import_args,
    drop_inherited_slices,
    eval_settings,
    loader_settings,
    merge_layers,
    split_cells,
    train_settings,
)
from ftbench.data.sources import rule_arguments
from ftbench.schema import defaults, load_schema, schema_default, task_default, with_defaults

REPO = Path(__file__).resolve().parents[1]
SCHEMA_READERS = {"schema_default", "task_default", "hardware_default"}

# (file, enclosing function or class, name) -> why it is not a schema default.
ALLOWED = {
    # the seeds of the no-download speed stand-ins: no config key sets them (not data.seed)
    ("ftbench/models/presets.py", "random_model", "seed"): "the random base's own seed, no config key",
    ("ftbench/speed_inputs.py", "write_docvqa_shape", "seed"): "the DocVQA-shaped pages' seed, no config key",
    ("ftbench/speed_inputs.py", "build_random_base", "seed"): "the random base's own seed, no config key",
    ("workflow_scripts/speed_inputs.py", "main", "seed"): "the speed stand-ins' seed, no config key",
    # the cell's seed (matrix.seed, which has no default) and the LR warmup (tasks.*.warmup_steps,
    # required): a test's TrainSettings needs neither; data.seed and speed.warmup_steps are other keys
    ("ftbench/training/settings.py", "TrainSettings", "seed"): "matrix.seed, not data.seed",
    ("ftbench/training/settings.py", "TrainSettings", "warmup_steps"): "tasks.*.warmup_steps, not speed.warmup_steps",
    # the tiny base's pretraining (ftbench/pretrain.py) is no task: its optimizer and checkpoints are its own
    ("ftbench/pretrain.py", "build_tiny_base", "weight_decay"): "the pretraining's own, not tasks.*.weight_decay",
    ("ftbench/pretrain.py", "build_tiny_base", "checkpoint_every"): "its scratch folder does not outlive the build",
    # the eval_path of docvqa from the Cauldron is read as the nielsr_docvqa source (a value, not a default)
    ("ftbench/data/sources.py", "convert_source", "source"): "the eval_path's source, not tasks.*.source",
    # a table row without a QLoRA base (None) sorts first: a sort key, not a default
    ("ftbench/report.py", "_group_sort_key", "qlora_base"): "a sort key for None, not evaluation.qlora_base",
    # a step batch's sample count and the speed.json files of the report scripts: names, not keys
    ("ftbench/training/data.py", "StepBatch", "samples"): "a batch's sample count, not speed.samples",
    ("workflow_scripts/plots.py", "main", "speed"): "the speed.json files, not the speed block",
    ("workflow_scripts/report_tables.py", "main", "speed"): "the speed.json files, not the speed block",
}


def names_with_defaults() -> dict[str, list[str]]:
    """Every property name of the schema that has a default, with the keys it is the default of."""
    found: dict[str, list[str]] = {}

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "default" in sub:
                found.setdefault(name, []).append(".".join([*path, name]))
            walk(sub, [*path, name])
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], [*path, "*"])

    walk(load_schema(), [])
    return found


NAMES = names_with_defaults()


def reads_schema(node: ast.AST | None) -> bool:
    """None (not given) or a call of a schema reader: no value of its own."""
    if node is None or (isinstance(node, ast.Constant) and node.value is None):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        return (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) in SCHEMA_READERS
    return False


def is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value is not None
    if isinstance(node, ast.UnaryOp):
        return is_literal(node.operand)
    return isinstance(node, (ast.List, ast.Tuple, ast.Dict, ast.Set))


def key_name(node: ast.AST) -> str | None:
    """The schema name an expression reads: ``n_val``, ``args.n_val``, ``entry["n_val"]``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
        return node.slice.value
    return None


class Finder(ast.NodeVisitor):
    """Every place in one Python file that declares a value for a schema key that has a default."""

    def __init__(self, rel: str):
        self.rel, self.scope, self.found = rel, ["<module>"], []

    def flag(self, node: ast.AST, name: str, what: str, scope: str | None = None) -> None:
        self.found.append((self.rel, scope or self.scope[-1], name, f"{self.rel}:{node.lineno}: {what}"))

    def scoped(self, node, name: str) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node):
        args = node.args
        positional = args.posonlyargs + args.args
        pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
        pairs += [(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults) if default is not None]
        for arg, default in pairs:
            if arg.arg in NAMES and not reads_schema(default):
                self.flag(default, arg.arg, f"parameter {arg.arg} = {ast.unparse(default)} of {node.name}()", node.name)
        self.scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        for item in node.body:
            if (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None
                    and item.target.id in NAMES and not reads_schema(item.value)):
                self.flag(item, item.target.id, f"field {node.name}.{item.target.id} = {ast.unparse(item.value)}",
                          node.name)
        self.scoped(node, node.name)

    def visit_Call(self, node):
        func = node.func
        method = func.attr if isinstance(func, ast.Attribute) else None
        first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if method == "get" and len(node.args) == 2 and first in NAMES and not reads_schema(node.args[1]):
            self.flag(node, first, f".get({first!r}, {ast.unparse(node.args[1])})")
        if method == "add_argument" and isinstance(first, str) and first.startswith("--"):
            option = first[2:].replace("-", "_")
            for keyword in node.keywords:
                if option in NAMES and keyword.arg == "default" and not reads_schema(keyword.value):
                    self.flag(node, option, f"{first} default={ast.unparse(keyword.value)}")
        for keyword in node.keywords:  # a literal passed for a key: f(n_val=500)
            if keyword.arg in NAMES and is_literal(keyword.value):
                self.flag(keyword.value, keyword.arg, f"{keyword.arg}={ast.unparse(keyword.value)} passed")
        self.generic_visit(node)

    def visit_IfExp(self, node):  # 8 if args.num_frames is None else args.num_frames
        test = node.test
        if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Is, ast.IsNot))
                and isinstance(test.comparators[0], ast.Constant) and test.comparators[0].value is None):
            name = key_name(test.left)
            fallback = node.body if isinstance(test.ops[0], ast.Is) else node.orelse
            if name in NAMES and is_literal(fallback):
                self.flag(node, name, f"{ast.unparse(node)}")
        self.generic_visit(node)

    def visit_BoolOp(self, node):  # args.num_frames or 8
        name = key_name(node.values[0])
        if isinstance(node.op, ast.Or) and name in NAMES and any(is_literal(v) for v in node.values[1:]):
            self.flag(node, name, f"{ast.unparse(node)}")
        self.generic_visit(node)


def python_files() -> list[Path]:
    files = sorted((REPO / "ftbench").rglob("*.py")) + sorted((REPO / "workflow_scripts").glob("*.py"))
    return [f for f in files if f != REPO / "ftbench" / "schema.py"]  # the schema's own reader


SMK_GET = re.compile(r"\.get\(\s*[\"'](\w+)[\"']\s*,\s*([^)]*)\)")


def redeclared(python: list[Path] | None = None, snakemake: list[Path] | None = None) -> list[tuple]:
    found = []
    for path in python_files() if python is None else python:
        finder = Finder(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name)
        finder.visit(ast.parse(path.read_text(), str(path)))
        found += finder.found
    # The rules: the config Snakemake validated has every default filled in, so a key is indexed.
    rules = sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"] if snakemake is None else snakemake
    for path in rules:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for m in SMK_GET.finditer(line):
                if m.group(1) in NAMES and m.group(2).strip() != "None":
                    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                    found.append((str(rel), "<rules>", m.group(1), f"{rel}:{lineno}: {m.group(0)}"))
    return found


def test_no_module_script_or_rule_redeclares_a_schema_default():
    found = redeclared()
    unexplained = [f"{where}  (the schema's {', '.join(NAMES[name])})" for rel, scope, name, where in found
                   if (rel, scope, name) not in ALLOWED]
    assert not unexplained, ("defaults live in ftbench/config.schema.yaml only; read them with "
                             "ftbench.schema.schema_default / with_defaults:\n" + "\n".join(unexplained))
    used = {(rel, scope, name) for rel, scope, name, _ in found}
    assert not set(ALLOWED) - used, f"allowed but no longer found (remove them): {sorted(set(ALLOWED) - used)}"
    assert all(ALLOWED.values()), "every allowed name needs its reason"


@pytest.mark.parametrize("source, expected", [
    ("def convert(raw, n_val: int = 500): ...", "parameter n_val = 500 of convert()"),
    ("def convert(raw, *, processes=1): ...", "parameter processes = 1 of convert()"),
    ("from dataclasses import dataclass\n@dataclass\nclass S:\n    lora_rank: int = 64\n", "field S.lora_rank = 64"),
    ("p.add_argument('--num-frames', type=int, default=8)", "--num-frames default=8"),
    ("entry.get('weight_decay', 0.01)", ".get('weight_decay', 0.01)"),
    ("convert_cauldron(task, raw, out, n_val=500)", "n_val=500 passed"),
    ("n = 8 if args.num_frames is None else args.num_frames", "8 if args.num_frames is None else args.num_frames"),
    ("n = entry['eval_batch'] or 8", "entry['eval_batch'] or 8"),
])
def test_a_redeclared_default_is_found(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source + "\n")
    assert [where.split(": ", 1)[1] for *_, where in redeclared([path], [])] == [expected]


@pytest.mark.parametrize("source", [
    "def convert(raw, n_val: int = task_default('n_val'), n_test=None): ...",
    "def convert(raw, *, n_val: int): ...",
    "p.add_argument('--processes', type=int, default=task_default('processes'))",
    "entry.get('weight_decay')",
    "from ftbench import schema\nentry.get('lora_rank', schema.task_default('lora_rank'))",
])
def test_a_default_read_from_the_schema_is_not_flagged(tmp_path, source):
    path = tmp_path / "module.py"
    path.write_text(source + "\n")
    assert redeclared([path], []) == []


def test_a_rule_get_with_a_default_is_found(tmp_path):
    rule = tmp_path / "speed.smk"
    rule.write_text('rule speed:\n    params:\n        warmup=config.get("speed", {}).get("warmup_steps", 2),\n'
                    '        peak=config["hardware"]["a100"].get("peak_tflops"),\n')
    assert [where for *_, where in redeclared([], [rule])] == [
        'speed.smk:3: .get("speed", {})', 'speed.smk:3: .get("warmup_steps", 2)']


# ---------------------------------------------------------------- evaluate() and the workflow agree


def function_defaults(path: Path, function: str) -> dict[str, ast.AST | None]:
    """``function``'s keyword parameters in ``path`` and their defaults (None: no default), read from
    the source: importing ftbench.evaluate costs torch and transformers."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    args = node.args
    positional = args.posonlyargs + args.args
    result = {arg.arg: None for arg in positional + args.kwonlyargs}
    result.update({arg.arg: d for arg, d in zip(positional[len(positional) - len(args.defaults):], args.defaults)})
    result.update({arg.arg: d for arg, d in zip(args.kwonlyargs, args.kw_defaults)})
    return result


def test_evaluate_takes_max_new_tokens_and_batch_size_from_the_workflow_and_the_rest_from_the_schema():
    """evaluate() defaulted max_new_tokens to 16 while the schema (and so every evaluation the workflow
    ran) used 64: a run by hand generated shorter answers. It has no default for them now, and every
    default it has for a key of ``eval_settings`` is the schema's, the value the workflow passes."""
    params = function_defaults(REPO / "ftbench" / "evaluate.py", "evaluate")
    for key in ("max_new_tokens", "batch_size"):  # required: the workflow passes them
        assert params[key] is None, f"evaluate({key}={ast.unparse(params[key])}): the workflow passes the schema's"
    config = check_config_files([REPO / "config.yaml"])
    for key in ("max_new_tokens", "eval_batch"):
        del config["tasks"]["docvqa"][key]
    settings = eval_settings(config, "docvqa", "qlora")
    assert settings["max_new_tokens"] == schema_default("tasks.*.max_new_tokens") == 64
    assert settings["batch_size"] == schema_default("tasks.*.eval_batch")
    readers = {"schema_default": schema_default, "task_default": task_default}
    for key, value in settings.items():
        default = params[key]
        if default is not None:
            assert reads_schema(default), f"evaluate({key}={ast.unparse(default)})"
            assert eval(compile(ast.Expression(default), "evaluate", "eval"), readers) == value, key
    assert set(settings) <= set(params)  # every setting is an evaluate() keyword


# -------------------------------------------------- the settings are the schema's, with or without Snakemake


def workflow_config(files: list[Path]) -> dict:
    """The config as rules/common.smk builds it: merged, inherited slices dropped, and validated by
    Snakemake, which fills in the schema's defaults."""
    from snakemake.utils import validate

    layers = [(str(f), yaml.safe_load(f.read_text())) for f in files]
    config = merge_layers(layers)
    drop_inherited_slices(config, merge_layers(layers[1:]))
    validate(config, schema=str(REPO / "ftbench" / "config.schema.yaml"))
    return config


def every_setting(config: dict) -> dict:
    runnable, _ = split_cells(config, flash_available=True)
    settings = {}
    for cell in runnable:
        settings[cell.path()] = (train_settings(config, cell), loader_settings(config, cell.hardware),
                                 eval_settings(config, cell.task, cell.strategy))
    for task, entry in config["tasks"].items():
        settings[task] = (eval_settings(config, task),
                          custom_import_args(config, task) if entry.get("source") == "custom"
                          else rule_arguments(task, entry))
    return settings


@pytest.mark.parametrize("files", [["config.yaml"], ["config.yaml", "config/cluster.yaml"]])
def test_settings_of_a_config_without_defaults_filled_in_are_the_workflows(files):
    """Snakemake's validation fills the schema's defaults into the workflow's config; ``load_config``
    and the tests' configs have none, and the builders read them from the schema: the same settings.
    A key without a default (max_length, truncation, metric) stays absent unless configured."""
    paths = [REPO / f for f in files]
    filled = workflow_config(paths)
    plain = merge_layers([(str(p), yaml.safe_load(p.read_text())) for p in paths])
    drop_inherited_slices(plain, merge_layers([(str(p), yaml.safe_load(p.read_text())) for p in paths[1:]]))
    assert plain != filled  # the filled one has keys that the files do not set
    settings = every_setting(filled)
    assert every_setting(plain) == settings
    for one in (s for values in settings.values() for s in values if isinstance(s, dict)):
        assert not {"max_length", "truncation", "metric"} & set(one)  # neither file sets them


def test_with_defaults_fills_what_a_config_leaves_out_and_changes_nothing_it_sets():
    entry = {"num_crops": 1, "lora_rank": 16}
    filled = with_defaults("tasks.*", entry)
    assert entry == {"num_crops": 1, "lora_rank": 16}  # a new dict
    assert (filled["lora_rank"], filled["lora_alpha"], filled["n_val"]) == (16, 128, 500)
    assert "max_length" not in filled and "truncation" not in filled
    assert with_defaults("speed", None) == defaults("speed")
    assert with_defaults("model", {"preset": "tiny"})["pretrain"] == {}
    first = defaults("speed")
    first["precisions"].append("fp32")
    assert defaults("speed")["precisions"] == ["bf16", "fp16"]  # copies: the schema's stay as they are
    with pytest.raises(KeyError, match="tasks.\\*.steps: the config schema has no default"):
        schema_default("tasks.*.steps")
    assert copy.deepcopy(load_schema()) == load_schema()
