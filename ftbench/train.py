"""Training of one matrix cell, as the recipe does it, readable top to bottom.

``train_cell`` builds the cell (``CellTrainer``: model, strategy, data pipeline, engine), resumes
from its newest checkpoint, runs the optimizer steps, checkpoints every ``checkpoint_every`` steps
and saves the model. The parts live in ``ftbench.training``: settings, strategies, the data
pipeline, the two engines and the checkpoint protocol.

One optimizer step trains on ``global_batch`` samples split over the ranks and, on each rank, into
micro-batches (``ftbench.training.data``). Its loss is the mean over the answer tokens of the whole
global batch: the sum of the token losses over all micro-batches and ranks divided by their total
number, counted before the first forward pass. Each micro-batch therefore backpropagates its mean
loss weighted by ``its answer tokens x world size / the step's answer tokens`` (the engines average
over the ranks), and ``per_device_batch`` and the number of processes change only the speed, not
the gradient (up to float rounding; docs/performance.md).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ftbench.atomic import share_like_open, write_text_atomic
from ftbench.data.manifest import converted_examples
from ftbench.models.loading import attention_backends, load_model, load_tokenizer
from ftbench.models.processing_phi3v import Phi3VProcessor
from ftbench.training.checkpoint import remove_checkpoints, resume, save_checkpoint
from ftbench.training.data import StepBatch, StepBatches, micro_batch_plan, step_loader
from ftbench.training.distributed import Distributed, all_reduce, barrier, setup_distributed
from ftbench.training.engines import build_engine
from ftbench.training.settings import TrainSettings
from ftbench.training.strategies import apply_strategy, base_weights_dtype, parameter_groups


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class CellTrainer:
    """Builds model, data and engine for one cell; ``step()`` runs the next optimizer step."""

    def __init__(self, settings: TrainSettings, base_dir: Path, train_jsonl: list[Path], dist_info: Distributed):
        self.settings = settings
        self.dist = dist_info
        self.grad_accum = micro_batch_plan(settings.global_batch, dist_info.world_size, settings.per_device_batch)
        set_seed(settings.seed)
        self.tokenizer = load_tokenizer(base_dir)
        quantize = settings.precision if settings.strategy == "qlora" else None
        model = load_model(base_dir, attention=settings.attention, quantize_4bit=quantize, device=dist_info.device,
                           dtype=base_weights_dtype(settings))
        self.processor = Phi3VProcessor.for_model(self.tokenizer, model.config, settings.num_crops,
                                                  max_length=settings.max_length, truncation=settings.truncation)
        if settings.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = apply_strategy(model, settings)
        self.model.to(dist_info.device)
        self.trainable_parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.total_parameters = sum(p.numel() for p in self.model.parameters())
        examples = [(path, ex) for path in train_jsonl for ex in converted_examples(path)]
        if not examples:
            raise ValueError(f"{train_jsonl[0]}: no training examples")
        self.batches = StepBatches(examples, self.processor, steps=settings.steps, global_batch=settings.global_batch,
                                   per_device_batch=settings.per_device_batch, seed=settings.seed,
                                   rank=dist_info.rank, world_size=dist_info.world_size)
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, settings.weight_decay),
            lr=settings.learning_rate,
            betas=(0.9, 0.95),
            eps=1e-7,
            # One kernel over all parameters instead of a loop of small ones (docs/performance.md).
            fused=True,
        )
        scheduler = linear_schedule(optimizer, settings.warmup_steps, settings.steps)
        self.engine = build_engine(self.model, optimizer, scheduler, settings, dist_info, self.grad_accum)
        self.precision_mode = self.engine.precision_mode
        self.steps_done = 0
        self.step_batches = None  # the data pipeline's iterator, started at the first step (after a resume)

    def next_batch(self) -> tuple[StepBatch, float]:
        """This rank's batch of the next step and the seconds spent waiting for it."""
        if self.step_batches is None:
            loader = step_loader(self.batches, self.steps_done, self.settings.loader_workers,
                                 self.settings.loader_prefetch, pin_memory=self.dist.device.type == "cuda")
            self.step_batches = iter(loader)
        waited = time.perf_counter()
        batch = next(self.step_batches)
        data_wait = time.perf_counter() - waited
        assert batch.step == self.steps_done, (batch.step, self.steps_done)
        if batch.error is not None:
            raise batch.error
        return batch, data_wait

    def step(self) -> dict:
        """One optimizer step over ``global_batch`` samples; returns its loss (over the global batch),
        this rank's counts and the data wait (the slowest rank's)."""
        self.model.train()
        batch, data_wait = self.next_batch()
        device = self.dist.device
        (targets,) = all_reduce([sum(batch.targets)], device)
        # ZeRO-2 reduces gradients in every backward: all ranks run as many micro-batches, a rank
        # with fewer (its share split around the LongRoPE switch into fewer) repeats its last one
        # with weight 0.
        micro_steps, data_wait = all_reduce([len(batch.micro_batches), data_wait], device, op="max")
        weight_per_target = self.dist.world_size / max(targets, 1)
        loss_sum = torch.zeros((), device=device)
        for i in range(int(micro_steps)):
            mine = i < len(batch.micro_batches)
            micro_batch = batch.micro_batches[i] if mine else batch.micro_batches[-1]
            n_targets = batch.targets[i] if mine else 0
            loss = self.engine.forward_backward(self.processor.to_device(micro_batch, device),
                                                n_targets * weight_per_target, last=i == micro_steps - 1)
            loss_sum += loss.float() * n_targets
        grad_norm, lr = self.engine.optimizer_step()
        self.steps_done += 1
        if self.steps_done == self.settings.steps:
            self.step_batches = None  # ends the loader's workers
        (loss_sum,) = all_reduce([loss_sum.item()], device)
        return {"loss": loss_sum / max(targets, 1), "lr": lr, "grad_norm": grad_norm, "tokens": batch.tokens,
                "images": batch.images, "samples": batch.samples, "crops": batch.crops,
                "data_wait_s": round(data_wait, 4)}

    def save(self, out_dir: Path, base_dir: Path) -> dict:
        """Rank 0 writes the fine-tuned model (full weights, or the adapter) and its description."""
        module = self.engine.module
        kind = "adapter" if self.settings.trains_adapter else "full"
        target = out_dir / ("adapter" if kind == "adapter" else "model")
        if self.dist.is_main:
            if kind == "adapter":
                # lm_head carries LoRA, not trained weights: the adapter alone is enough.
                module.save_pretrained(target, save_embedding_layers=False)
            else:
                module.save_pretrained(target)
            self.tokenizer.save_pretrained(target)
            share_like_open(target)  # safetensors writes 0600 files: readable as the umask allows
        return {
            "kind": kind,
            "path": target.name,
            "base": str(base_dir),
            "settings": asdict(self.settings),
            "precision_mode": self.precision_mode,
            "quantization": "nf4" if self.settings.strategy == "qlora" else None,
            "attention_used": attention_backends(self.model),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "world_size": self.dist.world_size,
            "gradient_accumulation": self.grad_accum,
        }


