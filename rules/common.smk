import json
import os
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
    check_task_names,
    custom_import_args,
    custom_tasks,
    drop_inherited_slices,
    eval_settings,
    loader_settings,
    pretrain_tasks,
    file_setting,
    read_config_file,
    refused_reasons,
    split_cells,
    train_settings,
    validation_error,
)
from ftbench.hub import HUB_ID_RE

# ONE_THREAD ("OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ..."): a param of each command that starts PyTorch
from ftbench.launch import ONE_THREAD, torchrun_command

# The workflow scripts, beside this file wherever the checkout lives. Each shell command takes the folder
# as a resource, {resources.scripts}, never as a param or a global formatted into it: Snakemake reruns a
# job whose recorded code (a shell command's text before formatting) or params (their values) changed,
# never for a resource, so where the checkout lives reruns nothing (docs/cluster.md).
SCRIPTS = f"{workflow.basedir}/workflow_scripts"


def shown(path):
    """A config file as the user would write it: relative when it is in the working directory."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


# The config files in the order Snakemake merged them: the Snakefile's configfile (config.yaml) first,
# then the command line's --configfile files, then --config. An error names the one that set the key.
COMMAND_LINE_FILES = list(workflow.config_settings.configfiles)
SNAKEFILE_FILES = (
    [] if workflow.config_settings.replace_workflow_config else workflow.configfiles[len(COMMAND_LINE_FILES) :]
)
CONFIG_LAYERS = [(shown(str(f)), read_config_file(f)) for f in SNAKEFILE_FILES + COMMAND_LINE_FILES]
if workflow.config_settings.config:
    CONFIG_LAYERS.append(("--config", dict(workflow.config_settings.config)))


def config_error(e: ConfigError) -> WorkflowError:
    return WorkflowError(f"{file_setting(CONFIG_LAYERS, e.key)}: {e.key}: {e.problem}")


# A real source that the command line's config declares takes the recipe's slices unless it sets its
# own: config.yaml's n_val/n_test are the synthetic demo's (ftbench.config.drop_inherited_slices).
INHERITED_SLICES = drop_inherited_slices(config, workflow.config_settings.overwrite_config)

# One-line errors naming the file and the key (the schema sets defaults too). An unknown task is said
# first: its partial entry would otherwise be reported as missing required keys.
try:
    check_task_names(config)
    try:
        validate(config, schema="../ftbench/config.schema.yaml")
    except WorkflowError as e:
        if not hasattr(e.__context__, "absolute_path"):  # not a jsonschema error
            raise
        raise validation_error(e.__context__) from None
    check_references(config)
except ConfigError as e:
    raise config_error(e) from None
for task, key, inherited in INHERITED_SLICES:
    logger.info(
        f"{file_setting(CONFIG_LAYERS, f'tasks.{task}.source')}: tasks.{task}.{key}: "
        f"{config['tasks'][task][key]} (the schema's default for source {config['tasks'][task]['source']}), "
        f"not config.yaml's {inherited}"
    )

RUNNABLE, SKIPPED = split_cells(config)
# A matrix of refused cells would run nothing and report tables of "skipped": a mistake, said now.
if SKIPPED and not RUNNABLE:
    raise WorkflowError(
        "\n  ".join(
            [
                f"{file_setting(CONFIG_LAYERS, 'matrix')}: matrix: all {len(SKIPPED)} cells "
                "are refused, nothing would be trained:",
                *refused_reasons(SKIPPED),
            ]
        )
    )
CUSTOM_TASKS = custom_tasks(config)
TASKS = sorted({c.task for c in RUNNABLE})
HARDWARE = sorted({c.hardware for c in RUNNABLE} | {c.hardware for c, _ in SKIPPED})
# The validation above filled in every schema default: a key that has one is indexed, never .get().
SPEED_TASKS = set(config["speed"]["tasks"])
# A resource of the train rule, not a param: the cadence never changes a result (no rerun).
CHECKPOINT_EVERY = int(config["checkpoint_every"])
SPEED_PRECISIONS = set(config["speed"]["precisions"])
# The base model: built in the workflow ("pretrain"), a local checkpoint folder, or a hub id fetched at a
# pinned revision into results/base/ (the revision is part of the folder name, so changing it refetches).
MODEL_SOURCE = config["model"]["source"]
BASE_IS_BUILT = MODEL_SOURCE == "pretrain"
BASE_IS_HUB = not BASE_IS_BUILT and not Path(MODEL_SOURCE).is_dir() and bool(HUB_ID_RE.match(MODEL_SOURCE))
if BASE_IS_BUILT:
    BASE_DIR = f"results/base/{config['model']['preset']}"
    PRETRAIN_TASKS = pretrain_tasks(config)
elif BASE_IS_HUB:
    if not config["model"].get("revision"):
        raise WorkflowError(
            f"{file_setting(CONFIG_LAYERS, 'model.revision')}: model.revision: a hub id needs a pinned 40-hex commit "
            f"(model.source {MODEL_SOURCE!r} is not a local folder, so it is read as a hub id)"
        )
    # split and join, not replace: snakemake --lint reads a quoted slash, a comma and a quote as an absolute path
    HUB_FOLDER = "__".join(MODEL_SOURCE.split("/"))
    BASE_DIR = f"results/base/{HUB_FOLDER}@{config['model']['revision']}"
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
        return check_runnable(Cell.parse(wildcards.task, wildcards.hardware, wildcards.cell), config)
    except ConfigError as e:
        raise config_error(e) from None


def cell_settings(wildcards):
    return json.dumps(train_settings(config, cell_of(wildcards)))


def speed_settings(wildcards):
    # The loader is part of what a speed run measures: a changed loader reruns speed, not training.
    return json.dumps(train_settings(config, cell_of(wildcards)) | loader_settings(config, wildcards.hardware))


def loader_resource(key):
    # Resources, not params: the loader never changes a training result, so changing it reruns nothing.
    return lambda wildcards: loader_settings(config, wildcards.hardware)[key]


def cell_record(wildcards):
    return json.dumps(cell_of(wildcards).as_record())


def launcher(script):
    """The launch param of a torchrun job running workflow_scripts/SCRIPT. It takes the job's resources
    (the scripts folder), so Snakemake counts it as derived and leaves it out of the params it compares
    for a rerun, as it does for params of the input or output: moving the checkout reruns nothing, and
    the layout it launches is in the cell's path."""

    def launch(wildcards, resources):
        cell = cell_of(wildcards)
        return torchrun_command(cell.nodes, cell.procs, f"{resources.scripts}/{script}")

    return launch


