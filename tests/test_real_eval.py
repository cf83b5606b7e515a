"""Evaluation on real data: AUROC scores the first tokens of the task's own training answers (the
Cauldron's ``Yes.``/``No.``), a real source laid over config.yaml takes the recipe's slices, a
cluttered folder is refused or resolved by name, and ``ftbench validate`` accepts the empty test split
that conversions write. Fixtures in the published layouts (tests/test_sources.py writers); the model
is a random tiny one, so every test takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from test_bad_input import assert_one_line, run_script, snapshot
from test_sources import cauldron_rows, write_cauldron_snapshot

from ftbench.cli import main as ftbench_main
from ftbench.data.common import SPLITS, read_examples
from ftbench.data.prompts import HATEFUL_QUESTION
from ftbench.data.sources import convert_source
from ftbench.data.synthetic import cauldron_schema
from ftbench.evaluate import auroc_tokens, evaluate, generate_answers
from ftbench.models.loading import load_model, load_tokenizer, save_base
from ftbench.models.phi3v import Phi3VForCausalLM
from ftbench.models.presets import tiny_config
from ftbench.models.processing_phi3v import Phi3VProcessor
from ftbench.models.tokenizer import train_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Each answer is a text of its own, so the tokenizer learns the word-start forms that an answer
# encoded on its own begins with (``▁Yes.``, ``▁yes``); 160 leaves room for those merges.
ANSWER_CORPUS = ["Yes.", "No.", "yes", "no", HATEFUL_QUESTION] * 20


def processor_for(tokenizer) -> Phi3VProcessor:
    return Phi3VProcessor.for_model(tokenizer, tiny_config(tokenizer), num_crops=1)


@pytest.fixture(scope="module")
def yes_no_model(tmp_path_factory):
    """A random tiny model (no training: only which tokens are scored matters here)."""
    tokenizer = train_tiny_tokenizer(ANSWER_CORPUS, vocab_size=160)
    folder = tmp_path_factory.mktemp("model") / "base"
    torch.manual_seed(0)
    save_base(Phi3VForCausalLM(tiny_config(tokenizer)), tokenizer, folder)
    return folder


def hateful_memes_from_cauldron(root: Path, answers: list[str], n_val: int = 6) -> Path:
    """A Cauldron hateful_memes snapshot with these answers, converted with the recipe's slices."""
    rows = cauldron_rows("hateful_memes", len(answers))
    for row, answer in zip(rows, answers):
        row["texts"][0]["assistant"] = answer
    snap = write_cauldron_snapshot(root / "snap", "hateful_memes", [rows])
    out = root / "data"
    convert_source("hateful_memes", "cauldron", snap, out, n_val=n_val, progress=False)
    return out


def write_train(path: Path, answers: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": f"train-{i}", "source": "hateful_memes", "conversations": [
        {"images": [], "user": HATEFUL_QUESTION, "assistant": answer}]}) + "\n" for i, answer in enumerate(answers)))
    return path


# ------------------------------------------------------------------------------- 1. AUROC tokens


def test_auroc_scores_the_first_tokens_of_the_cauldron_answers(yes_no_model, tmp_path):
    data = hateful_memes_from_cauldron(tmp_path, ["No.", "Yes.", "Yes.", "No."] * 4)  # No. first: class by label
    val = data / "hateful_memes_val.jsonl"
    result = evaluate(yes_no_model, val, "hateful_memes", num_crops=1, batch_size=8, max_new_tokens=2,
                      bootstrap_resamples=100)
    tokenizer = load_tokenizer(yes_no_model)
    processor = processor_for(tokenizer)
    scored = result["auroc_tokens"]
    assert scored["file"] == str(data / "hateful_memes_train.jsonl")
    assert (scored["positive"]["token"], scored["positive"]["answers"]) == ("▁Yes.", ["Yes."])
    assert (scored["negative"]["token"], scored["negative"]["answers"]) == ("▁No.", ["No."])
    assert scored["positive"]["token_id"] == processor.encode_answer("Yes.")[0] != processor.encode_answer("yes")[0]
    predictions = result["predictions"]
    assert [p["label"] for p in predictions] == [int(p["gold"] == "Yes.") for p in predictions]

    # p_yes is the probability ratio of those two tokens; the lowercase words' ratio is another number
    model, examples = load_model(yes_no_model), read_examples(val)
    cauldron_ids = [scored["positive"]["token_id"], scored["negative"]["token_id"]]
    lowercase_ids = [processor.encode_answer(w)[0] for w in ("yes", "no")]
    for ids, same in ((cauldron_ids, True), (lowercase_ids, False)):
        outputs = generate_answers(model, processor, examples, data / "images", batch_size=8, max_new_tokens=1,
                                   score_ids=ids)
        matches = [p["p_yes"] == pytest.approx(prob, abs=1e-6) for p, (_, prob) in zip(predictions, outputs)]
        assert all(matches) if same else not any(matches)


