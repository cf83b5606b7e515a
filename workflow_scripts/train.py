"""Train one matrix cell (run under torchrun).

Writes <out>/{model|adapter}/, train_log.jsonl, provenance.json and, last, artifact.json."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.torchrun_worker import exit_when_launcher_dies

# Before the imports below (torch: seconds), so that the watched parent is the launcher.
exit_when_launcher_dies()

from ftbench.atomic import write_text_atomic
from ftbench.data.manifest import check_images_intact
from ftbench.errors import check_writable
from ftbench.provenance import collect_provenance
from ftbench.schema import schema_default
from ftbench.train import TrainSettings, train_cell


def base_model_record(base: Path) -> dict:
    """Where the base weights came from: the hub id and revision of a fetched checkpoint, or how
    the tiny base was built."""
    record = {"path": str(base)}
    for name in ("ftbench_source.json", "ftbench_base.json"):
        if (base / name).is_file():
            record.update(json.loads((base / name).read_text()))
    return record


def data_origin_record(train_files: list[Path]) -> dict | None:
    """Where the training data came from (hub id, requested revision and resolved commit, or the local
    folder), as its conversion recorded it in summary.json beside the jsonl."""
    summary = train_files[0].parent / "summary.json"
    if not summary.is_file():
        return None
    return json.loads(summary.read_text()).get("origin")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", type=Path, required=True, help="base checkpoint folder")
    p.add_argument("--train", type=Path, nargs="+", required=True, help="training jsonl file(s)")
    p.add_argument("--out", type=Path, required=True, help="the cell's train/ folder")
    p.add_argument("--settings", required=True, help="JSON of ftbench.train.TrainSettings fields")
    p.add_argument("--loader-workers", type=int, default=None, help="data-loader worker processes per rank")
    p.add_argument("--loader-prefetch", type=int, default=None, help="optimizer steps each worker prepares ahead")
    p.add_argument("--provenance", type=Path, required=True)
    p.add_argument("--checkpoint-every", type=int, default=schema_default("checkpoint_every"),
                   help="optimizer steps between checkpoints (0: none; default %(default)s); "
                        "a rerun resumes from the newest")
    args = p.parse_args()
    try:
        loader = {k: v for k, v in (("loader_workers", args.loader_workers), ("loader_prefetch", args.loader_prefetch))
                  if v is not None}
        settings = TrainSettings(**json.loads(args.settings) | loader)
    except (TypeError, ValueError) as e:  # unknown key, wrong value, malformed JSON
        print(f"train: --settings: {e}", file=sys.stderr)
        return 1
    check_writable(args.out)
    check_writable(args.provenance.parent)
    for jsonl in args.train:  # an image damaged since its conversion: one line, before any work
        check_images_intact(jsonl)
    try:
        info = train_cell(settings, args.base, args.train, args.out, log=lambda m: print(m, flush=True),
                           checkpoint_every=args.checkpoint_every)
    except (ValueError, FileNotFoundError) as e:
        print(f"train: {e}", file=sys.stderr)
        return 1
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        from ftbench.speed import device_description
        from ftbench.training.distributed import setup_distributed

        device = device_description(setup_distributed(False).device)
        prov = collect_provenance(seed=settings.seed, config=json.loads(args.settings), device=device,
                                  extra={"world_size": info["world_size"], "precision_mode": info["precision_mode"],
                                         "base_model": base_model_record(args.base),
                                         "data_origin": data_origin_record(args.train)})
        write_text_atomic(args.provenance, json.dumps(prov, indent=2))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "train"))
