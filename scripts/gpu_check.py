"""The full-size speed matrix on one lent GPU (or at tiny size on a CPU, to test this script).

Builds a base of the full Phi-3.5-vision architecture with random weights and DocVQA-shaped samples
(ftbench/speed_inputs.py: nothing to download), then runs the speed job of every
strategy x attention cell under torchrun, one process per cell (an out-of-memory cell does not take
the others with it), and writes results/gpu/<card>/<cell>/speed.json with provenance, the rendered
table and a log. On one GPU every strategy runs through the plain PyTorch engine ("ddp"): ZeRO-2 has
nothing to partition over one rank, and DeepSpeed is not installed on the lent machines. The batches
come from the training data pipeline (ftbench/training/data.py: on a GPU the recipe's 4 loader
workers, pinned memory); each cell's line and the table give the median time a step waited for them.

    scripts/gpu_check.sh                      # on the GPU machine
    scripts/gpu_check.sh --preset tiny        # here, on the CPU: the same path at toy size
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftbench.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from ftbench.config import Cell  # noqa: E402
from ftbench.schema import STRATEGIES  # noqa: E402

# Run by default: the recipe's four strategies (dora, ftbench's addition, on request).
DEFAULT_STRATEGIES = tuple(s for s in STRATEGIES if s != "dora")
PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0, "v100": 125.0}  # bf16 dense (fp16 on V100)


def card_slug() -> tuple[str, str]:
    """('h200', 'NVIDIA H200') on a GPU, ('cpu', ...) otherwise."""
    import torch

    if not torch.cuda.is_available():
        return "cpu", "cpu"
    name = torch.cuda.get_device_name(0)
    for known in PEAK_TFLOPS:
        if known in name.lower():
            return known, name
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "gpu", name


def failure_reason(output: str) -> str:
    """The worker's own error line (not torchrun's summary around it)."""
    lines = output.strip().splitlines()
    for line in reversed(lines):
        if re.match(r"^(speed: |[A-Za-z_.]*(Error|Exception)\b|torch\.OutOfMemoryError)", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def cell_settings(strategy: str, attention: str, args) -> dict:
    return {
        "strategy": strategy, "precision": "bf16", "attention": attention, "seed": 0,
        "steps": args.warmup + args.measured, "global_batch": args.global_batch,
        "per_device_batch": args.per_device_batch, "learning_rate": 1e-5, "warmup_steps": 0,
        "num_crops": args.num_crops, "lora_rank": 32, "lora_alpha": 16,
        "gradient_checkpointing": args.gradient_checkpointing, "engine": "ddp",
        "loader_workers": args.loader_workers, "loader_prefetch": args.loader_prefetch,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="phi3.5-vision", help="model architecture (random weights)")
    p.add_argument("--strategies", nargs="+", default=list(DEFAULT_STRATEGIES), choices=STRATEGIES)
    p.add_argument("--attentions", nargs="+", default=["sdpa", "eager"])
    p.add_argument("--samples", type=int, default=24, help="DocVQA-shaped samples to cycle through")
    p.add_argument("--num-crops", type=int, default=16)
    p.add_argument("--global-batch", type=int, default=4, help="samples per optimizer step")
    p.add_argument("--per-device-batch", type=int, default=1, help="samples per forward pass")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="data loader worker processes (default: the recipe's 4 on a GPU, 0 on a CPU)")
    p.add_argument("--loader-prefetch", type=int, default=2, help="steps each loader worker prepares ahead")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--measured", type=int, default=5)
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cell-timeout", type=int, default=150, help="seconds before a cell is given up")
    p.add_argument("--budget", type=int, default=450, help="no new cell starts after this many seconds")
    p.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "ftbench-gpu-check")
    p.add_argument("--results", type=Path, default=REPO / "results" / "gpu")
    p.add_argument("--pack", type=Path, help="also write everything as one .tar.gz here (e.g. $OUT/gpu.tar.gz)")
    args = p.parse_args()

    import torch

    from ftbench.speed_inputs import build_random_base, describe_inputs, write_docvqa_shape

    started = time.monotonic()
    slug, card = card_slug()
    if args.loader_workers is None:
        args.loader_workers = 4 if torch.cuda.is_available() else 0
    out = args.results / slug
    out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def log(message: str) -> None:
        line = f"[{time.monotonic() - started:7.1f}s] {message}"
        print(line, flush=True)
        log_lines.append(line)
        write_text_atomic(out / "gpu_check.log", "\n".join(log_lines) + "\n")

    base = args.work / f"base-{args.preset}"
    if not (base / "ftbench_base.json").is_file():
        device = "cuda" if torch.cuda.is_available() else "cpu"
        info = build_random_base(args.preset, base, seed=0, dtype="bf16", device=device)
        log(f"random base {args.preset}: {info['parameters']:,} parameters -> {base}")
    data = args.work / "data" / "docvqa_shape_train.jsonl"
    if not data.is_file():
        write_docvqa_shape(data.parent, args.samples, seed=0)
    inputs = describe_inputs(data, base)
    log(f"card {card} ({slug}); inputs: {inputs}; torch {torch.__version__}")

    peak = PEAK_TFLOPS.get(slug)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setdefault("OMP_NUM_THREADS", "1")
    failures = []
    for strategy in args.strategies:
        for attention in args.attentions:
            cell = Cell("docvqa", slug, strategy, "bf16", attention, 1, 1, 0)
            target = out / cell.name / "speed.json"
            if time.monotonic() - started > args.budget:
                failures.append({"cell": cell.name, "reason": "time budget spent"})
                log(f"{cell.name}: not started, time budget spent")
                continue
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "1",
                str(REPO / "workflow_scripts" / "speed.py"), "--base", str(base), "--train", str(data),
                "--settings", json.dumps(cell_settings(strategy, attention, args)), "--task", "docvqa",
                "--hardware", slug, "--cell", json.dumps(cell.as_record()), "--warmup-steps", str(args.warmup),
                "--measured-steps", str(args.measured), "--inputs", inputs, "--out", str(target),
            ] + (["--peak-tflops", str(peak)] if peak else [])
            t0 = time.monotonic()
            try:
                run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.cell_timeout)
                ok, tail = run.returncode == 0, (run.stdout + run.stderr)[-4000:]
            except subprocess.TimeoutExpired as e:
                ok, tail = False, f"timed out after {args.cell_timeout} s\n" + str(e.stdout or "")[-2000:]
            (out / cell.name).mkdir(exist_ok=True)
            write_text_atomic(out / cell.name / "speed.log", tail)
            if ok and target.is_file():
                r = json.loads(target.read_text())
                mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
                log(f"{cell.name}: {r['samples_per_s']:.3f} samples/s, {r['lm_tokens_per_s']:.0f} LM tok/s, MFU {mfu}, "
                    f"step {r['step_time_s']['median']:.3f} s of which data wait {r['data_wait_s']['median']:.3f} s, "
                    f"peak {r['peak_memory_mb'] / 1024:.1f} GiB ({time.monotonic() - t0:.0f} s)")
            else:
                reason = failure_reason(tail)
                failures.append({"cell": cell.name, "reason": reason})
                log(f"{cell.name}: FAILED ({reason})")

    from ftbench.report import load_results, speed_table

    speeds = load_results(sorted(out.glob("*/speed.json")))
    skipped = [{"task": "docvqa", "hardware": slug, "cell": f["cell"], "reason": f["reason"]} for f in failures]
    table = speed_table(speeds, skipped)
    header = (f"Speed on one {card}, {args.preset} with random weights, {inputs}; bf16, per-GPU batch "
              f"{args.per_device_batch}, global batch {args.global_batch}, {args.loader_workers} loader workers "
              f"(prefetch {args.loader_prefetch}), {args.warmup} warm-up + {args.measured} timed steps; gradient "
              f"checkpointing {'on' if args.gradient_checkpointing else 'off'}; engine: plain PyTorch (no DeepSpeed); "
              "attention: PyTorch SDPA or eager (flash-attn is not installable there).\n\n")
    write_text_atomic(out / "speed_table.md", header + table + "\n")
    write_json_atomic(out / "failures.json", failures)
    log(f"done: {len(speeds)} cells measured, {len(failures)} failed or not run")
    print(header + table)
    if args.pack:
        args.pack.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.pack, "w:gz") as tar:
            tar.add(out, arcname=f"gpu/{slug}")
    return 0 if speeds else 1


if __name__ == "__main__":
    sys.exit(main())
