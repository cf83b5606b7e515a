"""QLoRA on both of bitsandbytes' CPU paths for 4-bit layers, on any host.

On a CPU with AVX512-BF16, bitsandbytes repacks a layer's NF4 weight for a fused kernel at the
layer's first forward in eval mode without gradients; elsewhere it never does (see
ftbench.models.quantization). Each path is forced here through what ``Linear4bit`` reads when it is
built, so that CI on either kind of CPU tests both. A packed weight is multiplied correctly only
where bitsandbytes registered its AVX512-BF16 kernel (at import, from the real CPU), so the outputs
of the two paths are compared on such hosts only; elsewhere the packing itself, where layers
narrower than a block used to fail, still runs."""

import copy
import json
from dataclasses import asdict
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from bitsandbytes.functional import _convert_weight_packed_for_cpu, has_avx512bf16
from bitsandbytes.nn import modules as bnb_modules

from ftbench.data.common import read_examples
from ftbench.evaluate import evaluate, generate_answers, load_for_eval
from ftbench.export import export_merged
from ftbench.models.loading import load_model, load_tokenizer
from ftbench.models.official import meta_model
from ftbench.models.presets import preset_config
from ftbench.models.processing_phi3v import Phi3VProcessor, collate
from ftbench.models.quantization import cpu_packable
from ftbench.training.settings import TrainSettings
from ftbench.training.strategies import apply_strategy, parameter_groups

# The real capability, read before any test forces it: whether the packed kernel exists here.
PACKED_KERNEL = has_avx512bf16()
NO_PACKED_KERNEL = "no AVX512-BF16 kernel for packed weights on this CPU"
# The packed kernel computes in bf16 (activations and block scales): agreement to bf16 precision
# (measured: under 0.4% of the largest output at the full-size widths, 0.12% on tiny logits).
AGREEMENT = 1e-2
SETTINGS = TrainSettings(strategy="qlora", precision="fp32", lora_rank=4, lora_alpha=8)


def full_size_widths() -> dict[tuple[int, int], str]:
    """(in_features, out_features) -> the first layer of that width, over the layers the QLoRA
    model quantises (every linear layer but lm_head) of the Phi-3.5-vision preset."""
    widths = {}
    for name, module in meta_model(preset_config("phi3.5-vision")).named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            widths.setdefault((module.in_features, module.out_features), name)
    return widths


FULL_SIZE_WIDTHS = full_size_widths()


@pytest.fixture(params=[True, False], ids=["packed", "plain"])
def avx512bf16(request, monkeypatch):
    """The capability as the 4-bit layers a test builds see it: ``Linear4bit.__init__``
    (bitsandbytes/nn/modules.py) stores ``has_avx512bf16()``, looked up in that module's namespace,
    as the layer's ``support_avx512bf16_for_cpu``, which decides in ``forward`` whether to pack."""
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: request.param)
    return request.param


