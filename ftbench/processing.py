"""Inputs for Phi-3(.5)-vision: HD image transform, prompts, tokenisation, label masking, batches.

PIL-only (no torchvision). Follows the official processor: images are resized keeping their
aspect ratio to at most ``num_crops`` crops, padded with white to whole crops, normalised with
the CLIP mean/std; a bicubic global view goes first. Each text chunk between image tags is
tokenised on its own with BOS, exactly as the original, so ids match it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ftbench.models.phi3v import image_token_count

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
IGNORE_INDEX = -100
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


def hd_transform(image: Image.Image, num_crops: int, crop_size: int) -> tuple[torch.Tensor, list[int]]:
    """One image -> (num_crops + 1, 3, s, s) float tensor [global, crop_1, ...] zero-padded, and the
    padded HD size [h, w]."""
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
    array = np.asarray(canvas, dtype=np.float32) / 255.0
    hd = torch.from_numpy(array).permute(2, 0, 1)
    hd = (hd - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    h, w = hd.shape[1:]
    global_view = F.interpolate(hd[None], size=(crop_size, crop_size), mode="bicubic", align_corners=False)[0]
    crops = hd.reshape(3, h // crop_size, crop_size, w // crop_size, crop_size).permute(1, 3, 0, 2, 4)
    crops = crops.reshape(-1, 3, crop_size, crop_size)
    slots = torch.zeros(num_crops + 1, 3, crop_size, crop_size)
    slots[0] = global_view
    slots[1 : 1 + crops.shape[0]] = crops
    return slots, [h, w]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None  # (n_images, num_crops + 1, 3, s, s)
    image_sizes: torch.Tensor | None  # (n_images, 2)
    num_images: int


TRUNCATION_POLICIES = ("refuse", "truncate")


class Phi3VProcessor:
    def __init__(self, tokenizer, num_crops: int, crop_size: int, merged_per_side: int, image_token: str = "<|image|>",
                 max_length: int | None = None, truncation: str = "refuse"):
        if truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation: unknown value {truncation!r}; expected one of {', '.join(TRUNCATION_POLICIES)}")
        self.tokenizer = tokenizer
        self.num_crops = num_crops
        self.crop_size = crop_size
        self.merged_per_side = merged_per_side
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.stop_token_ids = [tokenizer.convert_tokens_to_ids("<|end|>"), self.pad_token_id]
        self.max_length = max_length  # training sequences and generation prompts; None: no limit
        self.truncation = truncation

    @classmethod
    def for_model(cls, tokenizer, config, num_crops: int, max_length: int | None = None,
                  truncation: str = "refuse") -> "Phi3VProcessor":
        """``max_length`` defaults to the model's ``max_position_embeddings``."""
        vision = config.vision_config
        merged = vision["image_size"] // vision["patch_size"] // 2
        limit = max_length or getattr(config, "max_position_embeddings", None)
        return cls(tokenizer, num_crops, vision["image_size"], merged, max_length=limit, truncation=truncation)

    def fit_length(self, enc: "Encoded", where: str = "example") -> "Encoded":
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
        return Encoded(enc.input_ids[:limit], labels, enc.pixel_values, enc.image_sizes, enc.num_images)

    @staticmethod
    def user_content(user: str, n_images: int) -> str:
        """Text of a user turn with its image tags: explicit tags are kept, otherwise
        ``<|image_1|>...<|image_n|>\\n`` is prepended (as the recipe's jsonl dataset does)."""
        if IMAGE_TAG.search(user) or n_images == 0:
            return user
        return "".join(f"<|image_{i}|>" for i in range(1, n_images + 1)) + "\n" + user

    @staticmethod
    def chat_prompt(content: str) -> str:
        return f"<|user|>\n{content}<|end|>\n<|assistant|>\n"

    def images_to_tensors(self, images: list[Image.Image]):
        if not images:
            return None, None, []
        outs = [hd_transform(image, self.num_crops, self.crop_size) for image in images]
        pixel_values = torch.stack([o[0] for o in outs])
        image_sizes = torch.tensor([o[1] for o in outs], dtype=torch.long)
        counts = [image_token_count(h, w, self.crop_size, self.merged_per_side) for h, w in image_sizes.tolist()]
        return pixel_values, image_sizes, counts

    def encode_prompt(self, prompt: str, token_counts: list[int]) -> list[int]:
        """Split on ``<|image_N|>``; every text chunk gets BOS; tag N becomes token_counts[N-1]
        image tokens. Tags must be exactly 1..n, matching the number of images."""
        tags = [int(t) for t in IMAGE_TAG.findall(prompt)]
        if sorted(tags) != list(range(1, len(token_counts) + 1)):
            raise ValueError(f"image tags {tags} do not match {len(token_counts)} image(s)")
        chunks = IMAGE_TAG.split(prompt)
        ids = list(self.tokenizer(chunks[0]).input_ids)
        for tag, text in zip(chunks[1::2], chunks[2::2]):
            ids += [self.image_token_id] * token_counts[int(tag) - 1]
            ids += list(self.tokenizer(text).input_ids)
        return ids

    def encode_answer(self, answer: str) -> list[int]:
        return list(self.tokenizer(answer + ANSWER_SUFFIX, add_special_tokens=False).input_ids)

    def encode_training(self, turns: list[dict], images_root: Path, where: str = "example") -> Encoded:
        """All turns: prompts masked with -100, answers (with ``<|end|>\\n<|endoftext|>``) trained.
        Tags restart at 1 in every turn; images of all turns are concatenated in order. ``max_length``
        applies (``fit_length``; ``where`` names the example in its error)."""
        input_ids, labels, pixels, sizes, n_images = [], [], [], [], 0
        for turn in turns:
            images = [load_image(images_root / p) for p in turn["images"]]
            pv, isz, counts = self.images_to_tensors(images)
            prompt_ids = self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(images))), counts)
            answer_ids = self.encode_answer(turn["assistant"])
            input_ids += prompt_ids + answer_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids
            if pv is not None:
                pixels.append(pv)
                sizes.append(isz)
                n_images += len(images)
        encoded = Encoded(
            input_ids, labels, torch.cat(pixels) if pixels else None, torch.cat(sizes) if sizes else None, n_images
        )
        return self.fit_length(encoded, where)

    def encode_generation(self, turn: dict, images_root: Path, blank_images: bool = False,
                          where: str = "example") -> Encoded:
        """A prompt to generate from. One longer than ``max_length`` is refused, naming ``where``:
        truncating it would cut the question or the assistant tag that the answer follows."""
        images = [load_image(images_root / p) for p in turn["images"]]
        if blank_images:
            images = [blank_like(image) for image in images]
        pv, isz, counts = self.images_to_tensors(images)
        ids = self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(images))), counts)
        if self.max_length is not None and len(ids) > self.max_length:
            raise ValueError(f"{where}: prompt of {len(ids)} tokens, more than max_length {self.max_length} "
                             "(prompts are never truncated; raise max_length)")
        return Encoded(ids, [IGNORE_INDEX] * len(ids), pv, isz, len(images))

    def training_length(self, turn: dict, images_root: Path) -> int:
        """Tokens of one turn as training encodes it (prompt, image tokens, answer), the image tokens
        counted from the images' headers, without decoding them."""
        counts = []
        for path in turn["images"]:
            with Image.open(images_root / path) as image:
                size = hd_size(image.width, image.height, self.num_crops, self.crop_size)
            counts.append(image_token_count(*size, self.crop_size, self.merged_per_side))
        prompt = self.encode_prompt(self.chat_prompt(self.user_content(turn["user"], len(counts))), counts)
        return len(prompt) + len(self.encode_answer(turn["assistant"]))


def load_image(path: Path) -> Image.Image:
    """The image at ``path`` as RGB; a missing, empty or undecodable file raises one line naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: image file not found") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:  # PIL's errors for broken files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable image ({reason})") from None


def blank_like(image: Image.Image) -> Image.Image:
    """A uniform grey image of the same size: same token count, no visual content."""
    return Image.new("RGB", image.size, (128, 128, 128))


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
    with_images = [s for s in samples if s.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([s.pixel_values for s in with_images])
        batch["image_sizes"] = torch.cat([s.image_sizes for s in with_images])
    return batch
