"""Which converter reads which source, and where a source's files come from.

Sources per task (config ``tasks.<task>.source``, ``path``, ``revision``, ``split_policy``):

| source | tasks | path |
|---|---|---|
| ``synthetic`` | all | ``results/raw/<task>`` written by ``make_raw`` (the embedded default) |
| ``cauldron`` | docvqa, hateful_memes, nlvr2 | ``HuggingFaceM4/the_cauldron`` snapshot (or its subset folder) |
| ``nielsr_docvqa`` | docvqa | ``nielsr/docvqa_1200_examples`` snapshot |
| ``ucf101_subset`` | ucf101 | ``sayakpaul/ucf101-subset`` snapshot, ``UCF101_subset.tar.gz`` or its folder |
| ``official`` | all | the official release folder (see each ``*_official`` module) |

A ``path`` that exists locally is used as is and nothing touches the network. Otherwise a hub
dataset source accepts a hub id (``owner/name``) with a pinned 40-hex ``revision`` and fetches it
with ``huggingface_hub.snapshot_download`` (only the files the converter reads); a hub id without
a pinned revision is refused, since a moving ``main`` makes results unreproducible.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftbench.atomic import write_json_atomic
from ftbench.hub import COMMIT_RE, HUB_ID_RE
from ftbench.schema import image_limit_args, task_default, with_defaults

from .common import CAULDRON_TASKS, SUMMARY, TASKS, check_task
from .pipeline import check_split_policy
from .ucf101 import TARBALL_NAME as UCF101_TARBALL

SOURCES = {
    "synthetic": TASKS,
    "cauldron": CAULDRON_TASKS,
    "nielsr_docvqa": ("docvqa",),
    "ucf101_subset": ("ucf101",),
    "official": TASKS,
}
HUB_REPOS = {  # the recipe's hub dataset for each hub source
    "cauldron": "HuggingFaceM4/the_cauldron",
    "nielsr_docvqa": "nielsr/docvqa_1200_examples",
    "ucf101_subset": "sayakpaul/ucf101-subset",
}


def check_source(task: str, source: str) -> str:
    check_task(task)
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; expected one of {', '.join(SOURCES)}")
    if task not in SOURCES[source]:
        raise ValueError(f"data source {source!r} has no {task} (it provides {', '.join(SOURCES[source])})")
    return source


def hub_patterns(source: str, task: str) -> list[str] | None:
    """Files of a hub snapshot the converter reads (None: all)."""
    if source == "cauldron":
        return [f"{task}/*"]
    if source == "ucf101_subset":
        return [UCF101_TARBALL]
    return None


def is_hub_id(path: str) -> bool:
    return bool(HUB_ID_RE.match(str(path))) and not Path(path).exists()


def pin_hint(what: str, path: str) -> str:
    """How to pin a hub id: what a missing revision's error says."""
    return (f"{what} {path!r} is a hub id: set its revision to a 40-hex commit (listed at "
            f"https://huggingface.co/datasets/{path}/commits/main), or to a branch or tag such as main, "
            "whose commit is then resolved and recorded in summary.json")


def resolve_commit(repo_id: str, revision: str) -> str:
    """The commit of a hub dataset at ``revision`` (a 40-hex commit is returned as it is)."""
    if COMMIT_RE.match(revision):
        return revision
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo_id, revision=revision).sha


def snapshot_commit(local: Path) -> str | None:
    """The commit of a hub cache snapshot folder (``.../snapshots/<40-hex>/...``), else None."""
    parts = local.resolve().parts
    for name, commit in zip(parts, parts[1:]):
        if name == "snapshots" and COMMIT_RE.match(commit):
            return commit
    return None


def resolve_path(path: str | os.PathLike, *, source: str, task: str, revision: str | None = None,
                 what: str = "path") -> tuple[Path, dict]:
    """Local folder of a source and a record of where it came from: ``path`` itself when it exists
    (no network; the commit is recorded when it is a hub cache snapshot), else the snapshot of the hub
    id ``path`` at ``revision`` (a branch or tag is resolved to its commit first, and both are recorded)."""
    local = Path(path)
    if local.exists():
        return local, {"path": str(path), "commit": snapshot_commit(local)}
    if not is_hub_id(str(path)):
        raise FileNotFoundError(f"{path}: no such file or directory")
    if source not in HUB_REPOS:
        raise ValueError(f"{what} {path!r}: source {source!r} is read from a local folder only "
                         "(no such folder here); hub ids work for " + ", ".join(HUB_REPOS))
    if not revision:
        raise ValueError(pin_hint(what, str(path)))
    from huggingface_hub import snapshot_download

    commit = resolve_commit(str(path), revision)
    folder = Path(snapshot_download(repo_id=str(path), repo_type="dataset", revision=commit,
                                    allow_patterns=hub_patterns(source, task)))
    return folder, {"path": str(path), "revision": revision, "commit": commit}


