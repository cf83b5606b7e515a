"""Benchmark (not a test) of the training data pipeline (ftbench/training/data.py) against the one it replaced.

Old pipeline ("old"): reproduced here, since the package no longer has it. ``CellTrainer`` kept a dict
of every example it had encoded (``processor.encode_training(...)``, fp32 ``pixel_values``) for the
whole run, encoded synchronously on first use inside the step, and cut a rank's share of a step into
micro-batches in sample order. ``CachedFp32Trainer`` below is the current ``CellTrainer`` with only
``next_batch`` replaced by that; the model step is the same. (The old trainer collated each
micro-batch just before its forward pass; here all of a step's micro-batches are collated before
the first, which holds one step's collated batch longer: a few MB at the tiny shape.)

New pipeline ("new"): ``CellTrainer`` as it is, a DataLoader over ``StepBatches`` with 0 or N workers.

Inputs: a random-weight tiny base (``build_random_base("tiny")``, its crops are 56 px) and
DocVQA-shaped pages at num_crops 16 (``write_docvqa_shape``). Every run is a fresh subprocess with
real tiny-model training steps (full fine-tuning, fp32, one thread), so peak RSS
(``getrusage``: the process itself and, separately, its largest worker) does not carry over.

1. peak RSS after 10, 100 and 300 steps (1,000 examples) and with 100 vs 1,000 examples (300 steps);
2. the data-wait share of step time and 3. img/s end to end: old, new with 0 and with 2 workers,
   interleaved repeats, median and range (within the first epoch: the old cache never hits);
4. the padding share of the batch tensors at per-device batch 1, 4 and 8, in sample order (old)
   and length-grouped (new), on token lengths at the real model's shape (336-px crops);
5. host bytes per rank of config/cluster.yaml's largest cell, from one encoded two-image sample.

Run: .venv/bin/python scripts/bench_data_pipeline.py [--quick] (``--quick``: a smoke run of 1-2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Tiny models are fastest in one thread per process (docs/performance.md); set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftbench.data.common import image_root_for, read_examples, write_jsonl_atomic  # noqa: E402
from ftbench.models.loading import load_tokenizer  # noqa: E402
from ftbench.models.phi3v import IGNORE_INDEX  # noqa: E402
from ftbench.models.processing_phi3v import Encoded, Phi3VProcessor, collate  # noqa: E402
from ftbench.speed_inputs import QUESTIONS, build_random_base, write_docvqa_shape  # noqa: E402
from ftbench.train import CellTrainer  # noqa: E402
from ftbench.training.data import StepBatch, StepBatches, answer_targets  # noqa: E402
from ftbench.training.distributed import setup_distributed  # noqa: E402
from ftbench.training.settings import TrainSettings  # noqa: E402

NUM_CROPS = 16
# The real model's vision shape (CLIP ViT-L/14-336: 336-px crops, 12 x 12 merged tokens per crop) and
# its LongRoPE switch, for the token lengths and the bytes of full-size samples.
FULL_CROP, FULL_MERGED, ROPE_SWITCH = 336, 12, 4096


# --- the old pipeline, reproduced ---------------------------------------------------------------

class CachedFp32Trainer(CellTrainer):
    """``CellTrainer`` with the data side it had before ``ftbench.training.data``: every encoded
    example kept (fp32 ``pixel_values``) in a dict for the whole run, encoded synchronously on first
    use, a step's share cut into micro-batches in sample order (no length grouping)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache: dict[int, Encoded] = {}

    def encoded(self, index: int) -> Encoded:
        if index not in self.cache:
            jsonl, example = self.batches.examples[index]
            self.cache[index] = self.processor.encode_training(example["conversations"], image_root_for(jsonl),
                                                               where=f"{jsonl}: example {example['id']!r}")
        return self.cache[index]

    def next_batch(self) -> tuple[StepBatch, float]:
        started = time.perf_counter()
        step = self.steps_done
        share = self.batches.samples_of(step)
        size = self.settings.per_device_batch
        batch = StepBatch(step)
        for start in range(0, len(share), size):
            encoded = [self.encoded(i) for i in share[start : start + size]]
            collated = collate(encoded, self.processor.pad_token_id)
            batch.micro_batches.append(collated)
            batch.targets.append(answer_targets(collated["labels"]))
            batch.samples += len(encoded)
            batch.images += sum(e.num_images for e in encoded)
            batch.tokens += int(collated["attention_mask"].sum())
        # The old step spent this time encoding before its forward passes: its data wait.
        return batch, time.perf_counter() - started


