#!/usr/bin/env python
"""Conversion speed: DocVQA-size pages in Cauldron parquet and short AVI videos, 1 and 2 processes.

    nice .venv/bin/python scripts/bench_convert.py                 # 1,000 pages, 100 videos, 3 repeats
    .venv/bin/python scripts/bench_convert.py --pages 50 --videos 10 --repeats 1   # a quick look

Generates (not timed) ``--pages`` grey 1700x2200 pages with word-like boxes of dark strokes along text lines
(PNG, ~the size of a real DocVQA scan) as a Cauldron ``docvqa`` subset (4 parquet shards, row
groups of 100 rows as the hub writes image datasets), and ``--videos`` UCF-101-size clips (320x240,
25 fps, ``--frames`` frames, MPEG-4 AVI) in the ``UCF101_subset`` layout. Then times the
converters themselves (``convert_cauldron``, ``convert_ucf101``: reading, decoding, writing images
and jsonl, hashing for the leakage report; not the workflow's validation of the result) with each
``--processes`` value, ``--repeats`` times (alternating the values), into a fresh output folder
each time, and prints
pages/s and videos/s (median, min-max over the repeats) with the machine and library versions.
This is a benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PAGE_W, PAGE_H = 1700, 2200
VIDEO_W, VIDEO_H = 320, 240
CLASSES = [f"Class{i:02d}" for i in range(10)]


def page_png(seed: int) -> bytes:
    """A white page with word boxes of random dark "strokes" along text lines, a few speckles:
    PNG bytes of roughly the size of a real DocVQA page."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    page = np.full((PAGE_H, PAGE_W), 250, dtype=np.uint8)
    y = int(rng.integers(120, 200))
    while y < PAGE_H - 150:
        x = int(rng.integers(100, 180))
        right = PAGE_W - int(rng.integers(100, 400))
        height = int(rng.integers(14, 22))
        while x < right:
            w = int(rng.integers(20, 140))
            box = page[y:y + height, x:min(x + w, right)]  # glyph-like: dark strokes on white
            box[rng.random(box.shape) < 0.45] = int(rng.integers(20, 90))
            x += w + int(rng.integers(10, 22))
        y += height + int(rng.integers(12, 40))
    speckles = rng.integers(0, PAGE_H * PAGE_W, size=2000)
    page.reshape(-1)[speckles] = rng.integers(0, 255, size=speckles.size, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(page, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def write_pages(root: Path, n: int, shards: int = 4, processes: int = 2) -> tuple[Path, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ftbench.data.synthetic import cauldron_schema

    subset = root / "docvqa"
    subset.mkdir(parents=True)
    with ProcessPoolExecutor(processes) as pool:
        pages = list(pool.map(page_png, range(n), chunksize=8))
    per_shard = -(-n // shards)
    for k in range(shards):
        rows = [{"images": [{"bytes": pages[i], "path": None}],
                 "texts": [{"user": f"What is written in field {i}?", "assistant": f"value {i}", "source": "bench"}]}
                for i in range(k * per_shard, min(n, (k + 1) * per_shard))]
        if rows:
            table = pa.Table.from_pylist(rows, schema=cauldron_schema())
            pq.write_table(table, subset / f"train-{k:05d}-of-{shards:05d}.parquet", row_group_size=100)
    return subset, sum(len(p) for p in pages)


def write_one_video(args) -> None:
    from ftbench.data.synthetic import write_avi

    path, seed, frames = args
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, size=(VIDEO_H // 8, VIDEO_W // 8, 3), dtype=np.uint8)
    background = np.kron(background, np.ones((8, 8, 1), dtype=np.uint8))
    clip = []
    for f in range(frames):
        frame = np.roll(background, shift=2 * f, axis=1).copy()
        y, x = 60 + (f * 3) % 100, 40 + (f * 5) % 200
        frame[y:y + 40, x:x + 40] = (230, 40, 40)
        clip.append(frame)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, clip)


def write_videos(root: Path, n: int, frames: int, processes: int = 2) -> Path:
    """``UCF101_subset/{train,val,test}/<Class>/v_<Class>_gGG_c01.avi``: per class 80% train."""
    base = root / "UCF101_subset"
    jobs = []
    for i in range(n):
        cls = CLASSES[i % len(CLASSES)]
        k = i // len(CLASSES)
        per_class = -(-n // len(CLASSES))
        split = "train" if k < max(1, int(0.8 * per_class)) else ("val" if k % 2 == 0 else "test")
        jobs.append((str(base / split / cls / f"v_{cls}_g{k + 1:02d}_c01.avi"), i, frames))
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(write_one_video, jobs))
    return base


def _import_converters(_) -> None:
    import ftbench.data.cauldron  # noqa: F401  (what a conversion worker imports on its first unit)
    import ftbench.data.ucf101  # noqa: F401


def pool_startup(processes: int) -> float:
    """Seconds to spawn ``processes`` workers and import the converters in them: the fixed cost
    of a parallel conversion (``ftbench.data.pipeline.ordered_map`` spawns a fresh pool)."""
    import multiprocessing

    start = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_import_converters, range(processes)))
    return time.perf_counter() - start


def timed(fn, repeats: int, work: Path) -> list[float]:
    times = []
    for r in range(repeats):
        out = work / f"out-{r}"
        start = time.perf_counter()
        fn(out)
        times.append(time.perf_counter() - start)
        shutil.rmtree(out)
    return times


def describe(count: int, times: list[float]) -> dict:
    rates = sorted(count / t for t in times)
    return {"seconds": [round(t, 2) for t in times], "median_per_s": round(statistics.median(rates), 2),
            "min_per_s": round(rates[0], 2), "max_per_s": round(rates[-1], 2)}


def machine() -> dict:
    import av
    import PIL
    import pyarrow

    from ftbench.provenance import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "pyarrow": pyarrow.__version__, "pillow": PIL.__version__,
            "av": av.__version__, "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    from ftbench.data.cauldron import convert_cauldron
    from ftbench.data.ucf101 import convert_ucf101

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--frames", type=int, default=50, help="frames per video (50 = 2 s at 25 fps)")
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=None,
                    help="scratch folder, kept, its generated inputs reused by the next run (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_convert-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "pages": args.pages, "videos": args.videos, "frames_per_video": args.frames,
               "repeats": args.repeats, "docvqa": {}, "ucf101": {}}
    try:
        t0 = time.perf_counter()
        subset, videos = work / "cauldron" / "docvqa", work / "ucf" / "UCF101_subset"
        if subset.is_dir() and videos.is_dir():  # --work of an earlier run: reuse its inputs
            page_bytes = sum(p.stat().st_size for p in subset.glob("*.parquet"))
        else:
            subset, page_bytes = write_pages(work / "cauldron", args.pages)
            videos = write_videos(work / "ucf", args.videos, args.frames)
        results["generation_s"] = round(time.perf_counter() - t0, 1)
        results["mean_page_kb"] = round(page_bytes / args.pages / 1024, 1)
        print(f"inputs: {args.pages} pages (mean {results['mean_page_kb']} KB PNG) and {args.videos} videos, ready "
              f"in {results['generation_s']} s", flush=True)
        results["pool_startup_s"] = {str(p): round(statistics.median(pool_startup(p) for _ in range(3)), 2)
                                     for p in args.processes if p > 1}
        print(f"spawning the worker pool: {results['pool_startup_s']} s", flush=True)
        # Repeats alternate between the process counts, so a change of machine load mid-run hits all alike.
        jobs = {
            "docvqa": lambda out, p: convert_cauldron("docvqa", subset, out, n_val=max(1, args.pages // 20),
                                                      processes=p, progress=False),
            "ucf101": lambda out, p: convert_ucf101(videos, out, num_frames=8, processes=p, progress=False),
        }
        for task, job in jobs.items():
            count = args.pages if task == "docvqa" else args.videos
            times = {p: [] for p in args.processes}
            for _ in range(args.repeats):
                for p in args.processes:
                    times[p] += timed(lambda out, job=job, p=p: job(out, p), 1, work)
            for p in args.processes:
                results[task][str(p)] = describe(count, times[p])
                unit = "pages/s" if task == "docvqa" else "videos/s"
                print(f"{task} {unit}, {p} process(es): {results[task][str(p)]}", flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
