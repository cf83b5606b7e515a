"""Loading and saving Phi-3(.5)-vision checkpoints: safetensors only, never remote code.

Two folder kinds load: ftbench's own checkpoints (written by ``save_base``/training, read with
``from_pretrained``) and the official Microsoft checkpoints in their original layout (remote-code
config.json; read strictly by ``ftbench.models.official``)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from ftbench.atomic import share_like_open
from ftbench.models.official import (
    config_for_folder,
    expected_shapes,
    is_official_config,
    load_official,
    meta_model,
    mismatch_error,
    official_from_pretrained,
    read_config_json,
    read_headers,
)
from ftbench.models.phi3v import Phi3VConfig, Phi3VForCausalLM
from ftbench.models.quantization import keep_unpackable_layers_unpacked

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
    precision of an NF4-quantised base (QLoRA); every linear layer but ``lm_head`` is quantised.

    An official checkpoint (remote-code config.json: ``auto_map``, ``rope_scaling`` of type ``su``,
    or no ``rope_parameters``/``vision_config``) is loaded strictly by ``load_official`` (onto
    ``device``); ftbench's own checkpoints go through ``from_pretrained``."""
    folder = Path(folder)
    official = is_official_config(read_config_json(folder))
    if official and not quantize_4bit:
        return load_official(folder, attention=attention, dtype=dtype, device=device)
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
    if official:
        model = official_from_pretrained(folder, attention, dtype, **kwargs)
    else:
        check_tensors(folder)
        model = Phi3VForCausalLM.from_pretrained(
            str(folder), attn_implementation=attention, dtype=dtype, use_safetensors=True, **kwargs
        )
    if quantize_4bit:
        # bitsandbytes' AVX512-BF16 repacking raises for layers narrower than its blocks (the tiny
        # CLIP tower): those stay on its plain 4-bit path (ftbench.models.quantization).
        keep_unpackable_layers_unpacked(model)
    return model


def check_tensors(folder: Path) -> None:
    """Refuses, in one line naming the folder and the keys, a checkpoint whose safetensors do not hold
    exactly the tensors its config.json describes (``from_pretrained`` would silently initialise
    missing or renamed tensors at random). Reads only the headers."""
    config = config_for_folder(folder)
    headers, problems = read_headers(folder)
    error = mismatch_error(folder, headers, expected_shapes(meta_model(config)), problems)
    if error is not None:
        raise error


def attention_backends(model) -> dict:
    """The attention implementations the decoder and the CLIP tower actually use."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "decoder": base.config._attn_implementation,
        "vision": base.model.vision_embed_tokens.clip.config._attn_implementation,
    }


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
    share_like_open(folder)  # safetensors writes 0600 files: readable as the umask allows


__all__ = ["Phi3VConfig", "attention_backends", "load_model", "load_official", "load_tokenizer", "save_base",
           "unused_vision_parameters"]
