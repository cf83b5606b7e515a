"""Render the results tables (one per task, one for speed) and the README section.

    python workflow_scripts/report_tables.py --before <eval_before.json...> \
        --after <eval_after.json...> --speed <speed.json...> \
        --skipped results/skipped.tsv --out-dir results/tables
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftbench import report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", nargs="*", default=[], help="eval_before.json files")
    parser.add_argument("--after", nargs="*", default=[], help="eval_after.json files")
    parser.add_argument("--speed", nargs="*", default=[], help="speed.json files")
    parser.add_argument("--skipped", default=None, help="results/skipped.tsv")
    parser.add_argument("--speed-tasks", nargs="*", default=None,
                        help="tasks with speed runs (their skipped cells appear in the speed table)")
    parser.add_argument("--published", default=str(report.PUBLISHED_FILE),
                        help="the recipe's published figures (the tables' recipe column)")
    parser.add_argument("--out-dir", required=True, help="folder for <task>.md, speed.md, section.md")
    args = parser.parse_args(argv)

    try:
        tables = render_tables(args)
    except (OSError, ValueError) as err:  # bad results or published file: one line, nothing written
        print(f"report_tables: {err}", file=sys.stderr)
        return 1
    out_dir = Path(args.out_dir)
    for name, text in tables.items():
        report.write_text_atomic(out_dir / f"{name}.md", text)
    report.write_text_atomic(out_dir / "section.md", report.results_section(tables))
    return 0


def render_tables(args) -> dict[str, str]:
    """{task or "speed": markdown}, all rendered before any file is written."""
    befores = report.load_results(args.before)
    afters = report.load_results(args.after)
    speeds = report.load_results(args.speed)
    skipped = report.load_skipped(args.skipped) if args.skipped else []
    published = report.load_published(args.published)

    tasks = {r["task"] for r in befores + afters} | {s["task"] for s in skipped}
    tables: dict[str, str] = {}
    for task in sorted(tasks, key=report.task_sort_key):
        table = report.accuracy_table(task, befores, afters, skipped, published)
        caption = report.eval_caption(task, befores, afters)
        note = report.recipe_note(task, afters, published)
        tables[task] = f"{caption}\n\n{table}\n" + (f"\n{note}\n" if note else "")
    speed_tasks = set(args.speed_tasks) if args.speed_tasks is not None else {r["task"] for r in speeds}
    tables["speed"] = report.speed_table(speeds, [s for s in skipped if s["task"] in speed_tasks]) + "\n"
    return tables


if __name__ == "__main__":
    sys.exit(main())
