"""`snakemake --lint`, failing on any finding but the one ftbench answers in docs/cluster.md.

    python ci/check_lint.py [SNAKEMAKE ARGS...]     (from the repository root; `make lint` runs it)

Snakemake 9 lints in text only (its `--lint json` prints the text too) and exits 1 whenever it reports
anything. This runs it, reads each finding's title, and exits 0 when every finding is accepted:
"Specify a conda environment or container for each rule." -- every rule runs in the one pinned venv
of requirements.txt (docs/cluster.md, "Software environments"). Any other finding is printed as
`WHERE: TITLE` and the exit status is 1; output that is not a lint report (a workflow that does not
parse, say) is printed whole, exit status 1. Extra arguments go to snakemake (e.g. `--configfile
config/cluster.yaml`, which lints the rules of the hub checkpoint too).
"""

from __future__ import annotations

import re
import subprocess
import sys

ACCEPTED = {"Specify a conda environment or container for each rule."}

HEADER = re.compile(r"^Lints for (?P<where>.+):$")
FINDING = re.compile(r"^    \* (?P<title>.+?):?$")


def findings(output: str) -> list[tuple[str, str]] | None:
    """(where, title) of each finding of a lint report; None when the output holds no report."""
    found, where = [], None
    for line in output.splitlines():
        if header := HEADER.match(line):
            where = header.group("where")
        elif (finding := FINDING.match(line)) and where is not None:
            found.append((where, finding.group("title")))
    return found if where is not None else None


def main(argv: list[str]) -> int:
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint", *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    found = findings(done.stdout)
    if done.returncode == 0 and not found:
        print("snakemake --lint: no findings")
        return 0
    if done.returncode != 1 or not found:
        print(done.stdout, end="")
        print(f"check_lint: snakemake --lint exited {done.returncode} without a lint report", file=sys.stderr)
        return 1
    other = [(where, title) for where, title in found if title not in ACCEPTED]
    for where, title in other:
        print(f"{where}: {title}")
    accepted = len(found) - len(other)
    print(f"snakemake --lint: {len(other)} finding(s) to fix, {accepted} accepted "
          f"({'; '.join(sorted(ACCEPTED))} -- docs/cluster.md)")
    return 1 if other else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
