"""The benchmark matrix: cells, their paths, and which cells cannot run (and why).

No torch here: the Snakefile imports this module to plan hundreds of jobs in a second.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

SCHEMA = Path(__file__).with_name("config.schema.yaml")
STRATEGIES = ("full", "frozen_vision", "lora", "qlora", "dora")
PRECISIONS = ("bf16", "fp16")
ATTENTIONS = ("eager", "sdpa", "flash_attention_2")
CELL_NAME = re.compile(
    r"^(?P<strategy>full|frozen_vision|lora|qlora|dora)-(?P<precision>bf16|fp16)-"
    r"(?P<attention>eager|sdpa|flash_attention_2)-(?P<nodes>[1-9][0-9]*)x(?P<procs>[1-9][0-9]*)-s(?P<seed>[0-9]+)$"
)


# The same shape without named groups, for Snakemake wildcard constraints.
CELL_PATTERN = re.sub(r"\(\?P<[a-z]+>", "(", CELL_NAME.pattern).strip("^$")


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key."""


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
    def parse(cls, task: str, hardware: str, name: str) -> "Cell":
        m = CELL_NAME.match(name)
        if not m:
            raise ConfigError(f"not a cell name: {name!r} (expected strategy-precision-attention-NxP-sSEED)")
        g = m.groupdict()
        return cls(task, hardware, g["strategy"], g["precision"], g["attention"], int(g["nodes"]), int(g["procs"]),
                   int(g["seed"]))


