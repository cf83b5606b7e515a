"""The config schema (``config.schema.yaml``): the one home of every config default.

The lowest layer: anything (data converters, validation, the workflow's config handling) may read a
default here without importing the workflow-level ``ftbench.config``."""

from __future__ import annotations

from pathlib import Path

import yaml

SCHEMA = Path(__file__).with_name("config.schema.yaml")


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())


def task_default(key: str):
    """The schema's default of ``tasks.<task>.<key>``, for code that runs without a config (a
    conversion's own check, ``ftbench validate``)."""
    return load_schema()["properties"]["tasks"]["additionalProperties"]["properties"][key]["default"]


def hardware_default(key: str):
    """The schema's default of ``hardware.<name>.<key>`` (a config read by ``load_config`` has none
    filled in; Snakemake's validation fills them)."""
    return load_schema()["properties"]["hardware"]["additionalProperties"]["properties"][key]["default"]


def image_limit_args(entry: dict) -> list[str]:
    """``--max-image-pixels N`` for a task entry that raises or lowers the limit, else nothing: a
    conversion's or import's arguments are a param, and passing the default too would rerun every
    existing conversion and its cells."""
    default = task_default("max_image_pixels")
    limit = entry.get("max_image_pixels", default)
    return [] if limit == default else ["--max-image-pixels", str(limit)]
