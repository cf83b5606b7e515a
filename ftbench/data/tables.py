"""Stream hub datasets saved on disk: parquet shards and ``datasets`` arrow files, chunk by chunk.

Layouts read (all found recursively under one folder, or one file given directly):

* hub snapshot: ``<subset>/train-00000-of-00007-<hash>.parquet`` (the_cauldron),
  ``data/train-00000-of-00001-<hash>.parquet`` (most single-config datasets), or the
  ``refs/convert/parquet`` branch layout ``<config>/train/0000.parquet``;
* a parquet export (``Dataset.to_parquet("train.parquet")``);
* ``datasets`` arrow files: the cache (``~/.cache/huggingface/datasets/<owner>___<name>/<config>/
  <version>/<hash>/<name>-train-00000-of-00001.arrow``) and ``save_to_disk`` folders
  (``<dir>/[<split>/]data-00000-of-00001.arrow``). ``cache-*.arrow`` files (results of ``map``) are
  not data and are skipped.

A *chunk* is one parquet row group or one arrow record batch: the unit of parallel work. Nothing
reads a whole file: chunks are streamed ``batch_rows`` rows at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BATCH_ROWS = 64
# split name as the hub and `datasets` spell it in file and folder names
_SPLIT_IN_NAME = re.compile(r"(?:^|[-_.])(train|test|validation|val|dev)(?:[-_.]|$)")


@dataclass(frozen=True)
class Chunk:
    path: str
    fmt: str  # "parquet" or "arrow"
    part: int  # row group (parquet) or record batch (arrow) index in the file
    rows: int
    first_row: int  # row number in the file of the chunk's first row (for error messages)


def find_table_files(source: str | os.PathLike) -> list[Path]:
    """Data files under ``source`` (a folder searched recursively, or one file), sorted by relative
    path. Parquet is preferred when a folder holds both parquet and arrow files."""
    root = Path(source)
    if root.is_file():
        if root.suffix not in (".parquet", ".arrow"):
            raise ValueError(f"{root}: expected a .parquet or .arrow file")
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory")
    for ext in ("parquet", "arrow"):
        files = [p for p in root.rglob(f"*.{ext}") if not p.name.startswith("cache-")]
        if files:
            return sorted(files, key=lambda p: p.relative_to(root).as_posix())
    raise FileNotFoundError(f"{root}: no *.parquet or *.arrow files")


def split_of_file(path: Path) -> str | None:
    """The split a data file belongs to, from its file name or, failing that, its folder name
    (``train-00000-of-00001.parquet``, ``docvqa-test-00000-of-00001.arrow``, ``train/0000.parquet``,
    ``test/data-00000-of-00001.arrow``); ``None`` when neither names one."""
    for name in (path.stem, path.parent.name):
        m = _SPLIT_IN_NAME.search(name)
        if m:
            return m.group(1)
    return None


def _open_arrow(path: str):
    import pyarrow as pa

    source = pa.memory_map(path)
    try:  # `datasets` writes the IPC stream format; accept the file format too
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.memory_map(path))


def _arrow_batches(path: str) -> Iterator:
    import pyarrow as pa

    reader = _open_arrow(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def table_schema(path: Path):
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        return pq.ParquetFile(path).schema_arrow
    return _open_arrow(str(path)).schema


def list_chunks(files: list[Path]) -> list[Chunk]:
    """Every chunk of ``files`` in order, from metadata only (arrow batches are memory-mapped)."""
    import pyarrow.parquet as pq

    chunks = []
    for path in files:
        first = 0
        if path.suffix == ".parquet":
            meta = pq.ParquetFile(path).metadata
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            fmt = "parquet"
        else:
            sizes = [b.num_rows for b in _arrow_batches(str(path))]
            fmt = "arrow"
        for part, n in enumerate(sizes):
            if n:
                chunks.append(Chunk(str(path), fmt, part, n, first))
            first += n
    return chunks


def read_chunk(chunk: Chunk, columns: list[str], batch_rows: int = BATCH_ROWS) -> Iterator:
    """Record batches of at most ``batch_rows`` rows of one chunk, only ``columns``."""
    import pyarrow.parquet as pq

    if chunk.fmt == "parquet":
        pf = pq.ParquetFile(chunk.path)
        yield from pf.iter_batches(batch_size=batch_rows, row_groups=[chunk.part], columns=columns,
                                   use_threads=False)
        return
    for i, batch in enumerate(_arrow_batches(chunk.path)):
        if i == chunk.part:
            batch = batch.select(columns)
            for start in range(0, batch.num_rows, batch_rows):
                yield batch.slice(start, batch_rows)
            return


def iter_chunk_rows(chunk: Chunk, columns: list[str]) -> Iterator[tuple[int, dict]]:
    """``(row number in the file, {column: python value})`` for every row of ``chunk``."""
    row = chunk.first_row
    for batch in read_chunk(chunk, columns):
        values = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            yield row, {c: values[c][i] for c in columns}
            row += 1
