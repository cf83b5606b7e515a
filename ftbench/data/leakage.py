"""Leakage report: identical images (or videos) shared by examples of different splits.

Every converter hashes the bytes of each image (videos: the video file) it writes with SHA-256 and
reports, per pair of splits, how many distinct contents occur in both and how many examples of
each split carry one, plus a few example ids. Byte-identical only: re-encoded or resized copies
are not found (a perceptual hash would be needed for those).
"""

from __future__ import annotations

import hashlib
import itertools
from collections import defaultdict
from collections.abc import Iterable

from .common import SPLITS

MAX_EXAMPLES = 20


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hash(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def leakage_report(hashes: Iterable[tuple[str, str, str]], unit: str = "image",
                   max_examples: int = MAX_EXAMPLES) -> dict:
    """Report from ``(split, example id, sha256)`` triples (one per image of an example)."""
    by_hash: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    hashed = 0
    for split, ex_id, digest in hashes:
        ids = by_hash[digest][split]
        if not ids or ids[-1] != ex_id:  # an example with the same image twice counts once
            ids.append(ex_id)
        hashed += 1
    within = {s: 0 for s in SPLITS}
    pairs = {f"{a}/{b}": {"contents": 0, "examples": {a: set(), b: set()}}
             for a, b in itertools.combinations(SPLITS, 2)}
    shared = []
    for digest, splits in by_hash.items():
        for s, ids in splits.items():
            if len(ids) > 1:
                within[s] += 1
        present = [s for s in SPLITS if s in splits]
        for a, b in itertools.combinations(present, 2):
            p = pairs[f"{a}/{b}"]
            p["contents"] += 1
            p["examples"][a].update(splits[a])
            p["examples"][b].update(splits[b])
        if len(present) > 1:
            shared.append((digest, {s: sorted(splits[s]) for s in present}))
    shared.sort(key=lambda item: min(min(ids) for ids in item[1].values()))
    return {
        "hash": "sha256 of the stored bytes",
        "unit": unit,
        "hashed": hashed,
        "distinct": len(by_hash),
        "leaked_contents": len(shared),
        "within_split_duplicates": within,
        "across_splits": {
            k: {"contents": v["contents"], "examples": {s: len(ids) for s, ids in v["examples"].items()}}
            for k, v in pairs.items()
        },
        "examples": [{"sha256": d, "ids": ids} for d, ids in shared[:max_examples]],
    }
