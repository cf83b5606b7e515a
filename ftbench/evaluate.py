"""Evaluation: load a saved artefact from disk, generate greedily in batches, score.

Metrics and their definitions are in ``ftbench.metrics`` (the recipe's accuracy and ANLS, the
lmms-eval/VLMEvalKit ANLS, Hateful Memes AUROC from P(yes) / (P(yes) + P(no)) at the first answer
token, the two tokens taken from the task's training answers: ``auroc_tokens``), each with a
bootstrap 95% interval over the evaluation examples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ftbench.data.common import jsonl_path
from ftbench.data.manifest import converted_examples
from ftbench.metrics import CONFIDENCE, example_scores, positive_label, summarise, task_metrics
from ftbench.models.loading import attention_backends, load_model, load_tokenizer
from ftbench.models.processing_phi3v import Phi3VProcessor, collate, length_groups
from ftbench.schema import schema_default

# How a QLoRA adapter is evaluated: on the NF4-quantised base it was trained on (what the cell
# trained), or on the unquantised base (the recipe's post-training evaluation).
QLORA_BASES = ("quantised", "unquantised")


def eval_base_of(artifact: dict | None, qlora_base: str) -> str | None:
    """The label of the base a QLoRA adapter is evaluated on; None for every other model."""
    if qlora_base not in QLORA_BASES:
        raise ValueError(f"qlora_base: {qlora_base!r} is not one of {', '.join(QLORA_BASES)}")
    if artifact is None or artifact.get("kind") != "adapter" or not artifact.get("quantization"):
        return None
    return qlora_base


def load_for_eval(model_path: Path, attention: str = "sdpa", qlora_base: str = schema_default("evaluation.qlora_base")):
    """A base checkpoint folder, or a cell's ``artifact.json`` (full weights or an adapter).
    Returns ``(model, tokenizer, artifact or None, eval base label or None)``; the label is set for
    a QLoRA adapter only: ``quantised`` (the NF4 base it trained on) or ``unquantised``."""
    model_path = Path(model_path)
    if model_path.name != "artifact.json":
        eval_base_of(None, qlora_base)  # rejects a bad option here too
        return load_model(model_path, attention=attention), load_tokenizer(model_path), None, None
    artifact = json.loads(model_path.read_text())
    target = model_path.parent / artifact["path"]
    eval_base = eval_base_of(artifact, qlora_base)
    if artifact["kind"] == "full":
        return load_model(target, attention=attention), load_tokenizer(target), artifact, None
    from peft import PeftModel

    quantize = artifact["settings"]["precision"] if eval_base == "quantised" else None
    base = load_model(Path(artifact["base"]), attention=attention, quantize_4bit=quantize)
    model = PeftModel.from_pretrained(base, str(target))
    return model, load_tokenizer(target), artifact, eval_base


def auroc_tokens(processor: Phi3VProcessor, train_jsonl: Path) -> dict:
    """The two tokens whose probabilities AUROC compares: the first token of the task's training
    answers (first turns, the turn that is evaluated) as training encodes them
    (``Phi3VProcessor.encode_answer``: the answer tokenised on its own after the assistant tag, so
    with the tokenizer's word-start marker), one for the yes answers and one for the no answers
    (``positive_label``: yes = hateful = the positive class).

    The Cauldron's Hateful Memes answers are ``Yes.``/``No.`` (huggingface/smollm,
    vision/data/datasets_processing_scripts/build_concatenation_datasets_sft/build_ds_sft.py), the
    synthetic stand-in's ``yes``/``no``: a model trained on either starts its answer with that token,
    so a fixed lowercase ``yes`` would score a token it never learned to emit.
    Returns ``{"file", "positive", "negative"}``, each class ``{"token", "token_id", "answers"}``.
    Anything but exactly two first tokens, one per class, is a ``ValueError`` naming the file."""
    answers = sorted({example["conversations"][0]["assistant"] for example in converted_examples(train_jsonl)})
    by_token: dict[int, list[str]] = {}
    labels: dict[int, set[int]] = {}
    for answer in answers:
        try:
            label = positive_label(answer)
        except ValueError as e:
            raise ValueError(f"{train_jsonl}: training {e}; AUROC needs yes/no answers") from None
        token_id = processor.encode_answer(answer)[0]
        by_token.setdefault(token_id, []).append(answer)
        labels.setdefault(token_id, set()).add(label)
    tokens = {token_id: processor.tokenizer.convert_ids_to_tokens(token_id) for token_id in by_token}
    if sorted(sorted(found) for found in labels.values()) != [[0], [1]]:  # one token per class
        found = ", ".join(f"{tokens[t]!r} ({', '.join(by_token[t])})" for t in by_token) or "no answers"
        raise ValueError(f"{train_jsonl}: AUROC needs the training answers to start with two tokens, one for "
                         f"the yes answers and one for the no answers; their first tokens: {found}")
    by_label = {label: {"token": tokens[t], "token_id": t, "answers": by_token[t]} for t, (label,) in labels.items()}
    return {"file": str(train_jsonl), "positive": by_label[1], "negative": by_label[0]}


def generation_batches(processor: Phi3VProcessor, examples, images_root: Path, batch_size: int,
                       max_new_tokens: int) -> list[list[int]]:
    """The examples' positions in batches of similar prompt length (``length_groups``: less left
    padding). A batch's forward passes use LongRoPE's long factors once its longest row passes the
    switch, so batches never mix prompts that stay below it while generating, prompts above it from
    the start, and prompts that pass it while generating; each of the last is generated alone (in a
    batch it would switch when the longest row does)."""
    lengths = [processor.prompt_length(ex["conversations"][0], images_root) for ex in examples]

    def side(position: int, length: int):
        if not processor.uses_long_rope(length + max_new_tokens):
            return "short"
        if processor.uses_long_rope(length):
            return "long"
        return position  # a key of its own

    return length_groups(lengths, batch_size, [side(i, n) for i, n in enumerate(lengths)])


@torch.no_grad()
def generate_answers(model, processor: Phi3VProcessor, examples, images_root: Path, *, batch_size: int,
                     max_new_tokens: int, score_ids: list[int] | None = None, jsonl: Path | None = None):
    """First turn of each example -> (prediction, P(id0) / (P(id0) + P(id1)) at the first generated
    position, or None without ``score_ids``), in the examples' order; generated in batches of up to
    ``batch_size`` (``generation_batches``). ``jsonl``, the examples' file, is named in errors."""
    model.eval()
    results = [None] * len(examples)
    named = f"{jsonl}: " if jsonl else ""
    for rows in generation_batches(processor, examples, images_root, batch_size, max_new_tokens):
        chunk = [examples[i] for i in rows]
        encs = [processor.encode_generation(ex["conversations"][0], images_root, where=f"{named}example {ex['id']!r}")
                for ex in chunk]
        batch = collate(encs, processor.pad_token_id, padding_side="left")
        batch.pop("labels")
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=processor.stop_token_ids,
            pad_token_id=processor.pad_token_id,
            output_scores=score_ids is not None,
            return_dict_in_generate=True,
        )
        new_tokens = out.sequences[:, batch["input_ids"].shape[1] :]
        texts = processor.tokenizer.batch_decode(
            new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        probs = [None] * len(chunk)
        if score_ids is not None:
            first = torch.softmax(out.scores[0].float(), dim=-1)[:, score_ids]
            probs = (first[:, 0] / first.sum(dim=-1).clamp_min(1e-12)).tolist()
        for row, text, prob in zip(rows, texts, probs):
            results[row] = (text, prob)
    return results


def gold_answers(turn: dict) -> list[str]:
    """All accepted answers of a turn: its optional ``answers`` list (DocVQA has several per
    question), else the single ``assistant`` answer."""
    answers = turn.get("answers")
    if answers is None:
        return [turn["assistant"]]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ValueError("'answers' is not a non-empty list of strings")
    return answers


def score_predictions(names: tuple[str, ...], examples: list[dict], outputs) -> list[dict]:
    """One audit record per example: id, prompt, gold, prediction, the per-example score of each
    averaged metric among ``names`` (and for AUROC the binary label and P(yes))."""
    records = []
    for example, (text, prob) in zip(examples, outputs):
        turn = example["conversations"][0]
        try:
            golds = gold_answers(turn)
        except ValueError as e:
            raise ValueError(f"example {example['id']!r}: {e}") from None
        record = {"id": example["id"], "prompt": turn["user"], "gold": golds[0] if len(golds) == 1 else golds,
                  "prediction": text, "scores": example_scores(names, text, golds)}
        if prob is not None:
            try:
                record["label"] = positive_label(turn["assistant"])
            except ValueError as e:
                raise ValueError(f"example {example['id']!r}: {e}") from None
            record["p_yes"] = prob
        records.append(record)
    return records


def evaluate(model_path: Path, eval_jsonl: Path, task: str, *, num_crops: int, batch_size: int,
             max_new_tokens: int, attention: str = "sdpa", limit: int | None = None,
             qlora_base: str = schema_default("evaluation.qlora_base"),
             bootstrap_resamples: int = schema_default("evaluation.bootstrap_resamples"),
             bootstrap_seed: int = schema_default("evaluation.bootstrap_seed"),
             metric: str | None = None, train_jsonl: Path | None = None, max_length: int | None = None) -> dict:
    """Returns a dict: ``metrics`` (point estimates), ``intervals`` (bootstrap 95% intervals),
    ``predictions`` (the audit records), ``artifact`` (the cell's, or None), ``attention_used``,
    ``qlora_base`` (the base a QLoRA adapter was evaluated on, None otherwise) and ``auroc_tokens``
    (the two tokens AUROC scored, None without AUROC). ``metric`` is a custom task's declared
    headline metric (built-in tasks have theirs). ``train_jsonl``: the task's training file, whose
    answers name the AUROC tokens (default ``<task>_train.jsonl`` beside ``eval_jsonl``, where every
    conversion writes it). ``max_length``: the longest prompt (default the model's context).
    ``batch_size`` and ``max_new_tokens`` have no default here: the workflow passes the task's
    ``eval_batch`` and ``max_new_tokens`` (``ftbench.config.eval_settings``, defaults in the config
    schema); the other defaults are the schema's ``evaluation`` ones."""
    names = task_metrics(task, metric)
    model, tokenizer, artifact, eval_base = load_for_eval(model_path, attention, qlora_base)
    processor = Phi3VProcessor.for_model(tokenizer, model.config, num_crops, max_length=max_length)
    examples = converted_examples(eval_jsonl)[:limit]
    if not examples:
        raise ValueError(f"{eval_jsonl}: no examples to evaluate")
    scored = None
    if "auroc" in names:
        scored = auroc_tokens(processor, train_jsonl or jsonl_path(Path(eval_jsonl).parent, task, "train"))
    images_root = Path(eval_jsonl).parent / "images"
    outputs = generate_answers(
        model, processor, examples, images_root, batch_size=batch_size, max_new_tokens=max_new_tokens,
        score_ids=[scored["positive"]["token_id"], scored["negative"]["token_id"]] if scored else None,
        jsonl=eval_jsonl,
    )
    try:
        predictions = score_predictions(names, examples, outputs)
    except ValueError as e:
        raise ValueError(f"{eval_jsonl}: {e}") from None
    metrics, intervals = summarise(names, predictions, resamples=bootstrap_resamples, seed=bootstrap_seed)
    return {
        "metrics": metrics,
        "intervals": intervals,
        "bootstrap": {"resamples": bootstrap_resamples, "seed": bootstrap_seed, "confidence": CONFIDENCE},
        "predictions": predictions,
        "artifact": artifact,
        "attention_used": attention_backends(model),
        "qlora_base": eval_base,
        "auroc_tokens": scored,
    }
