"""Prepare throughput: images/s of `dtrain prepare folder` with 1 and with N worker processes.

Synthesises a class-per-folder tree of JPEGs (default 400 at 500x375, ImageNet's typical size),
then prepares the same input twice. Every image is decoded in full (the integrity check); with
--max-side each one is also resized and re-encoded, the expensive path.

    .venv/bin/python benchmarks/bench_prepare.py --images 400 --workers 2 --json benchmarks/results/prepare.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from PIL import Image

from dtrain_prep.images import ImageOptions
from dtrain_prep.pipeline import PrepareOptions, run_prepare
from dtrain_prep.samples import synthetic_pixels
from dtrain_prep.sources.folder import folder_plan


def synthesize_tree(root: Path, images: int, width: int, height: int, classes: int = 10) -> None:
    for i in range(images):
        class_dir = root / f"class{i % classes:03d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        Image.fromarray(synthetic_pixels(i, width, height)).save(buffer, format="JPEG", quality=90)
        (class_dir / f"img{i:06d}.jpg").write_bytes(buffer.getvalue())


def measure(src: Path, out: Path, workers: int, formats: tuple[str, ...], max_side: int | None) -> dict:
    options = PrepareOptions(out=out, formats=formats, workers=workers, shard_size=50,
                             image=ImageOptions(max_side=max_side), quiet=True)
    started, cpu_before = time.perf_counter(), _cpu_seconds()
    summary = run_prepare(folder_plan(src), options)
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_before
    images = summary["splits"]["train"]["accepted"]
    # images per CPU-second does not depend on what else the machine runs (shared hosts).
    return {"workers": workers, "images": images, "seconds": round(wall, 3),
            "images_per_s": round(images / wall, 1),
            "shard_images_per_s": summary["timing"]["images_per_s_shards"],
            "images_per_cpu_s": round(images / cpu, 1)}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N of the second run")
    parser.add_argument("--formats", default="wds", help="wds,filelist,ffcv (ffcv adds its import+write)")
    parser.add_argument("--max-side", type=int, default=None, help="resize + re-encode every image")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        synthesize_tree(src, args.images, args.width, args.height)
        formats = tuple(f for f in args.formats.split(",") if f)
        runs = [measure(src, Path(tmp) / f"out{w}", w, formats, args.max_side) for w in (1, args.workers)]
    result = {
        "benchmark": "prepare", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "input": f"{args.images} JPEGs {args.width}x{args.height}", "formats": formats, "max_side": args.max_side,
        "runs": runs, "speedup": round(runs[1]["images_per_s"] / runs[0]["images_per_s"], 2),
    }
    for run in runs:
        print(f"workers={run['workers']}: {run['images_per_s']} images/s overall, "
              f"{run['shard_images_per_s']} images/s in the shard stage ({run['seconds']} s), "
              f"{run['images_per_cpu_s']} images per CPU-second")
    print(f"speedup with {args.workers} workers: {result['speedup']}x (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    result["load_average"] = round(os.getloadavg()[0], 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
