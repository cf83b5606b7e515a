"""``ftbench`` command line.

    ftbench inspect phi3.5-vision          # a preset: shapes and parameter counts, no download
    ftbench inspect path/to/checkpoint     # a folder: the same, plus a strict check of its shards
    ftbench inspect microsoft/Phi-3.5-vision-instruct --revision <40-hex sha>   # fetched first
    ftbench validate data/mytask_train.jsonl data/images   # a dataset in the common format

Exit status: 0 fine, 1 a problem with the model, checkpoint or dataset (each one is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftbench.models.presets import PRESETS


class UsageError(Exception):
    pass


def preset_config(name: str):
    from ftbench.models.presets import preset_config as build

    try:
        return build(name)
    except ValueError as e:
        raise UsageError(str(e)) from None


def parameter_counts(model) -> dict[str, int]:
    """Parameter counts: total, language (embed_tokens, decoder layers, norm, lm_head), vision (the
    CLIP tower, including layers that are never run), projection (img_projection, glb_GN, sub_GN)."""
    groups = {"total": 0, "language": 0, "vision": 0, "projection": 0}
    for name, param in model.named_parameters():
        n = param.numel()
        groups["total"] += n
        if name.startswith("model.vision_embed_tokens.img_processor."):
            groups["vision"] += n
        elif name.startswith("model.vision_embed_tokens."):
            groups["projection"] += n
        else:
            groups["language"] += n
    return groups


def describe(config, model) -> list[str]:
    vision = config.vision_config
    rope = config.rope_parameters or {}
    groups = parameter_counts(model)
    width = max(len(f"{v:,}") for v in groups.values())
    notes = {
        "total": "",
        "language": "embed_tokens, decoder layers, norm, lm_head",
        "vision": "CLIP, incl. the layers after the feature layer and post_layernorm",
        "projection": "img_projection + glb_GN + sub_GN",
    }
    lines = [
        f"decoder: {config.num_hidden_layers} layers, hidden {config.hidden_size}, {config.num_attention_heads} heads "
        f"({config.num_key_value_heads} kv), intermediate {config.intermediate_size}, vocab {config.vocab_size}, "
        f"rope {rope.get('rope_type')} (original context {rope.get('original_max_position_embeddings')}, "
        f"max {config.max_position_embeddings})",
        f"vision: CLIP {vision['num_hidden_layers']} layers, width {vision['hidden_size']}, "
        f"{vision['image_size']} px crops of {vision['patch_size']} px patches, "
        f"features from layer {config.feature_layer}",
        "parameters:",
    ]
    for key, value in groups.items():
        note = f"  ({notes[key]})" if notes[key] else ""
        lines.append(f"  {key:<11}{value:>{width},}{note}")
    lines.append(f"tensors: {len(model.state_dict())}")
    return lines


def shape_table(model) -> list[str]:
    """``key<TAB>shape`` lines in the format of tests/data/phi3v-weight-keys.tsv."""
    return [f"{k}\t{'x'.join(str(s) for s in v.shape)}" for k, v in sorted(model.state_dict().items())]


def cmd_inspect(args) -> int:
    from ftbench.models.official import (
        check_checkpoint,
        config_for_folder,
        is_official_config,
        meta_model,
        read_config_json,
        read_headers,
        resolve_checkpoint,
    )

    if (args.source is None) == (args.preset is None):
        raise UsageError("inspect: give exactly one of SOURCE or --preset")
    source = args.source or args.preset
    folder = None
    if source in PRESETS:
        config = preset_config(source)
        title = f"{source}: preset (shapes only, random-weight architecture on the meta device)"
    else:
        path = Path(source).expanduser()
        if not path.is_dir():
            if path.exists() or "/" not in source or args.revision is None:
                raise UsageError(
                    f"{source}: not a preset ({', '.join(PRESETS)}), not a checkpoint folder"
                    + ("" if path.exists() else ", and not a hub id with --revision <40-hex commit>")
                )
            try:
                path = resolve_checkpoint(source, args.revision)
            except ValueError as e:
                raise UsageError(str(e)) from None
        folder = path
        config = config_for_folder(folder)
        kind = "official layout" if is_official_config(read_config_json(folder)) else "ftbench layout"
        title = f"{folder}: checkpoint folder ({kind})"
    model = meta_model(config)
    if args.keys:
        print("\n".join(shape_table(model)))
    else:
        print(title)
        print("\n".join(describe(config, model)))
    if folder is None:
        return 0
    problems = check_checkpoint(folder)
    headers, _ = read_headers(folder)
    files = {path for path, _, _ in headers.values()}
    out = sys.stderr if args.keys else sys.stdout
    print(f"checkpoint: {len(headers)} tensors in {len(files)} safetensors file(s)", file=out)
    if not problems:
        print("checkpoint matches the architecture: no missing, unexpected or wrong-shaped tensor", file=out)
        return 0
    for line in problems:
        print(f"mismatch: {line}", file=out)
    print(f"{len(problems)} mismatch(es)", file=out)
    return 1


def cmd_validate(args) -> int:
    from ftbench.data.validate import dataset_problems, may_be_empty

    count = 0
    # A conversion's empty test split is valid, as the conversion's own check has it.
    for problem in dataset_problems(args.jsonl, args.image_dir, allow_empty=may_be_empty(args.jsonl)):
        print(problem)
        count += 1
    if count:
        print(f"{args.jsonl}: {count} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.jsonl}: ok")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftbench", description="ftbench model and dataset tools")
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect",
        help="parameter counts of a preset or checkpoint folder; checks a folder's shards",
        description="Build the architecture on the meta device (no weights, no download) and print its "
        "parameter counts; for a folder also compare its safetensors shards with it (exit 1 on any mismatch).",
    )
    inspect.add_argument("source", nargs="?", help=f"a preset ({', '.join(PRESETS)}), a checkpoint folder, or a hub id")
    inspect.add_argument("--preset", choices=PRESETS, help="same as giving the preset as SOURCE")
    inspect.add_argument("--revision", help="40-hex commit of a hub id (required for hub ids)")
    inspect.add_argument("--keys", action="store_true", help="print key<TAB>shape lines instead of the summary")
    inspect.set_defaults(func=cmd_inspect)
    validate = sub.add_parser(
        "validate",
        help="check a dataset in the common jsonl format and its images; prints every problem",
        description="Print every problem of a common-format jsonl file, one per line as FILE:LINE: PROBLEM "
        "(malformed JSON, missing keys, image tags that do not match the images, empty answers, duplicate ids, "
        "missing, empty or unreadable images). Exit 1 if there is any. A file without examples is one, except a "
        "test split (<task>_test.jsonl), which conversions write empty when n_test is 0.",
    )
    validate.add_argument("jsonl", help="the dataset's jsonl file")
    validate.add_argument("image_dir", nargs="?", default=None,
                          help="folder the image paths are relative to (default: images/ next to the jsonl)")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed its usage message
        return int(e.code or 0)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"ftbench: error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ftbench: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
