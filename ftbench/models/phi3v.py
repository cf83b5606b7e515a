"""Phi-3(.5)-vision, written natively on transformers' Phi3 decoder and CLIP vision tower.

The official checkpoints ship remote code that no longer runs on current transformers. This file
re-implements the model without it: ``Phi3ForCausalLM`` is reused unchanged, and the HD image
embedding (CLIP features from hidden layer -2 without CLS, 2x2 merge, learnable row and
global separators, MLP projection) is attached as ``model.vision_embed_tokens`` so that every
parameter keeps its official name (those of microsoft/Phi-3.5-vision-instruct's model.safetensors.index.json, listed in
tests/data/phi3v-weight-keys.tsv).

Image positions in ``input_ids`` are marked either with the ``<|image|>`` token id (what
``ftbench.models.processing_phi3v`` produces) or with the negative ids of the original processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3ForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100  # label of positions without a loss (prompt, image, padding)

# The vision tower that the official code hard-codes (it is not read from config.json).
CLIP_VIT_L_336 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    image_size=336,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=768,
    attention_dropout=0.0,
)


@strict
class Phi3VConfig(Phi3Config):
    """Phi3Config plus the vision blocks of the official config.json."""

    model_type = "phi3_v"

    embd_layer: dict | None = None
    img_processor: dict | None = None
    vision_config: dict | None = None
    num_crops: int = 4
    image_token_id: int = 32044

    def __post_init__(self, **kwargs):
        if self.embd_layer is None:
            self.embd_layer = {
                "embedding_cls": "image",
                "hd_transform_order": "sub_glb",
                "projection_cls": "mlp",
                "use_hd_transform": True,
                "with_learnable_separator": True,
            }
        if self.img_processor is None:
            self.img_processor = {
                "image_dim_out": 1024,
                "model_name": "openai/clip-vit-large-patch14-336",
                "name": "clip_vision_model",
                "num_img_tokens": 144,
            }
        if self.vision_config is None:
            self.vision_config = dict(CLIP_VIT_L_336)
        super().__post_init__(**kwargs)

    @property
    def feature_layer(self) -> int:
        return int(self.img_processor.get("layer_idx", -2))

    def clip_config(self) -> CLIPVisionConfig:
        clip = CLIPVisionConfig(**self.vision_config)
        clip._attn_implementation = self._attn_implementation
        return clip


class CLIPTower(nn.Module):
    """Holds the CLIP model under ``vision_model`` so that keys read
    ``img_processor.vision_model.*`` exactly as in the official checkpoints (transformers >= 5.12
    dropped that level from CLIPVisionModel itself)."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class Phi3VImageEmbedding(nn.Module):
    def __init__(self, config: Phi3VConfig):
        super().__init__()
        clip_config = config.clip_config()
        self.img_processor = CLIPTower(clip_config)
        width = clip_config.hidden_size
        self.crop_size = clip_config.image_size
        self.patches_per_side = clip_config.image_size // clip_config.patch_size
        if self.patches_per_side % 2:
            raise ValueError(
                f"vision_config: image_size/patch_size = {self.patches_per_side} must be even for the 2x2 merge"
            )
        num_layers = clip_config.num_hidden_layers
        layer_idx = config.feature_layer
        # hidden_states[layer_idx] of a CLIP with L layers is the output of layer L+1+layer_idx:
        # the layers after it are never run (the original computes and discards them).
        self.num_layers_used = num_layers + 1 + layer_idx if layer_idx < 0 else layer_idx
        merged = 4 * width
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))
        self.img_projection = nn.Sequential(
            nn.Linear(merged, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)
        )

    @property
    def clip(self) -> CLIPVisionModel:
        return self.img_processor.vision_model

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(n, 3, s, s) crops -> (n, g/2, g/2, 4*width) merged patch features."""
        clip = self.clip
        hidden = clip.pre_layrnorm(clip.embeddings(crops.to(clip.embeddings.patch_embedding.weight.dtype)))
        for layer in clip.encoder.layers[: self.num_layers_used]:
            hidden = layer(hidden, None)
        patches = hidden[:, 1:]  # drop CLS
        n, _, width = patches.shape
        g = self.patches_per_side
        m = g // 2
        # 2x2 merge: channels ordered top-left, top-right, bottom-left, bottom-right.
        grid = patches.reshape(n, m, 2, m, 2, width).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(n, m, m, 4 * width)

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values (n_img, slots, 3, s, s), image_sizes (n_img, 2) padded [h, w] ->
        (tokens of all images, hidden) in image order."""
        s = self.crop_size
        grids = [(int(h) // s, int(w) // s) for h, w in image_sizes.tolist()]
        # Only the global view and the crops actually used are encoded; the zero padding slots
        # of the processor output are skipped (the original encodes and discards them).
        used = [pixel_values[i, : 1 + hc * wc] for i, (hc, wc) in enumerate(grids)]
        features = self.crop_features(torch.cat(used))
        merged_dim = features.shape[-1]
        m = features.shape[1]
        pieces, start = [], 0
        for hc, wc in grids:
            glb, sub = features[start], features[start + 1 : start + 1 + hc * wc]
            start += 1 + hc * wc
            sub = sub.reshape(hc, wc, m, m, merged_dim).permute(0, 2, 1, 3, 4).reshape(hc * m, wc * m, merged_dim)
            sub = torch.cat([sub, self.sub_GN.reshape(1, 1, merged_dim).expand(hc * m, 1, merged_dim)], dim=1)
            glb = torch.cat([glb, self.sub_GN.reshape(1, 1, merged_dim).expand(m, 1, merged_dim)], dim=1)
            pieces += [sub.reshape(-1, merged_dim), self.glb_GN.reshape(1, merged_dim), glb.reshape(-1, merged_dim)]
        tokens = torch.cat(pieces)
        # The separators share the module's float dtype (the projection's weights may be 4-bit).
        return self.img_projection(tokens.to(self.glb_GN.dtype))


def image_token_count(height: int, width: int, crop_size: int, merged_per_side: int) -> int:
    """LM tokens for one image of padded size [height, width]: sub-crop grid with one newline per
    row, one global separator, and the global view with its newlines."""
    hc, wc = height // crop_size, width // crop_size
    m = merged_per_side
    return hc * m * (wc * m + 1) + 1 + m * (m + 1)


class Phi3VForCausalLM(Phi3ForCausalLM):
    config_class = Phi3VConfig

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.model.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):
            nn.init.zeros_(module.glb_GN)
            nn.init.zeros_(module.sub_GN)

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        return (input_ids == self.config.image_token_id) | ((input_ids < 0) & (input_ids > -1_000_000_000))

    def embed_inputs(self, input_ids, pixel_values=None, image_sizes=None) -> torch.Tensor:
        positions = self.image_positions(input_ids)
        embeds = self.model.embed_tokens(input_ids.clamp(min=0))
        if not positions.any():
            return embeds
        if pixel_values is None or image_sizes is None:
            raise ValueError("input_ids contain image positions but no pixel_values/image_sizes were given")
        features = self.model.vision_embed_tokens(pixel_values, image_sizes)
        expected = int(positions.sum())
        if features.shape[0] != expected:
            raise ValueError(f"{expected} image positions in input_ids but the images give {features.shape[0]} tokens")
        return embeds.masked_scatter(positions.unsqueeze(-1), features.to(embeds.dtype))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs,
    ):
        if inputs_embeds is None and input_ids is not None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_sizes)
            input_ids = None
        if labels is not None:
            return self.answer_loss(inputs_embeds, attention_mask, position_ids, labels, **kwargs)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def answer_loss(self, inputs_embeds, attention_mask, position_ids, labels, **kwargs) -> CausalLMOutputWithPast:
        """Training loss from the answer positions only. The usual path computes vocabulary logits at
        every position (2.5k positions x 32k ids in fp32 for a DocVQA sample: 0.3 GB, and as much again
        for their gradient) and then masks all but a few dozen of them; the mean over the same
        unmasked targets is computed here from the few rows that count. ``logits`` holds those rows."""
        outputs = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False, **kwargs)
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self.lm_head(outputs.last_hidden_state[:, :-1][keep])
        loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum") / keep.sum().clamp(min=1)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, pixel_values=None, image_sizes=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        step_ids = model_inputs.get("input_ids")
        # Images are only needed while the step still contains image positions (the first step,
        # or a re-encode of the whole prefix after the LongRoPE switch).
        if step_ids is not None and self.image_positions(step_ids).any():
            model_inputs["pixel_values"] = pixel_values
            model_inputs["image_sizes"] = image_sizes
        return model_inputs
