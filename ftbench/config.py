"""The benchmark matrix: cells, their paths, and which cells cannot run (and why).

No torch here: the Snakefile imports this module to plan hundreds of jobs in a second.
"""

from __future__ import annotations

import collections
import copy
import importlib.util
import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ftbench.data.common import TASKS
from ftbench.schema import ATTENTIONS, PRECISIONS, STRATEGIES, image_limit_args, load_schema, with_defaults


def _one_of(values: tuple[str, ...]) -> str:
    return "|".join(map(re.escape, values))


CELL_NAME = re.compile(
    rf"^(?P<strategy>{_one_of(STRATEGIES)})-(?P<precision>{_one_of(PRECISIONS)})-"
    rf"(?P<attention>{_one_of(ATTENTIONS)})-(?P<nodes>[1-9][0-9]*)x(?P<procs>[1-9][0-9]*)-s(?P<seed>[0-9]+)$"
)


# The same shape without named groups, for Snakemake wildcard constraints.
CELL_PATTERN = re.sub(r"\(\?P<[a-z]+>", "(", CELL_NAME.pattern).strip("^$")


class ConfigError(ValueError):
    """A configuration problem, one line ``<file>: <key>: <problem>``. The key is kept apart, so that
    the workflow, which merges several config files, can name the one that set it (``file_setting``)."""

    def __init__(self, problem: str, *, path: str | Path | None = None, key: str | None = None):
        super().__init__(": ".join(str(part) for part in (path, key, problem) if part is not None))
        self.key, self.problem = key, problem


@dataclass(frozen=True, order=True)
class Cell:
    task: str
    hardware: str
    strategy: str
    precision: str
    attention: str
    nodes: int
    procs: int  # processes (GPUs) per node
    seed: int

    @property
    def name(self) -> str:
        return f"{self.strategy}-{self.precision}-{self.attention}-{self.nodes}x{self.procs}-s{self.seed}"

    @property
    def layout(self) -> str:
        return f"{self.nodes}x{self.procs}"

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs

    def path(self, results: str = "results") -> str:
        return f"{results}/{self.task}/{self.hardware}/{self.name}"

    def as_record(self) -> dict:
        d = asdict(self)
        d["name"] = self.name
        return d

    @classmethod
    def parse(cls, task: str, hardware: str, name: str) -> Cell:
        m = CELL_NAME.match(name)
        if not m:
            raise ConfigError(f"not a cell name: {name!r} (expected strategy-precision-attention-NxP-sSEED)")
        g = m.groupdict()
        return cls(task, hardware, g["strategy"], g["precision"], g["attention"], int(g["nodes"]), int(g["procs"]),
                   int(g["seed"]))


