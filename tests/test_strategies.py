"""Every strategy x attention really trains, changes only what it should, and saves/reloads exactly;
adapter cells export to a merged plain checkpoint with the same logits (tiny base, fp32)."""

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftbench.data.common import read_examples
from ftbench.export import export_merged
from ftbench.models.loading import load_model, load_tokenizer, unused_vision_parameters
from ftbench.models.processing_phi3v import Phi3VProcessor, collate
from ftbench.schema import STRATEGIES
from ftbench.training.settings import TrainSettings
from ftbench.training.strategies import apply_strategy, parameter_groups

REPO = Path(__file__).resolve().parents[1]
ATTENTIONS = ("eager", "sdpa")
ADAPTERS = ("lora", "qlora", "dora")
STEPS, LR = 20, 3e-3
UNUSED_CLIP = ("encoder.layers.2.", "post_layernorm")  # tiny CLIP: 3 layers, features from layer -2


def settings_for(strategy: str, attention: str) -> TrainSettings:
    return TrainSettings(strategy=strategy, precision="fp32", attention=attention, lora_rank=4, lora_alpha=8)


def load_base(tiny_base, strategy: str, attention: str):
    return load_model(tiny_base, attention=attention, quantize_4bit="fp32" if strategy == "qlora" else None)


@pytest.fixture(scope="module")
def batch(tiny_base, tiny_data):
    """One fixed, right-padded batch of two hateful_memes training examples."""
    tokenizer = load_tokenizer(tiny_base)
    processor = Phi3VProcessor.for_model(tokenizer, load_model(tiny_base).config, 1)
    root = tiny_data["hateful_memes"]
    examples = read_examples(root / "hateful_memes_train.jsonl")[:2]
    encs = [processor.encode_training(e["conversations"], root / "images") for e in examples]
    out = collate(encs, processor.pad_token_id)
    assert out["pixel_values"].shape[0] == 2
    return out


@pytest.fixture(scope="module")
def trained(tiny_base, batch):
    """(strategy, attention) -> (model, losses, state before, state after); each trained once."""
    cache = {}

    def get(strategy: str, attention: str):
        if (strategy, attention) not in cache:
            torch.manual_seed(0)
            model = apply_strategy(load_base(tiny_base, strategy, attention), settings_for(strategy, attention))
            before = {k: v.detach().clone() for k, v in model.state_dict().items()}
            optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=LR)
            model.train()
            losses = []
            for _ in range(STEPS):
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss))
            model.eval()
            after = {k: v.detach().clone() for k, v in model.state_dict().items()}
            cache[strategy, attention] = model, losses, before, after
        return cache[strategy, attention]

    return get


def expected_changes(strategy: str, keys: list[str]) -> set[str]:
    if strategy == "full":
        return {k for k in keys if not any(u in k for u in UNUSED_CLIP)}
    if strategy == "frozen_vision":
        return {k for k in keys if "vision_embed_tokens" not in k and "embed_tokens" not in k}
    trained_parts = ("lora_A.", "lora_B.") + (("lora_magnitude_vector.",) if strategy == "dora" else ())
    return {k for k in keys if any(p in k for p in trained_parts)}


