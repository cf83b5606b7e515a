import copy
from pathlib import Path

import pytest

from ftbench.config import (
    Cell,
    ConfigError,
    expand_matrix,
    load_config,
    skip_reason,
    skipped_tsv,
    split_cells,
    train_settings,
    validate_config,
)
from ftbench.launch import torchrun_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def config():
    return load_config(REPO / "config.yaml")


def test_default_matrix_covers_every_task_strategy_precision_and_a_two_process_layout(config):
    runnable, skipped = split_cells(config)
    assert {c.task for c in runnable} == {"docvqa", "hateful_memes", "nlvr2", "ucf101"}
    assert {c.strategy for c in runnable} == {"full", "frozen_vision", "lora", "qlora"}
    assert {c.precision for c in runnable} == {"bf16", "fp16"}
    assert any(c.procs == 2 for c in runnable)
    # the flash-attention cells are refused on CPU and listed with their reason
    assert skipped and all(c.attention == "flash_attention_2" for c, _ in skipped)
    assert "no flash attention" in skipped[0][1]


def test_default_matrix_has_seeds_and_speed_cells_at_two_process_counts(config):
    # issue 15: one task runs every strategy over three seeds (across-seed intervals in the tables, error
    # bars in the figures), and the speed cells cover 1 and 2 processes (throughput against the count)
    runnable, _ = split_cells(config)
    seeds = {}
    for c in runnable:
        seeds.setdefault((c.task, c.strategy), set()).add(c.seed)
    assert any(all(seeds.get((task, s), set()) >= {0, 1, 2} for s in ("full", "frozen_vision", "lora", "qlora"))
               for task in {c.task for c in runnable})
    speed = [c for c in runnable
             if c.task in config["speed"]["tasks"] and c.precision in config["speed"]["precisions"]]
    procs = {}
    for c in speed:
        procs.setdefault(c.strategy, set()).add(c.nodes * c.procs)
    assert any(v >= {1, 2} for v in procs.values()), procs


def test_cell_name_round_trip_and_path():
    cell = Cell("hateful_memes", "cpu", "lora", "bf16", "sdpa", 1, 2, 0)
    assert cell.name == "lora-bf16-sdpa-1x2-s0"
    assert cell.path() == "results/hateful_memes/cpu/lora-bf16-sdpa-1x2-s0"
    assert Cell.parse("hateful_memes", "cpu", cell.name) == cell
    frozen = Cell.parse("docvqa", "a100", "frozen_vision-fp16-flash_attention_2-4x8-s3")
    assert (frozen.strategy, frozen.attention, frozen.nodes, frozen.procs, frozen.seed) == (
        "frozen_vision", "flash_attention_2", 4, 8, 3)
    with pytest.raises(ConfigError, match="not a cell name"):
        Cell.parse("docvqa", "cpu", "lora-bf16-sdpa-1x2")


def test_skip_reasons(config):
    cfg = copy.deepcopy(config)
    cfg["hardware"]["gpu"] = {"device": "cuda", "processes_per_node": 8, "bf16": False, "flash_attention": True,
                              "four_bit": False}
    fp16_flash = Cell("docvqa", "gpu", "full", "fp16", "flash_attention_2", 1, 8, 0)
    assert "needs bf16" in skip_reason(fp16_flash, cfg, flash_available=True)
    not_installed = Cell("docvqa", "gpu", "full", "bf16", "flash_attention_2", 1, 8, 0)
    assert skip_reason(not_installed, cfg, flash_available=False) == "flash-attn is not installed"
    assert "no bf16" in skip_reason(Cell("docvqa", "gpu", "full", "bf16", "sdpa", 1, 8, 0), cfg)
    assert "4-bit" in skip_reason(Cell("docvqa", "gpu", "qlora", "fp16", "sdpa", 1, 8, 0), cfg)
    # global batch 16 with per-device batch 8 cannot be split over 3 processes
    cfg["hardware"]["cpu"]["processes_per_node"] = 4
    assert "not divisible" in skip_reason(Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 1, 3, 0), cfg)
    assert skip_reason(Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 1, 2, 0), cfg) is None


def test_skipped_tsv_lists_cell_and_reason():
    text = skipped_tsv([(Cell("docvqa", "cpu", "full", "fp16", "flash_attention_2", 1, 1, 0), "why")])
    assert text.splitlines() == ["task\thardware\tcell\treason", "docvqa\tcpu\tfull-fp16-flash_attention_2-1x1-s0\twhy"]


def test_wrong_type_is_one_line_naming_the_key(config, tmp_path):
    bad = copy.deepcopy(config)
    bad["tasks"]["docvqa"]["steps"] = "ten"
    with pytest.raises(ConfigError) as e:
        validate_config(bad, "my.yaml")
    assert str(e.value) == "my.yaml: tasks.docvqa.steps: 'ten' is not of type 'integer'"
    assert "\n" not in str(e.value)


def test_unknown_values_and_references_are_refused(config, tmp_path):
    bad = copy.deepcopy(config)
    bad["matrix"][0]["strategy"] = ["full", "prefix_tuning"]
    with pytest.raises(ConfigError, match=r"matrix\.0\.strategy\.1: 'prefix_tuning' is not one of"):
        validate_config(bad)
    bad = copy.deepcopy(config)
    bad["matrix"][0]["hardware"] = ["tpu"]
    with pytest.raises(ConfigError, match=r"matrix\.0\.hardware: 'tpu' is not declared under hardware"):
        validate_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:2: not valid YAML"):
        load_config(broken)


def test_cluster_matrix_is_the_recipe_matrix():
    cluster = load_config(REPO / "config" / "cluster.yaml")
    cells = expand_matrix(cluster)
    assert len(cells) == 4 * 4 * 2 * 2 * 3
    runnable, skipped = split_cells(cluster, flash_available=True)
    # fp16 with flash attention is the only refused combination on A100
    assert len(skipped) == 4 * 4 * 3
    assert {c.layout for c in runnable} == {"1x8", "2x8", "4x8"}
    settings = train_settings(cluster, Cell("hateful_memes", "a100", "lora", "bf16", "sdpa", 2, 8, 0))
    assert (settings["global_batch"], settings["lora_rank"], settings["lora_alpha"], settings["learning_rate"]) == (
        64, 128, 256, 2.0e-4)


def test_torchrun_commands():
    assert torchrun_command(1, 2, "train.py") == "torchrun --standalone --nnodes 1 --nproc-per-node 2 train.py"
    multi = torchrun_command(2, 8, "train.py")
    assert multi.startswith("srun --nodes 2 --ntasks 2 --ntasks-per-node 1")
    assert "--rdzv-backend c10d" in multi and "--nnodes 2 --nproc-per-node 8" in multi


def test_lora_settings_reach_the_cell(config):
    cfg = copy.deepcopy(config)
    cfg["tasks"]["docvqa"].update(lora_dropout=0.05, lora_init="pissa")
    validate_config(cfg)
    settings = train_settings(cfg, Cell("docvqa", "cpu", "lora", "bf16", "sdpa", 1, 1, 0))
    assert (settings["lora_dropout"], settings["lora_init"]) == (0.05, "pissa")
    from ftbench.train import TrainSettings

    TrainSettings(**settings)  # every key is a training setting
    cfg["tasks"]["docvqa"]["lora_init"] = "zeros"
    with pytest.raises(ConfigError, match=r"tasks\.docvqa\.lora_init"):
        validate_config(cfg)
