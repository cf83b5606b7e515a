"""Evaluation metrics, per example and per evaluation, with bootstrap confidence intervals.

Definitions: ANLS as Biten et al. define it (ICCV 2019, arXiv:1905.13648) and DocVQA scores it (Mathew
et al., WACV 2021, arXiv:2007.00398); AUROC as the Hateful Memes challenge scores it (Kiela et al.,
NeurIPS 2020, arXiv:2005.04790); the recipe's variants as its evaluation scripts compute them
(microsoft/PhiCookBook, docs/evaluation.md). No torch here: the
report stage and the tests import this module in a fraction of a second.

- ``accuracy``: the recipe's exact match: both sides stripped of whitespace, then of '.', then
  lowercased.
- ``anls``: DocVQA ANLS as lmms-eval and VLMEvalKit compute it (the usual headline form).
- ``anls_cookbook``: the recipe's case-sensitive ANLS (comparable with its published table).
- ``auroc``: Hateful Memes AUROC of P(yes) / (P(yes) + P(no)) at the first answer token against
  the gold label (``yes`` = hateful = positive class). The two tokens are the first tokens of the
  task's own training answers (``ftbench.evaluate.auroc_tokens``: the Cauldron's ``Yes.``/``No.``,
  the synthetic data's ``yes``/``no``); the classes are read with ``positive_label``.

Each task reports a set of them (``task_metrics``): DocVQA anls, anls_cookbook, accuracy; Hateful
Memes accuracy, auroc; NLVR2 and UCF-101 accuracy; a custom task the set of its declared metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

ANLS_THRESHOLD = 0.5
CONFIDENCE = 0.95
# Bootstrap resamples are drawn in chunks of at most this many index entries (memory stays bounded
# for large evaluation sets).
_CHUNK_ENTRIES = 2_000_000

# The metrics reported for a headline metric (column order of the tables), and the headline of
# each built-in task. A custom task declares its headline in the config (tasks.<name>.metric).
METRIC_SETS: dict[str, tuple[str, ...]] = {
    "anls": ("anls", "anls_cookbook", "accuracy"),
    "auroc": ("accuracy", "auroc"),
    "accuracy": ("accuracy",),
}
TASK_HEADLINES = {"docvqa": "anls", "hateful_memes": "auroc", "nlvr2": "accuracy", "ucf101": "accuracy"}
TASK_METRICS: dict[str, tuple[str, ...]] = {task: METRIC_SETS[m] for task, m in TASK_HEADLINES.items()}
# AUROC's two classes as normalised answers (``normalise_answer``: ``Yes.`` reads ``yes``), the
# positive class first (Hateful Memes: yes = hateful).
AUROC_CLASSES = ("yes", "no")
# What guessing scores on a built-in task's metrics (the line the figures draw under the results):
# the yes/no tasks' fair coin, and ~0 for DocVQA's free-form answers, which a guess almost never
# matches. UCF-101 guesses one class of its data's list (``chance_level``'s ``classes``).
CHANCE_LEVELS: dict[str, dict[str, float]] = {
    "docvqa": {"anls": 0.0, "anls_cookbook": 0.0, "accuracy": 0.0},
    "hateful_memes": {"accuracy": 0.5, "auroc": 0.5},
    "nlvr2": {"accuracy": 0.5},
}


def task_metrics(task: str, headline: str | None = None) -> tuple[str, ...]:
    """The metrics of a task: a built-in task's, else those of its declared headline metric."""
    if task in TASK_METRICS:
        return TASK_METRICS[task]
    if headline is not None and headline not in METRIC_SETS:
        raise ValueError(f"unknown metric {headline!r}; expected one of {', '.join(METRIC_SETS)}")
    return METRIC_SETS[headline or "accuracy"]


def chance_level(task: str, metric: str, classes: int | None = None) -> float | None:
    """What guessing scores on a task's metric, as a fraction; None where no one value is honest
    (a custom task's accuracy or ANLS: its answers decide). ``classes``: the number of answers a
    classification task's prompt offers (UCF-101: its data's class list), one of which a guess picks."""
    if metric == "auroc":
        return 0.5  # scores that ignore the image rank positives above negatives half the time
    if metric == "accuracy" and classes:
        return 1.0 / classes
    return CHANCE_LEVELS.get(task, {}).get(metric)


# --------------------------------------------------------------------------- per example


def normalise_answer(text: str) -> str:
    """The recipe's normalisation for accuracy: strip whitespace, then '.', then lowercase."""
    return text.strip().strip(".").lower()


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    golds = [golds] if isinstance(golds, str) else golds
    return float(any(normalise_answer(prediction) == normalise_answer(g) for g in golds))