def test_synthetic_lowercase_answers_score_the_tokens_they_always_did(yes_no_model, tiny_data):
    """The embedded default's answers are ``yes``/``no``: the tokens are those of the lowercase words
    (what AUROC scored before), so its results do not change."""
    processor = processor_for(load_tokenizer(yes_no_model))
    train = tiny_data["hateful_memes"] / "hateful_memes_train.jsonl"
    scored = auroc_tokens(processor, train)
    assert [scored["positive"]["token_id"], scored["negative"]["token_id"]] == [
        processor.encode_answer("yes")[0], processor.encode_answer("no")[0]]
    assert (scored["positive"]["answers"], scored["negative"]["answers"]) == (["yes"], ["no"])


@pytest.mark.parametrize("answers, vocab_size, fragment", [
    (["Yes.", "yes", "No."], 160, "'▁No.' (No.), '▁Yes.' (Yes.), '▁yes' (yes)"),
    (["Yes.", "Yes."], 160, "their first tokens: '▁Yes.' (Yes.)"),
    # a tokenizer without word tokens for them: both answers start with the word-start marker alone
    (["Yes.", "No."], 128, "their first tokens: '▁' (No., Yes.)"),
    (["Yes.", "Maybe."], 160, "training gold answer 'Maybe.' is neither 'yes' nor 'no'"),
])
def test_training_answers_without_one_first_token_per_class_are_one_line(answers, vocab_size, fragment, tmp_path):
    processor = processor_for(train_tiny_tokenizer(ANSWER_CORPUS, vocab_size=vocab_size))
    train = write_train(tmp_path / "hateful_memes_train.jsonl", answers)
    with pytest.raises(ValueError) as e:
        auroc_tokens(processor, train)
    message = str(e.value)
    assert message.startswith(f"{train}: ") and fragment in message and "\n" not in message


def test_evaluate_script_records_the_tokens_and_refuses_a_bad_training_file(yes_no_model, tmp_path, capsys,
                                                                          monkeypatch):
    data = hateful_memes_from_cauldron(tmp_path, ["Yes.", "No."] * 6)
    out = tmp_path / "results" / "eval_before.json"
    settings = {"num_crops": 1, "batch_size": 8, "max_new_tokens": 2, "bootstrap_resamples": 100}

    def args(train: Path) -> list:
        return ["--model", yes_no_model, "--data", data / "hateful_memes_val.jsonl", "--train", train,
                "--task", "hateful_memes", "--hardware", "cpu", "--stage", "before",
                "--settings", json.dumps(settings), "--out", out, "--predictions", out.parent / "predictions.jsonl"]

    out.parent.mkdir()
    status, _ = run_script("evaluate", args(data / "hateful_memes_train.jsonl"), capsys, monkeypatch)
    assert status == 0
    recorded = json.loads(out.read_text())["auroc_tokens"]
    assert (recorded["positive"]["answers"], recorded["negative"]["answers"]) == (["Yes."], ["No."])
    before = snapshot(out.parent)
    bad = write_train(tmp_path / "bad" / "hateful_memes_train.jsonl", ["Yes.", "yes", "No."])
    status, lines = run_script("evaluate", args(bad), capsys, monkeypatch)
    assert_one_line(status, lines, str(bad), "two tokens, one for the yes answers and one for the no answers")
    assert snapshot(out.parent) == before


# ------------------------------------------------------------------------------- 2. slices


