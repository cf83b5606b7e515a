"""Processor and image-embedding fidelity: token counts against the published formula, image
features scattered onto exactly the placeholder positions, and padding-invariant batch losses."""

import math
import random

import pytest
import torch
from PIL import Image

from ftbench.data.common import read_examples
from ftbench.models.loading import load_model, load_tokenizer
from ftbench.models.phi3v import IGNORE_INDEX, image_token_count
from ftbench.models.processing_phi3v import Encoded, Phi3VProcessor, collate

CROP, MERGED = 336, 12  # the real Phi-3.5-vision geometry: 24x24 patches -> 12x12 merged tokens


def official_tokens(hc: int, wc: int) -> int:
    """The official processor's count (processing_phi3_v.py of microsoft/Phi-3.5-vision-instruct):
    N = (hc*wc + 1)*144 + 1 + (hc + 1)*12."""
    return (hc * wc + 1) * 144 + 1 + (hc + 1) * 12


def reference_padded_size(width: int, height: int, num_crops: int) -> tuple[int, int]:
    """The official processor's size computation (calc_hd_transform_size), written independently of
    ftbench.models.processing_phi3v: returns the padded [h, w]."""
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = int(scale * CROP)
    new_h = int(new_w / ratio)
    padded_h = int(math.ceil(new_h / CROP) * CROP)
    padded = (padded_h, new_w)
    return (padded[1], padded[0]) if transposed else padded