def read_config_file(path: str | Path):
    """A config file's content; a YAML syntax error is a ``ConfigError`` naming the file and line
    (Snakemake's own message names neither)."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"not valid YAML ({getattr(e, 'problem', e)})", path=f"{path}{where}") from None


def load_config(path: str | Path) -> dict:
    """Reads and validates a config file (the same schema the Snakefile validates with)."""
    config = read_config_file(path)
    validate_config(config, path)
    return config


def validate_config(config: dict, path: str | Path | None = "config") -> None:
    import jsonschema

    check_task_names(config, path)
    validator = jsonschema.Draft202012Validator(load_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise validation_error(error, path)
    check_references(config, path)


def validation_error(error, path: str | Path = "config") -> ConfigError:
    """A schema error as one line naming the file and the key, e.g. ``config.yaml: tasks.docvqa.steps:
    'x' is not of type 'integer'``."""
    return ConfigError(error.message, path=path, key=".".join(str(p) for p in error.absolute_path) or "(top level)")


CUSTOM_PATH_KEYS = ("train", "val", "test", "images")
# The sizes of the recipe's cut of a training split (train[:n_val] evaluated): the schema's defaults are
# the recipe's (500, 0); config.yaml's synthetic demo sets smaller ones.
SLICE_KEYS = ("n_val", "n_test")


def drop_inherited_slices(config: dict, own: dict) -> list[tuple[str, str, int]]:
    """Snakemake merges the command line's config files (and ``--config``) over config.yaml key by key,
    so a task block that the user's own file points at a real source would inherit config.yaml's demo
    slices (``n_val: 40``) and evaluate on ``train[:40]`` instead of the recipe's ``train[:500]``. So the
    slices of a real source come from the layer that declares it: where ``own`` (the command line's
    config) sets ``tasks.<task>.source`` to a real source but not ``n_val``/``n_test``, the inherited
    values are removed from ``config`` before validation, and the schema's defaults apply. Returns
    ``(task, key, inherited value)`` for each removed value."""
    dropped = []
    own_tasks, tasks = own.get("tasks"), config.get("tasks")
    if not isinstance(own_tasks, dict) or not isinstance(tasks, dict):  # the schema reports it
        return dropped
    for task, own_entry in own_tasks.items():
        entry = tasks.get(task)
        if not isinstance(own_entry, dict) or not isinstance(entry, dict):
            continue
        if own_entry.get("source") in (None, "synthetic", "custom"):  # not a real source of its own
            continue
        for key in SLICE_KEYS:
            if key in entry and key not in own_entry:
                dropped.append((task, key, entry.pop(key)))
    return dropped


def is_custom_task(config: dict, task: str) -> bool:
    return config["tasks"][task].get("source") == "custom"


def custom_tasks(config: dict) -> list[str]:
    return sorted(t for t in config["tasks"] if is_custom_task(config, t))


def custom_import_args(config: dict, task: str) -> str:
    """Shell-quoted arguments of ``workflow_scripts/import_custom.py`` for a custom task."""
    import shlex

    entry = config["tasks"][task]
    args = []
    for key in CUSTOM_PATH_KEYS:
        if key in entry:
            args += [f"--{key}", str(entry[key])]
    if entry.get("prompt"):
        args += ["--prompt", entry["prompt"]]
    if "metric" in entry:  # the schema requires it of a custom task: a validated entry always has it
        args += ["--metric", entry["metric"]]
    args += image_limit_args(entry)
    return shlex.join(args)


def check_task_names(config, path: str | Path = "config") -> None:
    """A task that is neither built in nor declared ``source: custom`` is refused before the schema is
    checked: a misspelled task with a partial entry (``hatefulmemes: {steps: 3}``) is unknown, not an
    entry missing ``num_crops``. Anything that is not a mapping, and a name that is not a name (shell
    metacharacters, capitals), is left to the schema, whose message says what a name may hold."""
    tasks = config.get("tasks") if isinstance(config, dict) else None
    if not isinstance(tasks, dict):
        return
    name = re.compile(load_schema()["$defs"]["name"]["pattern"])
    for task, entry in tasks.items():
        if not isinstance(task, str) or not name.match(task):
            continue
        if task not in TASKS and not (isinstance(entry, dict) and entry.get("source") == "custom"):
            raise ConfigError(f"unknown task {task!r}; the built-in tasks are {', '.join(TASKS)} "
                              "(a dataset of your own needs source: custom)", path=path, key=f"tasks.{task}")


def check_references(config: dict, path: str | Path = "config") -> None:
    """Cross-key rules a schema cannot express (after ``check_task_names`` and the schema)."""
    for task, entry in config["tasks"].items():
        if entry.get("source") == "custom":
            for key in CUSTOM_PATH_KEYS:  # relative paths are relative to the working directory
                if key in entry and not (Path(entry[key]).is_dir() if key == "images" else Path(entry[key]).is_file()):
                    raise ConfigError(f"{entry[key]} does not exist", path=path, key=f"tasks.{task}.{key}")
        elif with_defaults("tasks.*", entry)["source"] != "synthetic":
            from ftbench.data.sources import check_source  # which sources provide which task

            try:
                check_source(task, entry["source"])
            except ValueError as e:
                raise ConfigError(str(e), path=path, key=f"tasks.{task}.source") from None
            check_pins(entry, path, f"tasks.{task}")
    for i, block in enumerate(config["matrix"]):
        for task in block["task"]:
            if task not in config["tasks"]:
                raise ConfigError(f"{task!r} is not declared under tasks", path=path, key=f"matrix.{i}.task")
        for hw in block["hardware"]:
            if hw not in config["hardware"]:
                raise ConfigError(f"{hw!r} is not declared under hardware", path=path, key=f"matrix.{i}.hardware")
    for task in with_defaults("speed", config.get("speed"))["tasks"]:
        if task not in config["tasks"]:
            raise ConfigError(f"{task!r} is not declared under tasks", path=path, key="speed.tasks")
    if config["model"]["source"] == "pretrain":
        for i, task in enumerate(with_defaults("model", config["model"])["pretrain"].get("tasks") or []):
            if task not in config["tasks"]:
                raise ConfigError(f"{task!r} is not declared under tasks", path=path, key=f"model.pretrain.tasks.{i}")


def check_pins(entry: dict, path: str | Path, where: str) -> None:
    """A hub id as a task's ``path`` or ``eval_path`` needs its revision (checked when the workflow is
    planned, before any job runs); ``where`` is the task's key."""
    from ftbench.data.sources import is_hub_id, pin_hint

    for key, revision_key in (("path", "revision"), ("eval_path", "eval_revision")):
        if entry.get(key) and is_hub_id(entry[key]) and not entry.get(revision_key):
            raise ConfigError(pin_hint(key, entry[key]), path=path, key=f"{where}.{revision_key}")