def _snakemake(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_real_source_over_config_yaml_takes_the_recipes_slices(tmp_path):
    """Snakemake merges --configfile over config.yaml: the overlay's cauldron hateful_memes would
    inherit the demo's n_val 100 (train[:100]); it gets the schema's 500, unless it sets its own."""
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text())
    snap = write_cauldron_snapshot(tmp_path / "the_cauldron", "hateful_memes", [cauldron_rows("hateful_memes", 4)])
    write_cauldron_snapshot(snap, "nlvr2", [cauldron_rows("nlvr2", 4)])
    overlay = {"tasks": {"hateful_memes": {"source": "cauldron", "path": "the_cauldron"},
                         "nlvr2": {"source": "cauldron", "path": "the_cauldron", "n_val": 100}}}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(overlay))
    targets = ["results/data/hateful_memes/summary.json", "results/data/nlvr2/summary.json",
               "results/data/docvqa/summary.json", "results/hateful_memes/cpu/eval_before.json"]
    r = _snakemake([*targets, "-n", "-p", "--configfile", "real.yaml"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    cauldron = "--source cauldron --raw the_cauldron --split-policy cookbook"
    assert f"--task hateful_memes {cauldron} --n-val 500 --n-test 0" in out
    assert f"--task nlvr2 {cauldron} --n-val 100 --n-test 0" in out
    assert "--task docvqa --source synthetic --raw results/raw/docvqa --split-policy cookbook --n-val 100" in out
    assert "tasks.hateful_memes.n_val: 500 (the schema's default for source cauldron), not config.yaml's 100" in out
    # the evaluation reads the training answers' first tokens from the task's own training file
    assert "--train results/data/hateful_memes/hateful_memes_train.jsonl --task hateful_memes" in out


# ------------------------------------------------------------------------------- 3. cluttered folders


def write_export(path: Path, task: str, n: int, first: int = 0) -> Path:
    """``Dataset.to_parquet(path)`` of a Cauldron subset: one file, the name the user chose."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(cauldron_rows(task, n, first), schema=cauldron_schema()), path)
    return path


def write_datasets_cache(cache: Path, task: str, fingerprint: str, n: int) -> Path:
    """``load_dataset("HuggingFaceM4/the_cauldron", task)``'s cache folder for one fingerprint:
    ``<owner>___<name>/<config>/<version>/<fingerprint>/`` holding ``dataset_info.json`` and, for one
    shard, ``<name>-train.arrow`` (huggingface/datasets src/datasets/builder.py ``_prepare_split``)."""
    folder = cache / "HuggingFaceM4___the_cauldron" / task / "0.0.0" / fingerprint
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(cauldron_rows(task, n), schema=cauldron_schema())
    with pa.ipc.new_stream(str(folder / "the_cauldron-train.arrow"), table.schema) as writer:
        writer.write_table(table)
    (folder / "dataset_info.json").write_text(json.dumps({"splits": {"train": {"num_examples": n}}}))
    return folder


def test_a_folder_of_exports_reads_the_one_named_after_the_task(tmp_path):
    exports = tmp_path / "exports"
    own = write_export(exports / "hateful_memes.parquet", "hateful_memes", 7)
    write_export(exports / "nlvr2.parquet", "nlvr2", 5, first=100)
    write_export(exports / "docvqa_train.parquet", "docvqa", 5, first=200)
    s = convert_source("hateful_memes", "cauldron", exports, tmp_path / "out", n_val=2, progress=False)
    assert s["counts"] == {"train": 5, "val": 2, "test": 0}  # not 17 rows of three tasks
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["source"] == [str(own)]
    unnamed = tmp_path / "unnamed"
    for name in ("a.parquet", "b.parquet"):
        write_export(unnamed / name, "hateful_memes", 3)
    with pytest.raises(ValueError) as e:
        convert_source("hateful_memes", "cauldron", unnamed, tmp_path / "o", n_val=1)
    assert str(e.value) == (f"{unnamed}: a.parquet, b.parquet: not the shards of one dataset; point path at one "
                            "(in a folder of to_parquet exports, name the hateful_memes one hateful_memes.parquet)")


def test_two_cache_fingerprints_are_refused_by_the_convert_script(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "datasets"
    write_datasets_cache(cache, "nlvr2", "0123abcd", 6)
    out = tmp_path / "results" / "data" / "nlvr2"
    args = ["--task", "nlvr2", "--source", "cauldron", "--raw", cache / "HuggingFaceM4___the_cauldron",
            "--out", out, "--n-val", "2"]
    status, _ = run_script("convert", args, capsys, monkeypatch)
    assert status == 0 and json.loads((out / "summary.json").read_text())["counts"]["train"] == 4
    before = snapshot(out)
    write_datasets_cache(cache, "nlvr2", "4567ef01", 6)  # the same config prepared again: every row twice
    status, lines = run_script("convert", args, capsys, monkeypatch)
    assert_one_line(status, lines, "data files in 2 folders (0.0.0/0123abcd, 0.0.0/4567ef01)", "point path at one")
    assert snapshot(out, hidden=False) == before


def test_incomplete_series_and_another_subsets_folder_are_refused(tmp_path):
    snap = write_cauldron_snapshot(tmp_path / "snap", "nlvr2", [cauldron_rows("nlvr2", 4),
                                                                cauldron_rows("nlvr2", 4, 4)])
    # a snapshot root without the task's subset folder is not read as that task
    with pytest.raises(ValueError, match=r"snap: the data files \(nlvr2/train-00000-of-00002-0000beef\.parquet, "
                                         r"nlvr2/train-00001-of-00002-0001beef\.parquet\) are the Cauldron's nlvr2 "
                                         r"subset, not hateful_memes$"):
        convert_source("hateful_memes", "cauldron", snap, tmp_path / "o1", n_val=1)
    (snap / "nlvr2" / "train-00001-of-00002-0001beef.parquet").unlink()
    with pytest.raises(ValueError, match=r"nlvr2: train-00000-of-00002-0000beef\.parquet: shard\(s\) 00001 of 00002 "
                                         r"missing \(an interrupted download\?\)$"):
        convert_source("nlvr2", "cauldron", snap, tmp_path / "o2", n_val=1)


# ------------------------------------------------------------------------------- 4. validate


def test_ftbench_validate_accepts_every_file_a_conversion_writes(tiny_data, tmp_path, capsys):
    folder = tiny_data["hateful_memes"]
    assert (folder / "hateful_memes_test.jsonl").read_text() == ""  # n_test 0: an empty test split
    for split in SPLITS:
        path = folder / f"hateful_memes_{split}.jsonl"
        assert ftbench_main(["validate", str(path)]) == 0
        assert capsys.readouterr().out.strip() == f"{path}: ok"
    for name in ("hateful_memes_train.jsonl", "mine.jsonl"):  # training data, or a file of no split: a problem
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
        assert ftbench_main(["validate", str(tmp_path / name)]) == 1
        assert f"{tmp_path / name}: no examples (the file is empty)" in capsys.readouterr().out
