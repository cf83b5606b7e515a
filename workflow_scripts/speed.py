"""Measure the steady-state training speed of one cell (run under torchrun)."""

import argparse
import json
import sys
from pathlib import Path

from ftbench.torchrun_worker import exit_when_launcher_dies

# Before the imports below (torch: seconds), so that the watched parent is the launcher.
exit_when_launcher_dies()

from ftbench.atomic import write_text_atomic
from ftbench.provenance import collect_provenance
from ftbench.speed import measure_speed
from ftbench.speed_inputs import describe_inputs
from ftbench.train import TrainSettings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--train", type=Path, nargs="+", required=True)
    p.add_argument("--settings", required=True, help="JSON of ftbench.train.TrainSettings fields")
    p.add_argument("--task", required=True)
    p.add_argument("--hardware", required=True)
    p.add_argument("--cell", required=True, help="JSON of the cell")
    p.add_argument("--warmup-steps", type=int, required=True)
    p.add_argument("--measured-steps", type=int, required=True)
    p.add_argument("--inputs", help="what the samples and weights are (default: read from the data and base)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    try:
        settings = TrainSettings(**json.loads(args.settings))
    except (TypeError, ValueError) as e:  # unknown key, wrong value, malformed JSON
        print(f"speed: --settings: {e}", file=sys.stderr)
        return 1
    try:
        result = measure_speed(settings, args.base, args.train, warmup_steps=args.warmup_steps,
                               measured_steps=args.measured_steps, peak_tflops=args.peak_tflops)
    except (ValueError, FileNotFoundError) as e:
        print(f"speed: {e}", file=sys.stderr)
        return 1
    if result.pop("is_main"):
        cell = json.loads(args.cell)
        result.update(task=args.task, hardware=args.hardware, cell=cell,
                      inputs=args.inputs or describe_inputs(args.train[0], args.base),
                      attention=settings.attention, strategy=settings.strategy, precision=settings.precision)
        result["provenance"] = collect_provenance(seed=settings.seed, config=json.loads(args.settings),
                                                  device=result["device"])
        write_text_atomic(args.out, json.dumps(result, indent=2))
        print(json.dumps({k: result[k] for k in ("samples_per_s", "lm_tokens_per_s", "peak_memory_mb", "data_wait_s")}))
    return 0


if __name__ == "__main__":
    from ftbench.errors import run_main  # known errors (bad input) -> one line, exit 1

    sys.exit(run_main(main, "speed"))
