"""Replace the generated results section of the README (between its markers): the figures given,
copied into a folder beside the README and linked first, then the tables.

    python workflow_scripts/update_readme.py --section results/tables/section.md --readme README.md \
        --figures-dir docs/figures --figure results/plots/accuracy.png "Headline metric per cell"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftbench import report  # noqa: E402
from ftbench.atomic import atomic_path  # noqa: E402


def with_figures(section: str, links: list[tuple[str, str]]) -> str:
    """The section under an image link per (path relative to the README, alt text): the pictures
    first, the tables' text after them as it was generated."""
    if not links:
        return section
    images = "\n\n".join(f"![{alt}]({path})" for path, alt in links)
    return (f"_Figures drawn by the workflow (`ftbench/plots.py`) from the results files below and each cell's "
            f"`train/train_log.jsonl`; `snakemake --report results/report.html` has them with their captions._"
            f"\n\n{images}\n\n{section}")


def copy_figure(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:  # makes the folder
        tmp.write_bytes(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", required=True, help="markdown body (results/tables/section.md)")
    parser.add_argument("--readme", required=True, help="README to update in place")
    parser.add_argument("--figures-dir", default="docs/figures",
                        help="folder for the figures, relative to the README's folder")
    parser.add_argument("--figure", nargs=2, action="append", default=[], metavar=("PNG", "ALT"),
                        help="a figure to copy and link, and its alt text (repeat, in the order shown)")
    args = parser.parse_args(argv)

    readme = Path(args.readme)
    body = Path(args.section).read_text(encoding="utf-8")
    try:
        # newline="": keep the README's own line endings byte for byte.
        with open(readme, encoding="utf-8", newline="") as handle:
            text = handle.read()
        # Figures linked as paths relative to the README, copied only once the README is known to take them.
        figures = [(Path(png), Path(args.figures_dir) / Path(png).name, alt) for png, alt in args.figure]
        links = [(figure.as_posix(), alt) for _, figure, alt in figures]
        updated = report.replace_readme_section(text, with_figures(body, links))
        for source, figure, _ in figures:
            copy_figure(source, readme.parent / figure)
    except (OSError, ValueError) as err:
        print(f"update_readme: {args.readme}: {err}", file=sys.stderr)
        return 1
    report.write_text_atomic(args.readme, updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
