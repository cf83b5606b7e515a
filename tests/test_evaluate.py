"""Evaluation of a saved artefact: the QLoRA evaluation base option, the audit records and the
metrics file (tiny base, no training: adapters are written with random weights)."""

import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from ftbench.config import ConfigError, eval_settings, load_config, validate_config
from ftbench.evaluate import evaluate, load_for_eval, score_predictions
from ftbench.models.loading import load_model, load_tokenizer
from ftbench.training.settings import TrainSettings
from ftbench.training.strategies import apply_strategy

REPO = Path(__file__).resolve().parents[1]


def _adapter_cell(tiny_base, folder: Path, strategy: str) -> Path:
    """An adapter cell as ftbench.train writes it (<cell>/adapter/, <cell>/artifact.json), with
    non-zero LoRA B matrices so that the adapter changes the model."""
    settings = TrainSettings(strategy=strategy, precision="fp32", lora_rank=4, lora_alpha=8)
    model = apply_strategy(load_model(tiny_base, quantize_4bit="fp32" if strategy == "qlora" else None), settings)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(folder / "adapter", save_embedding_layers=False)
    load_tokenizer(tiny_base).save_pretrained(folder / "adapter")
    artifact = {"kind": "adapter", "path": "adapter", "base": str(tiny_base), "settings": asdict(settings),
                "precision_mode": "autocast-fp32", "quantization": "nf4" if strategy == "qlora" else None}
    (folder / "artifact.json").write_text(json.dumps(artifact))
    return folder / "artifact.json"


@pytest.fixture(scope="module")
def qlora_cell(tiny_base, tmp_path_factory):
    return _adapter_cell(tiny_base, tmp_path_factory.mktemp("qlora"), "qlora")


def _four_bit_layers(model) -> int:
    import bitsandbytes as bnb

    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_qlora_is_evaluated_on_the_quantised_base_unless_asked_otherwise(qlora_cell, tiny_base, tmp_path):
    model, _, artifact, label = load_for_eval(qlora_cell)
    assert label == "quantised" and artifact["quantization"] == "nf4"
    assert _four_bit_layers(model) > 0
    model, _, _, label = load_for_eval(qlora_cell, qlora_base="unquantised")
    assert label == "unquantised" and _four_bit_layers(model) == 0
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the trained adapter, not a fresh one
    with pytest.raises(ValueError, match="qlora_base: 'fp4' is not one of quantised, unquantised"):
        load_for_eval(qlora_cell, qlora_base="fp4")
    # other models carry no label
    lora = _adapter_cell(tiny_base, tmp_path, "lora")
    assert load_for_eval(lora, qlora_base="unquantised")[3] is None
    assert load_for_eval(tiny_base)[3] is None


def test_evaluate_returns_audited_predictions_and_intervals(qlora_cell, tiny_data):
    val = tiny_data["hateful_memes"] / "hateful_memes_val.jsonl"
    result = evaluate(qlora_cell, val, "hateful_memes", num_crops=1, batch_size=16, max_new_tokens=3,
                      qlora_base="unquantised", bootstrap_resamples=200, bootstrap_seed=1)
    predictions = result["predictions"]
    assert len(predictions) == 16 and result["qlora_base"] == "unquantised"
    first = predictions[0]
    assert set(first) == {"id", "prompt", "gold", "prediction", "scores", "label", "p_yes"}
    assert first["id"] == "val-0000000000" and "Is this meme hateful?" in first["prompt"]
    assert first["label"] == int(first["gold"] == "yes") and 0.0 <= first["p_yes"] <= 1.0
    for p in predictions:  # the recipe's accuracy of every example, from its prediction and gold
        assert p["scores"]["accuracy"] == float(p["prediction"].strip().strip(".").lower() == p["gold"].lower())
    metrics, intervals = result["metrics"], result["intervals"]
    assert metrics["accuracy"] == pytest.approx(sum(p["scores"]["accuracy"] for p in predictions) / 16)
    from sklearn.metrics import roc_auc_score

    assert metrics["auroc"] == pytest.approx(roc_auc_score([p["label"] for p in predictions],
                                                           [p["p_yes"] for p in predictions]))
    for name in ("accuracy", "auroc"):
        assert intervals[name][0] <= metrics[name] <= intervals[name][1]
    assert result["bootstrap"] == {"resamples": 200, "seed": 1, "confidence": 0.95}


