"""Evaluation: load a saved artefact from disk, generate greedily in batches, score.

Metrics follow the recipe (../shared/reference/cookbook.md §10): accuracy after stripping
whitespace and '.', lowercased; DocVQA ANLS case-sensitive with threshold 0.5; plus Hateful Memes
AUROC from P(yes) / (P(yes) + P(no)) at the first answer token.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rapidfuzz.distance import Levenshtein

from ftbench.data.common import read_examples
from ftbench.models.loading import attention_backends, load_model, load_tokenizer
from ftbench.processing import Phi3VProcessor, collate

ANLS_THRESHOLD = 0.5


def normalise_answer(text: str) -> str:
    return text.strip().strip(".").lower()


def exact_match(prediction: str, gold: str) -> float:
    return float(normalise_answer(prediction) == normalise_answer(gold))


def anls_score(prediction: str, golds: list[str], threshold: float = ANLS_THRESHOLD) -> float:
    """The recipe's ANLS of one question: prediction stripped of whitespace and '.', case kept;
    similarity 1 - NL counts only when NL < threshold; max over gold answers; empty -> 0."""
    prediction = prediction.strip().strip(".")
    if not prediction:
        return 0.0
    best = 0.0
    for gold in golds:
        distance = Levenshtein.distance(gold, prediction) / max(len(gold), len(prediction))
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def auroc(labels: list[int], scores: list[float]) -> float:
    if len(set(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # imported here: scikit-learn takes seconds to import

    return float(roc_auc_score(labels, scores))


def load_for_eval(model_path: Path, attention: str = "sdpa"):
    """A base checkpoint folder, or a cell's ``artifact.json`` (full weights or an adapter; a QLoRA
    adapter is evaluated on the quantised base it was trained on)."""
    model_path = Path(model_path)
    if model_path.name == "artifact.json":
        artifact = json.loads(model_path.read_text())
        target = model_path.parent / artifact["path"]
        if artifact["kind"] == "full":
            return load_model(target, attention=attention), load_tokenizer(target), artifact
        from peft import PeftModel

        quantize = artifact["settings"]["precision"] if artifact.get("quantization") else None
        base = load_model(Path(artifact["base"]), attention=attention, quantize_4bit=quantize)
        model = PeftModel.from_pretrained(base, str(target))
        return model, load_tokenizer(target), artifact
    return load_model(model_path, attention=attention), load_tokenizer(model_path), None


def first_token_ids(processor: Phi3VProcessor, words: tuple[str, ...]) -> list[int]:
    return [processor.encode_answer(w)[0] for w in words]


@torch.no_grad()
def generate_answers(model, processor: Phi3VProcessor, examples, images_root: Path, *, batch_size: int,
                     max_new_tokens: int, score_words: tuple[str, str] | None = None):
    """First turn of each example -> (prediction, P(word0) / (P(word0)+P(word1)) or None)."""
    model.eval()
    score_ids = first_token_ids(processor, score_words) if score_words else None
    results = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        encs = [processor.encode_generation(ex["conversations"][0], images_root) for ex in chunk]
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
        texts = processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        probs = [None] * len(chunk)
        if score_ids is not None:
            first = torch.softmax(out.scores[0].float(), dim=-1)[:, score_ids]
            probs = (first[:, 0] / first.sum(dim=-1).clamp_min(1e-12)).tolist()
        results += list(zip(texts, probs))
    return results


TASK_SCORE_WORDS = {"hateful_memes": ("yes", "no")}


def evaluate(model_path: Path, eval_jsonl: Path, task: str, *, num_crops: int, batch_size: int = 8,
             max_new_tokens: int = 16, attention: str = "sdpa", limit: int | None = None):
    """Returns (metrics, per-example predictions, the cell's artifact or None, attention backends used)."""
    model, tokenizer, artifact = load_for_eval(model_path, attention)
    processor = Phi3VProcessor.for_model(tokenizer, model.config, num_crops)
    examples = read_examples(eval_jsonl)[:limit]
    images_root = Path(eval_jsonl).parent / "images"
    outputs = generate_answers(
        model, processor, examples, images_root, batch_size=batch_size, max_new_tokens=max_new_tokens,
        score_words=TASK_SCORE_WORDS.get(task),
    )
    predictions, accuracy, anls, labels, scores = [], [], [], [], []
    for example, (text, prob) in zip(examples, outputs):
        turn = example["conversations"][0]
        gold = turn["assistant"]
        record = {"id": example["id"], "prompt": turn["user"], "gold": gold, "prediction": text}
        record["exact_match"] = exact_match(text, gold)
        accuracy.append(record["exact_match"])
        if task == "docvqa":
            record["anls"] = anls_score(text, [gold])
            anls.append(record["anls"])
        if prob is not None:
            record["p_yes"] = prob
            labels.append(int(normalise_answer(gold) == "yes"))
            scores.append(prob)
        predictions.append(record)
    metrics = {"accuracy": sum(accuracy) / len(accuracy)}
    if anls:
        metrics["anls"] = sum(anls) / len(anls)
    if scores:
        metrics["auroc"] = auroc(labels, scores)
    return metrics, predictions, artifact, attention_backends(model)
