"""Safe by default (issue 7): no remote code, no pickle, torch.load only with weights_only=True, names
that reach paths and shell commands restricted by the schema, no network unless a hub id is named."""

from __future__ import annotations

import ast
import copy
import re
import shlex
from pathlib import Path

import pytest

from ftbench.config import ConfigError, custom_import_args, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["ftbench", "workflow_scripts", "rules", "scripts", "Snakefile"]


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = REPO / name
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in (".py", ".smk"))
    assert len(files) > 20  # the scan sees the package, the scripts and the rules
    return files


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(path: Path) -> list[str]:
    """``file:line: what`` for each unsafe call. Python files are parsed (docstrings that name the
    forbidden calls do not count); Snakemake files, which are not Python, are searched as text."""
    text = path.read_text()
    if path.suffix != ".py":
        patterns = [r"trust_remote_code\s*=\s*True", r"\bpickle\.loads?\(",
                    r"\btorch\.load\((?![^)]*weights_only=True)"]
        return [f"{path}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
                for p in patterns for m in re.finditer(p, text)]
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        remote = keywords.get("trust_remote_code")
        # True or a variable
        if remote is not None and not (isinstance(remote, ast.Constant) and remote.value is False):
            found.append(f"{path}:{node.lineno}: trust_remote_code={ast.unparse(remote)}")
        if re.fullmatch(r"(c?[Pp]ickle|dill|joblib)\.loads?", func):
            found.append(f"{path}:{node.lineno}: {func}")
        if func in ("np.load", "numpy.load") and is_true(keywords.get("allow_pickle")):
            found.append(f"{path}:{node.lineno}: {func} with allow_pickle=True")
        if func == "torch.load" and not is_true(keywords.get("weights_only")):
            found.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
    return found


def test_no_remote_code_no_pickle_no_unguarded_torch_load():
    problems = [line for path in scanned_files() for line in unsafe_calls(path)]
    assert problems == []


def test_the_scan_catches_each_unsafe_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        '"""Docstrings may say torch.load and pickle.load."""\n'
        "import pickle, torch\n"
        "from transformers import AutoModel\n"
        "AutoModel.from_pretrained('x', trust_remote_code=True)\n"
        "pickle.load(open('f', 'rb'))\n"
        "torch.load('a.pt')\n"
        "torch.load('b.pt', weights_only=False)\n"
        "torch.load('c.pt', map_location='cpu', weights_only=True)\n"
    )
    assert [line.split(": ", 1)[1] for line in unsafe_calls(bad)] == [
        "trust_remote_code=True", "pickle.load", "torch.load without weights_only=True",
        "torch.load without weights_only=True"]
    rule = tmp_path / "bad.smk"
    rule.write_text('run:\n    torch.load("x")\n    torch.load("y", weights_only=True)\n')
    assert unsafe_calls(rule) == [f"{rule}:2: torch.load("]


@pytest.fixture(scope="module")
def config():
    return load_config(REPO / "config.yaml")


@pytest.mark.parametrize("name", ["docvqa;rm -rf ~", "a/b", "../up", "task name", "$(id)", "Upper", "x`id`"])
@pytest.mark.parametrize("where", ["task", "hardware"])
def test_schema_refuses_names_with_shell_metacharacters_or_slashes(config, name, where):
    bad = copy.deepcopy(config)
    if where == "task":
        bad["tasks"][name] = bad["tasks"].pop("docvqa")
        bad["matrix"][0]["task"] = [name, "hateful_memes"]
    else:
        bad["hardware"][name] = bad["hardware"].pop("cpu")
        for block in bad["matrix"]:
            block["hardware"] = [name]
    with pytest.raises(ConfigError, match="does not match"):
        validate_config(bad, "c.yaml")


@pytest.mark.parametrize("key, value", [("train", "my data/train.jsonl"), ("images", "imgs;touch x"),
                                        ("val", "$(id).jsonl")])
def test_schema_refuses_custom_paths_with_shell_metacharacters(config, key, value):
    bad = copy.deepcopy(config)
    entry = dict(bad["tasks"]["hateful_memes"], source="custom", train="t.jsonl", val="v.jsonl", images="img",
                 metric="accuracy")
    entry.pop("rows")
    entry[key] = value
    bad["tasks"]["mine"] = entry
    with pytest.raises(ConfigError, match=rf"^c.yaml: tasks.mine.{key}: .* does not match"):
        validate_config(bad, "c.yaml")


def test_free_text_reaches_the_shell_quoted(config):
    cfg = copy.deepcopy(config)
    prompt = "Say it; $(touch /tmp/pwned) `id` 'quoted' \"double\"\n{user}"
    cfg["tasks"]["mine"] = {"source": "custom", "train": "t.jsonl", "val": "v.jsonl", "images": "img", "prompt": prompt,
                            "metric": "anls"}
    args = shlex.split(custom_import_args(cfg, "mine"))
    assert args == ["--train", "t.jsonl", "--val", "v.jsonl", "--images", "img", "--prompt", prompt, "--metric", "anls"]


JSON_PARAM = re.compile(r"\{params\.(settings|cell|args)(:q)?\}")


def unquoted_json_params(text: str) -> list[str]:
    """The JSON params (settings, cell) of a rule file's shell commands that miss ``:q``; ``args``
    is a prepared argument list (``shlex``-quoted by ``ftbench.config``), not JSON."""
    return [m.group(0) for m in JSON_PARAM.finditer(text) if not m.group(2) and m.group(1) != "args"]


def test_rules_quote_json_params():
    """JSON settings and cell records reach the shell through ``:q`` (Snakemake's shlex quoting)."""
    sample = '"--settings {params.settings:q} --cell {params.cell} {params.args}"'
    assert unquoted_json_params(sample) == ["{params.cell}"]  # the check finds an unquoted one
    rules = sorted((REPO / "rules").glob("*.smk"))
    texts = {path: path.read_text() for path in rules}
    # what it checks is there: every kind of param, in the rules that run the scripts
    assert {m.group(1) for text in texts.values() for m in JSON_PARAM.finditer(text)} == {"settings", "cell", "args"}
    for path, text in texts.items():
        assert unquoted_json_params(text) == [], f"{path}: not quoted"


def test_a_local_checkpoint_never_touches_the_network(tmp_path, monkeypatch):
    import huggingface_hub

    from ftbench.models.official import resolve_checkpoint

    def no_network(*args, **kwargs):
        raise AssertionError("network access for a local folder")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    (tmp_path / "ckpt").mkdir()
    assert resolve_checkpoint(str(tmp_path / "ckpt")) == tmp_path / "ckpt"
    with pytest.raises(ValueError, match="needs a pinned revision"):
        resolve_checkpoint("microsoft/Phi-3.5-vision-instruct", "main")


def test_nothing_in_the_repository_refers_to_a_path_outside_it():
    """A clone stands alone: no file it tracks points at the developers' reference folder beside it."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./" + "shared" + r"\b")  # split so that this file does not match itself
    hits = []
    for name in tracked:
        path = REPO / name
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        hits += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert len(tracked) > 100
    assert outside.search("see ../" + "shared/notes.md") and not outside.search("results/shared/x")  # it matches
    assert hits == []
