"""Figures of the results files, one panel per task (and hardware), one colour per strategy:

- ``headline_by_cell``: the task's headline metric after fine-tuning per cell configuration, with its
  95% interval, the model before fine-tuning and the task's chance level, on 0-100;
- ``accuracy_vs_memory``: the same metric against the cell's peak memory (the speed tasks' cells);
- ``throughput_by_gpus``: img/s from 0 against the number of GPUs (processes), with the line of
  ideal scaling from the smallest count measured;
- ``loss_by_step``: the training loss of every step, per configuration (seeds: thin lines, their mean).

Like ``ftbench.report`` a pure function of the results (no torch import), read with its readers. Each
function returns the ``Figure`` it saved: the tests read the numbers off its artists, not its pixels.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ftbench.metrics import METRIC_SETS, TASK_HEADLINES, chance_level
from ftbench.report import (
    _befores_by_hardware,
    _cell_sort_key,
    _group_sort_key,
    _rank,
    metric_estimate,
    parse_cell,
    strategy_label,
    task_sort_key,
)
from ftbench.schema import ATTENTIONS, PRECISIONS, STRATEGIES

# Small enough to commit beside the tables (docs/figures/), sharp enough to read on a screen.
DPI = 100
PANEL_COLUMNS = 2
# Artist labels the tests (and a reader of the legend) find the reference lines by.
BEFORE_LABEL = "before fine-tuning"
CHANCE_LABEL = "chance"
IDEAL_LABEL = "ideal scaling"
# A strategy's configurations in one panel share its colour and take these in turn.
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
# The fields of a cell besides its strategy that tell its configurations apart in a label.
VARIANT_FIELDS = ("hardware", "precision", "attention", "layout")
# The loss figure smooths over this many of a panel's steps (its window: last step / this, at least 1).
LOSS_WINDOWS_PER_PANEL = 20


def _figure(n_panels: int, panel_size: tuple[float, float]):
    """A Figure of ``n_panels`` axes (at least one), ``PANEL_COLUMNS`` to a row; no pyplot state."""
    from matplotlib.figure import Figure

    columns = max(1, min(PANEL_COLUMNS, n_panels))
    rows = max(1, math.ceil(n_panels / columns))
    fig = Figure(figsize=(panel_size[0] * columns, panel_size[1] * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[max(1, n_panels):]:
        ax.set_visible(False)
    return fig, list(axes[:max(1, n_panels)])


def _save(fig, path: str | Path):
    from ftbench.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return fig


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def strategy_colour(strategy: str) -> str:
    """The same colour for a strategy in every figure."""
    rank = STRATEGIES.index(strategy) if strategy in STRATEGIES else len(STRATEGIES)
    return f"C{rank % 10}"


def _nth_of_its_strategy(strategies: Sequence[str]) -> list[int]:
    """For each configuration, how many of the same strategy come before it (its line style)."""
    seen: dict[str, int] = defaultdict(int)
    nth = []
    for strategy in strategies:
        nth.append(seen[strategy])
        seen[strategy] += 1
    return nth


def _fields(hardware: str, cell: Mapping[str, Any]) -> dict[str, str]:
    return {"hardware": hardware, "precision": cell["precision"], "attention": cell["attention"],
            "layout": f"{cell['nodes']}x{cell['procs']}"}


def _labels(keys: Sequence[tuple[str, Mapping[str, Any], str | None]]) -> tuple[list[str], str]:
    """Labels of a panel's configurations, (hardware, cell, qlora_base) each: the strategy and the fields
    that vary within the panel; the fields every one shares, once, for the panel's title."""
    fields = [_fields(hardware, cell) for hardware, cell, _ in keys]
    varying = [f for f in VARIANT_FIELDS if len({v[f] for v in fields}) > 1]
    shared = ", ".join(fields[0][f] for f in VARIANT_FIELDS if f not in varying and f != "hardware") if fields else ""
    labels = [" ".join([strategy_label(cell["strategy"], qlora_base), *(v[f] for f in varying)])
              for (_, cell, qlora_base), v in zip(keys, fields)]
    return labels, shared


def headline_metric(task: str, records: Iterable[Mapping[str, Any]]) -> str | None:
    """A built-in task's headline metric; a custom task's: the one whose metric set its records report."""
    if task in TASK_HEADLINES:
        return TASK_HEADLINES[task]
    keys = {k for r in records for k in (r.get("metrics") or {})}
    return next((headline for headline, names in METRIC_SETS.items() if keys == set(names)), None)


