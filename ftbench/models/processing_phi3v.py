"""The Phi-3(.5)-vision processor: HD image transform, prompts, tokenisation, label masking, batches.

PIL-only (no torchvision). Follows the official processor: images are resized keeping their
aspect ratio to at most ``num_crops`` crops, padded with white to whole crops, normalised with
the CLIP mean/std; a bicubic global view goes first. Each text chunk between image tags is
tokenised on its own with BOS, exactly as the original, so ids match it. Training keeps the pixels
as uint8 sub-crops on the host and normalises them on the device (``Phi3VProcessor.to_device``),
with the same values as the float path.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ftbench.data.common import IMAGE_TAG_RE, image_tag
from ftbench.models.phi3v import IGNORE_INDEX, image_token_count

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ANSWER_SUFFIX = "<|end|>\n<|endoftext|>"
CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>", "<|image|>"]


def hd_scale(width: int, height: int, num_crops: int) -> int:
    """Largest integer scale with scale * ceil(scale / ratio) <= num_crops (ratio = long/short)."""
    ratio = width / height
    scale = 1
    while (scale + 1) * math.ceil((scale + 1) / ratio) <= num_crops:
        scale += 1
    return scale


def hd_layout(width: int, height: int, num_crops: int, crop_size: int) -> tuple[int, int, int]:
    """An image in landscape orientation (width >= height): its resized width and height, and the
    height padded to whole crops."""
    new_w = hd_scale(width, height, num_crops) * crop_size
    new_h = int(new_w / (width / height))
    return new_w, new_h, math.ceil(new_h / crop_size) * crop_size


def hd_size(width: int, height: int, num_crops: int, crop_size: int) -> list[int]:
    """The padded HD size [h, w] that ``hd_transform`` gives an image of ``width`` x ``height``."""
    if width < height:  # transposed to landscape and back
        new_w, _, padded_h = hd_layout(height, width, num_crops, crop_size)
        return [new_w, padded_h]
    new_w, _, padded_h = hd_layout(width, height, num_crops, crop_size)
    return [padded_h, new_w]


def hd_canvas(image: Image.Image, num_crops: int, crop_size: int) -> torch.Tensor:
    """One image resized to at most ``num_crops`` crops and padded with white to whole crops: the
    (3, h, w) uint8 pixels before normalisation."""
    image = image.convert("RGB")
    transposed = image.width < image.height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    new_w, new_h, padded_h = hd_layout(image.width, image.height, num_crops, crop_size)
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (new_w, padded_h), (255, 255, 255))
    canvas.paste(image, (0, (padded_h - new_h) // 2))
    if transposed:
        canvas = canvas.transpose(Image.Transpose.TRANSPOSE)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1)


def canvas_crops(canvas: torch.Tensor, crop_size: int) -> torch.Tensor:
    """(3, h, w) -> (h/s * w/s, 3, s, s), row by row."""
    _, h, w = canvas.shape
    crops = canvas.reshape(3, h // crop_size, crop_size, w // crop_size, crop_size).permute(1, 3, 0, 2, 4)
    return crops.reshape(-1, 3, crop_size, crop_size)


def pixel_slots(crops: torch.Tensor, image_sizes: list[list[int]], num_crops: int, crop_size: int) -> torch.Tensor:
    """The model's ``pixel_values`` (n_images, num_crops + 1, 3, s, s), on the device of ``crops``:
    per image [global view, crop_1, ...] normalised with the CLIP mean/std, unused slots zero.
    ``crops`` are the uint8 sub-crops of all images in order (``canvas_crops``); the global view is
    the bicubic resize of the normalised padded image, as the official processor computes it."""
    s = crop_size
    mean = torch.tensor(CLIP_MEAN, device=crops.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=crops.device).view(3, 1, 1)
    slots = torch.zeros(len(image_sizes), num_crops + 1, 3, s, s, device=crops.device)
    start = 0
    for i, (h, w) in enumerate(image_sizes):
        n = (h // s) * (w // s)
        normalised = (crops[start : start + n].float() / 255.0 - mean) / std
        start += n
        hd = normalised.reshape(h // s, w // s, 3, s, s).permute(2, 0, 3, 1, 4).reshape(3, h, w)
        slots[i, 0] = F.interpolate(hd[None], size=(s, s), mode="bicubic", align_corners=False)[0]
        slots[i, 1 : 1 + n] = normalised
    return slots


def hd_transform(image: Image.Image, num_crops: int, crop_size: int) -> tuple[torch.Tensor, list[int]]:
    """One image -> (num_crops + 1, 3, s, s) float tensor [global, crop_1, ...] zero-padded, and the
    padded HD size [h, w]."""
    canvas = hd_canvas(image, num_crops, crop_size)
    size = list(canvas.shape[1:])
    return pixel_slots(canvas_crops(canvas, crop_size), [size], num_crops, crop_size)[0], size


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None  # (n_images, num_crops + 1, 3, s, s) normalised, as the model takes them
    image_sizes: torch.Tensor | None  # (n_images, 2)
    num_images: int
    # Training's host-side form instead of pixel_values: the images' used sub-crops as uint8
    # (used crops of all images, 3, s, s), a quarter of the float slots' bytes and no normalisation
    # work on the host; ``Phi3VProcessor.to_device`` builds pixel_values from them on the device.
    crops: torch.Tensor | None = None


TRUNCATION_POLICIES = ("refuse", "truncate")


class Phi3VProcessor:
    def __init__(self, tokenizer, num_crops: int, crop_size: int, merged_per_side: int, image_token: str = "<|image|>",
                 max_length: int | None = None, truncation: str = "refuse", rope_switch: int | None = None):
        if truncation not in TRUNCATION_POLICIES:
            raise ValueError(
                f"truncation: unknown value {truncation!r}; expected one of {', '.join(TRUNCATION_POLICIES)}"
            )
        self.tokenizer = tokenizer
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.merged_per_side = merged_per_side
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.stop_token_ids = [tokenizer.convert_tokens_to_ids("<|end|>"), self.pad_token_id]
        self.max_length = max_length  # training sequences and generation prompts; None: no limit
        self.truncation = truncation
        # LongRoPE: a forward pass whose longest row has more tokens than this uses the long rope factors
        # for every row (transformers picks them from the largest position), so batches keep rows on
        # either side of it apart. None: no switch (another rope type).
        self.rope_switch = rope_switch

    @classmethod
    def for_model(cls, tokenizer, config, num_crops: int, max_length: int | None = None,
                  truncation: str = "refuse") -> Phi3VProcessor:
        """``max_length`` defaults to the model's ``max_position_embeddings``."""
        vision = config.vision_config
        merged = vision["image_size"] // vision["patch_size"] // 2
        limit = max_length or getattr(config, "max_position_embeddings", None)
        rope = getattr(config, "rope_parameters", None) or {}
        switch = rope.get("original_max_position_embeddings") if rope.get("rope_type") == "longrope" else None
        return cls(tokenizer, num_crops, vision["image_size"], merged, max_length=limit, truncation=truncation,
                   rope_switch=switch)

    def uses_long_rope(self, length: int) -> bool:
        """Whether a forward pass over ``length`` tokens uses LongRoPE's long factors."""
        return self.rope_switch is not None and length > self.rope_switch

    def fit_length(self, enc: Encoded, where: str = "example") -> Encoded:
        """Applies ``max_length`` to a training sequence. ``refuse``: a longer one raises one line
        naming ``where``; ``truncate``: its first ``max_length`` tokens are kept, unless that would cut
        into image tokens (their count must match the pixels) or leave no answer token to train."""
        n = len(enc.input_ids)
        if self.max_length is None or n <= self.max_length:
            return enc
        limit = self.max_length
        if self.truncation == "refuse":
            raise ValueError(f"{where}: {n} tokens, more than max_length {limit} (truncation: refuse; raise "
                             "max_length or set truncation: truncate)")
        if self.image_token_id in enc.input_ids[limit:]:
            raise ValueError(f"{where}: {n} tokens, more than max_length {limit}, and truncating would cut "
                             "image tokens; raise max_length")
        labels = enc.labels[:limit]
        if all(label == IGNORE_INDEX for label in labels):
            raise ValueError(f"{where}: {n} tokens, more than max_length {limit}, and truncating would leave no "
                             "answer token to train on; raise max_length")
        return replace(enc, input_ids=enc.input_ids[:limit], labels=labels)

    @staticmethod
    def user_content(user: str, n_images: int) -> str:
        """Text of a user turn with its image tags: explicit tags are kept, otherwise
        ``<|image_1|>...<|image_n|>\\n`` is prepended (as the recipe's jsonl dataset does)."""
        if IMAGE_TAG_RE.search(user) or n_images == 0:
            return user
        return "".join(image_tag(i) for i in range(1, n_images + 1)) + "\n" + user

    @staticmethod
    def chat_prompt(content: str) -> str:
        return f"<|user|>\n{content}<|end|>\n<|assistant|>\n"

    def images_to_crops(self, images: list[Image.Image]):
        """-> (uint8 sub-crops of all images (``canvas_crops``) or None, image_sizes (n, 2), image tokens per image)."""
        if not images:
            return None, None, []
        canvases = [hd_canvas(image, self.num_crops, self.crop_size) for image in images]
        crops = torch.cat([canvas_crops(canvas, self.crop_size) for canvas in canvases])
        image_sizes = torch.tensor([list(canvas.shape[1:]) for canvas in canvases], dtype=torch.long)
        counts = [image_token_count(h, w, self.crop_size, self.merged_per_side) for h, w in image_sizes.tolist()]
        return crops, image_sizes, counts

    def images_to_tensors(self, images: list[Image.Image]):
        """-> (pixel_values (n, num_crops + 1, 3, s, s) or None, image_sizes, image tokens per image)."""
        crops, image_sizes, counts = self.images_to_crops(images)
        if crops is None:
            return None, None, []
        return pixel_slots(crops, image_sizes.tolist(), self.num_crops, self.crop_size), image_sizes, counts

    def to_device(self, batch: dict, device: torch.device) -> dict:
        """A collated batch on ``device`` as the model takes it. The copies do not block the host (they
        overlap with compute when the batch is in pinned memory); uint8 ``crops`` become the
        normalised ``pixel_values`` there."""
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if "crops" in moved:
            sizes = batch["image_sizes"].tolist()  # from the host copy: no device round trip
            moved["pixel_values"] = pixel_slots(moved.pop("crops"), sizes, self.num_crops, self.crop_size)
        return moved

    def encode_prompt(self, prompt: str, token_counts: list[int]) -> list[int]:
        """Split on ``<|image_N|>``; every text chunk gets BOS; tag N becomes token_counts[N-1]
        image tokens. Tags must be exactly 1..n, matching the number of images."""
        tags = [int(t) for t in IMAGE_TAG_RE.findall(prompt)]
        if sorted(tags) != list(range(1, len(token_counts) + 1)):
            raise ValueError(f"image tags {tags} do not match {len(token_counts)} image(s)")
        chunks = IMAGE_TAG_RE.split(prompt)
        ids = list(self.tokenizer(chunks[0]).input_ids)
        for tag, text in zip(chunks[1::2], chunks[2::2]):
            ids += [self.image_token_id] * token_counts[int(tag) - 1]
            ids += list(self.tokenizer(text).input_ids)
        return ids

    def encode_answer(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer + ANSWER_SUFFIX, add_special_tokens=False).input_ids)

    def encode_training(self, turns: list[dict], images_root: Path, where: str = "example",
                        uint8_crops: bool = False) -> Encoded:
        """All turns: prompts masked with -100, answers (with ``<|end|>\\n<|endoftext|>``) trained.
        Tags restart at 1 in every turn; images of all turns are concatenated in order. ``max_length``
        applies (``fit_length``; ``where`` names the example in its error). ``uint8_crops``: the
        pixels in training's host-side form (``Encoded.crops``) instead of ``pixel_values``."""
        input_ids, labels, crops, sizes, n_images = [], [], [], [], 0
        for turn in turns:
            images = [load_image(images_root / p) for p in turn["images"]]
            turn_crops, turn_sizes, counts = self.images_to_crops(images)
            prompt_ids = self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(images))), counts)
            answer_ids = self.encode_answer(turn["assistant"])
            input_ids += prompt_ids + answer_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
            if turn_crops is not None:
                crops.append(turn_crops)
                sizes.append(turn_sizes)
                n_images += len(images)
        image_sizes = torch.cat(sizes) if sizes else None
        encoded = Encoded(input_ids, labels, None, image_sizes, n_images)
        if crops and uint8_crops:
            encoded.crops = torch.cat(crops)
        elif crops:
            encoded.pixel_values = pixel_slots(torch.cat(crops), image_sizes.tolist(), self.num_crops, self.crop_size)
        return self.fit_length(encoded, where)

    def encode_generation(self, turn: dict, images_root: Path, where: str = "example") -> Encoded:
        """A prompt to generate from. One longer than ``max_length`` is refused, naming ``where``:
        truncating it would cut the question or the assistant tag that the answer follows."""
        images = [load_image(images_root / p) for p in turn["images"]]
        pixel_values, image_sizes, counts = self.images_to_tensors(images)
        ids = self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(images))), counts)
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(f"{where}: prompt of {len(ids)} tokens, more than max_length {self.max_length} "
                             "(prompts are never truncated; raise max_length)")
        return Encoded(ids, [IGNORE_INDEX] * len(ids), pixel_values, image_sizes, len(images))

    def prompt_length(self, turn: dict, images_root: Path) -> int:
        """Tokens of one turn's prompt (image tokens included) as ``encode_generation`` encodes it, the
        image tokens counted from the images' headers, without decoding them."""
        counts = []
        for path in turn["images"]:
            size = hd_size(*image_size(images_root / path), self.num_crops, self.crop_size)
            counts.append(image_token_count(*size, self.crop_size, self.merged_per_side))
        return len(self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(counts))), counts))

    def training_length(self, turn: dict, images_root: Path) -> int:
        """Tokens of one turn as training encodes it (prompt, image tokens, answer), without decoding
        its images (``prompt_length``)."""
        return self.prompt_length(turn, images_root) + len(self.encode_answer(turn["assistant"]))


