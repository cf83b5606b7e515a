import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

from ftbench.config import (
    CELL_PATTERN,
    Cell,
    ConfigError,
    check_references,
    check_runnable,
    custom_import_args,
    custom_tasks,
    describe_validation_error,
    drop_inherited_slices,
    eval_settings,
    split_cells,
    train_settings,
)
from ftbench.launch import torchrun_command

SCRIPTS = f"{workflow.basedir}/workflow_scripts"
CONFIG_FILE = ", ".join(str(f) for f in workflow.configfiles) or "config"

# A real source that the command line's config declares takes the recipe's slices unless it sets its
# own: config.yaml's n_val/n_test are the synthetic demo's (ftbench.config.drop_inherited_slices).
INHERITED_SLICES = drop_inherited_slices(config, workflow.config_settings.overwrite_config)

# One-line errors naming the file and the key (the schema sets defaults too).
try:
    validate(config, schema="../ftbench/config.schema.yaml")
    check_references(config, CONFIG_FILE)
except WorkflowError as e:
    cause = e.__context__ if hasattr(e.__context__, "absolute_path") else None  # the jsonschema error
    raise WorkflowError(describe_validation_error(cause, CONFIG_FILE) if cause else str(e)) from None
except ConfigError as e:
    raise WorkflowError(str(e)) from None
for task, key, inherited in INHERITED_SLICES:
    logger.info(f"{CONFIG_FILE}: tasks.{task}.{key}: {config['tasks'][task][key]} (the schema's default for "
                f"source {config['tasks'][task]['source']}), not config.yaml's {inherited}")

RUNNABLE, SKIPPED = split_cells(config)
CUSTOM_TASKS = custom_tasks(config)
TASKS = sorted({c.task for c in RUNNABLE})
HARDWARE = sorted({c.hardware for c in RUNNABLE} | {c.hardware for c, _ in SKIPPED})
SPEED_TASKS = set(config.get("speed", {}).get("tasks", []))
# Formatted into the train rule's shell, not a param: the cadence never changes a result (no rerun).
CHECKPOINT_EVERY = int(config.get("checkpoint_every", 0))
SPEED_PRECISIONS = set(config.get("speed", {}).get("precisions", ["bf16", "fp16"]))
# The base model: built in the workflow ("pretrain"), a local checkpoint folder, or a hub id fetched at a
# pinned revision into results/base/ (the revision is part of the folder name, so changing it refetches).
MODEL_SOURCE = config["model"]["source"]
BASE_IS_BUILT = MODEL_SOURCE == "pretrain"
BASE_IS_HUB = not BASE_IS_BUILT and not Path(MODEL_SOURCE).is_dir() and MODEL_SOURCE.count("/") == 1
if BASE_IS_BUILT:
    BASE_DIR = f"results/base/{config['model']['preset']}"
    PRETRAIN_TASKS = sorted(config["model"]["pretrain"]["tasks"])
elif BASE_IS_HUB:
    if not config["model"].get("revision"):
        raise WorkflowError(f"{CONFIG_FILE}: model.revision: a hub id needs a pinned 40-hex commit "
                            f"(model.source {MODEL_SOURCE!r} is not a local folder, so it is read as a hub id)")
    BASE_DIR = f"results/base/{MODEL_SOURCE.replace('/', '__')}@{config['model']['revision']}"
else:
    BASE_DIR = MODEL_SOURCE


wildcard_constraints:
    task="|".join(config["tasks"]),
    hardware="[a-z][a-z0-9_]*",
    cell=CELL_PATTERN,


def one_of(names):
    """A wildcard constraint matching exactly these names (none: matches nothing)."""
    names = list(names)
    return "|".join(names) if names else "(?!)"


def cell_of(wildcards):
    # A cell asked for by its path must be runnable (e.g. not fp16 with flash attention).
    try:
        return check_runnable(Cell.parse(wildcards.task, wildcards.hardware, wildcards.cell), config, CONFIG_FILE)
    except ConfigError as e:
        raise WorkflowError(str(e)) from None


def cell_settings(wildcards):
    return json.dumps(train_settings(config, cell_of(wildcards)))


def cell_record(wildcards):
    return json.dumps(cell_of(wildcards).as_record())


def launcher(wildcards, script):
    cell = cell_of(wildcards)
    return torchrun_command(cell.nodes, cell.procs, script)


def base_model_input(wildcards):
    # The built tiny base is a rule output; a checkpoint folder from the config is a plain input.
    return f"{BASE_DIR}/config.json"


def speed_base_input(wildcards):
    # speed.weights: random -> the preset's full architecture with random weights (no download).
    if config["speed"].get("weights") == "random":
        return f"results/base/random-{config['model']['preset']}/config.json"
    return base_model_input(wildcards)


def speed_data_input(wildcards):
    if config["speed"].get("inputs") == "docvqa_shape":
        return "results/speed/inputs/docvqa_shape_train.jsonl"
    return data_file(wildcards.task, "train")


def data_file(task, split):
    return f"results/data/{task}/{task}_{split}.jsonl"


def eval_targets():
    before = {f"results/{c.task}/{c.hardware}/eval_before.json" for c in RUNNABLE}
    after = [f"{c.path()}/eval_after.json" for c in RUNNABLE]
    return sorted(before) + after


def speed_targets():
    return [
        f"{c.path()}/speed.json" for c in RUNNABLE if c.task in SPEED_TASKS and c.precision in SPEED_PRECISIONS
    ]