def train_cell(settings: TrainSettings, base_dir: Path, train_jsonl: list[Path], out_dir: Path, log=print, *,
               checkpoint_every: int) -> dict:
    """Trains one cell and writes ``out_dir/{model|adapter}``, ``train_log.jsonl`` and, last,
    ``artifact.json`` (the marker that the cell finished). With ``checkpoint_every`` > 0 a checkpoint
    is kept under ``out_dir/checkpoint/``; a rerun resumes from it, and it is removed at the end."""
    dist_info = setup_distributed(need_process_group=settings.engine == "deepspeed")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = CellTrainer(settings, Path(base_dir), [Path(p) for p in train_jsonl], dist_info)
    if dist_info.is_main:
        log(
            f"strategy={settings.strategy} engine={settings.engine} world_size={dist_info.world_size} "
            f"grad_accum={trainer.grad_accum} precision_mode={trainer.precision_mode} "
            f"trainable={trainer.trainable_parameters}/{trainer.total_parameters} "
            f"loader_workers={settings.loader_workers}"
        )
    trainer.steps_done, records = resume(trainer.engine, settings, dist_info, out_dir, log)
    resumed_from = trainer.steps_done or None
    started = time.perf_counter() - (records[-1]["elapsed_s"] if records else 0.0)
    while trainer.steps_done < settings.steps:
        r = trainer.step()
        step = trainer.steps_done
        r.update(step=step, elapsed_s=round(time.perf_counter() - started, 3))
        records.append(r)
        if dist_info.is_main and ((step - 1) % settings.log_every == 0 or step == settings.steps):
            log(f"step {step}/{settings.steps} loss {r['loss']:.4f} lr {r['lr']:.2e} grad_norm {r['grad_norm']:.3f} "
                f"data_wait {r['data_wait_s']:.3f}s")
        if not math.isfinite(r["loss"]):
            raise FloatingPointError(f"loss is {r['loss']} at step {step}")
        if checkpoint_every > 0 and step % checkpoint_every == 0 and step < settings.steps:
            saved = save_checkpoint(trainer.engine, settings, dist_info, step, out_dir, records)
            if dist_info.is_main:
                log(f"checkpoint {saved}")
    info = trainer.save(out_dir, Path(base_dir))
    info.update(final_loss=records[-1]["loss"], first_loss=records[0]["loss"],
                train_seconds=time.perf_counter() - started, resumed_from_step=resumed_from)
    if dist_info.is_main:
        write_text_atomic(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        write_text_atomic(out_dir / "artifact.json", json.dumps(info, indent=2))
        remove_checkpoints(out_dir)
    barrier()
    return info