def class_counts(summaries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """{task: number of classes} of the converted datasets whose summary lists them (UCF-101)."""
    return {s["task"]: len(s["classes"]) for s in summaries if s.get("classes")}


def _percent(value: Any) -> float:
    return math.nan if value is None else 100 * float(value)


def _interval_error(value: float, interval: Sequence[Any] | None) -> tuple[float, float]:
    """matplotlib's (below, above) error of a value x100 and its interval (none or undefined: 0, 0)."""
    if not interval or any(v is None or math.isnan(float(v)) for v in interval):
        return 0.0, 0.0
    return value - _percent(interval[0]), _percent(interval[1]) - value


def _group_afters(afters: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[tuple, dict]]:
    """{(task, hardware): {configuration sort key: {"key": (hardware, cell, qlora_base), "records"}}}:
    the cells that differ only in their seed pooled, as the tables pool them."""
    panels: dict[tuple[str, str], dict[tuple, dict]] = defaultdict(dict)
    for record in afters:
        hardware, cell, qlora_base = record["hardware"], record["cell"], record.get("qlora_base")
        group = panels[(record["task"], hardware)].setdefault(
            _group_sort_key(hardware, cell, qlora_base), {"key": (hardware, cell, qlora_base), "records": []})
        group["records"].append(record)
    return panels


def _panel_order(keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(keys, key=lambda k: (task_sort_key(k[0]), k[1]))


def _mark_chance(ax, chance: float | None, vertical: bool) -> None:
    if chance is None:
        return
    line = ax.axvline if vertical else ax.axhline
    line(100 * chance, color="0.35", linestyle=":", linewidth=1.2, label=CHANCE_LABEL)


def headline_by_cell(befores: Sequence[Mapping[str, Any]], afters: Sequence[Mapping[str, Any]],
                     path: str | Path, classes: Mapping[str, int] | None = None):
    """The headline metric after fine-tuning (x100, 0-100) of every cell configuration with its 95%
    interval (``ftbench.report.metric_estimate``, as in the tables), one row per configuration; the
    base model's value before fine-tuning (dashed, its interval shaded) and the chance level (dotted)."""
    panels = _group_afters(afters)
    order = _panel_order(panels)
    rows = max((len(panels[k]) for k in order), default=1)
    fig, axes = _figure(len(order), (5.6, 1.1 + 0.32 * rows))
    for ax, (task, hardware) in zip(axes, order):
        groups = [panels[(task, hardware)][k] for k in sorted(panels[(task, hardware)])]
        metric = headline_metric(task, [r for g in groups for r in g["records"]])
        labels, shared = _labels([g["key"] for g in groups])
        labels = [label + (f" ({len(g['records'])} seeds)" if len(g["records"]) > 1 else "")
                  for g, label in zip(groups, labels)]
        for y, (group, label) in enumerate(zip(groups, labels)):
            value, interval = metric_estimate(group["records"], metric)
            x = _percent(value)
            ax.errorbar([x], [y], xerr=[[e] for e in _interval_error(x, interval)], fmt="o", capsize=3,
                        color=strategy_colour(group["key"][1]["strategy"]), clip_on=False, label=label)
        before = _befores_by_hardware(task, befores).get(hardware)
        if before is not None:
            value, interval = metric_estimate([before], metric)
            x = _percent(value)
            ax.axvline(x, color="0.2", linestyle="--", linewidth=1.2, label=BEFORE_LABEL)
            low, high = _interval_error(x, interval)
            if low or high:
                ax.axvspan(x - low, x + high, color="0.5", alpha=0.15, linewidth=0)
        _mark_chance(ax, chance_level(task, metric, (classes or {}).get(task)), vertical=True)
        ax.set_yticks(range(len(groups)), labels)
        ax.set_ylim(len(groups) - 0.5, -0.5)  # the tables' order, top to bottom
        ax.set_xlim(0, 100)
        ax.set_xticks([0, 25, 50, 75, 100])
        ax.set(title=f"{task} on {hardware}" + (f" ({shared})" if shared else ""),
               xlabel=f"{metric} after fine-tuning (x100, 95% interval)")
        ax.grid(axis="x", alpha=0.3)
    if not order:
        _no_data(axes[0], "no evaluation after fine-tuning")
    else:
        reference = {h.get_label(): h for ax in axes for h in ax.get_lines()
                     if h.get_label() in (BEFORE_LABEL, CHANCE_LABEL)}
        if reference:
            fig.legend(reference.values(), reference.keys(), loc="outside lower center", ncols=len(reference),
                       fontsize="small", frameon=False)
    return _save(fig, path)


def accuracy_vs_memory(afters: Sequence[Mapping[str, Any]], speeds: Sequence[Mapping[str, Any]], path: str | Path,
                       classes: Mapping[str, int] | None = None):
    """The headline metric after fine-tuning (x100, 0-100, 95% interval) against the cell's peak memory
    (GB, from 0), for every cell that has both an evaluation and a speed result; one marker series per
    strategy, the chance level dotted."""
    peak = {(r["task"], r["hardware"], r["cell"]["name"]): r.get("peak_memory_mb") for r in speeds}
    measured = [r for r in afters if peak.get((r["task"], r["hardware"], r["cell"]["name"])) is not None]
    panels = defaultdict(list)
    for record in measured:
        panels[(record["task"], record["hardware"])].append(record)
    order = _panel_order(panels)
    fig, axes = _figure(len(order), (5.2, 3.8))
    for ax, (task, hardware) in zip(axes, order):
        records = sorted(panels[(task, hardware)], key=lambda r: _cell_sort_key(hardware, r["cell"]))
        metric = headline_metric(task, records)
        series = defaultdict(list)
        for record in records:
            series[record["cell"]["strategy"]].append(record)
        top = 0.0
        for strategy, cells in sorted(series.items(), key=lambda kv: _rank(kv[0], STRATEGIES)):
            xs = [float(peak[(task, hardware, r["cell"]["name"])]) / 1024 for r in cells]
            ys = [_percent((r.get("metrics") or {}).get(metric)) for r in cells]
            errors = [_interval_error(y, (r.get("intervals") or {}).get(metric)) for y, r in zip(ys, cells)]
            ax.errorbar(xs, ys, yerr=list(zip(*errors)), fmt="o", capsize=3, color=strategy_colour(strategy),
                        clip_on=False, label=strategy)
            top = max(top, *xs)
        _mark_chance(ax, chance_level(task, metric, (classes or {}).get(task)), vertical=False)
        ax.set_ylim(0, 100)
        ax.set_yticks([0, 25, 50, 75, 100])
        ax.set_xlim(0, 1.15 * top)
        ax.set(title=f"{task} on {hardware}", xlabel="peak memory (GB)",
               ylabel=f"{metric} after fine-tuning (x100)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not order:
        _no_data(axes[0], "no cell has both an evaluation and a speed result")
    return _save(fig, path)


def throughput_by_gpus(speeds: Sequence[Mapping[str, Any]], path: str | Path):
    """img/s (from 0) against the number of GPUs (processes) of the layout, one line per strategy,
    precision and attention (its seeds averaged), one panel per task and hardware. A series measured at
    several counts has its ideal scaling dashed: the smallest count's img/s times the count ratio."""
    from matplotlib.lines import Line2D

    # {(task, hardware): {(strategy, precision, attention): {GPUs: [img/s of each seed]}}}
    panels: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for record in speeds:
        if record.get("images_per_s") is None:
            continue
        cell = record["cell"]
        series = (cell["strategy"], cell["precision"], cell["attention"])
        gpus = int(cell["nodes"]) * int(cell["procs"])
        panels[(record["task"], record["hardware"])][series][gpus].append(float(record["images_per_s"]))
    order = _panel_order(panels)
    fig, axes = _figure(len(order), (5.2, 3.8))
    for ax, panel in zip(axes, order):
        all_series = panels[panel]
        varying = [i for i in (1, 2) if len({s[i] for s in all_series}) > 1]
        top, counts, scaled = 0.0, set(), False
        ordered = sorted(all_series, key=lambda s: (_rank(s[0], STRATEGIES), _rank(s[1], PRECISIONS),
                                                   _rank(s[2], ATTENTIONS)))
        for series, nth in zip(ordered, _nth_of_its_strategy([s[0] for s in ordered])):
            by_count = sorted(all_series[series].items())
            gpus = [g for g, _ in by_count]
            img_s = [sum(v) / len(v) for _, v in by_count]
            colour = strategy_colour(series[0])
            ax.plot(gpus, img_s, marker=MARKERS[nth % len(MARKERS)], color=colour, clip_on=False,
                    label=" ".join([series[0], *(series[i] for i in varying)]))
            if len(gpus) > 1:
                ideal = [img_s[0] * g / gpus[0] for g in gpus]
                ax.plot(gpus, ideal, color=colour, linestyle="--", linewidth=1, alpha=0.6, label=IDEAL_LABEL)
                top, scaled = max(top, *ideal), True
            top, counts = max(top, *img_s), counts | set(gpus)
        ax.set_xlim(0, 1.15 * max(counts))
        ax.set_xticks(sorted(counts))  # the layouts measured
        ax.set_ylim(0, 1.1 * top)
        task, hardware = panel
        ax.set(title=f"{task} on {hardware}", xlabel="GPUs (processes)", ylabel="images/s")
        ax.grid(alpha=0.3)
        handles = [h for h in ax.get_lines() if h.get_label() != IDEAL_LABEL]
        if scaled:  # one grey entry for the series' dashed ideal lines
            handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=1, label=IDEAL_LABEL))
        ax.legend(handles=handles, fontsize="small", loc="upper left")
    if not order:
        _no_data(axes[0], "no speed results")
    return _save(fig, path)


def load_train_logs(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """The loss of every step of each ``results/<task>/<hardware>/<cell>/train/train_log.jsonl``, as
    ``{"task", "hardware", "cell", "steps": [(step, loss), ...]}`` (the cell read from the path, which
    names it). A step logged twice (a resumed run) keeps its last line."""
    logs = []
    for path in paths:
        path = Path(path)
        losses: dict[int, float] = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {err}") from err
            if isinstance(record, dict) and record.get("step") is not None and record.get("loss") is not None:
                losses[int(record["step"])] = float(record["loss"])
        cell_dir = path.parents[1]
        logs.append({"task": cell_dir.parents[1].name, "hardware": cell_dir.parent.name,
                     "cell": parse_cell(cell_dir.name), "steps": sorted(losses.items())})
    return logs


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """Point i: the mean of ``values[max(0, i - window + 1):i + 1]`` (fewer values at the start)."""
    cumsum = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=float))])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return ((cumsum[ends] - cumsum[starts]) / (ends - starts)).tolist()