def convert_source(
    task: str,
    source: str,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    split_policy: str = task_default("split_policy"),
    revision: str | None = None,
    eval_path: str | os.PathLike | None = None,
    eval_revision: str | None = None,
    n_val: int = task_default("n_val"),
    n_test: int = task_default("n_test"),
    num_frames: int = task_default("num_frames"),
    ucf_split: int = task_default("ucf_split"),
    processes: int = task_default("processes"),
    progress: bool | None = None,
) -> dict:
    """Convert ``task`` from ``source`` at ``path`` into ``out_dir`` under ``split_policy``; an option
    not given is the schema's default of ``tasks.<task>.<option>``.

    ``n_val``/``n_test`` are the sizes of the recipe's cut of a training split (cookbook policy
    of synthetic, cauldron and the official Hateful Memes / NLVR2). ``eval_path`` (docvqa from the
    Cauldron, cookbook): the nielsr/docvqa_1200_examples copy whose test rows the recipe evaluates.
    """
    check_source(task, source)
    check_split_policy(split_policy)
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if source in ("synthetic", "cauldron") and split_policy == "official":
        raise ValueError(f"{path}: the Cauldron ({source}) has only a train split; split policy official "
                         "needs source official")
    local, origin = resolve_path(path, source=source, task=task, revision=revision)
    origins = {"path": origin}
    evaluation = None
    if source == "cauldron" and task == "docvqa":
        if eval_path is None:
            raise ValueError(
                f"{path}: docvqa from the Cauldron under split policy cookbook needs eval_path: the recipe "
                "trains on all Cauldron docvqa rows and evaluates on nielsr/docvqa_1200_examples test"
            )
        evaluation, origins["eval_path"] = resolve_path(eval_path, source="nielsr_docvqa", task=task,
                                                        revision=eval_revision, what="eval_path")
    summary = convert_folder(task, source, local, out_dir, split_policy=split_policy, evaluation=evaluation,
                             n_val=n_val, n_test=n_test, num_frames=num_frames, ucf_split=ucf_split,
                             processes=processes, progress=progress)
    # Where the data came from, commits included: a branch named as revision is recorded as the commit
    # it resolved to (train copies this into each cell's provenance.json).
    summary["origin"] = {"source": source, **origins}
    write_json_atomic(Path(out_dir) / SUMMARY, summary)
    return summary


def convert_folder(task: str, source: str, local: Path, out_dir: str | os.PathLike, *, split_policy: str,
                   evaluation: Path | None, n_val: int, n_test: int, num_frames: int, ucf_split: int,
                   processes: int, progress: bool | None) -> dict:
    """``convert_source`` on local folders: the converter of ``task`` from ``source``."""
    common = {"progress": progress, "processes": processes}
    if task == "ucf101":
        if source in ("synthetic", "ucf101_subset"):
            from .ucf101 import convert_ucf101

            return convert_ucf101(local, out_dir, num_frames=num_frames, **common)
        from .ucf101 import convert_ucf101_official

        return convert_ucf101_official(local, out_dir, split_policy=split_policy, ucf_split=ucf_split,
                                       num_frames=num_frames, **common)
    if source == "synthetic":
        from .cauldron import convert_cauldron

        return convert_cauldron(task, local, out_dir, n_val=n_val, n_test=n_test, **common)
    if source == "cauldron":
        from .cauldron import convert_cauldron

        if evaluation is not None:
            return convert_cauldron(task, local, out_dir, eval_source=evaluation, **common)
        return convert_cauldron(task, local, out_dir, n_val=n_val, n_test=n_test, **common)
    if source == "nielsr_docvqa":
        from .nielsr_docvqa import convert_nielsr_docvqa

        return convert_nielsr_docvqa(local, out_dir, split_policy=split_policy, **common)
    if task == "docvqa":
        from .docvqa_official import convert_docvqa_official

        return convert_docvqa_official(local, out_dir, split_policy=split_policy, **common)
    if task == "hateful_memes":
        from .hateful_memes_official import convert_hateful_memes_official

        return convert_hateful_memes_official(local, out_dir, split_policy=split_policy, n_val=n_val,
                                              n_test=n_test, **common)
    from .nlvr2_official import convert_nlvr2_official

    return convert_nlvr2_official(local, out_dir, split_policy=split_policy, n_val=n_val, n_test=n_test, **common)


def rule_input(task: str, entry: dict) -> list[str]:
    """What the workflow's ``convert`` rule waits for: the synthetic raw folder, or an existing
    local ``path`` (a hub id is fetched by the job itself and is no input file)."""
    source = with_defaults("tasks.*", entry)["source"]
    if source == "synthetic":
        return [f"results/raw/{task}"]
    return [p for p in (entry.get("path"), entry.get("eval_path")) if p and Path(p).exists()]


def rule_arguments(task: str, entry: dict) -> str:
    """``convert.py`` options (besides --task/--out/--processes) for one task's config entry (an unset
    key is the schema's default)."""
    import shlex

    entry = with_defaults("tasks.*", entry)
    source = entry["source"]
    path = f"results/raw/{task}" if source == "synthetic" else entry["path"]
    args = ["--source", source, "--raw", path, "--split-policy", entry["split_policy"]]
    if task == "ucf101":
        args += ["--num-frames", entry["num_frames"]]
        if source == "official":
            args += ["--ucf-split", entry["ucf_split"]]
    else:
        args += ["--n-val", entry["n_val"], "--n-test", entry["n_test"]]
    for key in ("revision", "eval_path", "eval_revision"):
        if entry.get(key):
            args += ["--" + key.replace("_", "-"), entry[key]]
    args += image_limit_args(entry)
    return " ".join(shlex.quote(str(a)) for a in args)
