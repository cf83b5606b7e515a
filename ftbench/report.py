"""Results tables and README regeneration.

Everything here is a pure function of the results files written by the other
stages (``eval_before.json``, ``eval_after.json``, ``speed.json`` and
``results/skipped.tsv``); nothing is typed by hand.  This module must stay
importable without torch: regenerating the README on a laptop takes a second.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ftbench.atomic import write_text_atomic  # noqa: F401  (part of this module's API)
from ftbench.config import Cell, ConfigError
from ftbench.data.common import TASKS
from ftbench.metrics import METRIC_SETS, TASK_METRICS, across_seeds
from ftbench.schema import ATTENTIONS, PRECISIONS, STRATEGIES

SKIPPED_COLUMNS = ("task", "hardware", "cell", "reason")

BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"
NA = "n/a"

def parse_cell(name: str) -> dict[str, Any]:
    """``"lora-bf16-sdpa-1x2-s0"`` -> the cell dict used in the results files."""
    try:
        cell = Cell.parse("", "", name)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    record = cell.as_record()
    del record["task"], record["hardware"]
    return record


def _rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    """Known values in their listed order, unknown ones after them, alphabetically."""
    return (order.index(value), "") if value in order else (len(order), value)


def task_sort_key(task: str) -> tuple[int, str]:
    """Known tasks in TASKS order, unknown ones after them, alphabetically."""
    return _rank(task, TASKS)


def _cell_sort_key(hardware: str, cell: Mapping[str, Any]) -> tuple:
    return (
        hardware,
        _rank(cell["strategy"], STRATEGIES),
        _rank(cell["precision"], PRECISIONS),
        _rank(cell["attention"], ATTENTIONS),
        int(cell["nodes"]),
        int(cell["procs"]),
        int(cell["seed"]),
    )


def _record_cell(record: Mapping[str, Any]) -> dict[str, Any]:
    cell = record.get("cell")
    if not isinstance(cell, Mapping):
        raise ValueError(
            f"result for task {record.get('task')!r}, hardware {record.get('hardware')!r} "
            "has no cell (is it an eval_before.json passed as a per-cell result?)"
        )
    return dict(cell)


def _layout(cell: Mapping[str, Any]) -> str:
    return f"{cell['nodes']}x{cell['procs']}"


def _markdown_cell(value: Any) -> str:
    """A table cell as text; a literal ``|`` would split the markdown column."""
    return str(value).replace("|", "\\|")


def _skip_columns(reason: str, n: int) -> list[str]:
    """A skipped cell's measurement columns: the reason once, then just "skipped"."""
    first = f"skipped: {reason}" if reason else "skipped"
    return [first] + ["skipped"] * (n - 1) if n else []


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    # disable_numparse: values are already formatted strings; tabulate would
    # otherwise turn "95.0" into "95".
    return tabulate(
        [[_markdown_cell(v) for v in row] for row in rows],
        headers=list(headers),
        tablefmt="github",
        disable_numparse=True,
    )


# --------------------------------------------------------------------------- loading


