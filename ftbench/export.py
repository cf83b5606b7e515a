"""Merged export of an adapter cell: base + LoRA/DoRA adapter -> one plain checkpoint folder.

``export_merged`` reads a cell's ``artifact.json`` (written by ``ftbench.train``), loads the base
**unquantised in fp32**, loads the adapter onto it, folds the adapter into the weights with peft's
``merge_and_unload()`` and saves an ordinary checkpoint (``model.safetensors`` + ``config.json`` +
tokenizer) that ``ftbench.models.loading.load_model`` loads like any base.

QLoRA: the adapter was trained on the NF4-quantised base, but the merged export is always made on
the **unquantised** base: merging into 4-bit weights would re-quantise them and lose the update.
This is the recipe's own variant (its post-training evaluation loads the base without
quantisation and applies the adapter), so the merged QLoRA model equals
"NF4-trained adapter on a full-precision base", not the quantised model it was trained on
(``ftbench.evaluate.load_for_eval`` evaluates the latter).

Full fine-tuning cells are refused: their ``model/`` folder already is a plain checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ftbench.models.loading import load_model, load_tokenizer, save_base

EXPORT_DESCRIPTION = "ftbench_export.json"


def read_artifact(artifact_json: Path) -> dict:
    artifact_json = Path(artifact_json)
    if not artifact_json.is_file():
        raise FileNotFoundError(f"{artifact_json}: no such artifact file")
    try:
        artifact = json.loads(artifact_json.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{artifact_json}: not valid JSON ({e})") from None
    missing = [k for k in ("kind", "path", "base") if k not in artifact]
    if missing:
        raise ValueError(f"{artifact_json}: missing key(s) {', '.join(missing)}")
    return artifact


def load_merged(artifact_json: Path, attention: str = "sdpa"):
    """(merged fp32 model, tokenizer, artifact) of an adapter cell, without writing anything."""
    artifact_json = Path(artifact_json)
    artifact = read_artifact(artifact_json)
    kind = artifact["kind"]
    if kind == "full":
        raise ValueError(
            f"{artifact_json}: kind 'full' is already a plain checkpoint ({artifact['path']}/); nothing to merge"
        )
    if kind != "adapter":
        raise ValueError(f"{artifact_json}: unknown kind {kind!r}; expected 'adapter'")
    adapter_dir = artifact_json.parent / artifact["path"]
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json")
    from peft import PeftModel

    # Always the unquantised base (also for QLoRA adapters: see the module docstring).
    base = load_model(Path(artifact["base"]), attention=attention, quantize_4bit=None, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    model.eval()
    tokenizer_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else Path(artifact["base"])
    return model, load_tokenizer(tokenizer_dir), artifact


def export_merged(artifact_json: Path, out_dir: Path) -> Path:
    """Writes the merged checkpoint of an adapter cell to ``out_dir`` (replaced as a whole: the
    folder is written beside it and renamed into place). Returns ``out_dir``."""
    artifact_json, out_dir = Path(artifact_json), Path(out_dir)
    model, tokenizer, artifact = load_merged(artifact_json)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        save_base(model, tokenizer, staging)
        settings = artifact.get("settings") or {}
        description = {
            "how": "base + adapter merged with peft merge_and_unload (ftbench.export), fp32, unquantised base",
            "artifact": str(artifact_json),
            "base": artifact["base"],
            "strategy": settings.get("strategy"),
            "trained_on_quantization": artifact.get("quantization"),
        }
        (staging / EXPORT_DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")
        os.chmod(staging, 0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