def anls_cookbook(prediction: str, golds: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """The recipe's ANLS of one question: the prediction stripped of whitespace and then of '.',
    case kept, gold answers untouched; similarity 1 - NL counts only when NL < threshold (so
    NL = 0.5 gives 0); max over gold answers; an empty prediction scores 0."""
    prediction = prediction.strip().strip(".")
    if not prediction:
        return 0.0
    best = 0.0
    for gold in golds:
        distance = Levenshtein.distance(gold, prediction) / max(len(gold), len(prediction))
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls_standard(prediction: str, golds: Sequence[str], threshold: float = ANLS_THRESHOLD) -> float:
    """ANLS of one question as lmms-eval (``anls``) and VLMEvalKit (``anls_compute``) compute it:
    both sides stripped, lowercased and whitespace-collapsed before the distance, but the distance
    divided by the longer of the *raw* strings (their quirk, kept so the numbers compare); the best
    similarity over gold answers is kept when >= threshold (so NL = 0.5 keeps 0.5)."""
    if not golds:
        return 0.0
    distances = []
    for gold in golds:
        # .upper() as in the harnesses: it can change the length of a few characters (e.g. 'ß').
        length = max(len(gold.upper()), len(prediction.upper()))
        distance = Levenshtein.distance(_collapse(gold), _collapse(prediction))
        distances.append(0.0 if length == 0 else distance / length)
    similarity = 1.0 - min(distances)
    return similarity if similarity >= threshold else 0.0


def example_scores(names: Sequence[str], prediction: str, golds: Sequence[str]) -> dict[str, float]:
    """The per-example score of each averaged metric among ``names`` (AUROC is not an average of
    per-example scores; it comes from the P(yes) of the examples)."""
    scorers = {"accuracy": exact_match, "anls": anls_standard, "anls_cookbook": anls_cookbook}
    return {name: scorers[name](prediction, golds) for name in names if name in scorers}


def positive_label(gold: str, classes: tuple[str, str] = AUROC_CLASSES) -> int:
    """The binary label of an AUROC answer (1 = the first class, e.g. hateful = yes)."""
    positive, negative = classes
    answer = normalise_answer(gold)
    if answer not in (positive, negative):
        raise ValueError(f"gold answer {gold!r} is neither {positive!r} nor {negative!r}")
    return int(answer == positive)


# --------------------------------------------------------------------------- per evaluation


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """scikit-learn's ROC AUC; NaN when only one class is present (AUROC is undefined)."""
    if len(set(labels)) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # imported here: scikit-learn takes a second to import

    return float(roc_auc_score(labels, scores))


def _resample_indices(n: int, resamples: int, seed: int):
    """Rows of bootstrap indices (each row one resample of n items drawn with replacement), in
    chunks; the same seed gives the same resamples."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // max(n, 1))
    done = 0
    while done < resamples:
        k = min(rows, resamples - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean_interval(values: Sequence[float], *, resamples: int, seed: int,
                            confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-example scores."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    replicates = np.concatenate([values[idx].mean(axis=1) for idx in _resample_indices(values.size, resamples, seed)])
    return _percentile_interval(replicates, confidence)


def _auroc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row (the Mann-Whitney form, ties counting one half, which equals scikit-learn's
    roc_auc_score); NaN for a row with one class only. Vectorised: 1,000 resamples in milliseconds,
    where a roc_auc_score call per resample takes seconds."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    auc[(positives == 0) | (negatives == 0)] = np.nan
    return auc


def bootstrap_auroc_interval(labels: Sequence[int], scores: Sequence[float], *, resamples: int, seed: int,
                             confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of AUROC, resampling (label, score) pairs together; resamples
    with a single class (AUROC undefined) are left out. NaN when the data has one class."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if labels.size == 0 or len(set(labels.tolist())) < 2:
        return math.nan, math.nan
    replicates = np.concatenate(
        [_auroc_rows(labels[idx], scores[idx]) for idx in _resample_indices(labels.size, resamples, seed)]
    )
    replicates = replicates[~np.isnan(replicates)]
    return _percentile_interval(replicates, confidence)


def summarise(names: Sequence[str], records: Sequence[Mapping], *, resamples: int, seed: int,
              confidence: float = CONFIDENCE) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Point estimates and bootstrap intervals of the metrics ``names`` from per-example records
    (as ``ftbench.evaluate`` writes them: ``scores`` per metric, ``label`` and ``p_yes`` for
    AUROC). Returns ``(metrics, intervals)`` with ``intervals[metric] = [low, high]``."""
    if not records:
        raise ValueError("no examples to score")
    metrics, intervals = {}, {}
    for metric in names:
        if metric == "auroc":
            labels = [r["label"] for r in records]
            probs = [r["p_yes"] for r in records]
            metrics[metric] = auroc(labels, probs)
            low, high = bootstrap_auroc_interval(labels, probs, resamples=resamples, seed=seed, confidence=confidence)
        else:
            values = [r["scores"][metric] for r in records]
            metrics[metric] = float(np.mean(values))
            low, high = bootstrap_mean_interval(values, resamples=resamples, seed=seed, confidence=confidence)
        intervals[metric] = [low, high]
    return metrics, intervals


# --------------------------------------------------------------------------- across seeds


def across_seeds(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean over seeds and the Student-t interval of that mean, clipped to [0, 1] (metrics are
    fractions). One value: the interval is that value (use its bootstrap interval instead). NaN
    values (an undefined AUROC) are left out; none left: all NaN."""
    finite = np.asarray([v for v in values if v is not None and not math.isnan(float(v))], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(finite.mean())
    if finite.size == 1:
        return mean, mean, mean
    from scipy import stats

    half = float(stats.t.ppf((1.0 + confidence) / 2.0, finite.size - 1) * stats.sem(finite))
    return mean, max(0.0, mean - half), min(1.0, mean + half)
