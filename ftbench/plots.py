"""Figures of the results files: throughput against GPU count and accuracy against peak memory,
one series per strategy. Like ``ftbench.report`` a pure function of the results (no torch import).
Each function returns the series it drew, so tests can check the figure's data, not its pixels."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftbench.config import STRATEGIES
from ftbench.metrics import TASK_HEADLINES


def _series_label(cell: Mapping[str, Any]) -> str:
    return f"{cell['strategy']} ({cell['precision']}, {cell['attention']})"


def _save(fig, path: str | Path) -> None:
    from ftbench.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def throughput_by_gpus(speeds: Sequence[Mapping[str, Any]], path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """img/s against the number of GPUs (processes) of the layout, one line per strategy, precision and
    attention, one panel per task and hardware."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for record in speeds:
        cell = record["cell"]
        if record.get("images_per_s") is None:
            continue
        gpus = int(cell["nodes"]) * int(cell["procs"])
        panels[f"{record['task']} on {record['hardware']}"][_series_label(cell)].append((gpus, float(record["images_per_s"])))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    drawn: dict[str, list[tuple[int, float]]] = {}
    for ax, (title, series) in zip(axes[0], sorted(panels.items())):
        for label, points in sorted(series.items(), key=lambda kv: (_strategy_rank(kv[0]), kv[0])):
            points = sorted(points)
            ax.plot([g for g, _ in points], [v for _, v in points], marker="o", label=label)
            drawn[f"{title}: {label}"] = points
        ax.set(title=title, xlabel="GPUs (processes)", ylabel="images/s")
        ax.set_xscale("log", base=2)
        counts = sorted({g for points in series.values() for g, _ in points})
        ax.set_xticks(counts, [str(c) for c in counts])  # the layouts measured, not powers of two
        ax.minorticks_off()
        if len(counts) == 1:
            ax.set_xlim(counts[0] / 2, counts[0] * 2)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not panels:
        axes[0][0].text(0.5, 0.5, "no speed results", ha="center", va="center")
    _save(fig, path)
    plt.close(fig)
    return drawn


def accuracy_vs_memory(afters: Sequence[Mapping[str, Any]], speeds: Sequence[Mapping[str, Any]],
                       path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """The task's headline metric after fine-tuning against the cell's peak memory (GB), for every cell
    that has both an evaluation and a speed result; one marker series per strategy, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = {(r["task"], r["hardware"], r["cell"]["name"]): r.get("peak_memory_mb") for r in speeds}
    panels: dict[str, dict[str, list[tuple[float, float, str]]]] = defaultdict(lambda: defaultdict(list))
    for record in afters:
        key = (record["task"], record["hardware"], record["cell"]["name"])
        metrics = record.get("metrics") or {}
        metric = TASK_HEADLINES.get(record["task"]) or next(iter(metrics), None)  # custom task: its one metric
        value = metrics.get(metric)
        if peak.get(key) is None or value is None:
            continue
        # x100, as in the tables
        panels[f"{record['task']} ({metric})"][record["cell"]["strategy"]].append(
            (float(peak[key]) / 1024, round(100 * float(value), 6), record["cell"]["name"]))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4), squeeze=False)
    drawn: dict[str, list[tuple[float, float, str]]] = {}
    for ax, (title, series) in zip(axes[0], sorted(panels.items())):
        for strategy, points in sorted(series.items(), key=lambda kv: _strategy_rank(kv[0])):
            points = sorted(points)
            ax.scatter([m for m, _, _ in points], [v for _, v, _ in points], label=strategy)
            drawn[f"{title}: {strategy}"] = points
        ax.set(title=title, xlabel="peak memory (GB)", ylabel="after fine-tuning (x100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not panels:
        axes[0][0].text(0.5, 0.5, "no cell has both an evaluation and a speed result", ha="center", va="center")
    _save(fig, path)
    plt.close(fig)
    return drawn


def _strategy_rank(label: str) -> int:
    name = label.split(" ", 1)[0]
    return STRATEGIES.index(name) if name in STRATEGIES else len(STRATEGIES)