def load_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Read JSON result files (eval_before/eval_after/speed), in the given order."""
    records = []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON: {err}") from err
        if not isinstance(record, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def load_skipped(tsv_path: str | os.PathLike) -> list[dict]:
    """Rows of ``results/skipped.tsv`` as dicts with keys task, hardware, cell, reason."""
    with open(tsv_path, encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter="\t") if row]
    if not rows:
        raise ValueError(f"{tsv_path}: empty file, expected the header row {list(SKIPPED_COLUMNS)}")
    if tuple(rows[0]) != SKIPPED_COLUMNS:
        raise ValueError(f"{tsv_path}: header is {rows[0]}, expected {list(SKIPPED_COLUMNS)}")
    skipped = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(SKIPPED_COLUMNS):
            raise ValueError(f"{tsv_path}:{line_no}: expected 4 tab-separated fields, got {len(row)}")
        skipped.append(dict(zip(SKIPPED_COLUMNS, row)))
    return skipped


# --------------------------------------------------------------------------- accuracy


def task_metrics(task: str, records: Iterable[Mapping[str, Any]] = ()) -> tuple[str, ...]:
    """The metric columns of a task (an unknown task: the metric keys found in its records)."""
    if task in TASK_METRICS:
        return TASK_METRICS[task]
    keys: set[str] = set()
    for record in records:
        keys.update((record.get("metrics") or {}).keys())
    for names in METRIC_SETS.values():  # a custom task: its metric set in the usual order
        if keys == set(names):
            return names
    return tuple(sorted(keys))


def format_metric(value: Any) -> str:
    """A fraction in [0, 1] shown x100 with one decimal; missing or NaN -> ``n/a``."""
    if value is None:
        return NA
    value = float(value)
    if math.isnan(value):
        return NA
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"metric value {value} is not a fraction in [0, 1]")
    return f"{value * 100:.1f}"


def format_estimate(value: Any, interval: Sequence[Any] | None = None) -> str:
    """``"82.5 (76.3–88.1)"``: the value and its 95% interval x100; without an interval (or with an
    undefined one) the value alone."""
    text = format_metric(value)
    if text == NA or not interval or any(v is None or math.isnan(float(v)) for v in interval):
        return text
    low, high = interval
    return f"{text} ({format_metric(low)}–{format_metric(high)})"


def metric_estimate(records: Sequence[Mapping[str, Any]], metric: str) -> tuple[Any, Sequence[Any] | None]:
    """(value, 95% interval) of one configuration's metric, as fractions. One seed: its value and
    bootstrap interval. Several seeds: the mean over seeds and the t-interval across seeds
    (``ftbench.metrics.across_seeds``). The tables print it, the figures draw it."""
    if len(records) == 1:
        record = records[0]
        return (record.get("metrics") or {}).get(metric), (record.get("intervals") or {}).get(metric)
    mean, low, high = across_seeds([(r.get("metrics") or {}).get(metric) for r in records])
    return mean, (low, high)


def _metric_cell(records: Sequence[Mapping[str, Any]], metric: str) -> str:
    return format_estimate(*metric_estimate(records, metric))


def _befores_by_hardware(task: str, before) -> dict[str, Mapping[str, Any]]:
    if before is None:
        items: list = []
    elif isinstance(before, Mapping) and "metrics" in before:
        items = [before]
    elif isinstance(before, Mapping):  # {hardware: record}
        items = list(before.values())
    else:
        items = list(before)
    by_hw: dict[str, Mapping[str, Any]] = {}
    for record in items:
        if record.get("task") != task:
            continue
        hardware = record["hardware"]
        if hardware in by_hw:
            raise ValueError(f"two eval_before results for task {task!r} on hardware {hardware!r}")
        by_hw[hardware] = record
    return by_hw




def eval_caption(task: str, before=None, afters: Iterable[Mapping[str, Any]] = ()) -> str:
    """The lines above a task's table: the split(s) and number of examples behind its numbers, and
    how to read a value and its interval."""
    records = list(_befores_by_hardware(task, before).values())
    records += [r for r in afters if r.get("task") == task]
    splits = sorted({str(r.get("split")) for r in records if r.get("split") is not None})
    counts = sorted({int(r["n_examples"]) for r in records if r.get("n_examples") is not None})
    split_text = ", ".join(f"`{s}`" for s in splits) if splits else NA
    if not counts:
        n_text = NA
    elif len(counts) == 1:
        n_text = str(counts[0])
    else:
        n_text = f"{counts[0]}–{counts[-1]}"
    resamples = sorted({int(r["bootstrap"]["resamples"]) for r in records if r.get("bootstrap")})
    boot = f" ({', '.join(map(str, resamples))} resamples)" if resamples else ""
    return (f"Split {split_text}, {n_text} examples per evaluation; metrics ×100. Each value: estimate "
            f"(95% interval); one seed: the bootstrap interval over the evaluation examples{boot}; several "
            f"seeds: the mean over seeds and the t-interval across them.")


# ------------------------------------------------ the recipe's published figures ("recipe" column)

PUBLISHED_FILE = Path(__file__).with_name("published") / "phi3v_cookbook.yaml"


def load_published(path: str | os.PathLike = PUBLISHED_FILE) -> dict:
    """The recipe's published figures (see the file's comments for how its rows map onto cells).
    A malformed file raises ValueError naming the file and the key."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None

    def need(obj, key, where, kind):
        if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
            raise ValueError(f"{path}: {where}{key}: missing or not a {kind.__name__}")
        return obj[key]

    need(data, "source", "", str)
    attention = need(data, "attention", "", dict)
    for precision, backend in attention.items():
        if precision not in PRECISIONS or backend not in ATTENTIONS:
            raise ValueError(f"{path}: attention.{precision}: expected a precision of {PRECISIONS} "
                             f"mapped to one of {ATTENTIONS}")
    need(data, "qlora_base", "", str)
    for t, table in enumerate(need(data, "tables", "", list)):
        where = f"tables.{t}."
        for key in ("task", "metric", "section", "model", "eval_set"):
            need(table, key, where, str)
        for f, figure in enumerate(need(table, "figures", where, list)):
            fwhere = f"{where}figures.{f}."
            if need(figure, "strategy", fwhere, str) not in STRATEGIES:
                raise ValueError(f"{path}: {fwhere}strategy: {figure['strategy']!r} is not one of {STRATEGIES}")
            if need(figure, "precision", fwhere, str) not in attention:
                raise ValueError(f"{path}: {fwhere}precision: {figure['precision']!r} has no attention mapping")
            try:
                float(need(figure, "value", fwhere, str))
            except ValueError:
                raise ValueError(f"{path}: {fwhere}value: {figure['value']!r} is not a number") from None
    return data


