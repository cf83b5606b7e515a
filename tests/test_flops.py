import pytest

from ftbench.flops import flops_per_sample, mfu, shape_of
from ftbench.models.presets import phi35_vision_config

DOCVQA_TOKENS, DOCVQA_CROPS = 2443.23, 17  # num_crops 16: 4x4 grid + global view


@pytest.fixture(scope="module")
def shape():
    return shape_of(phi35_vision_config())


def test_matmul_parameter_counts(shape):
    assert shape.n_lm == pytest.approx(3.722e9, rel=1e-3)
    assert shape.n_vit == pytest.approx(289e6, rel=2e-3)  # 23 of 24 CLIP layers are run
    assert shape.n_proj == pytest.approx(22.0e6, rel=2e-3)
    assert shape.vision_tokens_per_crop == 577 and shape.merged_tokens_per_crop == 144


def test_docvqa_worked_example(shape):
    """The worked example of docs/performance.md: 80.6 TFLOP per DocVQA sample at num_crops 16."""
    full = flops_per_sample(shape, DOCVQA_TOKENS, DOCVQA_CROPS, "full")
    assert full["total"] / 1e12 == pytest.approx(80.6, abs=0.05)
    assert full["lm_dense"] / 1e12 == pytest.approx(54.6, abs=0.05)
    assert full["lm_attention"] / 1e12 == pytest.approx(7.0, abs=0.05)
    assert full["vision_dense"] / 1e12 == pytest.approx(17.1, abs=0.1)
    assert full["vision_attention"] / 1e12 == pytest.approx(1.6, abs=0.05)
    assert flops_per_sample(shape, DOCVQA_TOKENS, DOCVQA_CROPS, "frozen_vision")["total"] / 1e12 == pytest.approx(
        67.9, abs=0.05)
    assert flops_per_sample(shape, DOCVQA_TOKENS, DOCVQA_CROPS, "lora")["total"] / 1e12 == pytest.approx(56.6, abs=0.05)


def test_implied_mfu_of_the_recipe_speed_table(shape):
    """8xA100, full fine-tuning with flash attention: 8.657 img/s -> 28% MFU (§3.4)."""
    full = flops_per_sample(shape, DOCVQA_TOKENS, DOCVQA_CROPS, "full")["total"]
    assert mfu(8.657, full, 8, 312.0) == pytest.approx(0.280, abs=0.002)
    frozen = flops_per_sample(shape, DOCVQA_TOKENS, DOCVQA_CROPS, "frozen_vision")["total"]
    assert mfu(17.578, frozen, 8, 312.0) == pytest.approx(0.478, abs=0.003)


def test_speed_summary_uses_measured_steps_only():
    from ftbench.speed import percentile, summarise

    times = [0.5, 0.25, 0.25, 1.0]
    s = summarise(times, samples=40, images=80, tokens=4000, crops=160, vision_tokens_per_crop=577)
    assert s["samples_per_s"] == pytest.approx(40 / 2.0)
    assert s["vision_tokens_per_s"] == pytest.approx(160 * 577 / 2.0)  # CLIP ViT-L/14-336: 24x24 patches + CLS
    assert s["images_per_s"] == pytest.approx(80 / 2.0) and s["lm_tokens_per_s"] == pytest.approx(2000)
    assert s["mean_tokens_per_sample"] == 100 and s["mean_crops_per_sample"] == 4
    assert s["step_time_s"]["median"] == pytest.approx(0.375)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.1) == pytest.approx(1.4)
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9) == pytest.approx(4.6)
