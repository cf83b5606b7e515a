"""Report stage: tables, README section replacement, provenance, the two CLIs."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ftbench import provenance, report

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


def cell(name: str) -> dict:
    return report.parse_cell(name)


def before(task="hateful_memes", hardware="cpu", **metrics) -> dict:
    return {"task": task, "hardware": hardware, "stage": "before", "cell": None,
            "split": "val", "n_examples": 40, "metrics": metrics}


def after(name, task="hateful_memes", hardware="cpu", **metrics) -> dict:
    return {"task": task, "hardware": hardware, "stage": "after", "cell": cell(name),
            "split": "val", "n_examples": 40, "metrics": metrics}


def speed(name, sps, task="docvqa", hardware="cpu", **over) -> dict:
    record = {
        "task": task, "hardware": hardware, "cell": cell(name),
        "samples_per_s": sps, "images_per_s": sps * 2, "lm_tokens_per_s": sps * 1000.0,
        "step_time_s": {"median": 0.5, "p10": 0.45, "p90": 0.625},
        "data_wait_s": {"median": 0.0125, "p10": 0.01, "p90": 0.02},
        "peak_memory_mb": 1234.4, "measured_steps": 10, "warmup_steps": 2,
        "global_batch": 4, "world_size": 2, "num_crops": 4,
        "mean_tokens_per_sample": 1000.0, "device": "cpu",
    }
    record.update(over)
    return record


def table_rows(md: str) -> list[list[str]]:
    """Header row, then body rows (the github separator line dropped)."""
    rows = []
    for line in md.strip().splitlines():
        if re.fullmatch(r"\|[-|: ]+\|", line):
            continue
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


# --------------------------------------------------------------------------- cells


def test_parse_cell_roundtrip():
    c = report.parse_cell("frozen_vision-fp16-flash_attention_2-2x8-s3")
    assert c == {"name": "frozen_vision-fp16-flash_attention_2-2x8-s3", "strategy": "frozen_vision",
                 "precision": "fp16", "attention": "flash_attention_2", "nodes": 2, "procs": 8, "seed": 3}
    with pytest.raises(ValueError, match="not a cell name"):
        report.parse_cell("lora-bf16-sdpa-1-s0")


# --------------------------------------------------------------------------- accuracy


def test_accuracy_table_headers_values_and_order():
    afters = [
        after("qlora-bf16-sdpa-1x2-s0", accuracy=0.5, auroc=0.61),
        after("lora-bf16-sdpa-1x2-s1", accuracy=0.875, auroc=0.9),
        after("lora-bf16-sdpa-1x2-s0", accuracy=0.95, auroc=0.99),
        after("full-bf16-sdpa-1x2-s0", accuracy=0.7, auroc=0.75),
        after("lora-bf16-eager-1x2-s0", accuracy=0.6, auroc=0.65),
        after("frozen_vision-bf16-sdpa-1x2-s0", accuracy=0.8, auroc=0.85),
        after("full-bf16-sdpa-1x1-s0", accuracy=0.1, auroc=0.2, hardware="a100"),
        # other tasks are ignored
        after("full-bf16-sdpa-1x2-s0", task="nlvr2", accuracy=0.3),
    ]
    md = report.accuracy_table("hateful_memes", before(accuracy=0.5, auroc=0.55), afters, [])
    rows = table_rows(md)
    assert rows[0] == ["hardware", "strategy", "precision", "attention", "layout", "seeds",
                       "accuracy before", "accuracy after", "auroc before", "auroc after"]
    body = rows[1:]
    # hardware first (a100 < cpu), then strategy order full, frozen_vision, lora, qlora,
    # then attention eager before sdpa; the seeds of one configuration share a row.
    assert [r[:6] for r in body] == [
        ["a100", "full", "bf16", "sdpa", "1x1", "0"],
        ["cpu", "full", "bf16", "sdpa", "1x2", "0"],
        ["cpu", "frozen_vision", "bf16", "sdpa", "1x2", "0"],
        ["cpu", "lora", "bf16", "eager", "1x2", "0"],
        ["cpu", "lora", "bf16", "sdpa", "1x2", "0, 1"],
        ["cpu", "qlora", "bf16", "sdpa", "1x2", "0"],
    ]
    # x100, one decimal; "before" repeated for the cell's hardware, n/a where none exists;
    # no interval in the records: the value alone
    assert body[0][6:] == ["n/a", "10.0", "n/a", "20.0"]
    assert body[3][6:] == ["50.0", "60.0", "55.0", "65.0"]
    # two seeds: mean over seeds (0.95 and 0.875) and the t-interval across them, clipped to [0, 1]:
    # half-width t(0.975, 1 df) * sd / sqrt(2) = 12.706 * 0.0375 = 0.4765
    assert body[4][6:8] == ["50.0", "91.2 (43.6–100.0)"]
    assert len(body) == 6


def test_single_seed_shows_bootstrap_interval_and_seeds_are_pooled():
    b = before("nlvr2", accuracy=0.5)
    b["intervals"] = {"accuracy": [0.35, 0.65]}
    one = after("full-bf16-sdpa-1x2-s0", "nlvr2", accuracy=0.8)
    one["intervals"] = {"accuracy": [0.675, 0.925]}
    seeds = [after(f"lora-bf16-sdpa-1x2-s{s}", "nlvr2", accuracy=v) for s, v in ((2, 0.7), (0, 0.5), (1, 0.6))]
    seeds[0]["intervals"] = {"accuracy": [0.0, 1.0]}  # per-seed bootstrap intervals are not pooled
    rows = table_rows(report.accuracy_table("nlvr2", b, [one] + seeds, []))
    assert rows[1][:6] == ["cpu", "full", "bf16", "sdpa", "1x2", "0"]
    assert rows[1][6:] == ["50.0 (35.0–65.0)", "80.0 (67.5–92.5)"]
    # mean 0.6, sd 0.1, half-width t(0.975, 2 df) 4.303 * 0.1 / sqrt(3) = 0.2484
    assert rows[2][5:] == ["0, 1, 2", "50.0 (35.0–65.0)", "60.0 (35.2–84.8)"]
    assert len(rows) == 3


def test_custom_task_columns_follow_its_metric_set():
    afters = [after("lora-bf16-sdpa-1x1-s0", "receipts", accuracy=0.5, anls_cookbook=0.6, anls=0.7)]
    assert table_rows(report.accuracy_table("receipts", None, afters, []))[0][6:] == [
        "anls before", "anls after", "anls_cookbook before", "anls_cookbook after", "accuracy before", "accuracy after"]


def test_metric_interval_formatting():
    assert report.format_estimate(0.8, [0.7, 0.9]) == "80.0 (70.0–90.0)"
    assert report.format_estimate(0.8, None) == "80.0"
    assert report.format_estimate(0.8, [float("nan"), float("nan")]) == "80.0"
    assert report.format_estimate(float("nan"), [0.1, 0.2]) == "n/a"
    with pytest.raises(ValueError, match="fraction"):
        report.format_estimate(0.5, [0.4, 40.0])


def test_accuracy_table_before_per_hardware_and_metric_order():
    befores = [before("docvqa", "cpu", anls=0.4, anls_cookbook=0.35, accuracy=0.3),
               before("docvqa", "h100", anls=0.41234, anls_cookbook=0.4, accuracy=0.3)]
    afters = [after("lora-bf16-sdpa-1x1-s0", "docvqa", "cpu", anls=0.5, anls_cookbook=0.45, accuracy=0.4),
              after("lora-bf16-sdpa-1x1-s0", "docvqa", "h100", anls=0.6, anls_cookbook=0.55, accuracy=0.45)]
    rows = table_rows(report.accuracy_table("docvqa", befores, afters, []))
    # the headline ANLS (lmms-eval/VLMEvalKit form) first, then the recipe's case-sensitive one
    assert rows[0][6:] == ["anls before", "anls after", "anls_cookbook before", "anls_cookbook after",
                           "accuracy before", "accuracy after"]
    assert rows[1][0] == "cpu" and rows[1][6:] == ["40.0", "50.0", "35.0", "45.0", "30.0", "40.0"]
    assert rows[2][0] == "h100" and rows[2][6:] == ["41.2", "60.0", "40.0", "55.0", "30.0", "45.0"]


def test_accuracy_table_skipped_rows_show_reason():
    skipped = [
        {"task": "nlvr2", "hardware": "cpu", "cell": "full-fp16-flash_attention_2-1x2-s0",
         "reason": "flash_attention_2 needs bf16"},
        {"task": "ucf101", "hardware": "cpu", "cell": "full-fp16-eager-1x2-s0", "reason": "other task"},
    ]
    afters = [after("full-bf16-sdpa-1x2-s0", "nlvr2", accuracy=0.625)]
    rows = table_rows(report.accuracy_table("nlvr2", before("nlvr2", accuracy=0.5), afters, skipped))
    assert rows[0][6:] == ["accuracy before", "accuracy after"]
    assert len(rows) == 3
    assert rows[1][:4] == ["cpu", "full", "bf16", "sdpa"] and rows[1][6:] == ["50.0", "62.5"]
    assert rows[2][:6] == ["cpu", "full", "fp16", "flash_attention_2", "1x2", "0"]
    assert rows[2][6:] == ["skipped: flash_attention_2 needs bf16", "skipped"]


def test_accuracy_table_rejects_percentages_and_contradictions():
    with pytest.raises(ValueError, match="fraction"):
        report.accuracy_table("nlvr2", None, [after("full-bf16-sdpa-1x2-s0", "nlvr2", accuracy=95.0)], [])
    a = after("full-bf16-sdpa-1x2-s0", "nlvr2", accuracy=0.5)
    with pytest.raises(ValueError, match="two eval_after"):
        report.accuracy_table("nlvr2", None, [a, a], [])
    skip = [{"task": "nlvr2", "hardware": "cpu", "cell": "full-bf16-sdpa-1x2-s0", "reason": "x"}]
    with pytest.raises(ValueError, match="also listed as skipped"):
        report.accuracy_table("nlvr2", None, [a], skip)


def test_format_metric():
    assert report.format_metric(0.95) == "95.0"
    assert report.format_metric(0.12345) == "12.3"
    assert report.format_metric(1) == "100.0"
    assert report.format_metric(None) == "n/a"
    assert report.format_metric(float("nan")) == "n/a"


def test_pipe_in_reason_is_escaped():
    skip = [{"task": "nlvr2", "hardware": "cpu", "cell": "full-bf16-sdpa-1x2-s0", "reason": "a|b"}]
    md = report.accuracy_table("nlvr2", None, [], skip)
    assert "skipped: a\\|b" in md
    assert table_rows(md)[1][6] == "skipped: a\\|b"


# --------------------------------------------------------------------------- speed


def test_speed_table_columns_speedup_and_order():
    speeds = [
        speed("lora-bf16-sdpa-1x2-s0", 3.0),
        speed("full-bf16-eager-1x2-s0", 2.0),
        speed("full-bf16-sdpa-1x2-s0", 2.5),
        speed("full-bf16-eager-1x1-s0", 1.0, task="ucf101"),
        speed("lora-bf16-eager-1x1-s0", 1.5, task="ucf101"),
        speed("full-bf16-eager-1x2-s0", 4.0, task="hateful_memes"),
    ]
    skipped = [{"task": "docvqa", "hardware": "cpu", "cell": "full-fp16-flash_attention_2-1x2-s0",
                "reason": "fp16 with flash_attention_2"}]
    main, details = report.speed_tables(speeds, skipped)
    rows, detail_rows = table_rows(main), table_rows(details)
    key = ["task", "hardware", "strategy", "precision", "attention", "layout", "seed"]
    assert rows[0] == key + ["img/s", "speedup", "LM tokens/s", "MFU", "peak GB (allocated / reserved)"]
    assert detail_rows[0] == key + ["global batch", "crops", "tokens/sample", "samples/s", "vision tokens/s",
                                    "step time (s), median (p10–p90)", "data wait (s), median", "TFLOP/sample",
                                    "device", "inputs"]
    body, detail_body = rows[1:], detail_rows[1:]
    assert [(r[0], r[2], r[3], r[4]) for r in body] == [
        ("docvqa", "full", "bf16", "eager"),
        ("docvqa", "full", "bf16", "sdpa"),
        ("docvqa", "full", "fp16", "flash_attention_2"),
        ("docvqa", "lora", "bf16", "sdpa"),
        ("hateful_memes", "full", "bf16", "eager"),
        ("ucf101", "full", "bf16", "eager"),
        ("ucf101", "lora", "bf16", "eager"),
    ]
    first = body[0]
    assert first == ["docvqa", "cpu", "full", "bf16", "eager", "1x2", "0",
                     "4.000", "1.00x", "2000.0", "n/a", "1.21"]
    assert detail_body[0] == first[:7] + ["4", "4", "1000", "2.000", "n/a", "0.500 (0.450–0.625)", "0.013",
                                          "n/a", "cpu", "n/a"]
    # speedup is samples/s relative to the first measured row of the same task and hardware
    assert [r[8] for r in body] == ["1.00x", "1.25x", "skipped", "1.50x", "1.00x", "1.00x", "1.50x"]
    assert body[2][7:] == ["skipped: fp16 with flash_attention_2"] + ["skipped"] * 4
    assert detail_body[2][7:] == ["skipped"] * 10
    assert detail_body[3][10] == "3.000"
    # the combined text: the main table, a caption, the details table
    combined = report.speed_table(speeds, skipped)
    assert combined == f"{main}\n\n{report.SPEED_DETAILS_CAPTION}\n\n{details}"


def test_speed_main_table_fits_a_screen_and_details_rows_match_its_rows():
    speeds = [speed(f"{s}-bf16-sdpa-{layout}-s{seed}", 1.0 + i, hardware=hw)
              for i, (s, layout, seed, hw) in enumerate(
                  [("full", "1x2", 0, "cpu"), ("full", "1x2", 1, "cpu"), ("lora", "2x4", 0, "cpu"),
                   ("lora", "1x2", 0, "a100"), ("qlora", "1x1", 0, "a100")])]
    skipped = [{"task": "docvqa", "hardware": "cpu", "cell": "frozen_vision-bf16-sdpa-1x2-s0", "reason": "x"}]
    main, details = report.speed_tables(speeds, skipped)
    rows, detail_rows = table_rows(main), table_rows(details)
    assert len(report.SPEED_HEADERS) <= 12 and all(len(r) == len(report.SPEED_HEADERS) <= 12 for r in rows)
    assert all(len(r) == len(report.SPEED_DETAIL_HEADERS) for r in detail_rows)
    # every column of the old single table is in one of the two
    assert not ({"MFU", "img/s", "LM tokens/s", "TFLOP/sample", "device", "inputs"}
                - set(report.SPEED_HEADERS) - set(report.SPEED_DETAIL_HEADERS))
    n = len(report.SPEED_KEY_HEADERS)
    assert report.SPEED_HEADERS[:n] == report.SPEED_DETAIL_HEADERS[:n] == report.SPEED_KEY_HEADERS
    assert len(rows) == len(detail_rows) == len(speeds) + len(skipped) + 1
    # the key names each row once, and the details table has the main table's rows in its order
    keys = [tuple(r[:n]) for r in rows[1:]]
    assert len(set(keys)) == len(keys)
    assert [tuple(r[:n]) for r in detail_rows[1:]] == keys


def test_speed_rows_name_their_shape_device_and_inputs():
    record = speed("full-bf16-sdpa-1x1-s0", 3.0, num_crops=16, mean_tokens_per_sample=2443.2,
                   vision_tokens_per_s=29427.0,
                   peak_memory_mb=40960.0, peak_memory_reserved_mb=46080.0, device="NVIDIA H200 (driver 580.1)",
                   inputs="synthetic pages with the DocVQA shape", mfu=0.45, tflop_per_sample=80.6)
    main, details = report.speed_tables([record], [])
    row = dict(zip(report.SPEED_HEADERS, table_rows(main)[1]))
    detail = dict(zip(report.SPEED_DETAIL_HEADERS, table_rows(details)[1]))
    assert detail["crops"] == "16" and detail["tokens/sample"] == "2443"
    assert detail["vision tokens/s"] == "29427" and row["peak GB (allocated / reserved)"] == "40.00 / 45.00"
    assert (detail["device"] == "NVIDIA H200 (driver 580.1)"
            and detail["inputs"] == "synthetic pages with the DocVQA shape")
    assert row["MFU"] == "45.0%" and detail["TFLOP/sample"] == "80.6"


def test_speed_table_missing_values_are_na():
    main, details = report.speed_tables(
        [speed("full-bf16-eager-1x2-s0", 2.0, peak_memory_mb=None, step_time_s={"median": 0.25}, data_wait_s=None)], [])
    row = dict(zip(report.SPEED_HEADERS, table_rows(main)[1]))
    detail = dict(zip(report.SPEED_DETAIL_HEADERS, table_rows(details)[1]))
    assert row["peak GB (allocated / reserved)"] == "n/a"
    assert detail["data wait (s), median"] == "n/a"  # a speed.json from before the data pipeline
    assert detail["step time (s), median (p10–p90)"] == "0.250"  # without its spread


# --------------------------------------------------------------------------- loading


def test_load_results_and_skipped(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps(after("lora-bf16-sdpa-1x2-s0", accuracy=0.5)))
    assert report.load_results([p])[0]["cell"]["strategy"] == "lora"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        report.load_results([bad])

    tsv = tmp_path / "skipped.tsv"
    tsv.write_text("task\thardware\tcell\treason\n"
                   "docvqa\tcpu\tfull-fp16-flash_attention_2-1x2-s0\tflash attention needs bf16\n")
    assert report.load_skipped(tsv) == [{"task": "docvqa", "hardware": "cpu",
                                         "cell": "full-fp16-flash_attention_2-1x2-s0",
                                         "reason": "flash attention needs bf16"}]
    header_only = tmp_path / "empty.tsv"
    header_only.write_text("task\thardware\tcell\treason\n")
    assert report.load_skipped(header_only) == []
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("task\tcell\n")
    with pytest.raises(ValueError, match="header"):
        report.load_skipped(wrong)


# --------------------------------------------------------------------------- README


README = (
    "# ftbench\r\n\nIntro  text with trailing spaces   \n\n## Results\n"
    "<!-- results:begin -->\nold table\n<!-- results:end -->\n\nAfter the markers.\n\n"
)


def test_replace_readme_section_keeps_outside_and_is_idempotent():
    out = report.replace_readme_section(README, "| a |\n|---|\n| 1 |\n")
    head, tail = README.split("<!-- results:begin -->")[0], README.split("<!-- results:end -->")[1]
    assert out.startswith(head + "<!-- results:begin -->\n| a |")
    assert out.endswith("| 1 |\n<!-- results:end -->" + tail)
    assert "old table" not in out
    assert report.replace_readme_section(out, "| a |\n|---|\n| 1 |\n") == out
    assert report.replace_readme_section(out, "| a |\n|---|\n| 1 |") == out


@pytest.mark.parametrize("text, message", [
    ("no markers here\n", "found 0 and 0"),
    ("<!-- results:begin -->\nx\n", "found 1 and 0"),
    ("<!-- results:begin -->\n<!-- results:begin -->\n<!-- results:end -->\n", "found 2 and 1"),
    ("<!-- results:end -->\nx\n<!-- results:begin -->\n", "comes before"),
])
def test_replace_readme_section_errors(text, message):
    with pytest.raises(ValueError, match=message):
        report.replace_readme_section(text, "body")


def test_results_section_order_and_source_line():
    section = report.results_section({"speed": "S", "ucf101": "U", "docvqa": "D", "nlvr2": "N"})
    assert "generated by the workflow" in section.lower()
    assert "eval_after.json" in section and "skipped.tsv" in section
    headings = re.findall(r"^### (.+)$", section, flags=re.M)
    assert headings == ["docvqa", "nlvr2", "ucf101", "Speed"]
    assert section.index("### docvqa\n\nD") < section.index("### Speed\n\nS")


def test_write_text_atomic_keeps_mode_and_leaves_no_tmp(tmp_path):
    target = tmp_path / "README.md"
    target.write_text("old")
    os.chmod(target, 0o644)
    report.write_text_atomic(target, "new\r\nline\n")
    assert target.read_bytes() == b"new\r\nline\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]
    report.write_text_atomic(tmp_path / "sub" / "x.md", "y")
    assert (tmp_path / "sub" / "x.md").read_text() == "y"


# --------------------------------------------------------------------------- provenance


def test_provenance_keys_and_config_hash():
    config = {"b": [1, 2], "a": {"y": 1, "x": "z"}}
    prov = provenance.collect_provenance(seed=3, config=config, device="cpu", extra={"cell": "c"})
    for key in ("packages", "python", "platform", "host", "git_commit", "git_dirty", "time_utc",
                "seed", "config_sha256", "device"):
        assert key in prov
    assert set(prov["packages"]) == set(provenance.PACKAGES)
    assert prov["packages"]["numpy"] is not None
    assert prov["seed"] == 3 and prov["device"] == "cpu" and prov["cell"] == "c"
    assert prov["git_dirty"] in (True, False, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prov["time_utc"])
    json.dumps(prov)  # JSON-ready

    reordered = {"a": {"x": "z", "y": 1}, "b": [1, 2]}
    assert provenance.config_hash(config) == provenance.config_hash(reordered)
    assert re.fullmatch(r"[0-9a-f]{64}", prov["config_sha256"])
    assert prov["config_sha256"] == provenance.config_hash(config)
    assert provenance.config_hash({**config, "b": [2, 1]}) != provenance.config_hash(config)
    assert provenance.collect_provenance()["config_sha256"] is None
    with pytest.raises(ValueError, match="overwrite"):
        provenance.collect_provenance(extra={"seed": 1})


def test_missing_package_is_null():
    assert provenance.package_versions(["surely-not-installed-ftbench-xyz"]) == {
        "surely-not-installed-ftbench-xyz": None}


def test_git_state(tmp_path):
    assert provenance.git_state(tmp_path) == (None, None)  # not a repository
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    assert provenance.git_state(tmp_path) == (None, None)  # no commits yet
    (tmp_path / "f.txt").write_text("1")
    subprocess.run(git + ["add", "f.txt"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "m"], check=True)
    commit, dirty = provenance.git_state(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and dirty is False
    (tmp_path / "untracked.txt").write_text("u")
    assert provenance.git_state(tmp_path) == (commit, False)
    (tmp_path / "f.txt").write_text("2")
    assert provenance.git_state(tmp_path) == (commit, True)


# --------------------------------------------------------------------------- imports and CLIs


@pytest.mark.parametrize("module", ["ftbench.report", "ftbench.provenance"])
def test_no_torch_import(module):
    code = f"import {module}, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_clis_end_to_end(tmp_path):
    res = tmp_path / "results"
    files = {
        "before": [res / "hateful_memes/cpu/eval_before.json", res / "nlvr2/cpu/eval_before.json"],
        "after": [res / "hateful_memes/cpu/lora-bf16-sdpa-1x2-s0/eval_after.json",
                  res / "nlvr2/cpu/lora-bf16-sdpa-1x2-s0/eval_after.json"],
        "speed": [res / "nlvr2/cpu/lora-bf16-sdpa-1x2-s0/speed.json"],
    }
    records = {
        "before": [before(accuracy=0.5, auroc=0.5), before("nlvr2", accuracy=0.25)],
        "after": [after("lora-bf16-sdpa-1x2-s0", accuracy=0.95, auroc=0.99),
                  after("lora-bf16-sdpa-1x2-s0", "nlvr2", accuracy=0.75)],
        "speed": [speed("lora-bf16-sdpa-1x2-s0", 2.0, task="nlvr2")],
    }
    for kind in files:
        for path, record in zip(files[kind], records[kind]):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    skipped = res / "skipped.tsv"
    skipped.write_text("task\thardware\tcell\treason\n"
                       "nlvr2\tcpu\tlora-fp16-flash_attention_2-1x2-s0\tfp16 with flash_attention_2\n")
    out_dir = res / "tables"
    cmd = [sys.executable, str(REPO / "workflow_scripts/report_tables.py"), "--skipped", str(skipped),
           "--out-dir", str(out_dir)]
    for kind in files:
        cmd += [f"--{kind}", *map(str, files[kind])]
    subprocess.run(cmd, check=True, cwd=tmp_path)
    assert sorted(p.name for p in out_dir.iterdir()) == ["hateful_memes.md", "nlvr2.md", "section.md",
                                                          "speed.md"]
    nlvr2 = (out_dir / "nlvr2.md").read_text()
    assert "Split `val`, 40 examples" in nlvr2
    assert "| 25.0 " in nlvr2 and "| 75.0 " in nlvr2 and "skipped: fp16 with flash_attention_2" in nlvr2
    section = (out_dir / "section.md").read_text()
    assert section.index("### hateful_memes") < section.index("### nlvr2") < section.index("### Speed")
    speed_md = (out_dir / "speed.md").read_text()
    assert "1.00x" in speed_md and report.SPEED_DETAILS_CAPTION in speed_md
    assert section.index("### Speed") < section.index(report.SPEED_DETAILS_CAPTION)

    readme = tmp_path / "README.md"
    original = "# Title\n\nKeep me.\n<!-- results:begin -->\n<!-- results:end -->\nTail.\n"
    readme.write_text(original)
    update = [sys.executable, str(REPO / "workflow_scripts/update_readme.py"),
              "--section", str(out_dir / "section.md"), "--readme", str(readme)]
    subprocess.run(update, check=True, cwd=tmp_path)
    first = readme.read_text()
    assert first.startswith("# Title\n\nKeep me.\n<!-- results:begin -->\n_Generated")
    assert first.endswith("<!-- results:end -->\nTail.\n") and "### nlvr2" in first
    subprocess.run(update, check=True, cwd=tmp_path)
    assert readme.read_text() == first

    readme.write_text("# no markers\n")
    done = subprocess.run(update, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert str(readme) in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert readme.read_text() == "# no markers\n"


def test_mfu_column_flags_implausible_rows():
    assert report.format_mfu(None) == report.NA
    assert report.format_mfu(0.28) == "28.0%"
    assert report.format_mfu(0.86) == "86.0% (implausible: > 60%)"
    assert "MFU" in report.SPEED_HEADERS and "TFLOP/sample" in report.SPEED_DETAIL_HEADERS
    main, _ = report.speed_tables([speed("full-bf16-sdpa-1x1-s0", 3.0, mfu=0.86)], [])
    assert dict(zip(report.SPEED_HEADERS, table_rows(main)[1]))["MFU"] == "86.0% (implausible: > 60%)"


# --------------------------------------------------------------------------- recipe column, QLoRA label


@pytest.fixture(scope="module")
def published():
    return report.load_published()


def test_published_file_names_its_source_and_holds_only_published_cells(published):
    assert "Published accuracy tables" in published["source"] and "PhiCookBook" in published["source"]
    figures = {(t["task"], t["metric"], f["strategy"], f["precision"]): f["value"]
               for t in published["tables"] for f in t["figures"]}
    assert len(figures) == 8 + 8 + 2  # DocVQA and Hateful Memes: 4 strategies x 2 dtypes; NLVR2: 2 rows
    assert figures[("docvqa", "anls_cookbook", "full", "fp16")] == "82.60"  # as printed, decimals kept
    assert figures[("nlvr2", "accuracy", "frozen_vision", "bf16")] == "89.20"
    assert not any(task == "ucf101" for task, *_ in figures)
    assert not any(task == "nlvr2" and strategy in ("lora", "qlora") for task, _, strategy, _ in figures)


def test_recipe_column_only_for_matching_cells(published):
    afters = [
        after("full-bf16-flash_attention_2-1x8-s0", accuracy=0.8, auroc=0.9, hardware="a100"),
        after("full-bf16-flash_attention_2-2x8-s0", accuracy=0.82, auroc=0.9, hardware="a100"),  # any layout
        after("full-fp16-eager-1x8-s0", accuracy=0.78, auroc=0.9, hardware="a100"),
        after("full-bf16-eager-1x8-s0", accuracy=0.79, auroc=0.9, hardware="a100"),  # recipe: bf16 = flash
        after("full-fp16-sdpa-1x8-s0", accuracy=0.77, auroc=0.9, hardware="a100"),
    ]
    rows = table_rows(report.accuracy_table("hateful_memes", None, afters, [], published))
    # the recipe published accuracy only (no AUROC): one recipe column, right after "accuracy after"
    assert rows[0][6:] == ["accuracy before", "accuracy after", "accuracy recipe", "auroc before", "auroc after"]
    recipe = {(r[2], r[3], r[4]): r[8] for r in rows[1:]}
    assert recipe == {("bf16", "eager", "1x8"): "–", ("bf16", "flash_attention_2", "1x8"): "86.4",
                      ("bf16", "flash_attention_2", "2x8"): "86.4", ("fp16", "eager", "1x8"): "85.4",
                      ("fp16", "sdpa", "1x8"): "–"}
    docvqa = table_rows(report.accuracy_table(
        "docvqa", None, [after("lora-fp16-eager-1x8-s0", "docvqa", anls=0.8, anls_cookbook=0.79, accuracy=0.7)],
        [], published))
    assert docvqa[0][6:] == ["anls before", "anls after", "anls_cookbook before", "anls_cookbook after",
                             "anls_cookbook recipe", "accuracy before", "accuracy after"]
    assert docvqa[1][10] == "82.34"


def test_recipe_column_absent_without_a_match(published):
    afters = [after("full-bf16-sdpa-1x1-s0", "nlvr2", accuracy=0.9),
              after("lora-bf16-flash_attention_2-1x8-s0", "nlvr2", accuracy=0.9)]  # NLVR2 LoRA: never published
    skipped = [{"task": "nlvr2", "hardware": "cpu", "cell": "full-bf16-flash_attention_2-1x2-s0", "reason": "no"}]
    rows = table_rows(report.accuracy_table("nlvr2", None, afters, skipped, published))
    assert not any("recipe" in h for h in rows[0])
    note = report.recipe_note("nlvr2", afters, published)
    assert note.startswith("Recipe: no cell here matches") and "phi3v_cookbook.yaml" in note
    ucf = [after("full-bf16-flash_attention_2-1x8-s0", "ucf101", accuracy=0.9)]
    assert "recipe" not in report.accuracy_table("ucf101", None, ucf, [], published)
    assert report.recipe_note("ucf101", ucf, published) == ""
    matched = [after("full-bf16-flash_attention_2-1x8-s0", "nlvr2", accuracy=0.9)]
    note = report.recipe_note("nlvr2", matched, published)
    assert note.startswith("Recipe: the figure the recipe published") and "Phi-3.5-vision-instruct" in note


def test_qlora_rows_name_their_eval_base_and_only_the_recipes_variant_matches(published):
    quantised = after("qlora-bf16-flash_attention_2-1x8-s0", accuracy=0.8, auroc=0.9, hardware="a100")
    quantised["qlora_base"] = "quantised"
    unquantised = after("qlora-bf16-flash_attention_2-1x8-s0", accuracy=0.81, auroc=0.9, hardware="h100")
    unquantised["qlora_base"] = "unquantised"
    rows = table_rows(report.accuracy_table("hateful_memes", None, [quantised, unquantised], [], published))
    assert [(r[0], r[1], r[8]) for r in rows[1:]] == [
        ("a100", "qlora (eval: 4-bit base)", "–"),  # the recipe evaluated its QLoRA adapters unquantised
        ("h100", "qlora (eval: unquantised base)", "84.0"),
    ]
    assert report.strategy_label("lora", None) == "lora"


def test_seeds_of_one_cell_cannot_be_both_run_and_skipped():
    skipped = [{"task": "nlvr2", "hardware": "cpu", "cell": "full-bf16-sdpa-1x2-s1", "reason": "x"}]
    with pytest.raises(ValueError, match="other seeds of it have results"):
        report.accuracy_table("nlvr2", None, [after("full-bf16-sdpa-1x2-s0", "nlvr2", accuracy=0.5)], skipped)
    rows = table_rows(report.accuracy_table("nlvr2", None, [],
                                            skipped + [dict(skipped[0], cell="full-bf16-sdpa-1x2-s0")]))
    assert rows[1][5:] == ["0, 1", "skipped: x", "skipped"]


def test_malformed_published_file_is_one_line_naming_file_and_key(tmp_path, published):
    import yaml

    broken = json.loads(json.dumps(published))
    broken["tables"][1]["figures"][2]["value"] = "eighty"
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match=r"published.yaml: tables\.1\.figures\.2\.value: 'eighty' is not a number"):
        report.load_published(path)
    del broken["source"]
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match="published.yaml: source: missing"):
        report.load_published(path)

    out_dir = tmp_path / "tables"
    out_dir.mkdir()
    (out_dir / "speed.md").write_text("earlier table\n")
    done = subprocess.run([sys.executable, str(REPO / "workflow_scripts/report_tables.py"), "--published", str(path),
                           "--out-dir", str(out_dir)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"report_tables: {path}: source: missing or not a str"
    assert ([p.name for p in out_dir.iterdir()] == ["speed.md"]
            and (out_dir / "speed.md").read_text() == "earlier table\n")
