"""Which NF4 layers may take bitsandbytes' packed CPU inference path.

On an x86-64 CPU with AVX512-BF16, ``Linear4bit.forward`` (bitsandbytes 0.50.2,
bitsandbytes/nn/modules.py) repacks a layer's NF4 weight for a fused AVX512-BF16 kernel at its
first CPU forward in eval mode on an input that needs no gradient, through
``_convert_weight_packed_for_cpu`` (bitsandbytes/functional.py). That repacking needs the output
features to be a multiple of its ``block_n`` (32, the default ``forward`` uses) and the input
features a multiple of the quantisation block size (it reshapes the absmax to one row per output
feature), and raises for any other layer: for the tiny preset's CLIP tower (width 32, blocks of
64) it stopped every QLoRA evaluation. Whether a layer packs is its own
``support_avx512bf16_for_cpu`` (``has_avx512bf16()`` when the layer was built), so the layers that
cannot be packed are kept on the plain path, the one CPUs without AVX512-BF16 take, which computes
with the same NF4 weight; every other layer (all of them at the Phi-3.5-vision widths) packs."""

from __future__ import annotations

import torch

# The block of output rows `_convert_weight_packed_for_cpu` interleaves (its default `block_n`).
CPU_PACKING_BLOCK_N = 32


def cpu_packable(quant_state) -> bool:
    """Whether bitsandbytes can repack an NF4 weight of this quantisation state for the AVX512-BF16
    kernel (``quant_state.shape`` is ``(out_features, in_features)``)."""
    out_features, in_features = quant_state.shape
    return out_features % CPU_PACKING_BLOCK_N == 0 and in_features % quant_state.blocksize == 0


def keep_unpackable_layers_unpacked(model: torch.nn.Module) -> None:
    """Keeps each 4-bit layer of ``model`` whose weight ``cpu_packable`` refuses on bitsandbytes'
    plain CPU path (still 4-bit: the same NF4 weight through bitsandbytes' ordinary 4-bit matmul)."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and not cpu_packable(module.weight.quant_state):
            module.support_avx512bf16_for_cpu = False