def four_bit_layers(model) -> dict[str, bnb.nn.Linear4bit]:
    return {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def packed(layer: bnb.nn.Linear4bit) -> bool:
    return getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


def nf4_layer(in_features: int, out_features: int) -> bnb.nn.Linear4bit:
    """A random layer quantised as ``load_model`` quantises (NF4, no double quantisation)."""
    layer = bnb.nn.Linear4bit(in_features, out_features, compute_dtype=torch.float32, quant_type="nf4",
                              compress_statistics=False)
    return layer.to("cpu")  # quantises the weight


def agree(got: torch.Tensor, want: torch.Tensor) -> bool:
    return float((got - want).abs().max()) <= AGREEMENT * float(want.abs().max())


def write_cell(model, tiny_base, cell: Path) -> Path:
    """An adapter cell as ftbench.train writes it: <cell>/adapter/ and <cell>/artifact.json."""
    model.save_pretrained(cell / "adapter", save_embedding_layers=False)
    load_tokenizer(tiny_base).save_pretrained(cell / "adapter")
    artifact = {"kind": "adapter", "path": "adapter", "base": str(tiny_base), "settings": asdict(SETTINGS),
                "precision_mode": "autocast-fp32", "quantization": "nf4"}
    (cell / "artifact.json").write_text(json.dumps(artifact))
    return cell / "artifact.json"


@pytest.fixture(scope="module")
def qlora_cell(tiny_base, tmp_path_factory):
    """A QLoRA cell whose adapter changes the model (random LoRA B matrices; no training)."""
    model = apply_strategy(load_model(tiny_base, quantize_4bit="fp32"), SETTINGS)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return write_cell(model, tiny_base, tmp_path_factory.mktemp("qlora"))


@pytest.fixture(scope="module")
def batch(tiny_base, tiny_data):
    """Two hateful_memes training examples, right-padded."""
    processor = Phi3VProcessor.for_model(load_tokenizer(tiny_base), load_model(tiny_base).config, 1)
    root = tiny_data["hateful_memes"]
    examples = read_examples(root / "hateful_memes_train.jsonl")[:2]
    return collate([processor.encode_training(e["conversations"], root / "images") for e in examples],
                   processor.pad_token_id)


@pytest.mark.parametrize("in_features,out_features", [(32, 32), (32, 64), (96, 64), (64, 48), (64, 32), (128, 192)])
def test_cpu_packable_is_what_bitsandbytes_can_pack(in_features, out_features):
    layer = nf4_layer(in_features, out_features)
    try:
        _convert_weight_packed_for_cpu(layer.weight.data, copy.deepcopy(layer.weight.quant_state))
        can_pack = True
    except (RuntimeError, AssertionError):  # absmax reshape / `N must be divisible by block_n`
        can_pack = False
    assert cpu_packable(layer.weight.quant_state) == can_pack


def test_forcing_the_capability_switches_the_path_per_layer(qlora_cell, tiny_data, avx512bf16):
    model, tokenizer, _, base = load_for_eval(qlora_cell)
    assert base == "quantised"
    layers = four_bit_layers(model)
    narrow = {name for name, layer in layers.items() if not cpu_packable(layer.weight.quant_state)}
    assert narrow and len(narrow) < len(layers)  # the tiny model has layers of both kinds
    assert all(".vision_model.encoder." in name for name in narrow)  # the CLIP tower, width 32
    ran = set()
    for name, layer in layers.items():
        layer.register_forward_hook(lambda module, args, output, name=name: ran.add(name))
    root = tiny_data["docvqa"]
    examples = read_examples(root / "docvqa_val.jsonl")[:2]
    processor = Phi3VProcessor.for_model(tokenizer, model.config, 1)
    generate_answers(model, processor, examples, root / "images", batch_size=2, max_new_tokens=2)
    assert ran & narrow and ran - narrow
    expected = ran - narrow if avx512bf16 else set()
    assert {name for name in ran if packed(layers[name])} == expected


@pytest.mark.usefixtures("avx512bf16")
def test_qlora_cell_trains_evaluates_and_exports(tiny_base, tiny_data, batch, tmp_path):
    model = apply_strategy(load_model(tiny_base, quantize_4bit="fp32"), SETTINGS)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=3e-3)
    model.train()
    for _ in range(2):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.isfinite(loss)
    assert not any(packed(layer) for layer in four_bit_layers(model).values())  # training never packs
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    cell = write_cell(model, tiny_base, tmp_path)

    result = evaluate(cell, tiny_data["hateful_memes"] / "hateful_memes_val.jsonl", "hateful_memes", num_crops=1,
                      batch_size=4, max_new_tokens=3, limit=4, qlora_base="quantised", bootstrap_resamples=20)
    assert result["qlora_base"] == "quantised" and len(result["predictions"]) == 4

    merged = load_model(export_merged(cell, tmp_path / "merged"))
    assert not four_bit_layers(merged)


@pytest.mark.skipif(not PACKED_KERNEL, reason=NO_PACKED_KERNEL)
def test_packed_and_plain_paths_agree_on_the_tiny_model(tiny_base, batch, monkeypatch):
    logits = {}
    for capability in (True, False):
        monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda capability=capability: capability)
        model = load_model(tiny_base, quantize_4bit="fp32").eval()
        with torch.no_grad():
            logits[capability] = model(**batch).logits
        assert any(packed(layer) for layer in four_bit_layers(model).values()) == capability
    assert agree(logits[True], logits[False])


@pytest.mark.parametrize("width", FULL_SIZE_WIDTHS, ids=[f"{i}x{o}" for i, o in FULL_SIZE_WIDTHS])
def test_full_size_widths_pack_and_agree_with_the_plain_path(width, monkeypatch):
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    in_features, out_features = width
    layer = nf4_layer(in_features, out_features)
    assert cpu_packable(layer.weight.quant_state)
    x = torch.randn(2, 3, in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = layer.train()(x)  # training mode never packs
        assert not packed(layer)
        got = layer.eval()(x)
    assert packed(layer)
    if not PACKED_KERNEL:
        pytest.skip(f"packed; outputs not compared: {NO_PACKED_KERNEL}")
    assert agree(got, plain)
