"""Evaluate a saved model (a base folder, or a cell's artifact.json) on a task's evaluation split."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.atomic import write_text_atomic
from ftbench.data.manifest import check_images_intact
from ftbench.errors import check_writable
from ftbench.evaluate import evaluate
from ftbench.provenance import collect_provenance


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="evaluation jsonl")
    p.add_argument("--train", type=Path, default=None,
                   help="the task's training jsonl: AUROC scores the first tokens of its answers "
                        "(default: <task>_train.jsonl beside --data)")
    p.add_argument("--task", required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--stage", choices=["before", "after"], required=True)
    p.add_argument("--cell", default="null", help="JSON of the cell (null before training)")
    p.add_argument("--settings", required=True,
                   help="JSON: num_crops, batch_size, max_new_tokens, qlora_base, bootstrap_resamples, bootstrap_seed")
    p.add_argument("--attention", default="sdpa")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--predictions", type=Path, required=True)
    args = p.parse_args()
    for folder in {args.out.parent, args.predictions.parent}:  # refused before the model is loaded
        check_writable(folder)
    check_images_intact(args.data)  # an image damaged since its conversion
    settings = json.loads(args.settings)
    # A refusal after the weights are loaded stays one line: no weight-loading progress bars.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        evaluation = evaluate(args.model, args.data, args.task, attention=args.attention, train_jsonl=args.train,
                              **settings)
    except (ValueError, FileNotFoundError) as e:
        print(f"evaluate: {e}", file=sys.stderr)
        return 1
    cell = json.loads(args.cell)
    predictions, artifact = evaluation["predictions"], evaluation["artifact"]
    write_text_atomic(args.predictions, "".join(json.dumps(r) + "\n" for r in predictions))
    result = {
        "task": args.task,
        "hardware": args.hardware,
        "stage": args.stage,
        "cell": cell,
        "split": args.data.stem.rsplit("_", 1)[-1],
        "n_examples": len(predictions),
        "metrics": evaluation["metrics"],
        "intervals": evaluation["intervals"],
        "bootstrap": evaluation["bootstrap"],
        # A QLoRA adapter's evaluation base ("quantised" or the recipe's "unquantised"); null otherwise.
        "qlora_base": evaluation["qlora_base"],
        # AUROC: the first answer tokens it compared, from the training answers; null without AUROC.
        "auroc_tokens": evaluation["auroc_tokens"],
        "model": str(args.model),
        "predictions": str(args.predictions),
        "provenance": collect_provenance(
            seed=cell["seed"] if cell else None, config=settings, device="cpu",
            extra={"attention_used": evaluation["attention_used"],
                   "trained_with": artifact["precision_mode"] if artifact else None},
        ),
    }
    write_text_atomic(args.out, json.dumps(result, indent=2))
    print(json.dumps(evaluation["metrics"]))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "evaluate"))
