"""The two engines of the recipe behind one interface: DeepSpeed ZeRO-2 (``full``, ``frozen_vision``) and
PyTorch DDP (``lora``, ``qlora``, ``dora``; one process: the plain model).

``forward_backward(batch, weight, last)`` backpropagates ``weight`` times the micro-batch's mean
answer loss (the loop chooses the weight; see ``ftbench.train``) and returns that mean;
``optimizer_step()`` clips, updates and advances the schedule; ``save_state``/``load_state`` write
and read what the next step depends on (weights that train, optimizer, schedule, loss scaler).
Both engines average gradients over the ranks; neither divides by the accumulation steps (DeepSpeed
would, by default, in ``engine.backward``: switched off with ``scale_wrt_gas=False``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from pathlib import Path

import torch

from ftbench.training.distributed import Distributed
from ftbench.training.settings import DTYPES, TrainSettings


def deepspeed_config(settings: TrainSettings, grad_accum: int, world: int, device: torch.device) -> dict:
    """The recipe's inline ZeRO-2 dict with the Trainer's "auto" values filled in."""
    fp16_native = device.type == "cuda" and settings.precision == "fp16"
    return {
        "train_micro_batch_size_per_gpu": settings.per_device_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": settings.per_device_batch * grad_accum * world,
        "gradient_clipping": settings.max_grad_norm,
        "zero_optimization": {
            "stage": 2,
            "allgather_partitions": True,
            "allgather_bucket_size": 5e8,
            # Overlapping needs a side stream: only on GPUs.
            "overlap_comm": device.type == "cuda",
            "reduce_scatter": True,
            "reduce_bucket_size": 5e8,
            "contiguous_gradients": True,
            "round_robin_gradients": True,
        },
        "fp16": {
            "enabled": fp16_native,
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": settings.precision == "bf16"},
        "steps_per_print": 10**9,
    }


class Engine(ABC):
    """What the training loop needs from an engine; ``precision_mode`` says how it computes."""

    precision_mode: str

    def __init__(self, model, settings: TrainSettings, dist_info: Distributed):
        self.model = model
        self.settings = settings
        self.dist = dist_info
        self.autocast_dtype = DTYPES[settings.precision]

    def autocast(self):
        if self.autocast_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    @property
    def module(self) -> torch.nn.Module:
        """The trained model itself (not a wrapper): what is saved at the end."""
        return self.model

    @abstractmethod
    def forward_backward(self, batch: dict, weight: float, last: bool) -> torch.Tensor:
        """One micro-batch (on the device); ``last``: the step's last one, where gradients are
        reduced over the ranks. Returns the micro-batch's mean answer loss, detached."""

    @abstractmethod
    def optimizer_step(self) -> tuple[float, float]:
        """Clips and applies the accumulated gradients; returns (gradient norm, learning rate of this step)."""

    @abstractmethod
    def save_state(self, partial_root: Path, name: str) -> None:
        """Collective: writes this engine's state into ``partial_root / name``."""

    @abstractmethod
    def load_state(self, folder: Path) -> None:
        """Restores what ``save_state`` wrote into ``folder``."""


class DeepSpeedEngine(Engine):
    """ZeRO-2: optimizer states and gradients partitioned over the ranks; DeepSpeed's bf16 (or, on
    GPUs, fp16) mixed precision holds the fp32 master weights."""

    def __init__(self, model, optimizer, scheduler, settings: TrainSettings, dist_info: Distributed, grad_accum: int):
        import deepspeed

        super().__init__(model, settings, dist_info)
        config = deepspeed_config(settings, grad_accum, dist_info.world_size, dist_info.device)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        if config["bf16"]["enabled"]:
            self.precision_mode = "deepspeed-bf16"
        elif config["fp16"]["enabled"]:
            self.precision_mode = "deepspeed-fp16"
        elif settings.precision == "fp32":
            self.precision_mode = "deepspeed-fp32"
        else:
            # DeepSpeed's CPU accelerator has no fp16 engine: fp32 master weights + fp16 autocast.
            self.precision_mode = "deepspeed-fp32-master+autocast-fp16"

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    def forward_backward(self, batch: dict, weight: float, last: bool) -> torch.Tensor:
        # ZeRO-2 reduces gradients in every backward; the boundary is where they are finalised. Set
        # by the loop instead of DeepSpeed's micro-step counter: a step's micro-batch count varies.
        self.engine.set_gradient_accumulation_boundary(last)
        with self.autocast():
            loss = self.engine(**batch).loss
        self.engine.backward(loss * weight, scale_wrt_gas=False)
        return loss.detach()

    def optimizer_step(self) -> tuple[float, float]:
        lr = self.scheduler.get_last_lr()[0]
        self.engine.step()  # clips, steps the optimizer and the schedule, zeroes the gradients
        grad_norm = self.engine.get_global_grad_norm()
        return float(grad_norm) if grad_norm is not None else float("nan"), lr

    def save_state(self, partial_root: Path, name: str) -> None:
        # ZeRO-2 partitions optimizer states across ranks: DeepSpeed writes each rank's shard.
        self.engine.save_checkpoint(str(partial_root), tag=name, save_latest=False)

    def load_state(self, folder: Path) -> None:
        loaded, _ = self.engine.load_checkpoint(str(folder.parent), tag=folder.name)
        if loaded is None:
            raise FileNotFoundError(f"{folder}: DeepSpeed found no checkpoint to load")


class DDPEngine(Engine):
    """Every rank holds the whole model and optimizer; gradients are averaged in the step's last
    backward (``no_sync`` before it). Autocast computes in bf16/fp16; fp16 scales the loss."""

    def __init__(self, model, optimizer, scheduler, settings: TrainSettings, dist_info: Distributed):
        super().__init__(model, settings, dist_info)
        self.wrapped = model
        if dist_info.world_size > 1:
            self.wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.scaler = torch.amp.GradScaler(dist_info.device.type, enabled=settings.precision == "fp16")
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.precision_mode = f"autocast-{settings.precision}"

    def forward_backward(self, batch: dict, weight: float, last: bool) -> torch.Tensor:
        sync = last or not isinstance(self.wrapped, torch.nn.parallel.DistributedDataParallel)
        with nullcontext() if sync else self.wrapped.no_sync():
            with self.autocast():
                loss = self.wrapped(**batch).loss
            self.scaler.scale(loss * weight).backward()
        return loss.detach()

    def optimizer_step(self) -> tuple[float, float]:
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.settings.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return float(grad_norm), lr

    def save_state(self, partial_root: Path, name: str) -> None:
        if self.dist.is_main:  # every rank holds the same weights and optimizer state
            torch.save(
                {
                    "trainable": {n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad},
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                },
                partial_root / name / "state.pt",
            )

    def load_state(self, folder: Path) -> None:
        state = torch.load(folder / "state.pt", map_location=self.dist.device, weights_only=True)
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if set(params) != set(state["trainable"]):
            raise ValueError(f"{folder / 'state.pt'}: trained parameters do not match this cell's model")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state["trainable"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_engine(model, optimizer, scheduler, settings: TrainSettings, dist_info: Distributed,
                 grad_accum: int) -> Engine:
    if settings.engine == "deepspeed":
        return DeepSpeedEngine(model, optimizer, scheduler, settings, dist_info, grad_accum)
    return DDPEngine(model, optimizer, scheduler, settings, dist_info)
