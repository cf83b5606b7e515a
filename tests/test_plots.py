"""The figures draw the results files' numbers on honest axes: metrics on 0-100 with the chance level
and the intervals of the evaluation files, throughput from 0 with ideal scaling, the training loss of
every logged step. A tiny results tree is written to tmp_path and read back with the workflow's readers;
the numbers are read off the figures' artists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftbench.metrics import chance_level
from ftbench.plots import (
    BEFORE_LABEL,
    CHANCE_LABEL,
    IDEAL_LABEL,
    accuracy_vs_memory,
    class_counts,
    headline_by_cell,
    load_train_logs,
    loss_by_step,
    throughput_by_gpus,
)
from ftbench.report import load_results

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def cell(task, strategy, nodes=1, procs=1, seed=0, precision="bf16"):
    return {"task": task, "hardware": "cpu", "strategy": strategy, "precision": precision, "attention": "sdpa",
            "nodes": nodes, "procs": procs, "seed": seed,
            "name": f"{strategy}-{precision}-sdpa-{nodes}x{procs}-s{seed}"}


def write(path: Path, record) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) if isinstance(record, dict) else "".join(json.dumps(r) + "\n" for r in record))
    return path


@pytest.fixture
def tree(tmp_path):
    """results/ of two tasks: Hateful Memes (two strategies, lora at two layouts, full with two seeds)
    and UCF-101 (one cell, a 4-class dataset), with speed results for Hateful Memes."""
    res = tmp_path / "results"
    files = {"before": [], "after": [], "speed": [], "log": [], "summary": []}

    def before(task, metrics, intervals):
        files["before"].append(write(res / task / "cpu" / "eval_before.json", {
            "task": task, "hardware": "cpu", "stage": "before", "metrics": metrics, "intervals": intervals}))

    def after(c, metrics, intervals, losses, img_s=None, peak_mb=None):
        folder = res / c["task"] / "cpu" / c["name"]
        files["after"].append(write(folder / "eval_after.json", {
            "task": c["task"], "hardware": "cpu", "stage": "after", "cell": c, "metrics": metrics,
            "intervals": intervals, "qlora_base": None}))
        files["log"].append(write(folder / "train" / "train_log.jsonl",
                                  [{"loss": loss, "lr": 0.01, "step": step} for step, loss in enumerate(losses, 1)]))
        if img_s is not None:
            files["speed"].append(write(folder / "speed.json", {
                "task": c["task"], "hardware": "cpu", "cell": c, "images_per_s": img_s, "peak_memory_mb": peak_mb}))

    before("hateful_memes", {"accuracy": 0.5, "auroc": 0.55}, {"accuracy": [0.4, 0.6], "auroc": [0.45, 0.65]})
    after(cell("hateful_memes", "full"), {"accuracy": 0.7, "auroc": 0.8}, {"accuracy": [0.6, 0.8], "auroc": [0.7, 0.9]},
          [2.0, 1.5, 1.0], img_s=40.0, peak_mb=2048.0)
    after(cell("hateful_memes", "full", seed=1), {"accuracy": 0.6, "auroc": 0.7},
          {"accuracy": [0.5, 0.7], "auroc": [0.6, 0.8]}, [2.2, 1.7, 1.2], img_s=44.0, peak_mb=2048.0)
    after(cell("hateful_memes", "lora"), {"accuracy": 0.65, "auroc": 0.75},
          {"accuracy": [0.55, 0.75], "auroc": [0.64, 0.86]}, [2.0, 1.8, 1.6], img_s=60.0, peak_mb=1024.0)
    after(cell("hateful_memes", "lora", procs=2), {"accuracy": 0.66, "auroc": 0.76},
          {"accuracy": [0.56, 0.76], "auroc": [0.65, 0.87]}, [2.0, 1.8, 1.6], img_s=90.0, peak_mb=1126.4)
    before("ucf101", {"accuracy": 0.2}, {"accuracy": [0.1, 0.3]})
    after(cell("ucf101", "lora"), {"accuracy": 0.9}, {"accuracy": [0.8, 1.0]}, [3.0, 2.0])
    files["summary"].append(write(res / "data" / "ucf101" / "summary.json",
                                  {"task": "ucf101", "classes": ["a", "b", "c", "d"]}))
    files["summary"].append(write(res / "data" / "hateful_memes" / "summary.json", {"task": "hateful_memes"}))
    return files


def panel(fig, title_start):
    (ax,) = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith(title_start)]
    return ax


def reference_line(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return line


def test_chance_levels_come_from_the_task():
    assert chance_level("hateful_memes", "auroc") == chance_level("hateful_memes", "accuracy") == 0.5
    assert chance_level("nlvr2", "accuracy") == 0.5
    assert chance_level("docvqa", "anls") == 0.0
    assert chance_level("ucf101", "accuracy", classes=101) == pytest.approx(1 / 101)
    assert chance_level("ucf101", "accuracy") is None  # no class list, no line
    assert chance_level("my_task", "auroc") == 0.5 and chance_level("my_task", "accuracy") is None


def test_headline_figure_draws_the_evaluation_files_on_0_to_100(tree, tmp_path):
    befores, afters = load_results(tree["before"]), load_results(tree["after"])
    classes = class_counts(load_results(tree["summary"]))
    assert classes == {"ucf101": 4}
    fig = headline_by_cell(befores, afters, tmp_path / "accuracy.png", classes)
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == PNG

    memes = panel(fig, "hateful_memes on cpu")
    assert memes.get_xlim() == (0, 100)
    assert "auroc" in memes.get_xlabel()
    drawn = {}
    for container in memes.containers:
        point, _, (bars,) = container.lines
        (x,), (y,) = point.get_xdata(), point.get_ydata()
        (low, _), (high, _) = bars.get_segments()[0]
        drawn[container.get_label()] = (round(x, 6), round(low, 6), round(high, 6), y)
    # one seed: the file's value and bootstrap interval; two seeds: their mean (t-interval, as the tables)
    assert drawn["lora 1x1"] == (75.0, 64.0, 86.0, 1)
    assert drawn["lora 1x2"] == (76.0, 65.0, 87.0, 2)
    x, low, high, y = drawn["full 1x1 (2 seeds)"]
    assert x == 75.0 and low < 70.0 and high > 80.0 and y == 0
    assert [t.get_text() for t in memes.get_yticklabels()] == ["full 1x1 (2 seeds)", "lora 1x1", "lora 1x2"]
    assert reference_line(memes, BEFORE_LABEL).get_xdata()[0] == pytest.approx(55.0)
    assert reference_line(memes, CHANCE_LABEL).get_xdata()[0] == pytest.approx(50.0)

    ucf = panel(fig, "ucf101 on cpu")
    assert ucf.get_xlim() == (0, 100)
    assert reference_line(ucf, CHANCE_LABEL).get_xdata()[0] == pytest.approx(25.0)  # 1 of 4 classes
    assert ucf.containers[0].lines[0].get_xdata()[0] == pytest.approx(90.0)


def test_throughput_starts_at_0_and_scales_ideally_from_the_smallest_count(tree, tmp_path):
    speeds = load_results(tree["speed"])
    fig = throughput_by_gpus(speeds, tmp_path / "throughput.png")
    ax = panel(fig, "hateful_memes on cpu")
    assert ax.get_ylim()[0] == 0 and ax.get_xlim()[0] == 0
    series = {line.get_label(): line.get_xydata().tolist() for line in ax.get_lines()
              if line.get_label() != IDEAL_LABEL}
    assert series == {"full": [[1, 42.0]], "lora": [[1, 60.0], [2, 90.0]]}  # full: its two seeds' mean
    (ideal,) = [line for line in ax.get_lines() if line.get_label() == IDEAL_LABEL]  # only lora has two counts
    assert ideal.get_xydata().tolist() == [[1, 60.0], [2, 120.0]]
    assert ax.get_ylim()[1] >= 120.0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full", "lora", IDEAL_LABEL]


def test_accuracy_against_memory_joins_evaluations_and_speed_results(tree, tmp_path):
    fig = accuracy_vs_memory(load_results(tree["after"]), load_results(tree["speed"]), tmp_path / "a.png")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["hateful_memes on cpu"]  # ucf101: no speed
    (ax,) = fig.axes
    assert ax.get_ylim() == (0, 100) and ax.get_xlim()[0] == 0
    points = {c.get_label(): c.lines[0].get_xydata().round(6).tolist() for c in ax.containers}
    assert points == {"full": [[2.0, 80.0], [2.0, 70.0]], "lora": [[1.0, 75.0], [1.1, 76.0]]}
    assert reference_line(ax, CHANCE_LABEL).get_ydata()[0] == pytest.approx(50.0)


def test_loss_figure_draws_every_logged_step(tree, tmp_path):
    logs = load_train_logs(tree["log"])
    memes_full = [log for log in logs if log["task"] == "hateful_memes" and log["cell"]["strategy"] == "full"]
    assert sorted(log["cell"]["seed"] for log in memes_full) == [0, 1]
    fig = loss_by_step(logs, tmp_path / "loss.png")
    ax = panel(fig, "hateful_memes")
    assert ax.get_ylim()[0] == 0 and ax.get_xlim() == (0, 3)
    lines = {line.get_label(): line.get_xydata().round(6).tolist() for line in ax.get_lines()
             if not line.get_label().startswith("_")}
    assert lines == {"full 1x1 (mean of 2 seeds)": [[1, 2.1], [2, 1.6], [3, 1.1]],
                     "lora 1x1": [[1, 2.0], [2, 1.8], [3, 1.6]], "lora 1x2": [[1, 2.0], [2, 1.8], [3, 1.6]]}
    thin = sorted(line.get_ydata().tolist() for line in ax.get_lines() if line.get_label().startswith("_"))
    assert thin == [[2.0, 1.5, 1.0], [2.0, 1.8, 1.6], [2.0, 1.8, 1.6], [2.2, 1.7, 1.2]]  # each run as logged
    assert ax.get_ylabel() == "training loss"  # 3 steps: a window of 1, the values as logged
    ucf = panel(fig, "ucf101")
    assert [line.get_xydata().tolist() for line in ucf.get_lines()] == [[[1, 3.0], [2, 2.0]]] * 2  # thin, thick
    assert [line.get_label() for line in ucf.get_lines()][1] == "lora"


def test_loss_figure_smooths_over_a_twentieth_of_the_steps(tmp_path):
    """40 noisy steps: each run's raw loss a thin line, the labelled line the mean of the last 2 steps."""
    losses = [2.0 + (0.5 if step % 2 else -0.5) - step / 40 for step in range(40)]
    c = cell("hateful_memes", "lora")
    log = write(tmp_path / "results" / c["task"] / "cpu" / c["name"] / "train" / "train_log.jsonl",
                [{"loss": loss, "lr": 0.01, "step": step} for step, loss in enumerate(losses, 1)])
    fig = loss_by_step(load_train_logs([log]), tmp_path / "loss.png")
    ax = panel(fig, "hateful_memes")
    assert ax.get_ylabel() == "training loss (mean of last 2 steps)"  # window 40 / 20
    assert ax.get_ylim()[0] == 0 and ax.get_xlim() == (0, 40)
    thick = reference_line(ax, "lora")
    expected = [losses[0]] + [(losses[i - 1] + losses[i]) / 2 for i in range(1, 40)]
    assert thick.get_xdata().tolist() == list(range(1, 41))
    assert thick.get_ydata().tolist() == pytest.approx(expected)
    (thin,) = [line for line in ax.get_lines() if line.get_label().startswith("_")]
    assert thin.get_xydata().tolist() == [[step, loss] for step, loss in enumerate(losses, 1)]
    assert thin.get_color() == thick.get_color() and thin.get_linewidth() < thick.get_linewidth()


