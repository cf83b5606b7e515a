"""Generation fidelity on the tiny base (fp32): the KV cache changes nothing, left-padded batches
equal single examples, and generation ends at ``<|end|>`` / ``<|endoftext|>``."""

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from ftbench.models.loading import load_model, load_tokenizer
from ftbench.models.processing_phi3v import Phi3VProcessor, collate

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def prompts(tiny_base, tmp_path_factory):
    """Three prompts of different lengths: two images, one image, no image."""
    root = tmp_path_factory.mktemp("gen_images")
    for name, size, colour in (("a.png", (60, 40), (200, 30, 30)), ("b.png", (30, 100), (20, 160, 90)),
                               ("c.png", (90, 90), (10, 10, 220))):
        Image.new("RGB", size, colour).save(root / name)
    turns = [
        {"images": ["a.png", "b.png"], "user": "Which of the two pictures is taller? Answer in one word.",
         "assistant": ""},
        {"images": ["c.png"], "user": "What colour is this?", "assistant": ""},
        {"images": [], "user": "Say hello to the whole world, please.", "assistant": ""},
    ]
    tokenizer = load_tokenizer(tiny_base)
    config = load_model(tiny_base).config
    processor = Phi3VProcessor.for_model(tokenizer, config, 4)
    encs = [processor.encode_generation(t, root) for t in turns]
    assert len({len(e.input_ids) for e in encs}) == 3
    return processor, encs


def _inputs(encs, processor):
    batch = collate(encs, processor.pad_token_id, padding_side="left")
    batch.pop("labels")
    return batch


def _generate(model, processor, batch, **kwargs):
    kwargs.setdefault("eos_token_id", processor.stop_token_ids)
    with torch.no_grad():
        return model.generate(**batch, do_sample=False, pad_token_id=processor.pad_token_id,
                              return_dict_in_generate=True, output_logits=True, **kwargs)


def _cached_vs_recomputed(model, processor, enc, new_tokens):
    """``generate`` (KV cache, images only in the first step) vs re-running the whole sequence with
    its images at every step. The stop tokens are suppressed in both so that every step runs."""
    stops = processor.stop_token_ids
    batch = _inputs([enc], processor)
    out = _generate(model, processor, batch, max_new_tokens=new_tokens, suppress_tokens=stops)
    seq = batch["input_ids"]
    manual_logits = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False,
                           pixel_values=batch.get("pixel_values"), image_sizes=batch.get("image_sizes")).logits[:, -1]
            manual_logits.append(logits)
            masked = logits.clone()
            masked[:, stops] = float("-inf")
            seq = torch.cat([seq, masked.argmax(-1, keepdim=True)], dim=1)
    assert out.sequences.tolist() == seq.tolist()
    for step, (cached, full) in enumerate(zip(out.logits, manual_logits)):
        assert torch.allclose(cached, full, atol=1e-4, rtol=0), step
    return seq, batch


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_cached_greedy_generation_equals_a_full_recompute_loop(tiny_base, prompts, attention):
    processor, encs = prompts
    model = load_model(tiny_base, attention=attention).eval()
    for enc in encs:
        _cached_vs_recomputed(model, processor, enc, NEW_TOKENS)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_cached_generation_across_the_longrope_switch(tiny_base, prompts, tmp_path, attention):
    """Past ``original_max_position_embeddings`` LongRoPE switches to the long factors for every
    position: ``generate`` must drop the cache once and re-encode the prefix, images included.
    The tiny base's switch point is lowered so that a short prompt crosses it."""
    processor, encs = prompts
    folder = tmp_path / "short_rope"
    shutil.copytree(tiny_base, folder)
    config = json.loads((folder / "config.json").read_text())
    enc = encs[1]  # one image
    switch = len(enc.input_ids) + 3
    config["original_max_position_embeddings"] = switch
    config["rope_parameters"]["original_max_position_embeddings"] = switch
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder, attention=attention).eval()
    assert model.config.original_max_position_embeddings == switch
    seq, batch = _cached_vs_recomputed(model, processor, enc, 10)
    assert seq.shape[1] > switch
    # The switch matters: past it, the long factors give other logits than the unmodified base.
    kwargs = dict(attention_mask=torch.ones_like(seq), pixel_values=batch["pixel_values"],
                  image_sizes=batch["image_sizes"])
    with torch.no_grad():
        long = model(input_ids=seq, **kwargs).logits
        short = load_model(tiny_base, attention=attention)(input_ids=seq, **kwargs).logits
    assert not torch.allclose(long, short, atol=1e-3)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_left_padded_batch_equals_each_example_alone(tiny_base, prompts, attention):
    processor, encs = prompts
    model = load_model(tiny_base, attention=attention).eval()
    kwargs = dict(max_new_tokens=NEW_TOKENS, suppress_tokens=processor.stop_token_ids)
    batch = _inputs(encs, processor)
    assert (batch["attention_mask"][:, 0] == 0).sum() == 2  # two rows are left-padded
    out = _generate(model, processor, batch, **kwargs)
    width = batch["input_ids"].shape[1]
    for row, enc in enumerate(encs):
        alone = _generate(model, processor, _inputs([enc], processor), **kwargs)
        assert out.sequences[row, width:].tolist() == alone.sequences[0, len(enc.input_ids):].tolist(), row
        for step in range(NEW_TOKENS):
            assert torch.allclose(out.logits[step][row], alone.logits[step][0], atol=1e-4, rtol=0), (row, step)


