"""The embedded default's base model: the tiny Phi-3.5-vision architecture, pretrained on CPU.

A real base model can see, and knows roughly what answers look like, but has not been tuned on
the benchmark tasks. The tiny base gets the same properties by construction:

- a tokenizer trained offline on the tasks' texts;
- a short pretraining on a mixture of (a) captions of generated pictures of one coloured shape,
  worded with their own vocabulary ("crimson disc", "navy box": never a task's answer word), which
  teaches the image path to carry colour and shape, and (b) every task's prompts and answers with
  each image replaced by a uniform grey image of the same size, which teaches answer formats but
  cannot tell which answer an image asks for.

Evaluation before fine-tuning therefore sits near chance, and fine-tuning has to learn to read the
task's images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ftbench.data.common import image_root_for, json_lines, write_jsonl_atomic
from ftbench.data.manifest import converted_examples
from ftbench.models.loading import save_base
from ftbench.models.phi3v import Phi3VForCausalLM
from ftbench.models.presets import tiny_config
from ftbench.models.processing_phi3v import ANSWER_SUFFIX, Phi3VProcessor, image_size
from ftbench.models.tokenizer import train_tiny_tokenizer
from ftbench.schema import schema_default
from ftbench.train import TrainSettings, set_seed, train_cell

CAPTION_COLOURS = {"crimson": (220, 30, 30), "lime": (30, 200, 40), "navy": (30, 40, 220), "gold": (235, 215, 30)}
CAPTION_SHAPES = ("disc", "box")
CAPTION_PROMPT = "Describe the picture."
CAPTION_SOURCE = "caption"
GREY = (128, 128, 128)


def caption_images(out_dir: Path, n: int, seed: int) -> Path:
    """Writes ``captions.jsonl`` + ``images/``: one coloured disc or box per picture."""
    rng = np.random.default_rng(seed)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        colour = list(CAPTION_COLOURS)[i % len(CAPTION_COLOURS)]
        shape = CAPTION_SHAPES[(i // len(CAPTION_COLOURS)) % 2]
        w, h = int(rng.integers(40, 80)), int(rng.integers(40, 80))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(170, 250, size=3)))
        side = int(min(w, h) * rng.uniform(0.55, 0.85))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in CAPTION_COLOURS[colour])
        draw = ImageDraw.Draw(image)
        (draw.ellipse if shape == "disc" else draw.rectangle)([x, y, x + side - 1, y + side - 1], fill=fill)
        name = f"caption-{i:06d}.png"
        image.save(out_dir / "images" / name)
        records.append({"id": f"caption-{i:06d}", "source": CAPTION_SOURCE,
                        "conversations": [{"images": [name], "user": CAPTION_PROMPT,
                                           "assistant": f"a {colour} {shape}"}]})
    path = out_dir / "captions.jsonl"
    write_jsonl_atomic(path, records)
    return path


def format_examples(task_train_jsonl: Path, out_dir: Path) -> Path:
    """Writes ``out_dir/<the file's name>`` + ``images/``: the first turn of each of the file's
    examples, in order, each image replaced by a uniform grey one of the same size (the same tokens,
    no visual content; one file per size)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    records, written = [], set()
    root = image_root_for(task_train_jsonl)
    for example in converted_examples(task_train_jsonl):
        turn = example["conversations"][0]
        names = []
        for image_path in turn["images"]:
            width, height = image_size(root / image_path)
            name = f"grey-{width}x{height}.png"
            if name not in written:
                Image.new("RGB", (width, height), GREY).save(out_dir / "images" / name)
                written.add(name)
            names.append(name)
        records.append({**example, "conversations": [{**turn, "images": names}]})
    path = out_dir / task_train_jsonl.name
    write_jsonl_atomic(path, records)
    return path


def corpus(jsonl_files: list[Path]):
    for path in jsonl_files:
        for example in converted_examples(path):
            for turn in example["conversations"]:
                yield f"<|user|>\n{turn['user']}<|end|>\n<|assistant|>\n{turn['assistant']}{ANSWER_SUFFIX}"


def check_lengths(task_train_jsonl: list[Path], processor: Phi3VProcessor) -> None:
    """Pretraining trains on each task example's first turn, its images grey (as long as the images
    themselves): one longer than ``processor.max_length``, the model's context, is refused before the
    first step, naming its file and line, instead of allocating memory for it. The tasks' own
    ``max_length`` is a fine-tuning setting and does not apply here: the base depends on its own
    settings only, and changing a task's limit must not rebuild it (and rerun every cell)."""
    for path in task_train_jsonl:
        for lineno, example in json_lines(path):
            tokens = processor.training_length(example["conversations"][0], image_root_for(path))
            if tokens > processor.max_length:
                raise ValueError(f"{path}:{lineno}: first turn of {tokens} tokens, more than the tiny base's context "
                                 f"of {processor.max_length}, which pretrains on every example's first turn")


def build_tiny_base(task_train_jsonl: list[Path], out_dir: Path, *, steps: int, seed: int, learning_rate: float,
                    global_batch: int, captions: int = schema_default("model.pretrain.captions"),
                    vocab_size: int = 512, num_crops: int = 1,
                    log=print) -> dict:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    set_seed(seed)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        scratch = Path(scratch)
        task_train_jsonl = [Path(p) for p in task_train_jsonl]
        caption_jsonl = caption_images(scratch / "captions", captions, seed)
        tokenizer = train_tiny_tokenizer(corpus(task_train_jsonl + [caption_jsonl]), vocab_size=vocab_size)
        config = tiny_config(tokenizer)
        check_lengths(task_train_jsonl, Phi3VProcessor.for_model(tokenizer, config, num_crops))
        model = Phi3VForCausalLM(config)
        save_base(model, tokenizer, scratch / "init")
        formats = [format_examples(p, scratch / f"formats-{i}") for i, p in enumerate(task_train_jsonl)]
        settings = TrainSettings(
            strategy="full", engine="ddp", precision="fp32", seed=seed, steps=steps, global_batch=global_batch,
            per_device_batch=global_batch, learning_rate=learning_rate, warmup_steps=max(1, steps // 10),
            weight_decay=0.0, num_crops=num_crops, freeze_embed_tokens=False,
        )
        # No checkpoints (not the config's checkpoint_every): the scratch folder does not outlive the build.
        info = train_cell(settings, scratch / "init", formats + [caption_jsonl], scratch / "trained", log=log,
                          checkpoint_every=0)
        trained = Phi3VForCausalLM.from_pretrained(str(scratch / "trained" / "model"))
        save_base(trained, tokenizer, out_dir)
    description = {
        "preset": "tiny",
        "how": "random init; pretraining on generated captions and on the tasks' formats with grey images "
        "(ftbench.pretrain)",
        "steps": steps,
        "seed": seed,
        "captions": captions,
        "first_loss": info["first_loss"],
        "final_loss": info["final_loss"],
        "parameters": info["total_parameters"],
        "vocab_size": len(tokenizer),
    }
    (out_dir / "ftbench_base.json").write_text(json.dumps(description, indent=2))
    return description
