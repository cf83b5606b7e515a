"""What trains under each strategy, the precision of what does not, and the weight-decay groups."""

from __future__ import annotations

import torch

from ftbench.models.loading import unused_vision_parameters
from ftbench.schema import BASE_WEIGHT_STRATEGIES
from ftbench.training.settings import DTYPES, TrainSettings

LM_LORA_TARGETS = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head")
VISION_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


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
    if settings.strategy in BASE_WEIGHT_STRATEGIES:
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
