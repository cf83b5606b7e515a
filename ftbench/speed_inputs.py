"""Inputs for speed runs that need no download: samples with the DocVQA shape and a base of the
full architecture with random weights.

The recipe's speed table is DocVQA at num_crops 16, 2443 LM tokens per sample on average
(microsoft/PhiCookBook md/03.FineTuning/FineTuning_Vision.md; docs/performance.md). A letter-size
page lands on the 4x4 crop grid (2509 image tokens); a slightly longer page on 3x4 (1921). Every
sixth page here is the longer
kind, which puts the mean near 2443 tokens with a short question and answer. What a step costs depends
on these shapes, not on the pixels or the words, so the images are plain pages with dark text lines and
the base has random weights; speed results name the inputs they used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ftbench.atomic import write_json_atomic
from ftbench.data.common import example_id, images_dir, jsonl_path, write_jsonl_atomic

DOCVQA_SHAPE = "docvqa_shape"
LETTER_PAGE = (1700, 2200)  # width, height: 8.5 x 11 in at 200 dpi -> the 4x4 grid at num_crops 16
LONG_PAGE = (1700, 2300)  # -> the 3x4 grid
LONG_EVERY = 6
QUESTIONS = (
    ("What is the date mentioned in this letter?", "March 4, 1998"),
    ("What is the title of the document?", "Annual report"),
    ("Who is the sender of the memo?", "J. Smith"),
    ("What is the total amount?", "$1,250.00"),
    ("What is the page number?", "7"),
    ("To whom is the letter addressed?", "Dr. Brown"),
)


def page_image(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A white page with dark horizontal bars where lines of text would be."""
    width, height = size
    page = np.full((height, width), 255, dtype=np.uint8)
    y = int(rng.integers(120, 200))
    while y < height - 150:
        line_height = int(rng.integers(18, 30))
        x0 = int(rng.integers(100, 180))
        x1 = int(rng.integers(width // 2, width - 100))
        page[y : y + line_height, x0:x1] = int(rng.integers(10, 80))
        y += line_height + int(rng.integers(20, 60))
    return Image.fromarray(page, mode="L")


def write_docvqa_shape(out_dir: str | Path, n: int, seed: int = 0) -> Path:
    """``n`` DocVQA-shaped training examples in the common format (``out_dir/docvqa_shape_train.jsonl``
    + ``images/``). Returns the jsonl path."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    folder = images_dir(out_dir) / "train"
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        size = LONG_PAGE if i % LONG_EVERY == LONG_EVERY - 1 else LETTER_PAGE
        name = f"{example_id('train', i)}_0.png"
        page_image(rng, size).save(folder / name, compress_level=1)
        question, answer = QUESTIONS[i % len(QUESTIONS)]
        records.append({
            "id": example_id("train", i),
            "source": DOCVQA_SHAPE,
            "conversations": [{"images": [f"train/{name}"], "user": question, "assistant": answer}],
        })
    path = jsonl_path(out_dir, DOCVQA_SHAPE, "train")
    write_jsonl_atomic(path, records)
    return path


def build_random_base(preset: str, out_dir: str | Path, seed: int = 0, dtype: str = "bf16",
                      device: str = "cpu") -> dict:
    """A base checkpoint folder with the full architecture of ``preset`` and random weights (``random``
    weights mode: no download). The tokenizer is ftbench's tiny BPE one, its special tokens wired into
    the config; the text of a sample is a few dozen tokens either way, so token counts stay within a
    few percent of the real tokenizer's (the speed results say so)."""
    import torch

    from ftbench.models.loading import COMPUTE_DTYPES, save_base
    from ftbench.models.presets import random_model
    from ftbench.models.tokenizer import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer([q + " " + a for q, a in QUESTIONS] * 4)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<s>", "<|end|>", "<|endoftext|>", "<|image|>")}
    previous = torch.get_default_dtype()
    # Built directly in the storage precision: a full-size fp32 copy would need 17 GB of memory.
    torch.set_default_dtype(COMPUTE_DTYPES[dtype])
    try:
        model = random_model(preset, device=device, seed=seed)
    finally:
        torch.set_default_dtype(previous)
    model.config.bos_token_id = ids["<s>"]
    model.config.eos_token_id = [ids["<|end|>"], ids["<|endoftext|>"]]
    model.config.pad_token_id = ids["<|endoftext|>"]
    model.config.image_token_id = ids["<|image|>"]
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    out_dir = Path(out_dir)
    save_base(model, tokenizer, out_dir)
    description = {
        "preset": preset,
        "weights": "random",
        "seed": seed,
        "dtype": dtype,
        "tokenizer": "ftbench tiny BPE (text token counts differ slightly from the real tokenizer's)",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    write_json_atomic(out_dir / "ftbench_base.json", description)
    return description


def describe_inputs(jsonl: Path, base: Path | None = None) -> str:
    """What a speed row says about its inputs: the samples, and the weights when they are random."""
    with open(jsonl) as handle:
        first = json.loads(handle.readline())
    samples = "synthetic DocVQA-shape pages" if first.get("source") == DOCVQA_SHAPE else "converted samples"
    weights = ""
    if base is not None and (Path(base) / "ftbench_base.json").is_file():
        if json.loads((Path(base) / "ftbench_base.json").read_text()).get("weights") == "random":
            weights = ", random weights"
    return samples + weights
