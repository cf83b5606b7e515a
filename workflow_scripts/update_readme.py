"""Replace the generated results section of the README (between its markers).

    python workflow_scripts/update_readme.py --section results/tables/section.md --readme README.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftbench import report  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", required=True, help="markdown body (results/tables/section.md)")
    parser.add_argument("--readme", required=True, help="README to update in place")
    args = parser.parse_args(argv)

    body = Path(args.section).read_text(encoding="utf-8")
    try:
        # newline="": keep the README's own line endings byte for byte.
        with open(args.readme, encoding="utf-8", newline="") as handle:
            text = handle.read()
        updated = report.replace_readme_section(text, body)
    except (OSError, ValueError) as err:
        print(f"update_readme: {args.readme}: {err}", file=sys.stderr)
        return 1
    report.write_text_atomic(args.readme, updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
