"""Official checkpoint layout: strict loading, key normalisation, header checks, ``ftbench inspect``.

A tiny checkpoint in the official layout is written by the tests themselves: an official-style
config.json (remote-code keys, flash_attention_2, ``su`` rope scaling) at toy sizes, random weights
in bf16 split over two safetensors shards with an index, under exactly the official key names. The
official config.json has no ``vision_config`` (the remote code hard-codes CLIP ViT-L/14-336); the
tiny one gives one so that the CLIP tower is tiny too.
"""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ftbench.cli import main as cli_main
from ftbench.models import official
from ftbench.models.loading import load_model
from ftbench.models.official import (
    check_checkpoint,
    is_official_config,
    load_official,
    meta_model,
    native_config_from_official,
    resolve_checkpoint,
)
from ftbench.models.phi3v import CLIP_VIT_L_336, Phi3VForCausalLM, image_token_count

TSV = Path(__file__).parent / "data" / "phi3v-weight-keys.tsv"
HEAD_DIM = 16
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, patch_size=14,
    image_size=56, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32, attention_dropout=0.0,
)
PROJECTION_PREFIX = "model.vision_embed_tokens."
CLIP_WRAPPED = "model.vision_embed_tokens.img_processor.vision_model."


def reference_shapes() -> dict[str, str]:
    rows = [line.split("\t") for line in TSV.read_text().splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["key", "shape"]
    return dict(rows[1:])


def layer_pattern(key: str) -> str:
    return re.sub(r"\.layers\.\d+\.", ".layers.N.", key)


def official_config_json(full_size: bool = False) -> dict:
    """config.json as the remote code wrote it; tiny sizes unless ``full_size``."""
    n = 48 if full_size else HEAD_DIM // 2
    cfg = {
        "_name_or_path": "Phi-3.5-vision-instruct",
        "architectures": ["Phi3VForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_phi3_v.Phi3VConfig",
            "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
        },
        "bos_token_id": 1,
        "embd_layer": {
            "embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
            "use_hd_transform": True, "with_learnable_separator": True,
        },
        "embd_pdrop": 0.0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": 3072 if full_size else 64,
        "img_processor": {
            "image_dim_out": 1024 if full_size else TINY_VISION["hidden_size"],
            "model_name": "openai/clip-vit-large-patch14-336",
            "name": "clip_vision_model",
            "num_img_tokens": 144 if full_size else 4,
        },
        "initializer_range": 0.02,
        "intermediate_size": 8192 if full_size else 128,
        "max_position_embeddings": 131072,
        "model_type": "phi3_v",
        "num_attention_heads": 32 if full_size else 4,
        "num_hidden_layers": 32 if full_size else 2,
        "num_key_value_heads": 32 if full_size else 4,
        "original_max_position_embeddings": 4096,
        "pad_token_id": 32000,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "long_factor": [1.08 + 2.0 * i for i in range(n)],
            "short_factor": [1.0 + 0.25 * i for i in range(n)],
            "type": "su",
        },
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.38.1",
        "use_cache": True,
        "vocab_size": 32064,
        "_attn_implementation": "flash_attention_2",
    }
    if not full_size:
        cfg["vision_config"] = dict(TINY_VISION)
    return cfg


