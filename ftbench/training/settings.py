"""What one matrix cell trains: ``TrainSettings``, the JSON the workflow passes to the train and speed jobs.

Strategies and engines follow the recipe (microsoft/PhiCookBook md/03.FineTuning/FineTuning_Vision.md
and its scripts): ``full`` and ``frozen_vision`` run through DeepSpeed ZeRO-2, ``lora`` and ``qlora``
through plain DDP.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

from ftbench.schema import ADAPTER_STRATEGIES, BASE_WEIGHT_STRATEGIES, STRATEGIES, hardware_default, task_default

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # fp32: no autocast
# Settings that do not change what a step computes: a checkpoint written under other values of
# these is still valid. The loader's only change where and when the same batches are encoded.
RESULT_NEUTRAL_SETTINGS = ("log_every", "loader_workers", "loader_prefetch")


@dataclass
class TrainSettings:
    """What a cell trains. A field that is a config key takes the config schema's default (the one home
    of every default): the workflow always passes it (``ftbench.config.train_settings``), a test or
    a run by hand may leave it out."""

    strategy: str
    precision: str = "bf16"
    attention: str = "sdpa"
    seed: int = 0
    steps: int = 50  # optimizer steps
    global_batch: int = 16
    # Samples per forward pass: a speed knob only (the loss is normalised over the global batch's
    # answer tokens, docs/performance.md).
    per_device_batch: int = 1
    learning_rate: float = 4e-5
    weight_decay: float = task_default("weight_decay")
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    num_crops: int = 4
    lora_rank: int = task_default("lora_rank")
    lora_alpha: int = task_default("lora_alpha")
    lora_dropout: float = task_default("lora_dropout")
    lora_init: str = task_default("lora_init")
    # The recipe's vision freeze also freezes the input token embeddings (its image module holds
    # the shared embedding); kept as the default, documented in docs/model.md.
    freeze_embed_tokens: bool = True
    gradient_checkpointing: bool = task_default("gradient_checkpointing")
    log_every: int = 10
    # Training sequences longer than this are refused or truncated (None: the model's context length).
    max_length: int | None = None
    truncation: str = "refuse"
    # "deepspeed" for full/frozen_vision and "ddp" for lora/qlora, as the recipe; empty = that default.
    engine: str = ""
    # DataLoader worker processes that encode the batches (0: in the training process) and the
    # steps each of them prepares ahead.
    loader_workers: int = hardware_default("loader_workers")
    loader_prefetch: int = hardware_default("loader_prefetch")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown value {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.precision not in DTYPES:
            raise ValueError(f"precision: unknown value {self.precision!r}")
        if not self.engine:
            self.engine = "deepspeed" if self.strategy in BASE_WEIGHT_STRATEGIES else "ddp"
        if self.engine not in ("deepspeed", "ddp"):
            raise ValueError(f"engine: unknown value {self.engine!r}")
        if self.loader_workers < 0 or self.loader_prefetch < 1:
            raise ValueError(f"loader_workers {self.loader_workers} / loader_prefetch {self.loader_prefetch}: "
                             "expected workers >= 0 and prefetch >= 1")

    @property
    def trains_adapter(self) -> bool:
        return self.strategy in ADAPTER_STRATEGIES


def result_settings(settings: TrainSettings) -> dict:
    """The settings a checkpoint must agree with, as they read back from its JSON."""
    return json.loads(json.dumps({k: v for k, v in asdict(settings).items() if k not in RESULT_NEUTRAL_SETTINGS}))
