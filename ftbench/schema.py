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