def random_sizes(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(w, h) log-uniform in [20, 3000] px, plus the extremes (very wide, very tall, tiny, huge)."""
    rng = random.Random(seed)
    sizes = [(20, 3000), (3000, 20), (20, 20), (3000, 3000), (3000, 1000), (25, 2999), (336, 336), (337, 335)]
    while len(sizes) < n + 8:
        w, h = (int(round(math.exp(rng.uniform(math.log(20), math.log(3000))))) for _ in range(2))
        sizes.append((w, h))
    return sizes


SIZES = random_sizes(52)


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    return load_tokenizer(tiny_base)


@pytest.mark.parametrize("num_crops", [4, 16])
def test_token_counts_follow_the_formula_for_random_sizes(tokenizer, num_crops):
    processor = Phi3VProcessor(tokenizer, num_crops, CROP, MERGED)
    grids = set()
    for w, h in SIZES:
        image = Image.new("RGB", (w, h), (w % 256, h % 256, 7))
        pixel_values, image_sizes, counts = processor.images_to_tensors([image])
        ph, pw = image_sizes[0].tolist()
        assert (ph, pw) == reference_padded_size(w, h, num_crops), (w, h)
        assert ph % CROP == 0 and pw % CROP == 0, (w, h)
        hc, wc = ph // CROP, pw // CROP
        assert 1 <= hc * wc <= num_crops, (w, h)
        assert pixel_values.shape == (1, num_crops + 1, 3, CROP, CROP)
        assert torch.count_nonzero(pixel_values[0, 1 + hc * wc :]) == 0  # unused slots stay zero
        expected = official_tokens(hc, wc)
        assert image_token_count(ph, pw, CROP, MERGED) == expected == counts[0], (w, h)
        ids = processor.encode_prompt(processor.chat_prompt(processor.user_content("what is it?", 1)), counts)
        assert ids.count(processor.image_token_id) == expected, (w, h)
        grids.add((hc, wc))
    # The sample reaches wide and tall grids, including the extreme 1 x num_crops ones.
    assert (1, num_crops) in grids and (num_crops, 1) in grids and len(grids) >= 5
    maximum = max(official_tokens(hc, wc) for hc, wc in grids)
    assert maximum == {4: 781, 16: 2653}[num_crops]  # the documented maxima (tall images)


def test_image_tags_map_to_their_own_image_blocks(tokenizer):
    processor = Phi3VProcessor(tokenizer, 16, CROP, MERGED)
    wide, tall = Image.new("RGB", (1000, 250)), Image.new("RGB", (480, 640))
    _, _, counts = processor.images_to_tensors([wide, tall])
    assert counts == [2485, 1933]  # the official processor's counts for these sizes
    ids = processor.encode_prompt("<|user|>\n<|image_2|>\nand<|image_1|>\nsame?<|end|>\n<|assistant|>\n", counts)
    blocks, run = [], 0
    for i in ids + [-1]:
        if i == processor.image_token_id:
            run += 1
        elif run:
            blocks.append(run)
            run = 0
    assert blocks == [counts[1], counts[0]]
    bos = tokenizer.convert_tokens_to_ids("<s>")
    assert ids.count(bos) == 3  # every text chunk gets its own BOS, as in the official processor
    with pytest.raises(ValueError):
        processor.encode_prompt("<|image_1|><|image_3|>", counts)


def _sample(processor: Phi3VProcessor, sizes: list[tuple[int, int]], text: str, answer: str | None = None) -> Encoded:
    images = [Image.new("RGB", size, (40 * i, 90, 200 - 30 * i)) for i, size in enumerate(sizes)]
    pixel_values, image_sizes, counts = processor.images_to_tensors(images)
    ids = processor.encode_prompt(processor.chat_prompt(processor.user_content(text, len(images))), counts)
    labels = [IGNORE_INDEX] * len(ids)
    if answer is not None:
        answer_ids = processor.encode_answer(answer)
        ids, labels = ids + answer_ids, labels + answer_ids
    return Encoded(ids, labels, pixel_values, image_sizes, len(images))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_image_features_land_exactly_on_the_placeholders(tiny_base, tokenizer, monkeypatch, padding_side):
    model = load_model(tiny_base, attention="eager")
    processor = Phi3VProcessor.for_model(tokenizer, model.config, 4)
    two = _sample(processor, [(60, 40), (30, 100)], "compare the two pictures please")
    one = _sample(processor, [(100, 30)], "hi")
    batch = collate([two, one], processor.pad_token_id, padding_side)
    s = processor.crop_size
    counts = [image_token_count(h, w, s, processor.merged_per_side) for h, w in batch["image_sizes"].tolist()]
    assert len(set(counts)) == 3  # three images with three different grids
    total, hidden = sum(counts), model.config.hidden_size
    seen = {}

    def tagged(pixel_values, image_sizes):
        seen["pixel_values"], seen["image_sizes"] = pixel_values, image_sizes
        return torch.arange(total, dtype=torch.float32)[:, None].expand(total, hidden) + 1000.0

    monkeypatch.setattr(model.model.vision_embed_tokens, "forward", tagged)
    ids = batch["input_ids"]
    with torch.no_grad():
        embeds = model.embed_inputs(ids, batch["pixel_values"], batch["image_sizes"])
        tokens = model.model.embed_tokens(ids)
    assert torch.equal(seen["pixel_values"], torch.cat([two.pixel_values, one.pixel_values]))
    assert torch.equal(seen["image_sizes"], torch.cat([two.image_sizes, one.image_sizes]))
    is_image = ids == processor.image_token_id
    assert is_image[0].sum() == counts[0] + counts[1] and is_image[1].sum() == counts[2]
    rows, cols = is_image.nonzero(as_tuple=True)  # row-major: sample 0's images, then sample 1's
    for t, (r, c) in enumerate(zip(rows.tolist(), cols.tolist())):
        assert torch.all(embeds[r, c] == t + 1000.0), (t, r, c)
    assert torch.equal(embeds[~is_image], tokens[~is_image])
    # The original processor's negative ids (-1, -2 per image) address the same positions.
    negative = ids.clone()
    for row, sample in enumerate((two, one)):
        starts = [c for c in range(ids.shape[1]) if is_image[row, c] and (c == 0 or not is_image[row, c - 1])]
        for image, start in enumerate(starts):
            end = start
            while end < ids.shape[1] and is_image[row, end]:
                end += 1
            negative[row, start:end] = -(image + 1)
        assert len(starts) == sample.num_images
    with torch.no_grad():
        assert torch.equal(model.embed_inputs(negative, batch["pixel_values"], batch["image_sizes"]), embeds)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_padded_batch_loss_is_the_token_weighted_loss_of_each_sample(tiny_base, tiny_data, tokenizer, attention):
    model = load_model(tiny_base, attention=attention).eval()
    processor = Phi3VProcessor.for_model(tokenizer, model.config, 4)
    root = tiny_data["hateful_memes"]
    example = read_examples(root / "hateful_memes_train.jsonl")[0]
    encs = [
        processor.encode_training(example["conversations"], root / "images"),
        _sample(processor, [(60, 40), (30, 100)], "two pictures: which one is taller, and why?", "the second one"),
    ]
    assert len(encs[0].input_ids) != len(encs[1].input_ids)
    batch = collate(encs, processor.pad_token_id)
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**batch)
        alone = [model(**collate([e], processor.pad_token_id)) for e in encs]
    weights = [sum(1 for t in e.labels[1:] if t != IGNORE_INDEX) for e in encs]  # shifted targets
    expected = sum(w * a.loss for w, a in zip(weights, alone)) / sum(weights)
    assert torch.allclose(out.loss, expected, atol=1e-5, rtol=0), (float(out.loss), float(expected))
    # With labels the model computes logits at answer positions only; all positions come without them.
    with torch.no_grad():
        full = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        alone = [model(**{k: v for k, v in collate([e], processor.pad_token_id).items() if k != "labels"})
                 for e in encs]
    for row, (e, a) in enumerate(zip(encs, alone)):
        n = len(e.input_ids)
        assert torch.allclose(full[row, :n], a.logits[0], atol=1e-5, rtol=0)
