"""Training of one matrix cell, as the recipe does it, readable top to bottom.

Strategies (../shared/reference/cookbook.md §6): ``full`` and ``frozen_vision`` run through DeepSpeed
ZeRO-2, ``lora`` and ``qlora`` through plain DDP. One optimizer step consumes exactly
``global_batch`` samples whatever the layout (nodes x processes), split into per-device
micro-batches with gradient accumulation, so cells that differ only in layout see the same data.

Checkpoints (every ``checkpoint_every`` optimizer steps) hold what the next step depends on: the
trained weights, optimizer, scheduler and loss-scaler states, every rank's RNG states and the data
position (the step count: the sample order is a function of the seed). A rerun of the cell resumes
from the newest checkpoint whose files match its manifest (``ftbench.checkpoint_files``) and ends with
the same weights as an uninterrupted run; a damaged checkpoint is reported in one line naming the
file and removed, and the cell falls back to an older one or starts over.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ftbench.atomic import write_json_atomic, write_text_atomic
from ftbench.checkpoint_files import checkpoint_problem, write_manifest
from ftbench.data.common import image_root_for, read_examples
from ftbench.models.loading import attention_backends, load_model, load_tokenizer, unused_vision_parameters
from ftbench.processing import Phi3VProcessor, collate

STRATEGIES = ("full", "frozen_vision", "lora", "qlora", "dora")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}  # fp32: no autocast
LM_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
VISION_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass
class TrainSettings:
    strategy: str
    precision: str = "bf16"
    attention: str = "sdpa"
    seed: int = 0
    steps: int = 50  # optimizer steps
    global_batch: int = 16
    per_device_batch: int = 1
    learning_rate: float = 4e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    num_crops: int = 4
    lora_rank: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.0
    lora_init: str = "gaussian"  # the recipe's; "kaiming" is peft's default initialisation
    # The recipe's vision freeze also freezes the input token embeddings (its image module holds
    # the shared embedding); kept as the default, documented in docs/model.md.
    freeze_embed_tokens: bool = True
    gradient_checkpointing: bool = False
    # Examples whose ``source`` is listed get uniform grey images (format-only pretraining).
    blank_image_sources: tuple = ()
    log_every: int = 10
    # Training sequences longer than this are refused or truncated (None: the model's context length).
    max_length: int | None = None
    truncation: str = "refuse"
    # "deepspeed" for full/frozen_vision and "ddp" for lora/qlora, as the recipe; empty = that default.
    engine: str = ""

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown value {self.strategy!r}; expected one of {', '.join(STRATEGIES)}")
        if self.precision not in DTYPES:
            raise ValueError(f"precision: unknown value {self.precision!r}")
        if not self.engine:
            self.engine = "deepspeed" if self.strategy in ("full", "frozen_vision") else "ddp"
        if self.engine not in ("deepspeed", "ddp"):
            raise ValueError(f"engine: unknown value {self.engine!r}")


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(need_process_group: bool) -> Distributed:
    """Reads the torchrun environment. A single process outside torchrun gets a world of one
    (DeepSpeed still needs a process group: it is created on a free local port)."""
    if "RANK" not in os.environ and need_process_group:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if (world > 1 or need_process_group) and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world, local_rank, device)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def base_weights_dtype(settings: TrainSettings) -> torch.dtype:
    """LoRA and DoRA train adapters only: their frozen base is stored in the compute precision, as on
    the recipe's flash-attention path, which halves its memory (7.5 GB instead of 15 GB at full size);
    peft keeps the adapters themselves in fp32. Strategies that train base weights keep fp32 weights
    (DeepSpeed's bf16 optimizer and autocast hold the fp32 master copy). QLoRA quantises the base."""
    if settings.strategy in ("lora", "dora"):
        return DTYPES[settings.precision]
    return torch.float32


def apply_strategy(model, settings: TrainSettings):
    """Marks what trains. Returns the (possibly PEFT-wrapped) model."""
    vision = model.model.vision_embed_tokens
    unused = set(id(p) for p in unused_vision_parameters(model))
    if settings.strategy in ("full", "frozen_vision"):
        for p in model.parameters():
            p.requires_grad_(True)
        if settings.strategy == "frozen_vision":
            for p in vision.parameters():
                p.requires_grad_(False)
            if settings.freeze_embed_tokens:
                model.model.embed_tokens.weight.requires_grad_(False)
    else:
        from peft import LoraConfig, get_peft_model

        targets = lora_target_names(model)
        config = LoraConfig(
            r=settings.lora_rank,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            init_lora_weights=True if settings.lora_init == "kaiming" else settings.lora_init,
            target_modules=targets,
            bias="none",
            # DoRA: LoRA plus a trained magnitude vector per target (same targets, engine ddp).
            use_dora=settings.strategy == "dora",
        )
        model = get_peft_model(model, config)
    # The CLIP layers after the feature layer never influence the output: keep them out of
    # the optimizer so that DDP/ZeRO never wait for their gradients.
    for p in model.parameters():
        if id(p) in unused:
            p.requires_grad_(False)
    return model


def lora_target_names(model) -> list[str]:
    """Full module names for LoRA: the recipe's language targets and the CLIP and projector
    linears, excluding CLIP layers that are never run."""
    vision = model.model.vision_embed_tokens
    unused_layers = {f"encoder.layers.{i}." for i in range(vision.num_layers_used, len(vision.clip.encoder.layers))}
    names = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if not hasattr(module, "weight") or isinstance(module, torch.nn.Embedding):
            continue
        if "vision_embed_tokens" in name:
            if any(u in name + "." for u in unused_layers):
                continue
            if leaf in VISION_LORA_TARGETS or name.endswith(("img_projection.0", "img_projection.2")):
                names.append(name)
        elif leaf in LM_LORA_TARGETS:
            names.append(name)
    return names


def parameter_groups(model, weight_decay: float) -> list[dict]:
    """Explicit weight-decay groups: no decay for biases, norms and the separators."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "norm" in name or "layrnorm" in name or name.endswith(("glb_GN", "sub_GN")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(optimizer, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


CHECKPOINT_DIR = "checkpoint"
# Settings that do not change what a step computes: a checkpoint written under other values of
# these is still valid.
RESULT_NEUTRAL_SETTINGS = ("log_every",)


def rng_states() -> dict:
    """This process's RNG states as JSON-able values (no pickle in checkpoints)."""
    import base64

    numpy_state = np.random.get_state()
    python_state = random.getstate()
    state = {
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "python": [python_state[0], list(python_state[1]), python_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_states(state: dict) -> None:
    import base64

    def tensor(b64: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8)

    torch.set_rng_state(tensor(state["torch"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


def checkpoint_folders(out_dir: Path) -> list[Path]:
    """A cell's checkpoints, newest first. Each was renamed into place only once complete, with its
    manifest; there are two only after a kill between that rename and the removal of the older one."""
    return sorted((p for p in (Path(out_dir) / CHECKPOINT_DIR).glob("step_*") if p.is_dir()), reverse=True)


def all_gather(obj) -> list:
    """Every rank's ``obj`` in rank order; ``[obj]`` in a world of one without a process group."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def result_settings(settings: TrainSettings) -> dict:
    """The settings a checkpoint must agree with, as they read back from its JSON."""
    return json.loads(json.dumps({k: v for k, v in asdict(settings).items() if k not in RESULT_NEUTRAL_SETTINGS}))


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


class CellTrainer:
    """Builds model, data and optimizer for one cell; ``step()`` runs one optimizer step."""

    def __init__(self, settings: TrainSettings, base_dir: Path, train_jsonl: list[Path], dist_info: Distributed):
        self.s = settings
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
        self.examples = []  # (jsonl file, example): errors name the file and the example's id
        for path in train_jsonl:
            self.examples += [(path, ex) for ex in read_examples(path)]
        if not self.examples:
            raise ValueError(f"{train_jsonl[0]}: no training examples")
        self.order = sample_order(len(self.examples), settings.steps * settings.global_batch, settings.seed)
        self.cache: dict[int, object] = {}
        optimizer = torch.optim.AdamW(
            parameter_groups(self.model, settings.weight_decay),
            lr=settings.learning_rate,
            betas=(0.9, 0.95),
            eps=1e-7,
            # One kernel over all parameters instead of a loop of small ones (docs/performance.md).
            fused=True,
        )
        scheduler = linear_schedule(optimizer, settings.warmup_steps, settings.steps)
        self.autocast_dtype = DTYPES[settings.precision]
        self.precision_mode = f"autocast-{settings.precision}"
        if settings.engine == "deepspeed":
            import deepspeed

            config = deepspeed_config(settings, self.grad_accum, dist_info.world_size, dist_info.device)
            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=self.model, optimizer=optimizer, lr_scheduler=scheduler, config=config
            )
            if config["bf16"]["enabled"]:
                self.precision_mode = "deepspeed-bf16"
            elif config["fp16"]["enabled"]:
                self.precision_mode = "deepspeed-fp16"
            else:
                # DeepSpeed's CPU accelerator has no fp16 engine: fp32 master weights + fp16 autocast.
                self.precision_mode = "deepspeed-fp32-master+autocast-fp16"
            self.scaler = None
        else:
            self.engine = self.model
            if dist_info.world_size > 1:
                self.engine = torch.nn.parallel.DistributedDataParallel(
                    self.model, find_unused_parameters=False
                )
            self.optimizer, self.scheduler = optimizer, scheduler
            self.scaler = torch.amp.GradScaler(dist_info.device.type, enabled=settings.precision == "fp16")
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.steps_done = 0

    def encoded(self, index: int):
        if index not in self.cache:
            jsonl, example = self.examples[index]
            images_root = image_root_for(jsonl)
            turns = example["conversations"]
            if example["source"] in self.s.blank_image_sources:
                enc = [self.processor.encode_generation(t, images_root, blank_images=True) for t in turns[:1]]
                answer = self.processor.encode_answer(turns[0]["assistant"])
                enc[0].input_ids += answer
                enc[0].labels += answer
                self.cache[index] = enc[0]
            else:
                self.cache[index] = self.processor.encode_training(
                    turns, images_root, where=f"{jsonl}: example {example['id']!r}")
        return self.cache[index]

    def micro_batches(self, step: int) -> list[list[int]]:
        """This rank's micro-batches of optimizer step ``step``."""
        g = self.s.global_batch
        indices = self.order[step * g : (step + 1) * g]
        per_rank = g // self.dist.world_size
        mine = indices[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        b = self.s.per_device_batch
        return [mine[i : i + b] for i in range(0, len(mine), b)]

    def autocast(self):
        if self.autocast_dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)

    def step(self) -> dict:
        """One optimizer step over ``global_batch`` samples; returns loss and counts (this rank)."""
        self.model.train()
        batches = self.micro_batches(self.steps_done)
        losses, tokens, images, samples, crops = [], 0, 0, 0, 0
        for i, indices in enumerate(batches):
            encs = [self.encoded(j) for j in indices]
            batch = collate(encs, self.processor.pad_token_id)
            tokens += int(batch["attention_mask"].sum())
            images += sum(e.num_images for e in encs)
            samples += len(encs)
            if "image_sizes" in batch:  # encoded crops: the global view plus the used sub-crops
                grid = batch["image_sizes"] // self.processor.crop_size
                crops += int((1 + grid[:, 0] * grid[:, 1]).sum())
            batch = {k: v.to(self.dist.device) for k, v in batch.items()}
            last = i == len(batches) - 1
            if self.s.engine == "deepspeed":
                with self.autocast():
                    loss = self.engine(**batch).loss
                self.engine.backward(loss)
                self.engine.step()
            else:
                sync = last or not isinstance(self.engine, torch.nn.parallel.DistributedDataParallel)
                with nullcontext() if sync else self.engine.no_sync():
                    with self.autocast():
                        loss = self.engine(**batch).loss
                    self.scaler.scale(loss / self.grad_accum).backward()
            losses.append(float(loss.detach()))
        if self.s.engine == "deepspeed":
            grad_norm = self.engine.get_global_grad_norm()
            lr = self.scheduler.get_last_lr()[0]
        else:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.s.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
        self.steps_done += 1
        loss = sum(losses) / len(losses)
        if self.dist.world_size > 1:
            t = torch.tensor([loss], device=self.dist.device)
            dist.all_reduce(t)
            loss = t.item() / self.dist.world_size
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        return {"loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "images": images, "samples": samples,
                "crops": crops}

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()

    def save_checkpoint(self, out_dir: Path, records: list[dict]) -> Path:
        """Collective: every rank writes its part into a hidden folder, the ranks record every file's
        size and sha256 in its manifest, and rank 0 renames it into place, then removes older
        checkpoints. A kill at any moment leaves the previous checkpoint intact."""
        root = Path(out_dir) / CHECKPOINT_DIR
        name = f"step_{self.steps_done:06d}"
        partial_root = root / ".partial"
        partial = partial_root / name
        if self.dist.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        self.barrier()
        if self.s.engine == "deepspeed":
            # ZeRO-2 partitions optimizer states across ranks: DeepSpeed writes each rank's shard.
            self.engine.save_checkpoint(str(partial_root), tag=name, save_latest=False)
        elif self.dist.is_main:  # DDP: every rank holds the same weights and optimizer state
            torch.save(
                {
                    "trainable": {n: p.detach().cpu() for n, p in self.model.named_parameters() if p.requires_grad},
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "scaler": self.scaler.state_dict(),
                },
                partial / "state.pt",
            )
        write_json_atomic(partial / f"rng_rank{self.dist.rank}.json", rng_states())
        if self.dist.is_main:
            write_text_atomic(partial / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
            write_json_atomic(partial / "meta.json", {
                "step": self.steps_done, "world_size": self.dist.world_size, "engine": self.s.engine,
                "settings": result_settings(self.s),
            })
        self.barrier()
        write_manifest(partial, self.dist.rank, self.dist.world_size, all_gather)
        if self.dist.is_main:
            final = root / name
            shutil.rmtree(final, ignore_errors=True)
            os.replace(partial, final)
            for old in root.glob("step_*"):
                if old.name != name:
                    shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return root / name

    def load_checkpoint(self, folder: Path) -> list[dict] | None:
        """Restores a checkpoint written by ``save_checkpoint``; returns the training log up to it,
        or None when the checkpoint belongs to other settings or another world size (then the
        cell starts over)."""
        meta = json.loads((folder / "meta.json").read_text())
        if meta["settings"] != result_settings(self.s) or meta["world_size"] != self.dist.world_size:
            return None
        if self.s.engine == "deepspeed":
            loaded, _ = self.engine.load_checkpoint(str(folder.parent), tag=folder.name)
            if loaded is None:
                raise FileNotFoundError(f"{folder}: DeepSpeed found no checkpoint to load")
        else:
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
        restore_rng_states(json.loads((folder / f"rng_rank{self.dist.rank}.json").read_text()))
        self.steps_done = meta["step"]
        log_path = folder / "train_log.jsonl"
        return [json.loads(line) for line in log_path.read_text().splitlines()]

    def save(self, out_dir: Path, base_dir: Path) -> dict:
        """Rank 0 writes the fine-tuned model (full weights, or the adapter) and its description."""
        module = self.engine.module if self.s.engine == "deepspeed" else self.model
        kind = "adapter" if self.s.strategy in ("lora", "qlora", "dora") else "full"
        target = out_dir / ("adapter" if kind == "adapter" else "model")
        if self.dist.is_main:
            if kind == "adapter":
                # lm_head carries LoRA, not trained weights: the adapter alone is enough.
                module.save_pretrained(target, save_embedding_layers=False)
            else:
                module.save_pretrained(target)
            self.tokenizer.save_pretrained(target)
        info = {
            "kind": kind,
            "path": target.name,
            "base": str(base_dir),
            "settings": asdict(self.s),
            "precision_mode": self.precision_mode,
            "quantization": "nf4" if self.s.strategy == "qlora" else None,
            "attention_used": attention_backends(self.model),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "world_size": self.dist.world_size,
            "gradient_accumulation": self.grad_accum,
        }
        return info


def resumable_checkpoint(trainer: CellTrainer, out_dir: Path, log) -> Path | None:
    """Collective: the newest checkpoint of the cell whose files match its manifest, or None. A
    damaged one is reported in one line naming the file and removed (all ranks decide alike: they
    verify together)."""
    # Rank 0's listing, so that every rank verifies the same folders.
    folders = all_gather(checkpoint_folders(out_dir) if trainer.dist.is_main else None)[0]
    for i, folder in enumerate(folders):
        problem = checkpoint_problem(folder, trainer.dist.rank, trainer.dist.world_size, all_gather)
        if problem is None:
            return folder
        if trainer.dist.is_main:
            then = f"trying {folders[i + 1].name}" if i + 1 < len(folders) else "starting over"
            log(f"checkpoint {folder}: {problem}: {then}")
            shutil.rmtree(folder, ignore_errors=True)
        trainer.barrier()
    return None


def train_cell(settings: TrainSettings, base_dir: Path, train_jsonl: list[Path], out_dir: Path, log=print,
               checkpoint_every: int = 0) -> dict:
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
            f"trainable={trainer.trainable_parameters}/{trainer.total_parameters}"
        )
    records: list[dict] = []
    resumed_from = None
    checkpoint = resumable_checkpoint(trainer, out_dir, log)
    if checkpoint is not None:
        restored = trainer.load_checkpoint(checkpoint)
        if restored is None:
            trainer.barrier()
            if dist_info.is_main:
                log(f"checkpoint {checkpoint} was written with other settings or world size: starting over")
                shutil.rmtree(checkpoint.parent, ignore_errors=True)
            trainer.barrier()
        else:
            records, resumed_from = restored, trainer.steps_done
            if dist_info.is_main:
                log(f"resumed from {checkpoint} at step {trainer.steps_done}/{settings.steps}")
    started = time.perf_counter() - (records[-1]["elapsed_s"] if records else 0.0)
    for step in range(trainer.steps_done, settings.steps):
        r = trainer.step()
        r.update(step=step + 1, elapsed_s=round(time.perf_counter() - started, 3))
        records.append(r)
        if dist_info.is_main and (step % settings.log_every == 0 or step + 1 == settings.steps):
            log(f"step {step + 1}/{settings.steps} loss {r['loss']:.4f} lr {r['lr']:.2e} grad_norm {r['grad_norm']:.3f}")
        if not math.isfinite(r["loss"]):
            raise FloatingPointError(f"loss is {r['loss']} at step {step + 1}")
        if checkpoint_every > 0 and (step + 1) % checkpoint_every == 0 and step + 1 < settings.steps:
            saved = trainer.save_checkpoint(out_dir, records)
            if dist_info.is_main:
                log(f"checkpoint {saved}")
    info = trainer.save(out_dir, Path(base_dir))
    info.update(final_loss=records[-1]["loss"], first_loss=records[0]["loss"], train_seconds=time.perf_counter() - started,
                resumed_from_step=resumed_from)
    if dist_info.is_main:
        write_text_atomic(out_dir / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        write_text_atomic(out_dir / "artifact.json", json.dumps(info, indent=2))
        # The finished model replaces the checkpoint (at full size it is several times larger).
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    trainer.barrier()
    return info
