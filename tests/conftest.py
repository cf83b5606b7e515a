import os
from pathlib import Path

import pytest

# Tiny models are fastest on one thread, and a busy second core makes two threads erratic.
os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Converted synthetic hateful_memes and docvqa data (small)."""
    from ftbench.data.sources import convert_source
    from ftbench.data.synthetic import make_raw

    root = tmp_path_factory.mktemp("data")
    out = {}
    for task in ("hateful_memes", "docvqa"):
        make_raw(task, root / "raw" / task, 48, 0)
        convert_source(task, "synthetic", root / "raw" / task, root / task, n_val=16, n_test=0, progress=False)
        out[task] = root / task
    return out


@pytest.fixture(scope="session")
def tiny_base(tiny_data, tmp_path_factory):
    """A tiny base checkpoint (tokenizer + a few pretraining steps)."""
    from ftbench.pretrain import build_tiny_base

    out = tmp_path_factory.mktemp("base") / "tiny"
    build_tiny_base(
        [tiny_data[t] / f"{t}_train.jsonl" for t in tiny_data], out, steps=3, seed=0, learning_rate=3e-3,
        global_batch=8, captions=16, log=lambda m: None,
    )
    return out
