"""``per_device_batch`` and the number of processes are speed knobs only: one optimizer step's gradient
(and the weights after it) is the same for 1 or 4 samples per forward pass and for 1 or 2 processes,
up to float rounding, because the loss is normalised by the answer tokens of the whole global batch
(ftbench/train.py). Checked for DDP (the gradients themselves) and DeepSpeed ZeRO-2 (its gradient
norm and the weights after the step), in fp32 so that only summation order differs.

One 2-process run per engine also groups a rank's share around an artificial LongRoPE switch, so
that the ranks run different numbers of micro-batches: the one with fewer repeats its last with
weight 0 (ZeRO-2 reduces in every backward) and the gradient must not change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Step 0 of seed 0 on the tiny DocVQA data: one sample of 43 tokens, seven of 42. A switch at 42 puts
# the long one alone in a micro-batch of its own, on one of the two ranks.
SWITCH = 42

PROBE = '''
import json, sys
from pathlib import Path
import torch
from ftbench.train import CellTrainer
from ftbench.training.distributed import setup_distributed
from ftbench.training.settings import TrainSettings

settings = TrainSettings(**json.loads(sys.argv[1]))
base, data, out, switch = Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), json.loads(sys.argv[5])
dist_info = setup_distributed(need_process_group=settings.engine == "deepspeed")
trainer = CellTrainer(settings, base, [data], dist_info)
trainer.processor.rope_switch = switch
gradients = {}
optimizer_step = trainer.engine.optimizer_step

def capture():
    if settings.engine == "ddp":  # ZeRO-2 keeps its gradients partitioned in its own buffers
        gradients.update({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad})
    return optimizer_step()

trainer.engine.optimizer_step = capture
micro_batches = len(trainer.batches[0].micro_batches)
record = trainer.step()
weights = {n: p.detach().float().cpu().clone() for n, p in trainer.engine.module.named_parameters() if p.requires_grad}
torch.save({"record": record, "gradients": gradients, "weights": weights, "micro_batches": micro_batches,
            "targets": trainer.batches[0].targets}, f"{out}.rank{dist_info.rank}")
'''


def one_step(tiny_base, tiny_data, tmp_path, engine: str, procs: int, per_device_batch: int, switch=None) -> list:
    settings = {"strategy": "full", "engine": engine, "precision": "fp32", "seed": 0, "steps": 1, "global_batch": 8,
                "per_device_batch": per_device_batch, "learning_rate": 1e-3, "warmup_steps": 0, "weight_decay": 0.0,
                "max_grad_norm": 1e9, "num_crops": 1}
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / f"{engine}-{procs}x{per_device_batch}-{switch}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PATH=f"{BIN}:{os.environ['PATH']}")
    run = subprocess.run(
        [str(BIN / "torchrun"), "--standalone", "--nnodes", "1", "--nproc-per-node", str(procs), str(probe),
         json.dumps(settings), str(tiny_base), str(tiny_data["docvqa"] / "docvqa_train.jsonl"), str(out),
         json.dumps(switch)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return [torch.load(f"{out}.rank{r}", weights_only=True) for r in range(procs)]


def assert_same_step(reference: dict, other: dict, compare_gradients: bool) -> None:
    assert other["record"]["loss"] == pytest.approx(reference["record"]["loss"], rel=1e-6)
    assert other["record"]["grad_norm"] == pytest.approx(reference["record"]["grad_norm"], rel=1e-5)
    names = reference["weights"].keys()
    assert other["weights"].keys() == names
    for name in names:
        # Adam's first update is about lr x g / (|g| + eps): where |g| is near eps, rounding in g moves
        # it most; allowed: 0.1% of the learning rate (1e-3).
        torch.testing.assert_close(other["weights"][name], reference["weights"][name], rtol=0, atol=1e-6)
        if compare_gradients:
            torch.testing.assert_close(other["gradients"][name], reference["gradients"][name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("engine", ["ddp", "deepspeed"])
def test_step_is_the_same_for_any_per_device_batch_and_process_count(tiny_base, tiny_data, tmp_path, engine):
    (reference,) = one_step(tiny_base, tiny_data, tmp_path, engine, 1, 1)
    # The samples' answer-token counts differ: a mean per micro-batch would weigh tokens unequally.
    assert len(set(reference["targets"])) > 1
    layouts = [(2, 4, SWITCH)] if engine == "deepspeed" else [(1, 4, None), (2, 1, None), (2, 4, SWITCH)]
    for procs, per_device_batch, switch in layouts:
        ranks = one_step(tiny_base, tiny_data, tmp_path, engine, procs, per_device_batch, switch)
        if switch is not None:  # the ranks ran different numbers of micro-batches
            assert sorted(r["micro_batches"] for r in ranks) == [1, 2]
        assert_same_step(reference, ranks[0], compare_gradients=engine == "ddp")
