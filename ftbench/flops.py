"""Model FLOPs per training sample and MFU (PaLM, arXiv:2204.02311 appendix B; docs/performance.md).

PaLM/torchtitan convention: forward + backward, no recompute, attention not discounted for
causality. Per sample with T language-model tokens and C encoded crops:

    language   k_lm * N_LM * T + 12 * L * d * T^2
    vision     C * (k_v * N_ViT * t_v + (12 or 4) * L_v * d_v * t_v^2)     t_v = tokens per crop (577)
    projector  k_p * N_proj * m^2 * C                                       m^2 = merged tokens per crop

k = 6 for trained weights, 2 for a frozen tower (forward only), 4 for frozen base weights under
LoRA (no weight-gradient matmuls). N counts matmul weights only (lm_head in, embedding lookup out);
only the CLIP layers that are run count.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dense bf16/fp16 peaks of the cards the recipe and ftbench use, TFLOP/s.
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "v100": 125.0}


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    vision_layers_used: int
    vision_hidden: int
    vision_intermediate: int
    vision_tokens_per_crop: int
    merged_tokens_per_crop: int

    @property
    def n_lm(self) -> int:
        head_dim = self.hidden // self.heads
        attention = self.hidden * self.hidden * 2 + 2 * self.hidden * self.kv_heads * head_dim  # q, o, k, v
        mlp = 3 * self.hidden * self.intermediate  # fused gate_up (2x) + down
        return self.layers * (attention + mlp) + self.hidden * self.vocab

    @property
    def n_vit(self) -> int:
        return self.vision_layers_used * (4 * self.vision_hidden**2 + 2 * self.vision_hidden * self.vision_intermediate)

    @property
    def n_proj(self) -> int:
        return 4 * self.vision_hidden * self.hidden + self.hidden * self.hidden


def shape_of(config) -> ModelShape:
    """From a ``Phi3VConfig``."""
    vision = config.vision_config
    layer_idx = int(config.img_processor.get("layer_idx", -2))
    n_layers = vision["num_hidden_layers"]
    patches = vision["image_size"] // vision["patch_size"]
    return ModelShape(
        layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        vision_layers_used=n_layers + 1 + layer_idx if layer_idx < 0 else layer_idx,
        vision_hidden=vision["hidden_size"],
        vision_intermediate=vision["intermediate_size"],
        vision_tokens_per_crop=patches * patches + 1,
        merged_tokens_per_crop=(patches // 2) ** 2,
    )


def flops_per_sample(shape: ModelShape, lm_tokens: float, crops: float, strategy: str = "full") -> dict:
    """FLOPs of one training sample, by term (and ``total``)."""
    k_lm, k_vision, vision_attention = {
        "full": (6, 6, 12),
        "frozen_vision": (6, 2, 4),
        "lora": (4, 4, 12),
        "qlora": (4, 4, 12),
        "dora": (4, 4, 12),
    }[strategy]
    t, tv = lm_tokens, shape.vision_tokens_per_crop
    terms = {
        "lm_dense": k_lm * shape.n_lm * t,
        "lm_attention": 12 * shape.layers * shape.hidden * t * t,
        "vision_dense": crops * k_vision * shape.n_vit * tv,
        "vision_attention": crops * vision_attention * shape.vision_layers_used * shape.vision_hidden * tv * tv,
        "projector": k_vision * shape.n_proj * shape.merged_tokens_per_crop * crops,
    }
    terms["total"] = sum(terms.values())
    return terms


def mfu(samples_per_s: float, flops_per_sample_total: float, devices: int, peak_tflops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the devices' dense peak."""
    return samples_per_s * flops_per_sample_total / (devices * peak_tflops * 1e12)
