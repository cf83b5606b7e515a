"""One tiny training cell end to end through torchrun, then evaluation of the saved artefact."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, **kw)


def settings(strategy, steps=2):
    return json.dumps({
        "strategy": strategy, "precision": "bf16", "attention": "sdpa", "seed": 0, "steps": steps,
        "global_batch": 4, "per_device_batch": 1, "learning_rate": 1e-3, "warmup_steps": 1, "num_crops": 1,
        "lora_rank": 4, "lora_alpha": 8,
    })


@pytest.mark.parametrize("strategy,procs", [("lora", 2), ("full", 1), ("dora", 1)])
def test_torchrun_train_then_evaluate(tiny_base, tiny_data, tmp_path, strategy, procs):
    out = tmp_path / "train"
    data = tiny_data["hateful_memes"]
    train = run([
        str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc-per-node", str(procs),
        "workflow_scripts/train.py", "--base", str(tiny_base), "--train", str(data / "hateful_memes_train.jsonl"),
        "--out", str(out), "--settings", settings(strategy), "--provenance", str(tmp_path / "provenance.json"),
    ])
    assert train.returncode == 0, train.stderr[-3000:]
    assert f"world_size={procs}" in train.stdout
    artifact = json.loads((out / "artifact.json").read_text())
    assert artifact["kind"] == ("full" if strategy == "full" else "adapter")
    assert artifact["gradient_accumulation"] == 4 // procs
    assert artifact["attention_used"] == {"decoder": "sdpa", "vision": "sdpa"}
    assert artifact["precision_mode"] == ("deepspeed-bf16" if strategy == "full" else "autocast-bf16")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(r["samples"] == 4 // procs for r in log)  # each rank's share of the global batch
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["packages"]["torch"].startswith("2.13")
    assert provenance["base_model"]["preset"] == "tiny" and provenance["base_model"]["path"] == str(tiny_base)

    evaluation = run([
        str(BIN / "python"), "workflow_scripts/evaluate.py", "--model", str(out / "artifact.json"),
        "--data", str(data / "hateful_memes_val.jsonl"), "--task", "hateful_memes", "--hardware", "cpu",
        "--stage", "after", "--cell", json.dumps({"name": "x", "seed": 0}),
        "--settings", json.dumps({"num_crops": 1, "batch_size": 8, "max_new_tokens": 4}),
        "--out", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "pred.jsonl"),
    ])
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n_examples"] == 16 and result["split"] == "val"
    assert set(result["metrics"]) == {"accuracy", "auroc"}
    assert result["provenance"]["attention_used"] == {"decoder": "sdpa", "vision": "sdpa"}
    predictions = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert len(predictions) == 16
    assert {"id", "prompt", "gold", "prediction", "scores", "p_yes"} <= set(predictions[0])
    assert result["metrics"]["accuracy"] == sum(p["scores"]["accuracy"] for p in predictions) / 16
    assert set(result["intervals"]) == {"accuracy", "auroc"}


def test_bad_settings_fail_with_one_line(tiny_base, tiny_data, tmp_path):
    bad = json.loads(settings("lora"))
    bad["strategy"] = "prefix"
    r = run([str(BIN / "python"), "workflow_scripts/train.py", "--base", str(tiny_base), "--train",
             str(tiny_data["docvqa"] / "docvqa_train.jsonl"), "--out", str(tmp_path / "t"),
             "--settings", json.dumps(bad), "--provenance", str(tmp_path / "p.json")])
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == ("train: --settings: strategy: unknown value 'prefix'; "
                                                 "expected one of full, frozen_vision, lora, qlora, dora")


def test_speed_job_reports_rates_flops_and_mfu(tiny_base, tiny_data, tmp_path):
    out = tmp_path / "speed.json"
    r = run([
        str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc-per-node", "1",
        "workflow_scripts/speed.py", "--base", str(tiny_base), "--train",
        str(tiny_data["docvqa"] / "docvqa_train.jsonl"), "--settings", settings("lora", steps=1),
        "--task", "docvqa", "--hardware", "cpu", "--cell", json.dumps({"name": "x", "seed": 0}),
        "--warmup-steps", "1", "--measured-steps", "3", "--peak-tflops", "1.0", "--out", str(out),
    ])
    assert r.returncode == 0, r.stderr[-3000:]
    speed = json.loads(out.read_text())
    assert speed["measured_steps"] == 3 and len(speed["step_times_s"]) == 3
    assert speed["samples_per_s"] == pytest.approx(3 * 4 / sum(speed["step_times_s"]))
    assert speed["step_time_s"]["p10"] <= speed["step_time_s"]["median"] <= speed["step_time_s"]["p90"]
    assert speed["mean_crops_per_sample"] == 2  # num_crops 1: global view + one crop per image
    assert speed["mfu"] == pytest.approx(speed["samples_per_s"] * speed["tflop_per_sample"] / 1.0)
    assert speed["attention_used"] == {"decoder": "sdpa", "vision": "sdpa"}