def logits_of(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def test_the_strategy_list():
    assert set(STRATEGIES) == {"full", "frozen_vision", "lora", "qlora", "dora"}
    assert TrainSettings(strategy="dora").engine == "ddp"


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("strategy", ["full", "frozen_vision", *ADAPTERS])
def test_strategy_trains_only_its_parameters_and_round_trips(tiny_base, batch, trained, tmp_path, strategy, attention):
    model, losses, before, after = trained(strategy, attention)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.9 * losses[0], losses

    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = expected_changes(strategy, list(before))
    assert expected, strategy
    assert changed == expected, (sorted(changed - expected)[:5], sorted(expected - changed)[:5])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected  # what changed is exactly what the optimizer held
    if strategy == "full":
        unused = {id(p) for p in unused_vision_parameters(model)}
        frozen = {n for n, p in model.named_parameters() if id(p) in unused}
        assert frozen == set(before) - expected
    if strategy in ADAPTERS:
        assert any("lm_head.lora_A" in k for k in changed) and any("img_projection.0.lora_B" in k for k in changed)
        assert any("vision_model.encoder.layers.1.mlp.fc2.lora_A" in k for k in changed)
        if strategy == "dora":
            assert any("lora_magnitude_vector" in k for k in changed)

    folder = tmp_path / strategy
    if strategy in ("full", "frozen_vision"):
        model.save_pretrained(folder)
        reloaded = load_model(folder, attention=attention).state_dict()
        assert set(reloaded) == set(after)
        assert all(torch.equal(reloaded[k], after[k]) for k in after)
    else:
        model.save_pretrained(folder, save_embedding_layers=False)  # as CellTrainer.save does
        from peft import PeftModel

        fresh = PeftModel.from_pretrained(load_base(tiny_base, strategy, attention), str(folder)).eval()
        assert torch.equal(logits_of(fresh, batch), logits_of(model, batch))


def test_lora_dropout_and_dora_reach_the_lora_config(tiny_base):
    for strategy in ("lora", "dora"):
        settings = TrainSettings(strategy=strategy, lora_rank=4, lora_alpha=8, lora_dropout=0.25)
        model = apply_strategy(load_model(tiny_base), settings)
        config = model.peft_config["default"]
        assert config.lora_dropout == 0.25 and config.use_dora == (strategy == "dora")
        assert config.r == 4 and config.lora_alpha == 8
        qkv = model.base_model.model.model.layers[0].self_attn.qkv_proj
        assert qkv.lora_dropout["default"].p == 0.25


def write_artifact(model, tiny_base, cell: Path, strategy: str) -> Path:
    """An adapter cell as ftbench.train writes it: <cell>/adapter/ and <cell>/artifact.json."""
    model.save_pretrained(cell / "adapter", save_embedding_layers=False)
    load_tokenizer(tiny_base).save_pretrained(cell / "adapter")
    info = {
        "kind": "adapter",
        "path": "adapter",
        "base": str(tiny_base),
        "settings": asdict(settings_for(strategy, "sdpa")),
        "quantization": "nf4" if strategy == "qlora" else None,
    }
    (cell / "artifact.json").write_text(json.dumps(info, indent=2))
    return cell / "artifact.json"


@pytest.mark.parametrize("strategy", ADAPTERS)
def test_merged_export_equals_base_plus_adapter(tiny_base, batch, trained, tmp_path, strategy):
    model, _, _, _ = trained(strategy, "sdpa")
    artifact = write_artifact(model, tiny_base, tmp_path / "cell", strategy)
    out = export_merged(artifact, tmp_path / "merged")

    merged = load_model(out)  # an ordinary checkpoint folder
    assert set(load_file(out / "model.safetensors")) == set(load_file(tiny_base / "model.safetensors"))
    assert load_tokenizer(out).get_vocab() == load_tokenizer(tiny_base).get_vocab()
    assert json.loads((out / "ftbench_export.json").read_text())["trained_on_quantization"] == (
        "nf4" if strategy == "qlora" else None
    )
    # Reference: the adapter on the unquantised fp32 base (for QLoRA too: the recipe's variant).
    from peft import PeftModel

    reference = PeftModel.from_pretrained(load_model(tiny_base), str(tmp_path / "cell" / "adapter")).eval()
    got, want = logits_of(merged, batch), logits_of(reference, batch)
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())
    assert not torch.allclose(got, logits_of(load_model(tiny_base), batch), atol=1e-3)  # the adapter did something


def _cli():
    spec = importlib.util.spec_from_file_location("export_merged_cli", REPO / "workflow_scripts" / "export_merged.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_refuses_full_cells_with_one_line(tmp_path, monkeypatch, capsys):
    artifact = tmp_path / "artifact.json"
    artifact.write_text(json.dumps({"kind": "full", "path": "model", "base": "nowhere", "settings": {}}))
    with pytest.raises(ValueError, match="already a plain checkpoint") as info:
        export_merged(artifact, tmp_path / "out")
    assert "\n" not in str(info.value)
    cli = _cli()
    monkeypatch.setattr("sys.argv", ["export_merged.py", "--artifact", str(artifact), "--out", str(tmp_path / "out")])
    assert cli.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already a plain checkpoint" in err
    assert not (tmp_path / "out").exists()


def test_export_cli_writes_a_loadable_checkpoint(tiny_base, batch, trained, tmp_path, monkeypatch):
    model, _, _, _ = trained("lora", "sdpa")
    artifact = write_artifact(model, tiny_base, tmp_path / "cell", "lora")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.txt").write_text("old")  # a previous export is replaced as a whole
    monkeypatch.setattr("sys.argv", ["export_merged.py", "--artifact", str(artifact), "--out", str(out)])
    assert _cli().main() == 0
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert not any(p.name.startswith(".merged.") for p in tmp_path.iterdir())
    assert torch.allclose(logits_of(load_model(out), batch), logits_of(model, batch), atol=1e-4, rtol=0)


@pytest.mark.parametrize("strategy,precision,expected", [
    ("lora", "bf16", torch.bfloat16), ("dora", "fp16", torch.float16), ("lora", "fp32", torch.float32),
    ("full", "bf16", torch.float32), ("frozen_vision", "bf16", torch.float32),
])
def test_adapter_strategies_keep_the_frozen_base_in_the_compute_precision(tiny_base, tiny_data, strategy, precision,
                                                                          expected):
    from ftbench.train import CellTrainer
    from ftbench.training.distributed import Distributed

    settings = TrainSettings(strategy=strategy, precision=precision, lora_rank=4, lora_alpha=8, num_crops=1,
                             global_batch=2, per_device_batch=2, steps=1, engine="ddp")
    trainer = CellTrainer(settings, tiny_base, [tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"],
                          Distributed())
    frozen = {p.dtype for p in trainer.model.parameters() if not p.requires_grad}
    trained = {p.dtype for p in trainer.model.parameters() if p.requires_grad}
    assert frozen == {expected}
    assert trained == {torch.float32}  # adapters (peft's default) and fully trained weights stay fp32
    assert torch.isfinite(torch.tensor(trainer.step()["loss"]))