def published_tables(task: str, published: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return [t for t in (published or {}).get("tables", []) if t["task"] == task]


def published_figure(published: Mapping[str, Any] | None, task: str, metric: str, cell: Mapping[str, Any],
                     qlora_base: str | None = None) -> str | None:
    """The recipe's figure for a measured cell, as printed, or None. Matches task, metric,
    strategy and precision, and the attention the recipe used at that precision; any layout; a
    QLoRA figure only for a cell evaluated on the base the recipe used (``qlora_base``)."""
    if not published:
        return None
    if published["attention"].get(cell["precision"]) != cell["attention"]:
        return None
    if cell["strategy"] == "qlora" and qlora_base != published["qlora_base"]:
        return None
    for table in published_tables(task, published):
        if table["metric"] != metric:
            continue
        for figure in table["figures"]:
            if figure["strategy"] == cell["strategy"] and figure["precision"] == cell["precision"]:
                return figure["value"]
    return None


def recipe_note(task: str, afters: Sequence[Mapping[str, Any]], published: Mapping[str, Any] | None) -> str:
    """The line under a task's table naming the source of its "recipe" column, or saying that no
    cell matches a published figure ("" when the recipe published nothing for the task)."""
    tables = published_tables(task, published)
    if not tables:
        return ""
    matched = any(
        published_figure(published, task, t["metric"], _record_cell(r), r.get("qlora_base"))
        for r in afters if r.get("task") == task for t in tables
    )
    mapping = ", ".join(f"{p} = {a}" for p, a in published["attention"].items())
    described = "; ".join(f"{t['metric']}: {t['model']}, {t['eval_set']} ({t['section']})" for t in tables)
    head = ("Recipe: the figure the recipe published for the same task, strategy and precision"
            if matched else "Recipe: no cell here matches a figure the recipe published")
    return (f"{head} (attention as the recipe ran it: {mapping}; any layout; QLoRA evaluated on the "
            f"{published['qlora_base']} base); {described}. Source: {published['source'].strip()}, "
            f"`ftbench/published/{PUBLISHED_FILE.name}`.")


# ------------------------------------------------ the table


def strategy_label(strategy: str, qlora_base: str | None) -> str:
    """QLoRA rows name the base their adapter was evaluated on."""
    if strategy == "qlora" and qlora_base:
        return f"qlora (eval: {'4-bit' if qlora_base == 'quantised' else 'unquantised'} base)"
    return strategy


def _group_sort_key(hardware: str, cell: Mapping[str, Any], qlora_base: str | None) -> tuple:
    # A row pools the seeds of a configuration: the cell's order without its seed.
    return _cell_sort_key(hardware, cell)[:-1] + (qlora_base or "",)


def accuracy_table(
    task: str,
    before,
    afters: Sequence[Mapping[str, Any]],
    skipped: Sequence[Mapping[str, Any]],
    published: Mapping[str, Any] | None = None,
) -> str:
    """Markdown (github) table of one task: one row per cell configuration (its seeds pooled),
    before and after fine-tuning, each value with its 95% interval.

    ``before`` is the task's eval_before record (a dict), or several of them (a
    list, or a ``{hardware: record}`` dict) when the task ran on several
    hardware kinds; the row's "before" value is the one for its hardware.
    Records and skipped rows of other tasks are ignored.  Cells that differ only
    in their seed share a row: "seeds" lists them, and the "after" value is the
    mean over seeds with the interval across seeds.  A skipped cell shows
    ``skipped: <reason>`` in the first metric column and ``skipped`` in the others.
    With ``published`` (``load_published()``), a "<metric> recipe" column follows
    each metric the recipe published for the task, filled where a row matches
    (``published_figure``), present only when some row matches.
    """
    befores = _befores_by_hardware(task, before)
    task_afters = [r for r in afters if r.get("task") == task]
    task_skipped = [s for s in skipped if s.get("task") == task]
    metrics = task_metrics(task, list(befores.values()) + task_afters)

    seen: set[tuple[str, str]] = set()
    groups: dict[tuple, dict] = {}

    def group_of(hardware: str, cell: Mapping[str, Any], qlora_base: str | None) -> dict:
        key = _group_sort_key(hardware, cell, qlora_base)
        return groups.setdefault(key, {"hardware": hardware, "cell": cell, "qlora_base": qlora_base,
                                       "records": [], "seeds": [], "reason": None})

    for record in task_afters:
        hardware, cell = record["hardware"], _record_cell(record)
        if (hardware, cell["name"]) in seen:
            raise ValueError(f"two eval_after results for {task}/{hardware}/{cell['name']}")
        seen.add((hardware, cell["name"]))
        group = group_of(hardware, cell, record.get("qlora_base"))
        group["records"].append(record)
        group["seeds"].append(int(cell["seed"]))
    for row in task_skipped:
        hardware, cell = row["hardware"], parse_cell(row["cell"])
        if (hardware, cell["name"]) in seen:
            raise ValueError(
                f"{task}/{hardware}/{cell['name']} has an eval_after result and is also listed as skipped"
            )
        seen.add((hardware, cell["name"]))
        group = group_of(hardware, cell, None)
        if group["records"]:
            raise ValueError(f"{task}/{hardware}/{cell['name']} is skipped but other seeds of it have results")
        group["reason"] = row.get("reason", "")
        group["seeds"].append(int(cell["seed"]))

    recipe_metrics = [
        m for m in metrics
        if any(published_figure(published, task, m, g["cell"], g["qlora_base"]) for g in groups.values()
               if g["records"])
    ]
    headers = ["hardware", "strategy", "precision", "attention", "layout", "seeds"]
    for metric in metrics:
        headers += [f"{metric} before", f"{metric} after"]
        if metric in recipe_metrics:
            headers.append(f"{metric} recipe")
    rows = []
    for key in sorted(groups):
        group = groups[key]
        cell, hardware = group["cell"], group["hardware"]
        row = [hardware, strategy_label(cell["strategy"], group["qlora_base"]), cell["precision"],
               cell["attention"], _layout(cell), ", ".join(map(str, sorted(group["seeds"])))]
        if not group["records"]:
            rows.append(row + _skip_columns(group["reason"], len(headers) - len(row)))
            continue
        before_record = befores.get(hardware)
        for metric in metrics:
            row.append(_metric_cell([before_record], metric) if before_record else NA)
            row.append(_metric_cell(sorted(group["records"], key=lambda r: int(r["cell"]["seed"])), metric))
            if metric in recipe_metrics:
                row.append(published_figure(published, task, metric, cell, group["qlora_base"]) or "–")
        rows.append(row)
    return _table(headers, rows)


# --------------------------------------------------------------------------- speed


# The speed table comes as two tables with the same rows in the same order, each row named by
# the same key columns: the main one (the recipe's columns plus LM tokens/s, MFU and peak memory,
# at most 12 columns so that it fits a laptop screen) and a details one (the run's shape, the
# step-time spread, FLOPs, device and inputs).
SPEED_KEY_HEADERS = ("task", "hardware", "strategy", "precision", "attention", "layout", "seed")
SPEED_HEADERS = SPEED_KEY_HEADERS + (
    "img/s",
    "speedup",
    "LM tokens/s",
    "MFU",
    "peak GB (allocated / reserved)",
)
SPEED_DETAIL_HEADERS = SPEED_KEY_HEADERS + (
    "global batch",
    "crops",
    "tokens/sample",
    "samples/s",
    "vision tokens/s",
    "step time (s), median (p10–p90)",
    "data wait (s), median",
    "TFLOP/sample",
    "device",
    "inputs",
)
SPEED_DETAILS_CAPTION = "Details of the same runs (same rows, same order):"
# A row implying more model FLOPs utilisation than this is flagged, not published silently
# (the recipe's published frozen-vision speed rows imply 86%).
MFU_FLAG = 0.60


def format_mfu(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NA
    text = f"{100 * float(value):.1f}%"
    return text + f" (implausible: > {100 * MFU_FLAG:.0f}%)" if value > MFU_FLAG else text


def _format_number(value: Any, spec: str) -> str:
    if value is None:
        return NA
    value = float(value)
    return NA if math.isnan(value) else format(value, spec)


def _mb_to_gb(mb: Any) -> float | None:
    return None if mb is None else float(mb) / 1024


def speed_tables(
    speeds: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, Any]]
) -> tuple[str, str]:
    """Markdown (github) tables of throughput and memory, one row per cell: ``(main, details)``.

    Both have the same rows in the same order, each starting with the key columns
    ``SPEED_KEY_HEADERS``; the main table has ``SPEED_HEADERS``, the details table
    ``SPEED_DETAIL_HEADERS``.  Rows are ordered by task (docvqa, hateful_memes,
    nlvr2, ucf101), then like the accuracy tables.  "speedup" is samples/s
    relative to the first measured row of the same task and hardware (so it reads
    ``1.00x`` there): samples of different tasks or machines are not comparable.
    A skipped cell shows ``skipped: <reason>`` in the main table's first
    measurement column and ``skipped`` in its other ones and in the details.
    """
    entries: dict[tuple[str, str, str], tuple[tuple, dict]] = {}
    for record in speeds:
        task, hardware = record["task"], record["hardware"]
        cell = _record_cell(record)
        key = (task, hardware, cell["name"])
        if key in entries:
            raise ValueError(f"two speed results for {task}/{hardware}/{cell['name']}")
        entries[key] = ((task_sort_key(task),) + _cell_sort_key(hardware, cell), {"cell": cell, "record": record})
    for row in skipped:
        task, hardware, cell = row["task"], row["hardware"], parse_cell(row["cell"])
        key = (task, hardware, cell["name"])
        if key in entries:
            raise ValueError(f"{task}/{hardware}/{cell['name']} has a speed result and is also listed as skipped")
        entries[key] = (
            (task_sort_key(task),) + _cell_sort_key(hardware, cell),
            {"cell": cell, "task": task, "hardware": hardware, "reason": row.get("reason", "")},
        )

    n_key = len(SPEED_KEY_HEADERS)
    baselines: dict[tuple[str, str], float | None] = {}
    rows, details = [], []
    for _, entry in sorted(entries.values(), key=lambda item: item[0]):
        cell = entry["cell"]
        record = entry.get("record")
        task = entry["task"] if record is None else record["task"]
        hardware = entry["hardware"] if record is None else record["hardware"]
        ident = [task, hardware, cell["strategy"], cell["precision"], cell["attention"], _layout(cell), cell["seed"]]
        if record is None:
            rows.append(ident + _skip_columns(entry["reason"], len(SPEED_HEADERS) - n_key))
            details.append(ident + _skip_columns("", len(SPEED_DETAIL_HEADERS) - n_key))
            continue
        sps = record.get("samples_per_s")
        group = (task, hardware)
        if group not in baselines:
            baselines[group] = sps
        base = baselines[group]
        if sps is None or not base:
            speedup = NA
        else:
            speedup = f"{float(sps) / float(base):.2f}x"
        step = record.get("step_time_s") or {}
        step_text = _format_number(step.get("median"), ".3f")
        if step.get("p10") is not None and step.get("p90") is not None:
            step_text += f" ({_format_number(step['p10'], '.3f')}–{_format_number(step['p90'], '.3f')})"
        peak = _format_number(_mb_to_gb(record.get("peak_memory_mb")), ".2f")
        if record.get("peak_memory_reserved_mb") is not None and peak != NA:
            peak += f" / {_format_number(_mb_to_gb(record['peak_memory_reserved_mb']), '.2f')}"
        rows.append(
            ident
            + [
                _format_number(record.get("images_per_s"), ".3f"),
                speedup,
                _format_number(record.get("lm_tokens_per_s"), ".1f"),
                format_mfu(record.get("mfu")),
                peak,
            ]
        )
        details.append(
            ident
            + [
                NA if record.get("global_batch") is None else record["global_batch"],
                NA if record.get("num_crops") is None else record["num_crops"],
                _format_number(record.get("mean_tokens_per_sample"), ".0f"),
                _format_number(sps, ".3f"),
                _format_number(record.get("vision_tokens_per_s"), ".0f"),
                step_text,
                # The part of the step spent waiting for the data pipeline's batch.
                _format_number((record.get("data_wait_s") or {}).get("median"), ".3f"),
                _format_number(record.get("tflop_per_sample"), ".3g"),
                record.get("device") or NA,
                record.get("inputs") or NA,
            ]
        )
    return _table(SPEED_HEADERS, rows), _table(SPEED_DETAIL_HEADERS, details)