# --- one run, in its own process -----------------------------------------------------------------

def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: kilobytes


def run_pipeline(spec: dict) -> dict:
    """``spec["steps"]`` training steps of the tiny base on ``spec["jsonl"]`` with the ``spec["pipeline"]``
    data side; the steps' times, data waits, images, and the peak RSS before and after."""
    torch.set_num_threads(1)
    settings = TrainSettings(strategy="full", engine="ddp", precision="fp32", steps=spec["steps"],
                             global_batch=spec["global_batch"], per_device_batch=spec["per_device_batch"],
                             warmup_steps=1, num_crops=NUM_CROPS, freeze_embed_tokens=False,
                             loader_workers=spec["workers"], loader_prefetch=spec["prefetch"])
    trainer_class = CachedFp32Trainer if spec["pipeline"] == "old" else CellTrainer
    trainer = trainer_class(settings, Path(spec["base"]), [Path(spec["jsonl"])], setup_distributed(False))
    rss_before = peak_rss_mb(resource.RUSAGE_SELF)
    step_s, wait_s, images = [], [], 0
    for _ in range(settings.steps):
        started = time.perf_counter()
        record = trainer.step()
        step_s.append(time.perf_counter() - started)
        wait_s.append(record["data_wait_s"])
        images += record["images"]
    # The last step dropped the loader's iterator, which joined its workers: their peak is counted now.
    return {"step_s": step_s, "wait_s": wait_s, "images": images, "rss_before_mb": rss_before,
            "rss_peak_mb": peak_rss_mb(resource.RUSAGE_SELF),
            "worker_peak_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
            "cached": len(getattr(trainer, "cache", {})),
            "cached_pixel_mb": sum(e.pixel_values.nbytes for e in getattr(trainer, "cache", {}).values()) / 1e6}