def _evaluate_cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", REPO / "workflow_scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_evaluate_script_writes_labelled_metrics_and_predictions(qlora_cell, tiny_data, tmp_path, monkeypatch, capsys):
    data = tiny_data["docvqa"] / "docvqa_val.jsonl"
    settings = {"num_crops": 1, "batch_size": 16, "max_new_tokens": 3, "qlora_base": "unquantised",
                "bootstrap_resamples": 100, "bootstrap_seed": 0}

    def argv(settings):
        return ["evaluate.py", "--model", str(qlora_cell), "--data", str(data), "--task", "docvqa",
                "--hardware", "cpu", "--stage", "after", "--cell", json.dumps({"name": "x", "seed": 0}),
                "--settings", json.dumps(settings), "--out", str(tmp_path / "eval_after.json"),
                "--predictions", str(tmp_path / "predictions.jsonl")]

    main = _evaluate_cli()
    monkeypatch.setattr("sys.argv", argv(settings))
    assert main() == 0
    result = json.loads((tmp_path / "eval_after.json").read_text())
    assert result["qlora_base"] == "unquantised"
    assert set(result["metrics"]) == set(result["intervals"]) == {"anls", "anls_cookbook", "accuracy"}
    assert result["bootstrap"]["resamples"] == 100
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == result["n_examples"] == 16
    assert set(records[0]["scores"]) == {"anls", "anls_cookbook", "accuracy"}
    assert result["metrics"]["anls"] == pytest.approx(sum(r["scores"]["anls"] for r in records) / 16)

    capsys.readouterr()
    written = (tmp_path / "eval_after.json").read_text()
    monkeypatch.setattr("sys.argv", argv(dict(settings, qlora_base="nf8")))
    assert main() == 1
    assert capsys.readouterr().err == "evaluate: qlora_base: 'nf8' is not one of quantised, unquantised\n"
    assert (tmp_path / "eval_after.json").read_text() == written  # an earlier result is left as it was


def test_eval_settings_pass_qlora_base_to_qlora_cells_only():
    config = load_config(REPO / "config.yaml")
    assert "qlora_base" not in eval_settings(config, "docvqa")
    assert "qlora_base" not in eval_settings(config, "docvqa", "lora")
    config["evaluation"] = {"qlora_base": "unquantised", "bootstrap_resamples": 500, "bootstrap_seed": 7}
    settings = eval_settings(config, "docvqa", "qlora")
    assert settings["qlora_base"] == "unquantised"
    assert (settings["bootstrap_resamples"], settings["bootstrap_seed"]) == (500, 7)
    del config["evaluation"]
    assert eval_settings(config, "docvqa", "qlora")["qlora_base"] == "quantised"  # the default
    assert "metric" not in eval_settings(config, "docvqa")
    config["tasks"]["receipts"] = dict(config["tasks"]["docvqa"], source="custom", metric="anls")
    assert eval_settings(config, "receipts")["metric"] == "anls"  # a custom task's declared metric
    del config["tasks"]["receipts"]
    config["evaluation"] = {"qlora_base": "fp32"}
    with pytest.raises(ConfigError, match=r"^cfg: evaluation.qlora_base: 'fp32' is not one of"):
        validate_config(config, "cfg")


def test_audit_records_take_every_accepted_answer():
    examples = [{"id": "val-1", "conversations": [{"images": [], "user": "Who signed?", "assistant": "J. Smith",
                                                   "answers": ["J. Smith", "John Smith"]}]},
                {"id": "val-2", "conversations": [{"images": [], "user": "Total?", "assistant": "12"}]}]
    records = score_predictions(("anls", "accuracy"), examples, [("john smith", None), ("12.", None)])
    assert records[0] == {"id": "val-1", "prompt": "Who signed?", "gold": ["J. Smith", "John Smith"],
                          "prediction": "john smith", "scores": {"anls": 1.0, "accuracy": 1.0}}
    # '.' is not stripped by the standard ANLS: 1 edit over 3 characters; the recipe's accuracy strips it
    assert records[1]["gold"] == "12" and records[1]["scores"] == pytest.approx({"anls": 2 / 3, "accuracy": 1.0})
    examples[1]["conversations"][0]["answers"] = "12"
    with pytest.raises(ValueError, match="^example 'val-2': 'answers' is not a non-empty list of strings$"):
        score_predictions(("accuracy",), examples, [("a", None), ("b", None)])