def test_every_plotted_point_is_a_number_of_the_results_files(tree, tmp_path):
    """No point is invented: each x/y drawn is a value of the files (x100 for metrics, /1024 for GB),
    a mean of a configuration's seeds, or an ideal-scaling multiple of a file's img/s."""
    afters, speeds = load_results(tree["after"]), load_results(tree["speed"])
    metrics = {round(100 * v, 6) for r in afters for v in r["metrics"].values()}
    metrics |= {round(100 * v, 6) for r in load_results(tree["before"]) for v in r["metrics"].values()}
    memes_full = [r for r in afters if r["task"] == "hateful_memes" and r["cell"]["strategy"] == "full"]
    metrics |= {round(100 * sum(r["metrics"][m] for r in memes_full) / 2, 6) for m in ("accuracy", "auroc")}
    headline = headline_by_cell(load_results(tree["before"]), afters, tmp_path / "h.png")
    for ax in headline.axes:
        for container in ax.containers:
            assert round(container.lines[0].get_xdata()[0], 6) in metrics
    throughput = throughput_by_gpus(speeds, tmp_path / "t.png")
    img_s = {r["images_per_s"] for r in speeds} | {42.0}
    for line in throughput.axes[0].get_lines():
        for gpus, value in line.get_xydata():
            assert value in img_s or value / gpus in img_s
    logged = {record["loss"] for path in tree["log"] for record in map(json.loads, path.read_text().splitlines())}
    for ax in loss_by_step(load_train_logs(tree["log"]), tmp_path / "l.png").axes:  # 3 steps: no smoothing
        for line in ax.get_lines():
            assert all(round(v, 6) in {round(x, 6) for x in logged | {2.1, 1.6, 1.1}} for v in line.get_ydata())