def load_config(path: str | Path) -> dict:
    """Reads and validates a config file (the same schema the Snakefile validates with)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    validate_config(config, path)
    return config


def validate_config(config: dict, path: str | Path = "config") -> None:
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe_validation_error(error, path))
    check_references(config, path)


def describe_validation_error(error, path: str | Path = "config") -> str:
    """One line naming the file and the key, e.g. ``config.yaml: tasks.docvqa.steps: 'x' is not of
    type 'integer'``."""
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{path}: {key}: {error.message}"


BUILTIN_TASKS = ("docvqa", "hateful_memes", "nlvr2", "ucf101")
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
    args += ["--metric", entry.get("metric", "accuracy")]
    return shlex.join(args)


def check_references(config: dict, path: str | Path = "config") -> None:
    """Cross-key rules a schema cannot express."""
    for task, entry in config["tasks"].items():
        if entry.get("source") == "custom":
            for key in CUSTOM_PATH_KEYS:  # relative paths are relative to the working directory
                if key in entry and not (Path(entry[key]).is_dir() if key == "images" else Path(entry[key]).is_file()):
                    raise ConfigError(f"{path}: tasks.{task}.{key}: {entry[key]} does not exist")
        elif task not in BUILTIN_TASKS:
            raise ConfigError(f"{path}: tasks.{task}: unknown task {task!r}; the built-in tasks are "
                              f"{', '.join(BUILTIN_TASKS)} (a dataset of your own needs source: custom)")
        elif entry.get("source", "synthetic") != "synthetic":
            from ftbench.data.sources import check_source  # which sources provide which task

            try:
                check_source(task, entry["source"])
            except ValueError as e:
                raise ConfigError(f"{path}: tasks.{task}.source: {e}") from None
            check_pins(entry, f"{path}: tasks.{task}")
    for i, block in enumerate(config["matrix"]):
        for task in block["task"]:
            if task not in config["tasks"]:
                raise ConfigError(f"{path}: matrix.{i}.task: {task!r} is not declared under tasks")
        for hw in block["hardware"]:
            if hw not in config["hardware"]:
                raise ConfigError(f"{path}: matrix.{i}.hardware: {hw!r} is not declared under hardware")
    for task in config.get("speed", {}).get("tasks", []):
        if task not in config["tasks"]:
            raise ConfigError(f"{path}: speed.tasks: {task!r} is not declared under tasks")
    if config["model"]["source"] == "pretrain":
        for i, task in enumerate(config["model"].get("pretrain", {}).get("tasks", [])):
            if task not in config["tasks"]:
                raise ConfigError(f"{path}: model.pretrain.tasks.{i}: {task!r} is not declared under tasks")


def check_pins(entry: dict, where: str) -> None:
    """A hub id as a task's ``path`` or ``eval_path`` needs its revision (checked when the workflow is
    planned, before any job runs)."""
    from ftbench.data.sources import is_hub_id, pin_hint

    for key, revision_key in (("path", "revision"), ("eval_path", "eval_revision")):
        if entry.get(key) and is_hub_id(entry[key]) and not entry.get(revision_key):
            raise ConfigError(f"{where}.{revision_key}: {pin_hint(key, entry[key])}")


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
    hw = config["hardware"][cell.hardware]
    task = config["tasks"][cell.task]
    if cell.attention == "flash_attention_2":
        if cell.precision == "fp16":
            return "flash attention needs bf16 (the recipe's known fp16 issue)"
        if not hw.get("flash_attention", False):
            return f"hardware {cell.hardware} has no flash attention"
        if flash_available is None:
            flash_available = hw.get("assume_installed", False) or flash_attention_installed()
        if not flash_available:
            return "flash-attn is not installed"
    if cell.precision == "bf16" and not hw.get("bf16", True):
        return f"hardware {cell.hardware} has no bf16"
    if cell.strategy == "qlora" and not hw.get("four_bit", True):
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
        raise ConfigError(f"{path}: tasks: {cell.task!r} is not declared (asked for {cell.path()})")
    if cell.hardware not in config["hardware"]:
        raise ConfigError(f"{path}: hardware: {cell.hardware!r} is not declared (asked for {cell.path()})")
    reason = skip_reason(cell, config)
    if reason:
        raise ConfigError(f"{path}: {cell.path()}: this cell cannot run: {reason}")
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


def skipped_tsv(skipped: list[tuple[Cell, str]]) -> str:
    lines = ["task\thardware\tcell\treason"]
    lines += [f"{c.task}\t{c.hardware}\t{c.name}\t{reason}" for c, reason in skipped]
    return "\n".join(lines) + "\n"


def learning_rate(config: dict, task: str, strategy: str) -> float:
    rates = config["tasks"][task]["learning_rate"]
    if strategy == "dora" and "dora" not in rates:
        return float(rates["lora"])  # DoRA is LoRA with a learned magnitude: same scale of rate
    return float(rates[strategy])


def train_settings(config: dict, cell: Cell) -> dict:
    """Everything that changes a cell's training result (the rule passes it as a param, so a
    change reruns exactly the affected cells). Keys are ``ftbench.train.TrainSettings`` fields."""
    task = config["tasks"][cell.task]
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
        "weight_decay": task.get("weight_decay", 0.01),
        "num_crops": task["num_crops"],
        "lora_rank": task.get("lora_rank", 64),
        "lora_alpha": task.get("lora_alpha", 128),
        "lora_dropout": task.get("lora_dropout", 0.0),
        "lora_init": task.get("lora_init", "gaussian"),
        "gradient_checkpointing": task.get("gradient_checkpointing", False),
    }
    # Only when configured, so that the cells of a config without them keep their settings (and results).
    for key in ("max_length", "truncation"):
        if key in task:
            settings[key] = task[key]
    return settings


def eval_settings(config: dict, task: str, strategy: str | None = None) -> dict:
    """Keyword arguments of ``ftbench.evaluate.evaluate`` (a change reruns the evaluations).
    ``qlora_base`` is given for QLoRA cells only, so switching it reruns only their evaluations."""
    t = config["tasks"][task]
    evaluation = config.get("evaluation") or {}
    settings = {
        "num_crops": t["num_crops"],
        "batch_size": t.get("eval_batch", 8),
        "max_new_tokens": t.get("max_new_tokens", 64),
        "bootstrap_resamples": evaluation.get("bootstrap_resamples", 1000),
        "bootstrap_seed": evaluation.get("bootstrap_seed", 0),
    }
    if strategy == "qlora":
        settings["qlora_base"] = evaluation.get("qlora_base", "quantised")
    if "metric" in t:  # a custom task's declared headline metric
        settings["metric"] = t["metric"]
    return settings
