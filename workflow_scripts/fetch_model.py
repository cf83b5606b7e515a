"""Fetch a hub checkpoint at a pinned revision (safetensors, json and tokenizer files only) and link
its files into the workflow's base folder, with a record of where they came from."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.atomic import write_json_atomic, write_text_atomic
from ftbench.errors import check_writable
from ftbench.models.official import resolve_checkpoint


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--source", required=True, help="hub id owner/name")
    p.add_argument("--revision", required=True, help="40-hex commit")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    check_writable(args.out.parent)  # before any work; a full disk is then named in one line
    try:
        snapshot = resolve_checkpoint(args.source, args.revision)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"fetch_model: {e}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for f in sorted(snapshot.iterdir()):
        link = args.out / f.name
        if f.name != "config.json" and not link.exists():
            link.symlink_to(f.resolve())
    write_json_atomic(args.out / "ftbench_source.json", {"hub_id": args.source, "revision": args.revision,
                                                         "snapshot": str(snapshot)})
    # config.json last: it is the rule's output, so a failed fetch leaves no finished folder.
    write_text_atomic(args.out / "config.json", (snapshot / "config.json").read_text())
    print(json.dumps({"snapshot": str(snapshot)}))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "fetch_model"))
