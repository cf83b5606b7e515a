"""Named architectures. ``tiny`` is the embedded default: the Phi-3.5-vision architecture at toy
size, trained from scratch on CPU; the full-size presets build the real shapes (random weights)
for speed runs without any download."""

from __future__ import annotations

from ftbench.models.phi3v import CLIP_VIT_L_336, Phi3VConfig

TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,  # features come from layer -2: the third layer is never run
    num_attention_heads=4,
    patch_size=14,
    image_size=56,  # 4x4 patches -> 2x2 merged tokens per crop
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=32,
    attention_dropout=0.0,
)


def tiny_config(tokenizer, attention: str = "sdpa") -> Phi3VConfig:
    head_dim = 16
    return Phi3VConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "short_factor": [1.0] * (head_dim // 2),
            "long_factor": [1.0 + 0.5 * i for i in range(head_dim // 2)],
            "original_max_position_embeddings": 4096,
        },
        bos_token_id=tokenizer.convert_tokens_to_ids("<s>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image|>"),
        tie_word_embeddings=False,
        vision_config=dict(TINY_VISION),
        img_processor={
            "image_dim_out": TINY_VISION["hidden_size"],
            "name": "clip_vision_model",
            "num_img_tokens": 4,
        },
        attn_implementation=attention,
    )


def phi35_vision_config(attention: str = "sdpa") -> Phi3VConfig:
    """Shapes of microsoft/Phi-3.5-vision-instruct (rope factors neutral: for random-weight runs)."""
    return Phi3VConfig(
        vocab_size=32064,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "short_factor": [1.0] * 48,
            "long_factor": [1.0] * 48,
            "original_max_position_embeddings": 4096,
        },
        sliding_window=262144,
        bos_token_id=1,
        eos_token_id=[32007, 32000],
        pad_token_id=32000,
        image_token_id=32044,
        vision_config=dict(CLIP_VIT_L_336),
        attn_implementation=attention,
    )


def preset_config(name: str, attention: str = "sdpa", vocab_size: int = 512) -> Phi3VConfig:
    """The architecture of a named preset (``tiny`` gets a vocabulary of ``vocab_size`` ids)."""
    if name == "phi3.5-vision":
        return phi35_vision_config(attention)
    if name == "phi3-vision-128k":
        config = phi35_vision_config(attention)  # same shapes; differs in rope factors, window and crops
        config.sliding_window = 131072
        config.num_crops = 16
        return config
    if name == "tiny":
        return tiny_config(_Vocabulary(vocab_size), attention)
    raise ValueError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})")


def random_model(name: str, attention: str = "sdpa", dtype=None, device="cpu", seed: int = 0):
    """``random`` weights mode: the full architecture of a preset with random weights, built
    directly on ``device`` without any download (speed runs and tests)."""
    import torch

    from ftbench.models.phi3v import Phi3VForCausalLM

    torch.manual_seed(seed)
    config = preset_config(name, attention)
    with torch.device(device):
        model = Phi3VForCausalLM(config)
    return model.to(dtype) if dtype is not None else model


class _Vocabulary:
    """What ``tiny_config`` needs from a tokenizer where only ids matter: its size and the ids of
    the special tokens (the trained tiny tokenizer puts them first, in this order)."""

    def __init__(self, size: int):
        from ftbench.models.processing_phi3v import CHAT_SPECIAL_TOKENS
        from ftbench.models.tokenizer import BASE_SPECIAL_TOKENS

        self.size = size
        self.ids = {t: i for i, t in enumerate(BASE_SPECIAL_TOKENS + CHAT_SPECIAL_TOKENS)}

    def __len__(self) -> int:
        return self.size

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.ids[token]


PRESETS = ("phi3.5-vision", "phi3-vision-128k", "tiny")
