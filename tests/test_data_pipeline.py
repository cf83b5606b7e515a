"""The training data pipeline (ftbench/training/data.py) and evaluation's batching: the same batches
with 0 or 2 loader workers and from a resumed step, micro-batches grouped by length within a step
and never across the LongRoPE switch, host pixels as uint8 that the device normalises exactly."""

from pathlib import Path

import pytest
import torch

from ftbench.config import Cell, load_config, loader_settings, train_settings
from ftbench.data.common import image_root_for, read_examples
from ftbench.evaluate import generate_answers, generation_batches
from ftbench.models.loading import load_model, load_tokenizer
from ftbench.models.processing_phi3v import Phi3VProcessor, collate, length_groups
from ftbench.training.data import StepBatches, answer_targets, step_loader
from ftbench.training.settings import TrainSettings, result_settings

REPO = Path(__file__).resolve().parents[1]

STEPS, GLOBAL_BATCH = 5, 8


@pytest.fixture(scope="module")
def processor(tiny_base):
    return Phi3VProcessor.for_model(load_tokenizer(tiny_base), load_model(tiny_base).config, 1)


def step_batches(tiny_data, processor, per_device_batch=4, rank=0, world_size=1):
    path = tiny_data["docvqa"] / "docvqa_train.jsonl"
    return StepBatches([(path, ex) for ex in read_examples(path)], processor, steps=STEPS, global_batch=GLOBAL_BATCH,
                       per_device_batch=per_device_batch, seed=1, rank=rank, world_size=world_size)


def loaded(batches, start=0, workers=0) -> list:
    return list(step_loader(batches, start, workers, prefetch=2, pin_memory=False))


def assert_same(a, b) -> None:
    assert (a.step, a.targets, a.samples, a.images, a.crops, a.tokens) == (b.step, b.targets, b.samples, b.images,
                                                                           b.crops, b.tokens)
    assert len(a.micro_batches) == len(b.micro_batches)
    for x, y in zip(a.micro_batches, b.micro_batches):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_same_batches_with_0_and_2_workers_and_from_a_resumed_step(tiny_data, processor):
    batches = step_batches(tiny_data, processor)
    in_process = loaded(batches)
    assert [b.step for b in in_process] == list(range(STEPS))
    for a, b in zip(in_process, loaded(batches, workers=2)):
        assert_same(a, b)
    for a, b in zip(in_process[3:], loaded(batches, start=3, workers=2)):  # a resume starts at its step
        assert_same(a, b)


def test_a_step_is_its_rank_share_grouped_by_length(tiny_data, processor):
    """Each step's micro-batches hold exactly the rank's share of that step (never samples of
    another), longest first; the shares of the ranks make up the step's global batch."""
    ids_of = [ex["id"] for ex in read_examples(tiny_data["docvqa"] / "docvqa_train.jsonl")]
    one = step_batches(tiny_data, processor, per_device_batch=2)
    ranks = [step_batches(tiny_data, processor, per_device_batch=2, rank=r, world_size=2) for r in (0, 1)]
    for step in range(STEPS):
        batch = one[step]
        assert batch.samples == GLOBAL_BATCH and len(batch.micro_batches) == GLOBAL_BATCH // 2
        lengths = [int(n) for mb in batch.micro_batches for n in mb["attention_mask"].sum(1)]
        assert lengths == sorted(lengths, reverse=True) and sum(lengths) == batch.tokens
        assert batch.targets == [answer_targets(mb["labels"]) for mb in batch.micro_batches]
        shares = [ranks[r].samples_of(step) for r in (0, 1)]
        assert shares[0] + shares[1] == one.samples_of(step)
        assert sorted(ids_of[i] for i in shares[0] + shares[1]) == sorted(ids_of[i] for i in one.samples_of(step))


