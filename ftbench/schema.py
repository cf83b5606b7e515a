"""The config schema (``config.schema.yaml``): the one home of every config default.

The lowest layer: anything (data converters, validation, the workflow's config handling, training)
may read a default or the matrix's axes here without importing the workflow-level ``ftbench.config``."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import yaml

SCHEMA = Path(__file__).with_name("config.schema.yaml")


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def _axis(name: str) -> tuple[str, ...]:
    return tuple(_schema()["properties"]["matrix"]["items"]["properties"][name]["items"]["enum"])


# The values of the matrix's axes: the schema's ``matrix`` enums, in the order the tables list them.
STRATEGIES = _axis("strategy")
PRECISIONS = _axis("precision")
ATTENTIONS = _axis("attention")
# Strategies that train the base model's own weights (the recipe runs them under DeepSpeed ZeRO-2);
# every other strategy trains adapters on a frozen base (PyTorch DDP).
BASE_WEIGHT_STRATEGIES = ("full", "frozen_vision")
ADAPTER_STRATEGIES = tuple(s for s in STRATEGIES if s not in BASE_WEIGHT_STRATEGIES)


def load_schema() -> dict:
    return copy.deepcopy(_schema())  # a copy: a validator that sets defaults inserts the schema's objects


def _object_schema(where: str) -> dict:
    """The schema of the config object at ``where``: dotted keys, ``*`` for any entry of a mapping
    (``tasks.*``, ``hardware.*``, ``speed``, ``model.pretrain``; ``""`` the top level)."""
    node = _schema()
    for part in where.split(".") if where else []:
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return node


def schema_default(key: str):
    """The schema's default of the config key ``key`` (dotted as ``_object_schema``'s ``where``:
    ``tasks.*.n_val``, ``speed.warmup_steps``, ``checkpoint_every``): for code that runs without a
    config (a conversion or script run by hand, ``ftbench validate``, a test) and for the defaults of
    the functions and dataclasses the workflow's settings reach. A key without one is a ``KeyError``."""
    where, _, name = key.rpartition(".")
    properties = _object_schema(where).get("properties", {})
    if "default" not in properties.get(name, {}):
        raise KeyError(f"{key}: the config schema has no default for it")
    return copy.deepcopy(properties[name]["default"])


def defaults(where: str) -> dict:
    """The schema's defaults of the keys of the config object at ``where`` (one level: an object
    default such as ``model.pretrain: {}`` is given as it is, its own keys' defaults are not in it)."""
    properties = _object_schema(where).get("properties", {})
    return {key: copy.deepcopy(sub["default"]) for key, sub in properties.items() if "default" in sub}


def with_defaults(where: str, value: dict | None) -> dict:
    """The config object ``value`` at ``where`` (None: the config has none) with the schema's default of
    each of its keys that it does not set, as Snakemake's validation fills them in (a config read by
    ``load_config``, or built by a test, has none filled in). A new dict; ``value`` is left as it is."""
    return {**defaults(where), **(value or {})}


def task_default(key: str):
    """The schema's default of ``tasks.<task>.<key>``, for code that runs without a config (a
    conversion's own check, ``ftbench validate``)."""
    return schema_default(f"tasks.*.{key}")


def hardware_default(key: str):
    """The schema's default of ``hardware.<name>.<key>`` (a config read by ``load_config`` has none
    filled in; Snakemake's validation fills them)."""
    return schema_default(f"hardware.*.{key}")


def image_limit_args(entry: dict) -> list[str]:
    """``--max-image-pixels N`` for a task entry that raises or lowers the limit, else nothing: a
    conversion's or import's arguments are a param, and passing the default too would rerun every
    existing conversion and its cells."""
    default = task_default("max_image_pixels")
    limit = entry.get("max_image_pixels", default)
    return [] if limit == default else ["--max-image-pixels", str(limit)]