def file_setting(layers: list[tuple[str, dict]], key: str | list) -> str:
    """Which of the merged config files set ``key`` (dotted, or its parts): Snakemake merges
    ``layers`` (``(name, content)``, first to last) mapping by mapping, and a list or value of a later
    layer replaces an earlier one whole, so it is the last layer that sets the deepest part of the key
    (a missing key: the last one that sets its mapping). A key no layer sets (the top level, a
    cell's path) names every layer."""
    parts = key.split(".") if isinstance(key, str) else [str(part) for part in key]
    at_fault = None
    candidates = layers
    for part in parts:
        setting = [(name, value[part]) for name, value in candidates if isinstance(value, dict) and part in value]
        if not setting:
            break
        at_fault = setting[-1][0]
        candidates = [(name, value) for name, value in setting if isinstance(value, dict)]
    return at_fault or ", ".join(name for name, _ in layers) or "config"


def pretrain_tasks(config: dict) -> list[str]:
    """The tasks whose training data the built tiny base pretrains on: ``model.pretrain.tasks``, else
    every declared task. Never derived from the matrix, so that a cell's result does not depend on
    which other cells exist or run."""
    return sorted(with_defaults("model", config["model"])["pretrain"].get("tasks") or config["tasks"])


def parse_layout(layout: str) -> tuple[int, int]:
    nodes, procs = layout.split("x")
    return int(nodes), int(procs)


def expand_matrix(config: dict) -> list[Cell]:
    """All cells of all matrix blocks (each block a product of its axes), without duplicates, in a
    stable order."""
    cells = []
    seen = set()
    for block in config["matrix"]:
        axes = [block[k] for k in ("task", "hardware", "strategy", "precision", "attention", "layout", "seed")]
        for task, hw, strategy, precision, attention, layout, seed in itertools.product(*axes):
            nodes, procs = parse_layout(layout)
            cell = Cell(task, hw, strategy, precision, attention, nodes, procs, int(seed))
            if cell not in seen:
                seen.add(cell)
                cells.append(cell)
    return cells


