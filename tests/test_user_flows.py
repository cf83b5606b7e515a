"""The README's commands as a user types them, from the root of a checkout.

Each test builds a checkout in a temporary folder (links to the repository's files, its own README.md,
config.yaml and results) and runs the commands exactly as README.md writes them."""

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CELL = "results/hateful_memes/cpu/lora-bf16-sdpa-1x2-s0"
# What a checkout has besides what the test writes itself (README.md, config.yaml, results/).
LINKED = ("Snakefile", "rules", "workflow_scripts", "ftbench", "report", "profiles", "slurm", "config")


def checkout(tmp_path: Path, config: dict | None = None) -> Path:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in LINKED:
        if name == "slurm":  # the committed link itself, as a clone has it
            os.symlink(os.readlink(REPO / name), root / name)
        else:
            os.symlink(REPO / name, root / name)
    (root / "README.md").write_text((REPO / "README.md").read_text())
    text = (REPO / "config.yaml").read_text() if config is None else yaml.safe_dump(config)
    (root / "config.yaml").write_text(text)
    return root


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    # Snakemake logs jobs on stderr when it runs them and on stdout in a dry run: read both as one.
    return subprocess.run(shlex.split(command), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)


def readme_command(after: str) -> str:
    """The one-line command of the first code block after the sentence ``after`` in README.md."""
    text = (REPO / "README.md").read_text()
    start = text.index(after)
    block = re.search(r"```\n(.*?)\n```", text[start:], re.S).group(1)
    lines = [line for line in block.splitlines() if not line.startswith("export ")]
    assert len(lines) == 1, lines
    return lines[0]


def jobs_run(output: str) -> dict[str, int]:
    """The job counts of the table Snakemake prints before running."""
    table = output[output.index("Job stats:"):] if "Job stats:" in output else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_slurm_profile_by_name_plans_the_recipe_matrix_on_its_real_sources(tmp_path):
    root = checkout(tmp_path)
    command = readme_command("## Running on a Slurm cluster")
    assert command == "snakemake --profile slurm all"
    started = time.monotonic()
    r = run(command + " -n", root)
    seconds = time.monotonic() - started
    assert r.returncode == 0, r.stdout[-3000:]
    counts = jobs_run(r.stdout)
    assert counts["train"] == 144 and counts["fetch_model"] == 1 and counts["convert"] == 4, counts
    assert "make_raw" not in counts and "base_model" not in counts
    cluster = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    assert cluster["model"]["source"] == "microsoft/Phi-3.5-vision-instruct"
    assert re.fullmatch(r"[0-9a-f]{40}", cluster["model"]["revision"])
    assert {t: e["source"] for t, e in cluster["tasks"].items()} == {
        "docvqa": "cauldron", "hateful_memes": "cauldron", "nlvr2": "cauldron", "ucf101": "ucf101_subset"}
    printed = run(command + " -n -p", root).stdout
    for hub_id in ("HuggingFaceM4/the_cauldron", "nielsr/docvqa_1200_examples", "sayakpaul/ucf101-subset"):
        assert f"--raw {hub_id}" in printed or f"--eval-path {hub_id}" in printed, hub_id
    print(f"planned in {seconds:.1f} s")  # the bound is 5 s; measured, not asserted (a loaded CI varies)
    # the long form stays valid
    assert run("snakemake --profile profiles/slurm -n all", root).returncode == 0


def test_a_hub_id_without_revision_stops_the_plan_in_one_line_saying_how_to_pin(tmp_path):
    root = checkout(tmp_path)
    overlay = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    overlay["tasks"]["nlvr2"]["revision"] = None
    (root / "mine.yaml").write_text(yaml.safe_dump(overlay))
    r = run("snakemake --profile slurm -n all --configfile mine.yaml", root)
    assert r.returncode != 0
    lines = [line for line in r.stdout.splitlines() if "tasks.nlvr2.revision" in line]
    assert len(lines) == 1, r.stdout[-2000:]
    assert "mine.yaml" in lines[0] and "is a hub id: set its revision to a 40-hex commit" in lines[0]
    assert "https://huggingface.co/datasets/HuggingFaceM4/the_cauldron/commits/main" in lines[0]


