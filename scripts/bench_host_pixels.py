"""Benchmark (not a test) of the host-side form of a training sample's pixels at the DocVQA shape.

A DocVQA-shaped page (ftbench/speed_inputs.py: letter size, num_crops 16 by default) is encoded for
training three ways, each timed on its own in the same run:

- fp32: the model's ``pixel_values`` built on the host (normalised float slots, the global view
  included), as the trainer did before the data pipeline;
- bf16: the same, then cast to bf16 (half the bytes; rounds the normalised values to 8 bits of mantissa);
- uint8: the used sub-crops as they come out of the resize (``Encoded.crops``); the device builds
  ``pixel_values`` from them (``Phi3VProcessor.to_device``), timed here too on this machine's device.

Prints the machine, versions, bytes per sample, every repeat's median with min-max, and the largest
difference of each form's ``pixel_values`` from fp32's. Run: .venv/bin/python scripts/bench_host_pixels.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftbench.data.common import read_examples  # noqa: E402
from ftbench.models.processing_phi3v import Phi3VProcessor, collate  # noqa: E402
from ftbench.models.tokenizer import train_tiny_tokenizer  # noqa: E402
from ftbench.speed_inputs import write_docvqa_shape  # noqa: E402


def timed(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def show(name: str, times: list[float], extra: str = "") -> None:
    print(f"{name:<40} median {statistics.median(times) * 1e3:8.1f} ms  (min {min(times) * 1e3:.1f}, "
          f"max {max(times) * 1e3:.1f}; {len(times)} repeats) {extra}")


def tensor_mb(t: torch.Tensor) -> float:
    return t.numel() * t.element_size() / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num-crops", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, device {device}; "
          f"torch {torch.__version__}, python {platform.python_version()}")
    tokenizer = train_tiny_tokenizer(["What is the date on the page? March 3"] * 8, vocab_size=128)
    processor = Phi3VProcessor(tokenizer, args.num_crops, 336, 12)
    with tempfile.TemporaryDirectory() as scratch:
        jsonl = write_docvqa_shape(Path(scratch), 1, seed=0)
        turns = read_examples(jsonl)[0]["conversations"]
        root = jsonl.parent / "images"

        fp32_times, fp32 = timed(lambda: processor.encode_training(turns, root), args.repeats)
        bf16_times, bf16 = timed(lambda: processor.encode_training(turns, root).pixel_values.bfloat16(), args.repeats)
        uint8_times, uint8 = timed(lambda: processor.encode_training(turns, root, uint8_crops=True), args.repeats)
        batch = collate([uint8], processor.pad_token_id)
        expand_times, expanded = timed(lambda: processor.to_device(batch, device)["pixel_values"], args.repeats)
        if device.type == "cuda":
            torch.cuda.synchronize()

    reference = fp32.pixel_values
    show("fp32 pixel_values on the host", fp32_times, f"{tensor_mb(reference):.1f} MB")
    show("bf16 pixel_values on the host", bf16_times,
         f"{tensor_mb(bf16):.1f} MB, max |diff| {(bf16.float() - reference).abs().max().item():.2e}")
    show("uint8 crops on the host", uint8_times, f"{tensor_mb(uint8.crops):.1f} MB")
    show(f"uint8 crops -> pixel_values on {device.type}", expand_times,
         f"max |diff| {(expanded.cpu() - reference).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