def flash_attention_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def skip_reason(cell: Cell, config: dict, flash_available: bool | None = None) -> str | None:
    """Why a cell cannot run, or None. Only combinations that cannot work are refused."""
    hw = with_defaults("hardware.*", config["hardware"][cell.hardware])
    task = config["tasks"][cell.task]
    if cell.attention == "flash_attention_2":
        if cell.precision == "fp16":
            return "flash attention needs bf16 (the recipe's known fp16 issue)"
        if not hw["flash_attention"]:
            return f"hardware {cell.hardware} has no flash attention"
        if flash_available is None:
            flash_available = hw["assume_installed"] or flash_attention_installed()
        if not flash_available:
            return "flash-attn is not installed"
    if cell.precision == "bf16" and not hw["bf16"]:
        return f"hardware {cell.hardware} has no bf16"
    if cell.strategy == "qlora" and not hw["four_bit"]:
        return f"hardware {cell.hardware} has no 4-bit support"
    if cell.procs > hw["processes_per_node"]:
        return f"{cell.procs} processes per node but {cell.hardware} has {hw['processes_per_node']}"
    per_step = cell.world_size * task["per_device_batch"]
    if task["global_batch"] % per_step:
        return (
            f"global batch {task['global_batch']} is not divisible by {cell.world_size} processes x "
            f"per-device batch {task['per_device_batch']}"
        )
    return None


def check_runnable(cell: Cell, config: dict, path: str | Path = "config") -> Cell:
    """A cell asked for by its path must be one the matrix can run: its task declared, and no
    skip reason (e.g. fp16 with flash attention, a layout that does not divide the global batch)."""
    if cell.task not in config["tasks"]:
        raise ConfigError(f"{cell.task!r} is not declared (asked for {cell.path()})", path=path, key="tasks")
    if cell.hardware not in config["hardware"]:
        raise ConfigError(f"{cell.hardware!r} is not declared (asked for {cell.path()})", path=path, key="hardware")
    reason = skip_reason(cell, config)
    if reason:
        raise ConfigError(f"this cell cannot run: {reason}", path=path, key=cell.path())
    return cell


def split_cells(config: dict, flash_available: bool | None = None) -> tuple[list[Cell], list[tuple[Cell, str]]]:
    runnable, skipped = [], []
    for cell in expand_matrix(config):
        reason = skip_reason(cell, config, flash_available)
        if reason:
            skipped.append((cell, reason))
        else:
            runnable.append(cell)
    return runnable, skipped


def refused_reasons(skipped: list[tuple[Cell, str]]) -> list[str]:
    """One line per distinct reason cells are refused, with how many, the most frequent first."""
    counts = collections.Counter(reason for _, reason in skipped)
    return [f"{n} cell{'s' if n > 1 else ''}: {reason}" for reason, n in counts.most_common()]


def skipped_tsv(skipped: list[tuple[Cell, str]]) -> str:
    lines = ["task\thardware\tcell\treason"]
    lines += [f"{c.task}\t{c.hardware}\t{c.name}\t{reason}" for c, reason in skipped]
    return "\n".join(lines) + "\n"


def learning_rate(config: dict, task: str, strategy: str) -> float:
    rates = config["tasks"][task]["learning_rate"]
    if strategy == "dora" and "dora" not in rates:
        return float(rates["lora"])  # DoRA is LoRA with a learned magnitude: same scale of rate
    return float(rates[strategy])


def hardware_setting(config: dict, hardware: str, key: str):
    """``hardware.<hardware>.<key>``, or the schema's default (a config read without Snakemake has none filled in)."""
    return with_defaults("hardware.*", config["hardware"][hardware])[key]


def loader_settings(config: dict, hardware: str) -> dict:
    """The data loader of ``hardware`` (``ftbench.training.settings.TrainSettings`` fields). It never
    changes a training result, so the train rule passes it as a resource, which reruns nothing;
    speed jobs, whose result it is part of, get it with their settings."""
    return {key: hardware_setting(config, hardware, key) for key in ("loader_workers", "loader_prefetch")}


def task_settings(config: dict, task: str) -> dict:
    """``tasks.<task>`` with the schema's default of every key it does not set (``with_defaults``): the
    workflow's config has them filled in by Snakemake's validation, one read by ``load_config`` or
    built by a test has not. Keys without a default (``max_length``, ``truncation``, ``metric``) stay
    absent unless configured."""
    return with_defaults("tasks.*", config["tasks"][task])


