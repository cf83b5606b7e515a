"""The training data of one rank: each optimizer step's micro-batches, encoded ahead by DataLoader workers.

Which samples a step trains on is a function of the seed and the step only (``sample_order``): one
optimizer step consumes ``global_batch`` samples whatever the layout (nodes x processes), rank r
taking the r-th contiguous share, so cells that differ only in layout see the same data, and a
resumed run starts at its step without replaying the ones before. The item of ``StepBatches`` is a
step: its rank share encoded, grouped by length into micro-batches of at most ``per_device_batch``
samples (never across steps, never mixing sequences on both sides of the LongRoPE switch) and
collated. Workers only encode: 0 or N of them give the same batches.

Host memory is bounded by what is in flight, not by the dataset: nothing encoded is kept, and each
prepared step holds its pixels as uint8 crops (``Encoded.crops``, a quarter of the float pixels;
the device normalises them). At most ``workers x prefetch`` steps wait in the queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ftbench.data.common import image_root_for
from ftbench.models.phi3v import IGNORE_INDEX
from ftbench.models.processing_phi3v import Phi3VProcessor, collate, length_groups


def micro_batch_plan(global_batch: int, world_size: int, per_device_batch: int) -> int:
    """Gradient-accumulation steps for the layout; refuses layouts that do not divide the batch."""
    per_step = world_size * per_device_batch
    if global_batch % per_step:
        raise ValueError(
            f"global_batch {global_batch} is not divisible by world size {world_size} x per-device batch "
            f"{per_device_batch}"
        )
    return global_batch // per_step


def sample_order(n_examples: int, n_needed: int, seed: int) -> list[int]:
    """Concatenated seeded permutations (one per epoch) of the training set."""
    order, epoch = [], 0
    while len(order) < n_needed:
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order += torch.randperm(n_examples, generator=g).tolist()
        epoch += 1
    return order[:n_needed]


def answer_targets(labels: torch.Tensor) -> int:
    """The loss positions of a batch as the model's loss head counts them
    (``Phi3VForCausalLM.answer_loss``: each position predicts the next label)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


@dataclass
class StepBatch:
    """This rank's share of one optimizer step: collated micro-batches on the host, and their counts."""

    step: int
    micro_batches: list[dict] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)  # answer tokens (loss positions) per micro-batch
    samples: int = 0
    images: int = 0
    crops: int = 0  # encoded crops: per image the global view plus its used sub-crops
    tokens: int = 0  # non-padding tokens
    # An example refused while encoding (bad image, too long): raised by the training process, so
    # that its message stays the one line naming the file and example (a worker's would be wrapped).
    error: Exception | None = None

    def pin_memory(self) -> StepBatch:
        """Called by the DataLoader's pinning thread: page-locked copies let the host-to-device
        copies run without blocking (``Phi3VProcessor.to_device``)."""
        pinned = [{k: v.pin_memory() for k, v in batch.items()} for batch in self.micro_batches]
        return replace(self, micro_batches=pinned)


class StepBatches(Dataset):
    """Item ``step``: this rank's ``StepBatch`` of optimizer step ``step`` (0-based)."""

    def __init__(self, examples: list[tuple[Path, dict]], processor: Phi3VProcessor, *, steps: int, global_batch: int,
                 per_device_batch: int, seed: int, rank: int, world_size: int):
        micro_batch_plan(global_batch, world_size, per_device_batch)
        self.examples = examples  # (jsonl file, example): errors name the file and the example's id
        self.processor = processor
        self.steps = steps
        self.global_batch = global_batch
        self.per_device_batch = per_device_batch
        self.rank = rank
        self.world_size = world_size
        self.order = sample_order(len(examples), steps * global_batch, seed)

    def __len__(self) -> int:
        return self.steps

    def samples_of(self, step: int) -> list[int]:
        """The example indices of this rank's share of step ``step``."""
        per_rank = self.global_batch // self.world_size
        start = step * self.global_batch + self.rank * per_rank
        return self.order[start : start + per_rank]

    def encode(self, index: int):
        jsonl, example = self.examples[index]
        return self.processor.encode_training(example["conversations"], image_root_for(jsonl),
                                              where=f"{jsonl}: example {example['id']!r}", uint8_crops=True)

    def __getitem__(self, step: int) -> StepBatch:
        try:
            encoded = [self.encode(i) for i in self.samples_of(step)]
        except (ValueError, FileNotFoundError) as e:  # the processor's one-line refusals
            return StepBatch(step, error=e)
        lengths = [len(e.input_ids) for e in encoded]
        groups = length_groups(lengths, self.per_device_batch, [self.processor.uses_long_rope(n) for n in lengths])
        batch = StepBatch(step, samples=len(encoded), images=sum(e.num_images for e in encoded), tokens=sum(lengths))
        for group in groups:
            collated = collate([encoded[i] for i in group], self.processor.pad_token_id)
            batch.micro_batches.append(collated)
            batch.targets.append(answer_targets(collated["labels"]))
            if "image_sizes" in collated:
                grid = collated["image_sizes"] // self.processor.crop_size
                batch.crops += int((1 + grid[:, 0] * grid[:, 1]).sum())
        return batch


def step_loader(batches: StepBatches, start_step: int, workers: int, prefetch: int, pin_memory: bool) -> DataLoader:
    """Yields ``batches[start_step]``, ``batches[start_step + 1]``, ... to the last step, encoded by
    ``workers`` processes (0: by the caller, on demand), each preparing up to ``prefetch`` steps ahead."""
    return DataLoader(
        batches,
        batch_size=None,  # an item is already a whole step
        sampler=range(start_step, len(batches)),
        num_workers=workers,
        prefetch_factor=prefetch if workers else None,
        pin_memory=pin_memory,
        # Its own generator: starting the iterator draws the workers' base seed from it, and a draw
        # from the global RNG would shift dropout after a resume (unused: encoding draws nothing).
        generator=torch.Generator(),
    )