def test_empty_results_still_give_figures(tmp_path):
    for draw, args in [(headline_by_cell, ([], [])), (accuracy_vs_memory, ([], [])), (throughput_by_gpus, ([],)),
                       (loss_by_step, ([],))]:
        fig = draw(*args, tmp_path / f"{draw.__name__}.png")
        assert fig.axes and (tmp_path / f"{draw.__name__}.png").read_bytes()[:8] == PNG


def test_readme_links_the_figures_copied_beside_it(tmp_path):
    figure = tmp_path / "results" / "plots" / "accuracy.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(PNG + b"figure")
    section = tmp_path / "section.md"
    section.write_text("_Generated._\n\n### docvqa\n\n| a |\n")
    readme = tmp_path / "README.md"
    readme.write_text("# T\n<!-- results:begin -->\n<!-- results:end -->\n")
    update = [sys.executable, str(REPO / "workflow_scripts/update_readme.py"), "--section", str(section),
              "--readme", str(readme), "--figures-dir", "docs/figures", "--figure", str(figure), "Accuracy per cell"]
    subprocess.run(update, check=True, cwd=tmp_path)
    text = readme.read_text()
    assert (tmp_path / "docs" / "figures" / "accuracy.png").read_bytes() == PNG + b"figure"
    link = "![Accuracy per cell](docs/figures/accuracy.png)"
    assert text.index(link) < text.index(section.read_text().strip())  # the tables' text as generated
    subprocess.run(update, check=True, cwd=tmp_path)
    assert readme.read_text() == text
