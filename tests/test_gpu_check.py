"""scripts/gpu_check.sh, the prepared check for a lent GPU, runs at tiny size on the CPU."""

import json
import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_at_tiny_size_writes_results_table_and_bundle(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [str(REPO / "scripts" / "gpu_check.sh"), "--preset", "tiny", "--strategies", "lora", "--attentions", "sdpa",
         "eager", "--samples", "6", "--num-crops", "4", "--warmup", "1", "--measured", "2", "--loader-workers", "2",
         "--global-batch", "4", "--per-device-batch", "2", "--results",
         str(tmp_path / "gpu"), "--work", str(tmp_path / "work"), "--pack", str(tmp_path / "out" / "gpu.tar.gz")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    folder = tmp_path / "gpu" / "cpu"
    speeds = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/speed.json")}
    assert set(speeds) == {"lora-bf16-sdpa-1x1-s0", "lora-bf16-eager-1x1-s0"}
    for record in speeds.values():
        assert record["measured_steps"] == 2 and record["engine"] == "ddp"
        assert record["loader_workers"] == 2 and 0 <= record["data_wait_s"]["median"] < sum(record["step_times_s"])
        assert record["inputs"] == "synthetic DocVQA-shape pages, random weights"
        assert record["provenance"]["packages"]["torch"].startswith("2.")
    table = (folder / "speed_table.md").read_text()
    assert "| lora " in table and "random weights" in table and "2 loader workers" in table
    assert "data wait" in (folder / "gpu_check.log").read_text()
    assert json.loads((folder / "failures.json").read_text()) == []
    with tarfile.open(tmp_path / "out" / "gpu.tar.gz") as bundle:
        names = bundle.getnames()
    assert "gpu/cpu/lora-bf16-sdpa-1x1-s0/speed.json" in names and "gpu/cpu/speed_table.md" in names