class ForceAt(LogitsProcessor):
    """Forces ``token`` in row ``row`` at generation step ``step`` and forbids every stop token before."""

    def __init__(self, prompt_len: int, plan: dict[int, tuple[int, int]], stops: list[int]):
        self.prompt_len, self.plan, self.stops = prompt_len, plan, stops

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        scores = scores.clone()
        for row in range(scores.shape[0]):
            scores[row, self.stops] = float("-inf")
            if row in self.plan and self.plan[row][0] == step:
                scores[row] = float("-inf")
                scores[row, self.plan[row][1]] = 0.0
        return scores


def test_generation_stops_at_end_and_endoftext(tiny_base, prompts):
    processor, encs = prompts
    tokenizer = processor.tokenizer
    end, endoftext = processor.stop_token_ids
    assert tokenizer.convert_ids_to_tokens([end, endoftext]) == ["<|end|>", "<|endoftext|>"]
    model = load_model(tiny_base).eval()
    batch = _inputs(encs, processor)
    width = batch["input_ids"].shape[1]

    # Left alone, a row that generates a stop token is padded after it. (Whether a base of a few
    # pretraining steps stops by itself depends on its data; the forced plan below makes every row stop.)
    out = _generate(model, processor, batch, max_new_tokens=20).sequences[:, width:]
    for row in out.tolist():
        stops = [i for i, t in enumerate(row) if t in (end, endoftext)]
        if stops:
            assert all(t == processor.pad_token_id for t in row[stops[0] + 1 :])

    # Each stop token ends its row; other rows go on; a batch ends when every row has stopped.
    plan = {0: (1, end), 1: (3, endoftext)}
    forced = LogitsProcessorList([ForceAt(width, plan, [end, endoftext])])
    out = _generate(model, processor, batch, max_new_tokens=8, logits_processor=forced).sequences[:, width:]
    assert out.shape[1] == 8  # row 2 never stops
    assert out[0, 1] == end and torch.all(out[0, 2:] == processor.pad_token_id)
    assert out[1, 3] == endoftext and torch.all(out[1, 4:] == processor.pad_token_id)
    assert not any(t in (end, endoftext) for t in out[2].tolist())
    everyone = {0: (1, end), 1: (3, endoftext), 2: (2, end)}
    forced = LogitsProcessorList([ForceAt(width, everyone, [end, endoftext])])
    out = _generate(model, processor, batch, max_new_tokens=8, logits_processor=forced).sequences[:, width:]
    assert out.shape[1] == 4  # stopped when the last row (row 1, step 3) reached its stop token
    # With other stop ids, the same forced tokens do not end generation.
    other = tokenizer.convert_tokens_to_ids("<|system|>")
    out = _generate(model, processor, batch, max_new_tokens=8, eos_token_id=[other],
                    logits_processor=LogitsProcessorList([ForceAt(width, everyone, [other])])).sequences[:, width:]
    assert out.shape[1] == 8 and out[0, 1] == end and out[1, 3] == endoftext and out[2, 2] == end
