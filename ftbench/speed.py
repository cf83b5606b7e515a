"""Steady-state training speed of one cell: optimizer steps timed after warm-up steps.

The timed steps run the real training path (``ftbench.train.CellTrainer``) of the cell, data pipeline
included, with a device synchronise around every step; counts are summed over ranks, peak memory is
the maximum over ranks (CUDA allocator peaks on GPUs, peak resident set size on CPUs). The time a
step waited for its batch (the slowest rank's, part of the step time) is reported on its own."""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from ftbench.flops import flops_per_sample, mfu, shape_of
from ftbench.models.loading import attention_backends
from ftbench.train import CellTrainer
from ftbench.training.distributed import setup_distributed
from ftbench.training.settings import TrainSettings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> dict:
    if device.type == "cuda":
        return {
            "allocated": torch.cuda.max_memory_allocated(device) / 2**20,
            "reserved": torch.cuda.max_memory_reserved(device) / 2**20,
            "kind": "cuda max_memory_allocated/reserved",
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"allocated": rss, "reserved": rss, "kind": "process peak RSS"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "p10": percentile(values, 0.1), "p90": percentile(values, 0.9)}


def summarise(step_times: list[float], samples: int, images: int, tokens: int, crops: int = 0,
              vision_tokens_per_crop: int = 0) -> dict:
    """Rates over the measured steps only (warm-up excluded). Vision tokens are what the CLIP tower
    encodes: every crop (global view included) is one image of patches plus the class token."""
    total = sum(step_times)
    return {
        "mean_crops_per_sample": crops / samples,
        "samples_per_s": samples / total,
        "images_per_s": images / total,
        "lm_tokens_per_s": tokens / total,
        "vision_tokens_per_s": crops * vision_tokens_per_crop / total,
        "mean_tokens_per_sample": tokens / samples,
        "step_time_s": spread(step_times),
    }


def measure_speed(settings: TrainSettings, base_dir: Path, train_jsonl: list[Path], *, warmup_steps: int,
                  measured_steps: int, peak_tflops: float | None = None) -> dict:
    settings = replace(settings, steps=warmup_steps + measured_steps)
    dist_info = setup_distributed(need_process_group=settings.engine == "deepspeed")
    trainer = CellTrainer(settings, Path(base_dir), [Path(p) for p in train_jsonl], dist_info)
    for _ in range(warmup_steps):
        trainer.step()
    if dist_info.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dist_info.device)
    times, data_waits, counts = [], [], torch.zeros(4, dtype=torch.float64)
    for _ in range(measured_steps):
        synchronize(dist_info.device)
        start = time.perf_counter()
        r = trainer.step()
        synchronize(dist_info.device)
        times.append(time.perf_counter() - start)
        data_waits.append(r["data_wait_s"])
        counts += torch.tensor([r["samples"], r["images"], r["tokens"], r["crops"]], dtype=torch.float64)
    memory = peak_memory_mb(dist_info.device)
    peak = torch.tensor([memory["allocated"], memory["reserved"]], dtype=torch.float64)
    if dist.is_initialized() and dist_info.world_size > 1:
        dist.all_reduce(counts)
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        # A step ends when the slowest rank ends it.
        step_times = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(step_times, op=dist.ReduceOp.MAX)
        times = step_times.tolist()
    samples, images, tokens, crops = (int(v) for v in counts.tolist())
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    shape = shape_of(base.config)
    result = summarise(times, samples, images, tokens, crops, shape.vision_tokens_per_crop)
    result["data_wait_s"] = spread(data_waits)
    flops = flops_per_sample(shape, result["mean_tokens_per_sample"],
                             result["mean_crops_per_sample"], settings.strategy)
    result["tflop_per_sample"] = flops["total"] / 1e12
    result["peak_tflops"] = peak_tflops
    result["mfu"] = (mfu(result["samples_per_s"], flops["total"], dist_info.world_size, peak_tflops)
                     if peak_tflops else None)
    result.update(
        peak_memory_mb=float(peak[0]),
        peak_memory_reserved_mb=float(peak[1]),
        peak_memory_kind=memory["kind"],
        measured_steps=measured_steps,
        warmup_steps=warmup_steps,
        global_batch=settings.global_batch,
        world_size=dist_info.world_size,
        num_crops=settings.num_crops,
        precision_mode=trainer.precision_mode,
        engine=settings.engine,
        gradient_checkpointing=settings.gradient_checkpointing,
        per_device_batch=settings.per_device_batch,
        loader_workers=settings.loader_workers,
        loader_prefetch=settings.loader_prefetch,
        attention_used=attention_backends(trainer.model),
        device=device_description(dist_info.device),
        step_times_s=times,
        data_waits_s=data_waits,
        is_main=dist_info.is_main,
    )
    return result


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} (driver {nvidia_driver_version()}, CUDA runtime {torch.version.cuda})"
    import platform

    return f"cpu {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def nvidia_driver_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