@contextmanager
def opened_image(path: Path):
    """The image file at ``path``, opened; a missing, empty or undecodable file (when opened or read
    in the block) raises one line naming it."""
    try:
        with Image.open(path) as image:
            yield image
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's errors for broken files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable image ({reason})") from None


def load_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB (errors: ``opened_image``)."""
    with opened_image(path) as image:
        image.load()
        return image.convert("RGB")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image at ``path``, from its header (errors: ``opened_image``)."""
    with opened_image(path) as image:
        return image.size


def length_groups(lengths: list[int], batch_size: int, keys: list | None = None) -> list[list[int]]:
    """The positions of ``lengths`` in batches of at most ``batch_size``, longest first: sorted by
    length, a batch pads little, and the longest batch runs first, so that one too large for memory
    fails at once. Rows of different ``keys`` never share a batch. Ties keep the input order: the
    batches are a function of the arguments."""
    keys = keys if keys is not None else [None] * len(lengths)
    rows_by_key: dict = {}
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        rows_by_key.setdefault(keys[i], []).append(i)
    return [rows[k : k + batch_size] for rows in rows_by_key.values() for k in range(0, len(rows), batch_size)]


def collate(samples: list[Encoded], pad_token_id: int, padding_side: str = "right") -> dict:
    """Pad ids with the pad id and labels with -100; the attention mask comes from the lengths, so a
    real ``<|endoftext|>`` inside a sample is not masked out (a quirk of the recipe's collator)."""
    longest = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), longest), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), longest), dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s.input_ids)
        cols = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        ids[row, cols] = torch.tensor(s.input_ids)
        labels[row, cols] = torch.tensor(s.labels)
        mask[row, cols] = 1
    batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    with_images = [s for s in samples if s.image_sizes is not None]
    if with_images:
        batch["image_sizes"] = torch.cat([s.image_sizes for s in with_images])
        if with_images[0].crops is not None:  # training's uint8 form: Phi3VProcessor.to_device normalises
            batch["crops"] = torch.cat([s.crops for s in with_images])
        else:
            batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images])
    return batch
