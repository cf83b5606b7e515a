"""The figures draw the results files' numbers: throughput per GPU count and accuracy per peak memory."""

import pytest

from ftbench.plots import accuracy_vs_memory, throughput_by_gpus


def cell(strategy, nodes, procs, attention="sdpa"):
    name = f"{strategy}-bf16-{attention}-{nodes}x{procs}-s0"
    return {"name": name, "strategy": strategy, "precision": "bf16", "attention": attention, "nodes": nodes,
            "procs": procs, "seed": 0}


def speed(strategy, nodes, procs, img_s, peak_mb=2048.0, task="docvqa"):
    return {"task": task, "hardware": "a100", "cell": cell(strategy, nodes, procs), "images_per_s": img_s,
            "peak_memory_mb": peak_mb}


def test_throughput_lines_per_strategy_sorted_by_gpus(tmp_path):
    speeds = [speed("full", 2, 8, 16.9), speed("full", 1, 8, 8.66), speed("lora", 1, 8, 12.1), speed("full", 4, 8, 33.4)]
    drawn = throughput_by_gpus(speeds, tmp_path / "t.png")
    assert drawn == {
        "docvqa on a100: full (bf16, sdpa)": [(8, 8.66), (16, 16.9), (32, 33.4)],
        "docvqa on a100: lora (bf16, sdpa)": [(8, 12.1)],
    }
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_accuracy_against_peak_memory_joins_eval_and_speed(tmp_path):
    speeds = [speed("full", 1, 8, 8.0, peak_mb=40960.0), speed("qlora", 1, 8, 6.0, peak_mb=8192.0)]
    afters = [
        {"task": "docvqa", "hardware": "a100", "cell": cell("full", 1, 8), "metrics": {"anls": 0.805}},
        {"task": "docvqa", "hardware": "a100", "cell": cell("qlora", 1, 8), "metrics": {"anls": 0.76}},
        # no speed result for this cell: not drawn
        {"task": "docvqa", "hardware": "a100", "cell": cell("lora", 1, 8), "metrics": {"anls": 0.79}},
    ]
    drawn = accuracy_vs_memory(afters, speeds, tmp_path / "a.png")
    assert drawn == {
        "docvqa (anls): full": [(40.0, 80.5, "full-bf16-sdpa-1x8-s0")],
        "docvqa (anls): qlora": [(8.0, 76.0, "qlora-bf16-sdpa-1x8-s0")],
    }
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_empty_results_still_give_a_figure(tmp_path):
    assert throughput_by_gpus([], tmp_path / "t.png") == {}
    assert accuracy_vs_memory([], [], tmp_path / "a.png") == {}
    assert (tmp_path / "t.png").is_file() and (tmp_path / "a.png").is_file()
