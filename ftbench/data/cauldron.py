"""Convert a HuggingFaceM4/the_cauldron subset (parquet shards) to the common format.

Split policy "cookbook": rows are numbered over all shards in sorted file order; the first
``n_val`` rows are ``val`` (the recipe evaluates on ``train[:500]``), the next ``n_test`` rows
are ``test``, the rest ``train``. Shards are streamed batch by batch (never loaded whole).

* docvqa, hateful_memes: first image and first text turn only (as the recipe).
* nlvr2: exactly two images per row (else ``ValueError``); every turn is kept, the first turn
  carries both images, later turns have ``images: []``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .common import (
    CAULDRON_TASKS,
    SPLITS,
    example_id,
    images_dir,
    jsonl_path,
    remove_final_outputs,
    write_json_atomic,
    write_jsonl_atomic,
)

BATCH_ROWS = 64
_EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}


def find_parquet_files(parquet_dir: str | os.PathLike) -> list[Path]:
    """All ``*.parquet`` files under ``parquet_dir`` (recursively), sorted by relative path."""
    root = Path(parquet_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such directory")
    files = sorted(root.rglob("*.parquet"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise FileNotFoundError(f"{root}: no *.parquet files")
    return files


def _check_schema(path: Path, schema) -> None:
    import pyarrow as pa

    def is_list(t):
        return pa.types.is_list(t) or pa.types.is_large_list(t)

    def struct_fields(t):
        return {t.field(i).name: t.field(i).type for i in range(t.num_fields)}

    for col in ("images", "texts"):
        if col not in schema.names:
            raise ValueError(f"{path}: missing column {col!r} (columns: {', '.join(schema.names)})")
    images = schema.field("images").type
    if not (is_list(images) and pa.types.is_struct(images.value_type)):
        raise ValueError(f"{path}: column 'images' has type {images}, expected list<struct<bytes, path>>")
    f = struct_fields(images.value_type)
    if "bytes" not in f or not (pa.types.is_binary(f["bytes"]) or pa.types.is_large_binary(f["bytes"])):
        raise ValueError(f"{path}: column 'images' has type {images}, expected list<struct<bytes: binary, ...>>")
    texts = schema.field("texts").type
    if not (is_list(texts) and pa.types.is_struct(texts.value_type)):
        raise ValueError(f"{path}: column 'texts' has type {texts}, expected list<struct<user, assistant, ...>>")
    f = struct_fields(texts.value_type)
    for key in ("user", "assistant"):
        if key not in f:
            raise ValueError(f"{path}: column 'texts' has no field {key!r} ({texts})")


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from the format PIL detects."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = img.format
    return _EXT.get(fmt, (fmt or "bin").lower())


def iter_rows(files: list[Path], batch_rows: int = BATCH_ROWS):
    """Yield ``(file, row_in_file, images, texts)`` streaming every file batch by batch."""
    import pyarrow.parquet as pq

    for path in files:
        pf = pq.ParquetFile(path)
        _check_schema(path, pf.schema_arrow)
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows, columns=["images", "texts"], use_threads=False):
            imgs = batch.column("images").to_pylist()
            txts = batch.column("texts").to_pylist()
            for images, texts in zip(imgs, txts):
                yield path, row, images or [], texts or []
                row += 1


def count_rows(files: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in files)


def split_of(row: int, n_val: int, n_test: int) -> str:
    if row < n_val:
        return "val"
    if row < n_val + n_test:
        return "test"
    return "train"


def convert_cauldron(
    task: str,
    parquet_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    n_val: int = 500,
    n_test: int = 0,
    max_rows: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Convert the Cauldron subset in ``parquet_dir`` (e.g. ``raw/docvqa``) into ``out_dir``.

    ``max_rows`` stops after that many rows (smoke tests on big real subsets). ``progress``:
    tqdm bar; None shows it only on a terminal. Returns the summary also written to
    ``out_dir/summary.json``: ``{"task", "source", "split_policy", "n_val", "n_test", "counts",
    "turns", "images"}``.
    """
    from tqdm import tqdm

    if task not in CAULDRON_TASKS:
        raise ValueError(f"{task!r} is not a Cauldron task ({', '.join(CAULDRON_TASKS)})")
    if n_val < 0 or n_test < 0:
        raise ValueError(f"n_val and n_test must be >= 0 (got {n_val}, {n_test})")
    files = find_parquet_files(parquet_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_final_outputs(out, task)
    img_root = images_dir(out)
    for split in SPLITS:
        (img_root / split).mkdir(parents=True, exist_ok=True)

    total = count_rows(files)
    if max_rows is not None:
        total = min(total, max_rows)
    if total <= n_val + n_test:
        raise ValueError(
            f"{parquet_dir}: {total} rows, but n_val={n_val} + n_test={n_test} leave no training rows"
        )

    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    turns = {s: 0 for s in SPLITS}
    n_images = 0
    rows = iter_rows(files)
    bar = tqdm(total=total, desc=f"convert {task}", unit="row", disable=(not progress) if progress is not None else None)
    try:
        for index, (path, r, images, texts) in enumerate(rows):
            if index >= total:
                break
            where = f"{path}: row {r}"
            if task == "nlvr2":
                if len(images) != 2:
                    raise ValueError(f"{where}: expected exactly 2 images, got {len(images)}")
            elif not images:
                raise ValueError(f"{where}: no image")
            if not texts:
                raise ValueError(f"{where}: no text turn")
            keep_images = images if task == "nlvr2" else images[:1]
            keep_turns = texts if task == "nlvr2" else texts[:1]

            split = split_of(index, n_val, n_test)
            ex_id = example_id(split, index)
            rel_paths = []
            for k, img in enumerate(keep_images):
                data = (img or {}).get("bytes")
                if not data:
                    raise ValueError(f"{where}: image {k} has no bytes")
                try:
                    ext = image_extension(data)
                except (UnidentifiedImageError, OSError) as e:
                    raise ValueError(f"{where}: image {k} is not a readable image ({e})") from None
                rel = f"{split}/{ex_id}_{k}.{ext}"
                (img_root / rel).write_bytes(data)
                rel_paths.append(rel)
            conversations = []
            for t, turn in enumerate(keep_turns):
                user, answer = (turn or {}).get("user"), (turn or {}).get("assistant")
                if not isinstance(user, str) or not isinstance(answer, str):
                    raise ValueError(f"{where}: text turn {t} lacks a user or assistant string")
                conversations.append({"images": rel_paths if t == 0 else [], "user": user, "assistant": answer})
            records[split].append({"id": ex_id, "source": task, "conversations": conversations})
            turns[split] += len(conversations)
            n_images += len(rel_paths)
            bar.update(1)
    finally:
        bar.close()
        rows.close()

    for split in SPLITS:  # jsonl last: an interrupted conversion leaves no final jsonl
        write_jsonl_atomic(jsonl_path(out, task, split), records[split])
    summary = {
        "task": task,
        "source": [str(p) for p in files],
        "split_policy": "cookbook",
        "n_val": n_val,
        "n_test": n_test,
        "counts": {s: len(records[s]) for s in SPLITS},
        "turns": turns,
        "images": n_images,
    }
    write_json_atomic(out / "summary.json", summary)
    return summary