def speed_table(speeds: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, Any]]) -> str:
    """The two speed tables of ``speed_tables`` as one Markdown text: the main table, then
    ``SPEED_DETAILS_CAPTION`` and the details table."""
    main, details = speed_tables(speeds, skipped)
    return f"{main}\n\n{SPEED_DETAILS_CAPTION}\n\n{details}"


# --------------------------------------------------------------------------- README


DEFAULT_SOURCES = (
    "results/<task>/<hardware>/eval_before.json",
    "results/<task>/<hardware>/<cell>/eval_after.json",
    "results/<task>/<hardware>/<cell>/speed.json",
    "results/skipped.tsv",
)


def results_section(
    tables: Mapping[str, str],
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    generator: str = "workflow_scripts/report_tables.py",
) -> str:
    """The README body between the results markers.

    ``tables`` maps a task name to its table (optionally with a caption above
    it) and the key ``"speed"`` to the speed table.  Tasks come in the order
    docvqa, hateful_memes, nlvr2, ucf101 (unknown ones after, alphabetically),
    then ``### Speed``.
    """
    source_text = ", ".join(f"`{s}`" for s in sources)
    parts = [
        "_Generated by the workflow (`"
        + generator
        + "`), not typed: do not edit between the markers. Sources: "
        + source_text
        + "._"
    ]
    for task in sorted((t for t in tables if t != "speed"), key=task_sort_key):
        parts.append(f"### {task}\n\n{tables[task].strip()}")
    if "speed" in tables:
        parts.append(f"### Speed\n\n{tables['speed'].strip()}")
    return "\n\n".join(parts) + "\n"


def replace_readme_section(
    readme_text: str,
    new_body: str,
    begin: str = BEGIN_MARKER,
    end: str = END_MARKER,
) -> str:
    """Replace what lies between ``begin`` and ``end`` (markers kept, text outside untouched)."""
    n_begin, n_end = readme_text.count(begin), readme_text.count(end)
    if n_begin != 1 or n_end != 1:
        raise ValueError(
            f"expected exactly one {begin!r} and one {end!r} marker, "
            f"found {n_begin} and {n_end}"
        )
    start = readme_text.index(begin) + len(begin)
    stop = readme_text.index(end)
    if stop < start:
        raise ValueError(f"marker {end!r} comes before {begin!r}")
    body = new_body.strip("\n")
    middle = f"\n{body}\n" if body else "\n"
    return readme_text[:start] + middle + readme_text[stop:]


# --------------------------------------------------------------------------- files