def one_cell_config() -> dict:
    """The embedded default cut to the README's example cell, at a size that runs in about a minute."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["model"]["pretrain"].update(steps=4, captions=16)
    config["tasks"] = {"hateful_memes": dict(config["tasks"]["hateful_memes"], rows=48, n_val=8, steps=2,
                                             global_batch=4, per_device_batch=2, eval_batch=8)}
    config["matrix"] = [{"task": ["hateful_memes"], "hardware": ["cpu"], "strategy": ["lora"], "precision": ["bf16"],
                         "attention": ["sdpa"], "layout": ["1x2"], "seed": [0]}]
    config["speed"]["tasks"] = []
    return config


def test_readme_commands_run_one_cell_redo_it_and_regenerate_the_tables(tmp_path):
    root = checkout(tmp_path, one_cell_config())
    artifact, after = root / CELL / "train" / "artifact.json", root / CELL / "eval_after.json"

    run_one = readme_command("e.g. after it failed or was cancelled")
    assert CELL in run_one
    r = run(run_one, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert artifact.is_file() and after.is_file()
    assert run(run_one, root).stdout.count("Nothing to be done") == 1  # complete: nothing runs again
    # The data loader is a speed knob and the checkpoint cadence a safety one: changing them reruns no
    # training (resources, not params).
    faster = one_cell_config()
    faster["hardware"]["cpu"].update(loader_workers=2, loader_prefetch=3)
    faster["checkpoint_every"] = faster["checkpoint_every"] + 1
    (root / "config.yaml").write_text(yaml.safe_dump(faster))
    assert "Nothing to be done" in run(f"snakemake --profile profiles/local -n {CELL}/eval_after.json", root).stdout
    (root / "config.yaml").write_text(yaml.safe_dump(one_cell_config()))

    redo = readme_command("to train and evaluate it again from scratch")
    trained, evaluated = artifact.stat().st_mtime_ns, after.stat().st_mtime_ns
    r = run(redo, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert jobs_run(r.stdout) == {"train": 1, "evaluate_after": 1}, r.stdout[-3000:]
    assert artifact.stat().st_mtime_ns > trained and after.stat().st_mtime_ns > evaluated

    assert run("snakemake --profile profiles/local", root).returncode == 0  # the tables into README.md
    generated = (root / "README.md").read_text()
    section = (root / "results" / "tables" / "section.md").read_text()
    assert section.strip() in generated
    (root / "README.md").write_text((REPO / "README.md").read_text())  # `git checkout README.md`
    assert section.strip() not in (root / "README.md").read_text()
    regenerate = readme_command("To write the tables below into this README again")
    results = {p: p.stat().st_mtime_ns for p in (root / "results").rglob("*") if p.is_file()}
    r = run(regenerate, root)
    assert r.returncode == 0, r.stdout[-3000:]
    assert jobs_run(r.stdout) == {"readme": 1, "all": 1}, r.stdout[-3000:]  # nothing trained or evaluated
    assert (root / "README.md").read_text() == generated
    changed = [p for p, mtime in results.items() if p.stat().st_mtime_ns != mtime]
    assert changed == []  # the readme rule's outputs are README.md and docs/figures/, nothing in results/
    assert "Nothing to be done" in run("snakemake --profile profiles/local -n", root).stdout  # complete
    # README.md is an update() output: Snakemake neither deletes it before the job nor after a failure
    # (here: no results markers to replace between).
    (root / "README.md").write_text("# no results section\n")
    r = run(regenerate, root)
    assert r.returncode != 0 and (root / "README.md").read_text() == "# no results section\n", r.stdout[-3000:]


@pytest.mark.parametrize("path", ["README.md", "docs/cluster.md"])
def test_documented_commands_name_no_option_that_does_not_do_what_the_text_says(path):
    """`-f` only re-creates a target file (a cell's evaluation, not its training): the docs redo a cell
    with --forcerun train instead."""
    text = (REPO / path).read_text()
    assert not re.search(r"`-f`|\s-f\s", text), path
