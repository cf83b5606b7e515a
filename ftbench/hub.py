"""Hugging Face hub names: a repository id (``owner/name``) and a pinned commit (40 hex digits).

The lowest layer: the data sources (``ftbench.data.sources``), the model checkpoints
(``ftbench.models.official``) and the workflow (``rules/common.smk``) read a hub id or a revision
with these same patterns."""

from __future__ import annotations

import re

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
