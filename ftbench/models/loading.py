"""Loading and saving Phi-3(.5)-vision checkpoints: safetensors only, never remote code."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from ftbench.models.phi3v import Phi3VConfig, Phi3VForCausalLM

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def load_model(
    folder: Path,
    attention: str = "sdpa",
    quantize_4bit: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Phi3VForCausalLM:
    """A checkpoint folder (config.json + safetensors) -> model. ``quantize_4bit`` names the compute
    precision of an NF4-quantised base (QLoRA); every linear layer but ``lm_head`` is quantised."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a checkpoint folder)")
    kwargs = {}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=COMPUTE_DTYPES[quantize_4bit],
            llm_int8_skip_modules=["lm_head"],
        )
        kwargs["device_map"] = {"": str(device)}
    model = Phi3VForCausalLM.from_pretrained(
        str(folder), attn_implementation=attention, dtype=dtype, use_safetensors=True, **kwargs
    )
    return model


def unused_vision_parameters(model) -> list[torch.nn.Parameter]:
    """Parameters of the CLIP layers after the feature layer and of post_layernorm: they are
    in the checkpoint but can never influence an output."""
    vision = model.model.vision_embed_tokens
    clip = vision.clip
    params = list(clip.post_layernorm.parameters())
    for layer in clip.encoder.layers[vision.num_layers_used :]:
        params += list(layer.parameters())
    return params


def save_base(model: Phi3VForCausalLM, tokenizer, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


__all__ = ["Phi3VConfig", "load_model", "load_tokenizer", "save_base", "unused_vision_parameters"]