def train_settings(config: dict, cell: Cell) -> dict:
    """Everything that changes a cell's training result (the rule passes it as a param, so a
    change reruns exactly the affected cells). Keys are ``ftbench.train.TrainSettings`` fields; an
    unset key is the schema's default (``task_settings``)."""
    task = task_settings(config, cell.task)
    settings = {
        "strategy": cell.strategy,
        "precision": cell.precision,
        "attention": cell.attention,
        "seed": cell.seed,
        "steps": task["steps"],
        "global_batch": task["global_batch"],
        "per_device_batch": task["per_device_batch"],
        "learning_rate": learning_rate(config, cell.task, cell.strategy),
        "warmup_steps": task["warmup_steps"],
        "weight_decay": task["weight_decay"],
        "num_crops": task["num_crops"],
        "lora_rank": task["lora_rank"],
        "lora_alpha": task["lora_alpha"],
        "lora_dropout": task["lora_dropout"],
        "lora_init": task["lora_init"],
        "gradient_checkpointing": task["gradient_checkpointing"],
    }
    # Only when configured, so that the cells of a config without them keep their settings (and results):
    # the schema gives them no default.
    for key in ("max_length", "truncation"):
        if key in task:
            settings[key] = task[key]
    return settings


def eval_settings(config: dict, task: str, strategy: str | None = None) -> dict:
    """Keyword arguments of ``ftbench.evaluate.evaluate`` (a change reruns the evaluations).
    ``qlora_base`` is given for QLoRA cells only, so switching it reruns only their evaluations. An
    unset key is the schema's default."""
    t = task_settings(config, task)
    evaluation = with_defaults("evaluation", config.get("evaluation"))
    settings = {
        "num_crops": t["num_crops"],
        "batch_size": t["eval_batch"],
        "max_new_tokens": t["max_new_tokens"],
        "bootstrap_resamples": evaluation["bootstrap_resamples"],
        "bootstrap_seed": evaluation["bootstrap_seed"],
    }
    if strategy == "qlora":
        settings["qlora_base"] = evaluation["qlora_base"]
    if "metric" in t:  # a custom task's declared headline metric
        settings["metric"] = t["metric"]
    if "max_length" in t:  # only when configured, as for training: other tasks' evaluations keep their settings
        settings["max_length"] = t["max_length"]
    return settings


def merge_layers(layers: list[tuple[str, dict]]) -> dict:
    """The config Snakemake runs with: each layer merged over the ones before it, mapping by mapping
    (``snakemake.utils.update_config``)."""
    def merge(into: dict, layer: dict) -> None:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    config: dict = {}
    for _, layer in layers:
        merge(config, layer)
    return config


def check_config_files(paths: list[str | Path]) -> dict:
    """The config files Snakemake would merge (config.yaml first, then each ``--configfile`` in order)
    read and validated as the workflow does, each error naming the file at fault: Snakemake reads the
    ``--configfile`` files before the workflow runs and reports a YAML error in one without its name
    or line, so this is the way to find it. Returns the merged config."""
    layers = [(str(path), read_config_file(path)) for path in paths]
    for name, content in layers:
        if not isinstance(content, dict):
            raise ConfigError("not a mapping of keys (config files hold keys at the top level)", path=name)
    config = merge_layers(layers)
    try:
        validate_config(config, path=None)
    except ConfigError as e:
        raise ConfigError(e.problem, path=file_setting(layers, e.key), key=e.key) from None
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m ftbench.config config.yaml mine.yaml``: checks the files as the workflow would merge them."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ftbench.config", description=main.__doc__)
    parser.add_argument("files", nargs="+", help="config.yaml, then the --configfile files in their order")
    args = parser.parse_args(argv)
    try:
        check_config_files(args.files)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{', '.join(args.files)}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
