"""Metrics on worked examples (values computed by hand in the comments) and bootstrap intervals."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ftbench import metrics
from ftbench.metrics import (
    across_seeds,
    anls_cookbook,
    anls_standard,
    auroc,
    bootstrap_auroc_interval,
    bootstrap_mean_interval,
    exact_match,
    example_scores,
    normalise_answer,
    positive_label,
    summarise,
    task_metrics,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- accuracy


def test_accuracy_uses_the_recipes_normalisation():
    assert normalise_answer("  Yes. ") == "yes"
    assert normalise_answer("...MoveLeft..") == "moveleft"
    assert exact_match("No.", "no") == 1.0
    assert exact_match(" TRUE", "True") == 1.0
    assert exact_match("no way", "no") == 0.0  # anything beyond the bare label is wrong
    assert exact_match("yes!", "yes") == 0.0  # only whitespace and '.' are stripped
    assert exact_match("Move Left", "MoveLeft") == 0.0
    assert exact_match("4", ["four", "4"]) == 1.0  # any accepted answer


# --------------------------------------------------------------------------- ANLS


def test_anls_cookbook_is_case_sensitive_and_strict_at_the_threshold():
    assert anls_cookbook("red", ["red"]) == 1.0
    assert anls_cookbook("  red. ", ["red"]) == 1.0  # whitespace, then '.', stripped from the prediction
    assert anls_cookbook("Red", ["red"]) == pytest.approx(2 / 3)  # 1 edit / 3 characters
    assert anls_cookbook("recd", ["red"]) == pytest.approx(0.75)  # 1 edit / 4 characters
    assert anls_cookbook("ax", ["ab"]) == 0.0  # NL = 0.5 is not < 0.5
    assert anls_cookbook("blue", ["red"]) == 0.0
    assert anls_cookbook("", ["red"]) == 0.0 and anls_cookbook(" . ", ["red"]) == 0.0
    assert anls_cookbook("Red", ["red", "Red"]) == 1.0  # max over gold answers
    assert anls_cookbook("red cross", ["Red  Cross"]) == pytest.approx(1 - 3 / 10)  # R, C, one space


def test_anls_standard_follows_lmms_eval_and_vlmevalkit():
    assert anls_standard("Red", ["red"]) == 1.0  # lowercased
    assert anls_standard("  Red   Cross ", ["red cross"]) == 1.0  # whitespace collapsed
    assert anls_standard("ax", ["ab"]) == 0.5  # NL = 0.5 keeps 0.5
    assert anls_standard("abc", ["ab"]) == pytest.approx(2 / 3)
    assert anls_standard("wxyz", ["abcd"]) == 0.0
    # their quirk: distance of the normalised strings over the longer raw string, 1 edit / 7 characters
    assert anls_standard("  AX   ", ["ab"]) == pytest.approx(6 / 7)
    assert anls_standard("red.", ["red"]) == pytest.approx(0.75)  # '.' is not stripped here
    assert anls_standard("", [""]) == 1.0 and anls_standard("", ["red"]) == 0.0
    assert anls_standard("reed", ["blue", "red"]) == pytest.approx(0.75)  # best gold answer


# --------------------------------------------------------------------------- AUROC


def test_auroc_worked_examples():
    # positives 0.9, 0.4 vs negatives 0.6, 0.1: 3 of 4 pairs ordered right
    assert auroc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == 0.75
    assert auroc([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3]) == 1.0
    assert auroc([0, 1], [0.9, 0.1]) == 0.0
    assert auroc([1, 0], [0.5, 0.5]) == 0.5  # a tie counts one half
    assert math.isnan(auroc([1, 1], [0.2, 0.3]))  # one class: undefined


def test_positive_label_is_yes_for_hateful_memes():
    assert positive_label("Yes.") == 1
    assert positive_label("no") == 0
    with pytest.raises(ValueError, match="'maybe' is neither 'yes' nor 'no'"):
        positive_label("maybe")


def test_vectorised_bootstrap_auroc_equals_scikit_learn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(50, 30)).astype(float)
    scores = rng.integers(0, 5, size=(50, 30)) / 4.0  # many ties
    got = metrics._auroc_rows(labels, scores)
    for row in range(50):
        if 0 < labels[row].sum() < 30:
            assert got[row] == pytest.approx(roc_auc_score(labels[row], scores[row]))
        else:
            assert math.isnan(got[row])


# --------------------------------------------------------------------------- per example and per evaluation


def test_metric_sets_per_task_and_declared_metric():
    assert task_metrics("docvqa") == ("anls", "anls_cookbook", "accuracy")
    assert task_metrics("hateful_memes") == ("accuracy", "auroc")
    assert task_metrics("nlvr2") == task_metrics("ucf101") == ("accuracy",)
    assert task_metrics("receipts", "anls") == task_metrics("docvqa")  # a custom task's declared metric
    assert task_metrics("memes2", "auroc") == ("accuracy", "auroc")
    assert task_metrics("receipts") == ("accuracy",)
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        task_metrics("receipts", "bleu")


def test_example_scores():
    assert example_scores(task_metrics("docvqa"), "Red", ["red"]) == pytest.approx(
        {"anls": 1.0, "anls_cookbook": 2 / 3, "accuracy": 1.0})
    assert example_scores(task_metrics("hateful_memes"), "yes", ["no"]) == {"accuracy": 0.0}  # AUROC: not per example
    assert example_scores(("accuracy",), "True.", ["True"]) == {"accuracy": 1.0}


def test_summarise_means_and_auroc_with_intervals():
    docvqa = [{"scores": example_scores(task_metrics("docvqa"), p, [g])} for p, g in
              (("Red", "red"), ("blue", "blue"), ("", "green"), ("recd", "red"))]
    values, intervals = summarise(task_metrics("docvqa"), docvqa, resamples=200, seed=0)
    assert values["accuracy"] == pytest.approx(2 / 4)
    assert values["anls_cookbook"] == pytest.approx((2 / 3 + 1 + 0 + 0.75) / 4)
    assert values["anls"] == pytest.approx((1 + 1 + 0 + 0.75) / 4)
    assert list(intervals) == ["anls", "anls_cookbook", "accuracy"]
    memes = [{"scores": {"accuracy": a}, "label": y, "p_yes": p}
             for a, y, p in ((1, 1, 0.9), (0, 1, 0.4), (0, 0, 0.6), (1, 0, 0.1))]
    values, intervals = summarise(("accuracy", "auroc"), memes, resamples=200, seed=0)
    assert values == {"accuracy": 0.5, "auroc": 0.75}
    assert all(low <= values[m] <= high for m, (low, high) in intervals.items())
    with pytest.raises(ValueError, match="no examples"):
        summarise(("accuracy",), [], resamples=100, seed=0)


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("values", [[1.0] * 30 + [0.0] * 10, [0.0] * 99 + [1.0], [0.25, 0.5, 1.0, 0.0, 0.75]])
def test_bootstrap_mean_interval_contains_the_estimate_and_is_seeded(values):
    low, high = bootstrap_mean_interval(values, resamples=1000, seed=0)
    assert 0.0 <= low <= np.mean(values) <= high <= 1.0
    assert (low, high) == bootstrap_mean_interval(values, resamples=1000, seed=0)


def test_bootstrap_interval_depends_on_the_seed_and_shrinks_with_more_data():
    small = [1.0] * 30 + [0.0] * 10
    assert (bootstrap_mean_interval(small, resamples=1000, seed=0)
            != bootstrap_mean_interval(small, resamples=1000, seed=1))
    widths = []
    for n in (40, 400, 4000):
        low, high = bootstrap_mean_interval(small * (n // 40), resamples=1000, seed=0)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0
    # close to the normal approximation 2 * 1.96 * sqrt(p(1-p)/n) at n = 4000
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.75 * 0.25 / 4000), rel=0.1)
    assert bootstrap_mean_interval([1.0] * 20, resamples=500, seed=0) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_mean_interval([], resamples=500, seed=0))


def test_bootstrap_auroc_resamples_pairs():
    rng = np.random.default_rng(0)
    labels = [0, 1] * 20
    scores = (rng.random(40) * 0.6 + np.array(labels) * 0.3).tolist()
    point = auroc(labels, scores)
    low, high = bootstrap_auroc_interval(labels, scores, resamples=1000, seed=0)
    assert low < point < high and 0.0 <= low and high <= 1.0
    assert (low, high) == bootstrap_auroc_interval(labels, scores, resamples=1000, seed=0)
    big_low, big_high = bootstrap_auroc_interval(labels * 10, scores * 10, resamples=1000, seed=0)
    assert big_high - big_low < high - low
    # a perfectly separated set stays perfect in every resample that has both classes
    assert bootstrap_auroc_interval([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], resamples=300, seed=0) == (1.0, 1.0)
    # one positive in 12: resamples without it are left out, not turned into NaN intervals
    lone = bootstrap_auroc_interval([1] + [0] * 11, [0.9] + [0.1 * i for i in range(11)], resamples=300, seed=0)
    assert not any(math.isnan(v) for v in lone)
    assert all(math.isnan(v) for v in bootstrap_auroc_interval([1, 1], [0.1, 0.2], resamples=100, seed=0))


def test_bootstrap_chunks_do_not_change_the_result(monkeypatch):
    values = [1.0] * 30 + [0.0] * 10
    whole = bootstrap_mean_interval(values, resamples=500, seed=3)
    monkeypatch.setattr(metrics, "_CHUNK_ENTRIES", 40 * 7)  # 7 resamples per chunk
    # the generator draws the same index stream whatever the chunk size
    assert bootstrap_mean_interval(values, resamples=500, seed=3) == whole


# --------------------------------------------------------------------------- across seeds


def test_across_seeds_mean_and_t_interval():
    # mean 0.6, sd 0.1, t(0.975, 2 df) = 4.303: half-width 4.303 * 0.1 / sqrt(3) = 0.2484
    mean, low, high = across_seeds([0.5, 0.6, 0.7])
    assert (mean == pytest.approx(0.6) and low == pytest.approx(0.3516, abs=1e-4)
            and high == pytest.approx(0.8484, abs=1e-4))
    # two seeds, t(0.975, 1 df) = 12.706: 0.85 +- 0.635, clipped to [0, 1]
    mean, low, high = across_seeds([0.8, 0.9])
    assert mean == pytest.approx(0.85) and low == pytest.approx(0.2147, abs=1e-4) and high == 1.0
    assert across_seeds([0.7]) == (0.7, 0.7, 0.7)
    assert across_seeds([0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)  # an undefined AUROC is left out
    assert all(math.isnan(v) for v in across_seeds([float("nan")]))


def test_metrics_module_does_not_import_torch():
    code = "import ftbench.metrics, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