def in_subprocess(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--run", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"run {spec} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- inputs ----------------------------------------------------------------------------------------

def first_examples(jsonl: Path, n: int) -> Path:
    """A jsonl of the first ``n`` examples of ``jsonl``, beside it (same images folder)."""
    subset = jsonl.with_name(f"{jsonl.stem}_first{n}.jsonl")
    write_jsonl_atomic(subset, read_examples(jsonl)[:n])
    return subset


def paper_pages(folder: Path, n: int, seed: int) -> Path:
    """``n`` examples on pages of common paper formats at 200 dpi (several crop grids at num_crops
    16), one blank image file per format: only the sizes matter for token lengths."""
    import numpy as np
    from PIL import Image

    formats = {"letter": (1700, 2200), "a4": (1654, 2339), "legal": (1700, 2800), "letter_landscape": (2200, 1700),
               "a5": (1165, 1654), "receipt": (640, 1800)}
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name, size in formats.items():
        Image.new("L", size, 255).save(images / f"{name}.png", compress_level=1)
    rng = np.random.default_rng(seed)
    names = list(formats)
    records = []
    for i in range(n):
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        page = names[int(rng.integers(len(names)))]
        records.append({"id": f"page-{i}", "source": "paper_pages",
                        "conversations": [{"images": [f"{page}.png"], "user": question, "assistant": answer}]})
    path = folder / "paper_pages_train.jsonl"
    write_jsonl_atomic(path, records)
    return path


# --- 4. padding --------------------------------------------------------------------------------------

class LengthOnlySteps(StepBatches):
    """``StepBatches`` whose examples are their token lengths (counted from the image headers): the
    pipeline's own grouping and collation, without decoding pixels."""

    def __init__(self, lengths: list[int], processor, **kwargs):
        super().__init__([(None, None)] * len(lengths), processor, **kwargs)
        self.lengths = lengths

    def encode(self, index: int) -> Encoded:
        n = self.lengths[index]
        return Encoded([0] * n, [IGNORE_INDEX] * n, None, None, 0)


def padding_share(micro_batches: list[dict]) -> tuple[int, int]:
    """(padded, total) token positions of the batch tensors."""
    real = sum(int(b["attention_mask"].sum()) for b in micro_batches)
    total = sum(b["attention_mask"].numel() for b in micro_batches)
    return total - real, total


def padding_table(name: str, jsonl: Path, processor: Phi3VProcessor, shares: list[int], steps: int) -> None:
    examples = read_examples(jsonl)
    root = image_root_for(jsonl)
    lengths = [sum(processor.training_length(t, root) for t in ex["conversations"]) for ex in examples]
    for ex, n in zip(examples[:2], lengths[:2]):  # the header count is the encoder's
        assert len(processor.encode_training(ex["conversations"], root, uint8_crops=True).input_ids) == n
    print(f"\n{name}: {len(lengths)} examples, tokens min {min(lengths)} median {statistics.median(lengths):.0f} "
          f"max {max(lengths)}, {len(set(lengths))} distinct lengths; {steps} steps")
    print(f"  {'samples/rank/step':>17} {'per-device batch':>16} {'in order (old)':>15} {'grouped (new)':>14}")
    for share in shares:
        for per_device in (1, 4, 8):
            if per_device > share:
                continue
            batches = LengthOnlySteps(lengths, processor, steps=steps, global_batch=share, per_device_batch=per_device,
                                      seed=0, rank=0, world_size=1)
            in_order, grouped = [0, 0], [0, 0]
            for step in range(steps):
                share_of_step = batches.samples_of(step)
                chunks = [share_of_step[k : k + per_device] for k in range(0, len(share_of_step), per_device)]
                old = [collate([batches.encode(i) for i in chunk], 0) for chunk in chunks]
                new = batches[step].micro_batches
                for acc, counts in ((in_order, padding_share(old)), (grouped, padding_share(new))):
                    acc[0] += counts[0]
                    acc[1] += counts[1]
            print(f"  {share:>17} {per_device:>16} {in_order[0] / in_order[1]:>14.1%} {grouped[0] / grouped[1]:>14.1%}")


# --- 5. the largest cluster cell ------------------------------------------------------------------------

def largest_cell(folder: Path, tokenizer, measured: dict) -> None:
    """config/cluster.yaml: hardware a100 (64,000 MB per process, 4 workers x prefetch 2), global batch
    64 on 8 GPUs (layout 1x8: the most samples per rank), NLVR2 at num_crops 16."""
    import yaml
    from PIL import Image

    cluster = yaml.safe_load((REPO / "config" / "cluster.yaml").read_text())
    hardware = cluster["hardware"]["a100"]
    task = cluster["tasks"]["nlvr2"]
    layouts = [layout for row in cluster["matrix"] if "nlvr2" in row["task"] for layout in row["layout"]]
    layout = min(layouts, key=lambda name: int(name.split("x")[0]) * int(name.split("x")[1]))
    world = int(layout.split("x")[0]) * int(layout.split("x")[1])
    processor = Phi3VProcessor(tokenizer, task["num_crops"], FULL_CROP, FULL_MERGED, rope_switch=ROPE_SWITCH)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    # A square image lands on the 4x4 grid, the most sub-crops num_crops 16 allows: the largest pixels.
    for name in ("left.png", "right.png"):
        Image.new("RGB", (1000, 1000), (200, 120, 40)).save(images / name)
    turns = [{"images": ["left.png", "right.png"], "user": "The left image shows more animals than the right one.",
              "assistant": "False"}]
    uint8 = processor.encode_training(turns, images, uint8_crops=True)
    fp32 = processor.encode_training(turns, images)
    sample_mb = sum(t.nbytes for t in collate([uint8], processor.pad_token_id).values()) / 1e6
    workers, prefetch = hardware["loader_workers"], hardware["loader_prefetch"]
    per_rank = task["global_batch"] // world
    in_flight = workers * prefetch + 1
    total_mb = in_flight * per_rank * sample_mb
    print(f"\n5. largest cell: NLVR2, two images at num_crops {task['num_crops']}, {len(uint8.input_ids)} tokens, "
          f"grids {(uint8.image_sizes // FULL_CROP).tolist()}")
    print(f"  one collated sample: uint8 crops {tuple(uint8.crops.shape)} = {uint8.crops.nbytes / 1e6:.2f} MB, "
          f"all tensors {sample_mb:.2f} MB (the old fp32 pixel_values: {fp32.pixel_values.nbytes / 1e6:.1f} MB)")
    print(f"  layout {layout}: global batch {task['global_batch']} / {world} ranks = {per_rank} samples per rank "
          "and step")
    print(f"  in flight: ({workers} workers x prefetch {prefetch} + 1 in training) = {in_flight} steps")
    print(f"  data per rank: {in_flight} x {per_rank} x {sample_mb:.2f} MB = {total_mb / 1e3:.2f} GB "
          f"of {hardware['mem_mb_per_process'] / 1e3:.0f} GB declared per process "
          f"({total_mb / hardware['mem_mb_per_process']:.1%})")
    # On CUDA the loader also copies each batch into page-locked memory; PyTorch's host allocator rounds
    # such blocks up to a power of two and keeps them cached: at most as many steps again.
    crops_block_mb = 2 ** (uint8.crops.nbytes - 1).bit_length() / 1e6
    pinned_mb = in_flight * per_rank * crops_block_mb
    print(f"  pinned copies (CUDA), at most: {in_flight} x {per_rank} x {crops_block_mb:.2f} MB "
          f"(crops rounded up to a power of two) = {pinned_mb / 1e3:.2f} GB")
    from ftbench.models.phi3v import Phi3VForCausalLM
    from ftbench.models.presets import phi35_vision_config

    with torch.device("meta"):  # shapes only
        parameters = sum(p.numel() for p in Phi3VForCausalLM(phi35_vision_config()).parameters())
    model_gb = parameters * 4 / 1e9
    print(f"  model on the host while loading (full / frozen_vision: fp32 weights, then moved to the GPU, before "
          f"the loader starts): {parameters / 1e9:.2f} G parameters x 4 B = {model_gb:.1f} GB; ZeRO-2's states "
          "live on the GPU")
    process_gb = (measured["rss_before_mb"] + hardware["loader_workers"] * measured["worker_peak_mb"]) / 1e3
    print(f"  processes, as measured here at tiny size: training {measured['rss_before_mb']:.0f} MB + "
          f"{hardware['loader_workers']} workers x {measured['worker_peak_mb']:.0f} MB (copy-on-write pages "
          f"counted in each) = {process_gb:.1f} GB")
    worst_gb = max(model_gb, (total_mb + pinned_mb) / 1e3) + process_gb
    print(f"  per rank, at most about max({model_gb:.1f}, {total_mb / 1e3:.2f} + {pinned_mb / 1e3:.2f}) + "
          f"{process_gb:.1f} = {worst_gb:.1f} GB of {hardware['mem_mb_per_process'] / 1e3:.0f} GB: "
          f"{'fits' if worst_gb * 1e3 < hardware['mem_mb_per_process'] else 'does NOT fit'}")


# --- report helpers --------------------------------------------------------------------------------------

def spread(values: list[float], scale: float = 1.0, fmt: str = ".1f") -> str:
    values = [v * scale for v in values]
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def machine() -> str:
    import transformers

    from ftbench.provenance import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run of 1-2 minutes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run, in a fresh process
    args = p.parse_args()
    if args.run:
        print(json.dumps(run_pipeline(json.loads(args.run))))
        return
    if args.quick:
        examples, few, step_counts, timed_steps, padding_steps = 40, 10, (2, 10), 4, 10
    else:
        examples, few, step_counts, timed_steps, padding_steps = 1000, 100, (10, 100, 300), 20, 100
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    bench_started = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        build_random_base("tiny", scratch / "base", dtype="fp32")
        pages = write_docvqa_shape(scratch / "pages", examples, seed=0)
        pages_few = first_examples(pages, few)
        base = str(scratch / "base")

        # 1. memory: global batch 2 (one micro-batch of 2) per step keeps the 300-step runs short.
        print(f"\n1. peak RSS (MB), tiny base, DocVQA-shaped pages at num_crops {NUM_CROPS}, global batch 2, "
              "real training steps, one fresh process per row")
        print(f"  {'pipeline':<16} {'examples':>8} {'steps':>5} {'before':>7} {'peak':>7} {'growth':>7} "
              f"{'worker peak':>11} {'cached':>6} {'cache MB':>8}")
        memory = {}
        configs = [(pipeline, 0, examples, n) for n in step_counts for pipeline in ("old", "new")]
        configs += [(pipeline, 0, few, step_counts[-1]) for pipeline in ("old", "new")]
        configs += [("new", 2, examples, step_counts[-1])]
        for pipeline, workers, n_examples, steps in configs:
            spec = {"pipeline": pipeline, "workers": workers, "prefetch": 2, "steps": steps, "global_batch": 2,
                    "per_device_batch": 2, "base": base, "jsonl": str(pages if n_examples == examples else pages_few)}
            r = in_subprocess(spec)
            memory[pipeline, workers, n_examples, steps] = r
            label = pipeline + (f", {workers} workers" if workers else "")
            print(f"  {label:<16} {n_examples:>8} {steps:>5} {r['rss_before_mb']:>7.0f} {r['rss_peak_mb']:>7.0f} "
                  f"{r['rss_peak_mb'] - r['rss_before_mb']:>7.0f} {r['worker_peak_mb'] if workers else 0:>11.0f} "
                  f"{r['cached']:>6} {r['cached_pixel_mb']:>8.0f}")
        for pipeline in ("old", "new"):
            by_steps = [memory[pipeline, 0, examples, n]["rss_peak_mb"] for n in step_counts]
            by_examples = [memory[pipeline, 0, n, step_counts[-1]]["rss_peak_mb"] for n in (few, examples)]
            print(f"  {pipeline}: peak {step_counts[-1]} / {step_counts[0]} steps = {by_steps[-1] / by_steps[0]:.2f}, "
                  f"{examples} / {few} examples = {by_examples[1] / by_examples[0]:.2f}")
        tiny_page = read_examples(pages)[0]["conversations"]
        full_page = Phi3VProcessor(load_tokenizer(scratch / "base"), NUM_CROPS, FULL_CROP, FULL_MERGED).encode_training(
            tiny_page, image_root_for(pages))
        old_run = memory["old", 0, examples, step_counts[-1]]
        print(f"  a cached page (fp32 pixel_values, 17 crop slots): "
              f"{old_run['cached_pixel_mb'] / old_run['cached']:.2f} MB at the tiny model's 56-px crops, "
              f"{full_page.pixel_values.nbytes / 1e6:.1f} MB at the real 336 px")

        # 2 and 3. step time: interleaved so that each variant sees the same load.
        variants = [("old", 0), ("new", 0), ("new", 2)]
        timings = {v: [] for v in variants}
        for _ in range(args.repeats):
            for pipeline, workers in variants:
                spec = {"pipeline": pipeline, "workers": workers, "prefetch": 2, "steps": timed_steps,
                        "global_batch": 4, "per_device_batch": 4, "base": base, "jsonl": str(pages)}
                timings[pipeline, workers].append(in_subprocess(spec))
        print(f"\n2-3. {timed_steps} training steps of global batch 4 (first epoch: the old cache never hits), "
              f"{args.repeats} repeats, median (min-max); every step counted, the first included")
        print(f"  {'pipeline':<16} {'step ms':>20} {'data wait share':>20} {'img/s':>20} {'img/s after step 1':>20}")
        for (pipeline, workers), runs in timings.items():
            step_ms = [statistics.median(r["step_s"]) for r in runs]
            wait = [sum(r["wait_s"]) / sum(r["step_s"]) for r in runs]
            rate = [r["images"] / sum(r["step_s"]) for r in runs]
            # Without the first step, which also starts the workers: the rate once the pipeline runs.
            images_per_step = runs[0]["images"] / timed_steps
            steady = [images_per_step * (timed_steps - 1) / sum(r["step_s"][1:]) for r in runs]
            label = f"{pipeline}, {workers} workers"
            print(f"  {label:<16} {spread(step_ms, 1e3):>20} {spread(wait, 100):>19}% {spread(rate):>20} "
                  f"{spread(steady):>20}")

        # 4. padding, at the real model's token lengths.
        tokenizer = load_tokenizer(scratch / "base")
        full_size = Phi3VProcessor(tokenizer, NUM_CROPS, FULL_CROP, FULL_MERGED, rope_switch=ROPE_SWITCH)
        print(f"\n4. padding share of the batch tensors (padded / all token positions), 336-px crops at num_crops "
              f"{NUM_CROPS}, LongRoPE switch {ROPE_SWITCH}")
        padding_table("speed_inputs' DocVQA-shaped pages (5 letter : 1 longer)", pages, full_size, [8, 32],
                      padding_steps)
        padding_table("paper formats at 200 dpi (letter, A4, legal, letter landscape, A5, receipt)",
                      paper_pages(scratch / "paper", examples, seed=0), full_size, [8, 32], padding_steps)

        largest_cell(scratch / "nlvr2", tokenizer, memory["new", 2, examples, step_counts[-1]])

    print(f"\nload average at end: {load_average()}; {time.perf_counter() - bench_started:.0f} s")


if __name__ == "__main__":
    main()