def test_no_micro_batch_straddles_the_longrope_switch(tiny_data, processor):
    batches = step_batches(tiny_data, processor)
    lengths = sorted(len(batches.encode(i).input_ids) for i in batches.samples_of(0))
    # A switch inside the range of the data's lengths (the tiny model's own, 4096, is beyond them).
    processor.rope_switch = lengths[len(lengths) // 2]
    try:
        mixed = 0
        for batch in loaded(batches):
            for mb in batch.micro_batches:
                sides = {processor.uses_long_rope(int(n)) for n in mb["attention_mask"].sum(1)}
                assert len(sides) == 1, mb["attention_mask"].sum(1)
            mixed += len(batch.micro_batches) > GLOBAL_BATCH // 4
        assert mixed, "no step had samples on both sides of the switch"
    finally:
        processor.rope_switch = None


def test_length_groups():
    assert length_groups([3, 9, 5, 9, 1], 2) == [[1, 3], [2, 0], [4]]
    assert length_groups([3, 9, 5, 9, 1], 2, ["a", "b", "a", "a", "b"]) == [[1, 4], [3, 2], [0]]


def test_uint8_crops_give_the_float_pixel_values_exactly(tiny_data, processor):
    path = tiny_data["docvqa"] / "docvqa_train.jsonl"
    turns = read_examples(path)[0]["conversations"]
    compact = processor.encode_training(turns, image_root_for(path), uint8_crops=True)
    full = processor.encode_training(turns, image_root_for(path))
    assert compact.crops.dtype == torch.uint8 and compact.pixel_values is None
    on_device = processor.to_device(collate([compact], processor.pad_token_id), torch.device("cpu"))
    assert "crops" not in on_device and torch.equal(on_device["pixel_values"], full.pixel_values)
    assert compact.crops.nbytes * 4 <= full.pixel_values.nbytes


def test_evaluation_batches_by_length_keeps_order_and_the_switch_apart(tiny_base, tiny_data, processor):
    model = load_model(tiny_base)
    path = tiny_data["docvqa"] / "docvqa_val.jsonl"
    examples = read_examples(path)[:8]
    root = image_root_for(path)
    lengths = [processor.prompt_length(ex["conversations"][0], root) for ex in examples]
    assert lengths == [len(processor.encode_generation(ex["conversations"][0], root).input_ids) for ex in examples]
    alone = generate_answers(model, processor, examples, root, batch_size=1, max_new_tokens=4)
    assert generate_answers(model, processor, examples, root, batch_size=8, max_new_tokens=4) == alone

    ordered = sorted(lengths)
    new_tokens = 4
    # below the switch while generating / above it from the start / passing it while generating
    processor.rope_switch = ordered[3] + new_tokens
    try:
        batches = generation_batches(processor, examples, root, 8, new_tokens)
        short = {i for i, n in enumerate(lengths) if n + new_tokens <= processor.rope_switch}
        long = {i for i, n in enumerate(lengths) if n > processor.rope_switch}
        for rows in batches:
            assert set(rows) <= short or set(rows) <= long or len(rows) == 1, (rows, lengths)
        assert sorted(i for rows in batches for i in rows) == list(range(len(examples)))
    finally:
        processor.rope_switch = None


def test_loader_settings_come_from_the_hardware_and_never_change_a_result():
    """The cluster's A100s get the recipe's loader (4 workers, prefetch 2), the embedded default's CPU
    the schema's defaults (the training process encodes); neither is a result-changing setting."""
    cluster = load_config(REPO / "config" / "cluster.yaml")
    cell = Cell("docvqa", "a100", "lora", "bf16", "sdpa", 1, 8, 0)
    gpu = loader_settings(cluster, "a100")
    assert gpu == {"loader_workers": 4, "loader_prefetch": 2}
    assert loader_settings(load_config(REPO / "config.yaml"), "cpu") == {"loader_workers": 0, "loader_prefetch": 2}
    # not in the training settings (the rule's rerun-triggering param), and a checkpoint ignores it
    assert not set(gpu) & set(train_settings(cluster, cell))
    trained = train_settings(cluster, cell)
    assert result_settings(TrainSettings(**trained, **gpu)) == result_settings(TrainSettings(**trained))