def write_checkpoint(folder: Path, config_json: dict, tensors: dict[str, torch.Tensor]) -> Path:
    """Two safetensors shards (language | vision) plus model.safetensors.index.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config_json, indent=2))
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": [k for k in names if not k.startswith(PROJECTION_PREFIX)],
        "model-00002-of-00002.safetensors": [k for k in names if k.startswith(PROJECTION_PREFIX)],
    }
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k].contiguous() for k in keys}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in keys})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


@pytest.fixture(scope="module")
def source():
    """(official config.json, native fp32 model with bf16-exact random weights, bf16 tensors by name)."""
    config_json = official_config_json()
    model = Phi3VForCausalLM(native_config_from_official(config_json, attention="sdpa"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            is_norm_weight = name.endswith("weight") and re.search(r"norm|layrnorm|layer_norm", name)
            value = 1.0 + 0.1 * noise if is_norm_weight else 0.05 * noise
            param.copy_(value.to(torch.bfloat16).float())  # every tensor random and exactly representable in bf16
    model.eval()
    tensors = {k: v.to(torch.bfloat16).clone() for k, v in model.state_dict().items()}
    return config_json, model, tensors


@pytest.fixture(scope="module")
def official_dir(source, tmp_path_factory):
    config_json, _, tensors = source
    return write_checkpoint(tmp_path_factory.mktemp("official") / "phi3v-tiny", config_json, tensors)


def test_native_key_names_follow_the_official_pattern(source):
    _, model, tensors = source
    reference = reference_shapes()
    assert len(reference) == 592
    assert {layer_pattern(k) for k in tensors} == {layer_pattern(k) for k in reference}
    assert "model.vision_embed_tokens.wte.weight" not in tensors
    assert all(t.abs().sum() > 0 for t in tensors.values())  # nothing left at zero (glb_GN/sub_GN included)


def test_official_folder_loads_strictly_and_exactly(official_dir, source):
    _, reference_model, tensors = source
    model = load_official(official_dir, dtype=torch.bfloat16)
    state = model.state_dict()
    assert set(state) == set(tensors)
    assert all(state[k].dtype == torch.bfloat16 and torch.equal(state[k], tensors[k]) for k in tensors)
    config = model.config
    assert config._attn_implementation == "sdpa"  # not the flash_attention_2 of config.json
    assert config.rope_parameters["rope_type"] == "longrope"
    assert config.rope_parameters["short_factor"] == official_config_json()["rope_scaling"]["short_factor"]
    assert config.rope_parameters["original_max_position_embeddings"] == 4096
    assert config.max_position_embeddings == 131072 and config.tie_word_embeddings is False
    assert config.eos_token_id == [32007, 32000] and config.image_token_id == 32044
    assert config.feature_layer == -2 and config.vision_config["hidden_size"] == 32
    assert not model.training

    # fp32 through load_model (dispatches on the official config.json): same outputs as the source
    loaded = load_model(official_dir, dtype=torch.float32)
    assert torch.equal(loaded.model.rotary_emb.inv_freq, reference_model.model.rotary_emb.inv_freq)
    n_image = image_token_count(56, 56, 56, 2)
    ids = torch.tensor([[1, 32010] + [32044] * n_image + [100, 200, 32007, 32001]])
    pixels = torch.randn(1, 2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    sizes = torch.tensor([[56, 56]])
    with torch.no_grad():
        got = loaded(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
        want = reference_model(input_ids=ids, pixel_values=pixels, image_sizes=sizes).logits
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def _corrupt(tensors: dict, case: str) -> tuple[dict, str]:
    out = dict(tensors)
    if case == "missing":
        key = "model.layers.1.mlp.down_proj.weight"
        del out[key]
    elif case == "unexpected":
        key = "model.layers.0.self_attn.rotary_emb.extra"
        out[key] = torch.ones(3, dtype=torch.bfloat16)
    else:
        key = "model.vision_embed_tokens.img_projection.0.weight"
        out[key] = torch.ones(64, 100, dtype=torch.bfloat16)
    return out, key


@pytest.mark.parametrize("case", ["missing", "unexpected", "shape"])
def test_mismatch_raises_one_line_naming_folder_and_key(case, source, tmp_path, capsys):
    config_json, _, tensors = source
    bad, key = _corrupt(tensors, case)
    folder = write_checkpoint(tmp_path / f"bad-{case}", config_json, bad)
    with pytest.raises(ValueError) as error:
        load_official(folder)
    message = str(error.value)
    assert str(folder) in message and key in message and "\n" not in message
    lines = check_checkpoint(folder)
    assert len(lines) == 1 and key in lines[0]
    assert lines[0].startswith({"missing": "missing", "unexpected": "unexpected", "shape": "wrong shape"}[case])
    assert cli_main(["inspect", str(folder)]) == 1
    out = capsys.readouterr().out
    assert f"mismatch: {lines[0]}" in out


def test_wte_alias_is_dropped_and_unwrapped_clip_keys_are_accepted(source, tmp_path):
    config_json, _, tensors = source
    renamed = {k.replace(CLIP_WRAPPED, "model.vision_embed_tokens.img_processor."): v for k, v in tensors.items()}
    assert sum(k.startswith(CLIP_WRAPPED) for k in renamed) == 0
    renamed["model.vision_embed_tokens.wte.weight"] = tensors["model.embed_tokens.weight"].clone()
    folder = write_checkpoint(tmp_path / "variant", config_json, renamed)
    assert check_checkpoint(folder) == []
    state = load_official(folder).state_dict()
    assert set(state) == set(tensors) and all(torch.equal(state[k], tensors[k]) for k in tensors)


def test_pickle_only_folder_is_refused_without_reading_it(source, tmp_path, monkeypatch):
    config_json, _, _ = source
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config_json))
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", refuse)
    for load in (load_official, load_model, check_checkpoint):
        with pytest.raises(ValueError, match=r"pytorch_model\.bin.*safetensors only"):
            load(folder)


def test_official_config_of_full_size_gives_the_reference_keys_and_counts(capsys):
    config_json = official_config_json(full_size=True)
    assert is_official_config(config_json)
    config = native_config_from_official(config_json)  # the su rope_scaling as such would raise KeyError
    assert config.vision_config == CLIP_VIT_L_336  # not in the official json: hard-coded ViT-L/14-336
    assert len(config.rope_parameters["long_factor"]) == 48
    assert not is_official_config(config.to_dict())  # what ftbench saves goes through from_pretrained
    model = meta_model(config)
    shapes = {k: "x".join(str(s) for s in v.shape) for k, v in model.state_dict().items()}
    assert shapes == reference_shapes()
    assert sum(p.numel() for p in model.parameters()) == 4_146_621_440

    assert cli_main(["inspect", "phi3.5-vision", "--keys"]) == 0
    table = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert table == reference_shapes()
    for preset in ("phi3.5-vision", "phi3-vision-128k"):
        assert cli_main(["inspect", preset]) == 0
        out = capsys.readouterr().out
        for count in ("4,146,621,440", "3,821,079,552", "303,507,456", "22,034,432"):
            assert count in out


def test_inspect_tiny_folder_and_preset(official_dir, capsys):
    assert cli_main(["inspect", str(official_dir)]) == 0
    out = capsys.readouterr().out
    assert "official layout" in out and "checkpoint matches" in out and "mismatch" not in out
    assert cli_main(["inspect", "tiny"]) == 0
    assert "total" in capsys.readouterr().out
    assert cli_main(["inspect", "no-such-preset"]) == 2
    assert "not a preset" in capsys.readouterr().err


def test_resolve_checkpoint_local_folder_and_pinned_revisions(official_dir, monkeypatch, capsys):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        calls.append((repo_id, revision, allow_patterns))
        return str(official_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_checkpoint(str(official_dir), None) == official_dir
    assert calls == []  # a local folder never touches the hub
    for revision in (None, "main", "v1.0", "abc123"):
        with pytest.raises(ValueError, match="pinned revision"):
            resolve_checkpoint("microsoft/Phi-3.5-vision-instruct", revision)
    assert calls == []
    sha = "0" * 40
    assert resolve_checkpoint("microsoft/Phi-3.5-vision-instruct", sha) == official_dir
    repo, revision, patterns = calls[0]
    assert (repo, revision) == ("microsoft/Phi-3.5-vision-instruct", sha)
    assert "*.safetensors" in patterns and not any(p.endswith((".py", ".bin")) or p == "*" for p in patterns)
    assert cli_main(["inspect", "microsoft/Phi-3.5-vision-instruct", "--revision", "main"]) == 2
    assert "pinned revision" in capsys.readouterr().err


def test_quantized_official_folder_loads_through_from_pretrained(official_dir, source, tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    _, _, tensors = source
    model = load_model(official_dir, quantize_4bit="fp32")
    assert isinstance(model.model.layers[0].self_attn.qkv_proj, bnb.nn.Linear4bit)
    assert model.generation_config.eos_token_id == [32007, 32000]
    assert torch.equal(model.lm_head.weight.float(), tensors["lm_head.weight"].float())
    clip_key = CLIP_WRAPPED + "pre_layrnorm.weight"
    assert torch.equal(model.state_dict()[clip_key].float(), tensors[clip_key].float())
    # the same strictness as load_official: headers are checked before from_pretrained runs
    bad, key = _corrupt(tensors, "missing")
    folder = write_checkpoint(tmp_path / "bad", official_config_json(), bad)
    with pytest.raises(ValueError, match=re.escape(key)):
        load_model(folder, quantize_4bit="fp32")


def test_official_module_never_uses_remote_code_or_pickle():
    text = Path(official.__file__).read_text()
    assert "trust_remote_code=True" not in text and "torch.load(" not in text
