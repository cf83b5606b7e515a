"""Write the results section (results/tables/section.md) as an HTML page for `snakemake --report`.

    python workflow_scripts/tables_html.py results/tables/section.md results/tables/section.html
"""

import argparse
import sys
from pathlib import Path

from ftbench.atomic import write_text_atomic
from ftbench.tables_html import section_to_html


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", type=Path, help="results/tables/section.md")
    p.add_argument("out", type=Path, help="the HTML page to write")
    args = p.parse_args()
    try:
        markdown = args.section.read_text(encoding="utf-8")
    except OSError as e:
        print(f"tables_html: {args.section}: {e.strerror}", file=sys.stderr)
        return 1
    write_text_atomic(args.out, section_to_html(markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