def loss_by_step(logs: Sequence[Mapping[str, Any]], path: str | Path):
    """Training loss against optimizer step, one panel per task, one colour and line style per
    configuration (strategy, precision, and the other fields that vary). The loss of a step at batch 16
    is noisy enough that ten configurations' raw lines hide the trend in a tangle, so each logged run
    (every seed) is a thin faint line of its raw loss, and the configuration's labelled thick line is a
    trailing moving average of its seeds' mean over the steps they share: point i the mean of the last
    ``window`` steps' values (fewer at the start), ``window = max(1, round(last step / 20))`` of the
    panel, named in the y label (a window of 1: the seed mean as logged)."""
    panels: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for log in logs:
        hardware, cell = log["hardware"], log["cell"]
        group = panels[log["task"]].setdefault(_group_sort_key(hardware, cell, None),
                                              {"key": (hardware, cell, None), "seeds": []})
        group["seeds"].append(log["steps"])
    order = sorted(panels, key=task_sort_key)
    fig, axes = _figure(len(order), (5.2, 3.8))
    for ax, task in zip(axes, order):
        groups = [panels[task][k] for k in sorted(panels[task])]
        labels, shared = _labels([g["key"] for g in groups])
        nths = _nth_of_its_strategy([g["key"][1]["strategy"] for g in groups])
        seeds_of = [[dict(steps) for steps in group["seeds"] if steps] for group in groups]
        shared_of = [sorted(set.intersection(*(set(s) for s in seeds))) if seeds else [] for seeds in seeds_of]
        last_step = max([0, *(step for steps in shared_of for step in steps)])
        window = max(1, round(last_step / LOSS_WINDOWS_PER_PANEL))
        for group, label, nth, seeds, shared_steps in zip(groups, labels, nths, seeds_of, shared_of):
            colour = strategy_colour(group["key"][1]["strategy"])
            linestyle = LINESTYLES[nth % len(LINESTYLES)]
            for losses in seeds:
                ax.plot(list(losses), list(losses.values()), color=colour, linewidth=0.6, alpha=0.25)
            if len(seeds) > 1:
                label += f" (mean of {len(seeds)} seeds)"
            means = [sum(s[step] for s in seeds) / len(seeds) for step in shared_steps]
            ax.plot(shared_steps, trailing_mean(means, window), color=colour, linestyle=linestyle, linewidth=1.6,
                    label=label)
        ax.set_xlim(0, max(1, last_step))
        ax.set_ylim(bottom=0)
        ylabel = f"training loss (mean of last {window} steps)" if window > 1 else "training loss"
        ax.set(title=task + (f" ({shared})" if shared else ""), xlabel="optimizer step", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if not order:
        _no_data(axes[0], "no training logs")
    return _save(fig, path)