def report_figure(path, caption, shows):
    """A figure of the report's Results > Figures, its caption and one label naming what it shows."""
    return report(
        path, caption=f"../report/{caption}", category="Results", subcategory="Figures", labels={"figure": shows}
    )


def base_model_input(wildcards):
    # The built tiny base is a rule output; a checkpoint folder from the config is a plain input.
    return f"{BASE_DIR}/config.json"


def speed_base_input(wildcards):
    # speed.weights: random -> the preset's full architecture with random weights (no download).
    if config["speed"]["weights"] == "random":
        return f"results/base/random-{config['model']['preset']}/config.json"
    return base_model_input(wildcards)


def speed_data_input(wildcards):
    if config["speed"]["inputs"] == "docvqa_shape":
        return "results/speed/inputs/docvqa_shape_train.jsonl"
    return data_file(wildcards.task, "train")


def data_file(task, split):
    return f"results/data/{task}/{task}_{split}.jsonl"


def eval_targets():
    before = {f"results/{c.task}/{c.hardware}/eval_before.json" for c in RUNNABLE}
    after = [f"{c.path()}/eval_after.json" for c in RUNNABLE]
    return sorted(before) + after


def speed_targets():
    return [f"{c.path()}/speed.json" for c in RUNNABLE if c.task in SPEED_TASKS and c.precision in SPEED_PRECISIONS]
