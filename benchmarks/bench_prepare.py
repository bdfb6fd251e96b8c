"""`dtrain prepare` at scale: img/s, the ratio to FFCV's own DatasetWriter, peak RSS vs image count.

Three measurements, each in a fresh process (so that its peak RSS and imports are its own):
  1. throughput: `dtrain prepare folder` (shards + manifest + file lists + pixel statistics +
     .beton) on a tree of realistic JPEGs (default 2,000 and 8,000 around 500x375, of mixed sizes
     as ImageNet's and of one size as CIFAR's), and FFCV's DatasetWriter alone on the same files
     (PIL decode -> RGBImageField jpg, as FFCV's own ImageNet example writes) -> their ratio per
     run, and at scale (the seconds each adds per image between the two counts);
  2. memory: the same prepare on N tiny images for each N of --memory-counts: peak RSS of the
     parent and of its largest child, and the slope in bytes per image (-> ImageNet's 1.33M);
  3. the machine's load average around every run (a shared host makes wall time move), and the
     environment (commit, date, load, quiet flag; dtrain/bench/machine.py, as `dtrain bench`):
     a busy machine prints NOT QUIET and records quiet=false.

    OMP_NUM_THREADS=1 python benchmarks/bench_prepare.py --images 2000,8000 --workers 2 \
        --memory-counts 25000,100000 --json benchmarks/results/prepare_scale.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_IMAGES = 1_331_167


def image_size(i: int, width: int, height: int, sizes: str) -> tuple[int, int]:
    """sizes "one": every image width x height (the digits, CIFAR: prepare computes a mean image);
    "mixed": each its own size within 20% below it (ImageNet: no mean image, as prepare gives up
    on the per-pixel statistics at a shard's second size)."""
    if sizes == "one":
        return width, height
    return width - (i * 7919) % max(1, width // 5), height - (i * 104729) % max(1, height // 5)


def synthesize_tree(root: Path, images: int, width: int, height: int, classes: int = 10, sizes: str = "one") -> int:
    """root/<class>/<image>.jpg; returns the bytes written."""
    from PIL import Image

    from dtrain_prep.samples import synthetic_pixels

    total = 0
    tile = None
    for i in range(images):
        class_dir = root / f"class{i % classes:03d}"
        class_dir.mkdir(parents=True, exist_ok=True)
        if tile is None or width * height > 4096:  # tiny images: one encoded tile is enough
            buffer = io.BytesIO()
            Image.fromarray(synthetic_pixels(i, *image_size(i, width, height, sizes))).save(buffer, format="JPEG",
                                                                                             quality=90)
            tile = buffer.getvalue()
        (class_dir / f"img{i:07d}.jpg").write_bytes(tile)
        total += len(tile)
    return total


def linked_subtree(source: Path, root: Path, images: int) -> int:
    """The first `images` files of a synthesize_tree tree, hard-linked (no second synthesis)."""
    total = 0
    for path in sorted(source.rglob("*.jpg"), key=lambda p: p.name)[:images]:
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, root / path.parent.name / path.name)
        total += path.stat().st_size
    return total


def _usage() -> dict:
    import multiprocessing

    multiprocessing.active_children()  # reaps finished children (FFCV never joins its writers): their CPU counts
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
            "peak_rss_parent_mb": own.ru_maxrss / 1024, "peak_rss_largest_child_mb": children.ru_maxrss / 1024}


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def child_prepare(src: str, out: str, workers: int, formats: list[str], fresh_ffcv_min: int | None = None) -> dict:
    """One `dtrain prepare folder` run, in this (fresh) process; FFCV's import timed apart, as below."""
    import_started = time.perf_counter()
    if "ffcv" in formats:
        import ffcv.fields  # noqa: F401
        import ffcv.writer  # noqa: F401
    import_s = time.perf_counter() - import_started
    started = time.perf_counter()
    from dtrain_prep import pipeline
    from dtrain_prep.pipeline import PrepareOptions, run_prepare
    from dtrain_prep.sources.folder import folder_plan

    if fresh_ffcv_min is not None:
        pipeline.FRESH_FFCV_PROCESS_MIN_IMAGES = fresh_ffcv_min

    scan_started = time.perf_counter()
    plan = folder_plan(Path(src))
    scan_s = time.perf_counter() - scan_started
    summary = run_prepare(plan, PrepareOptions(out=Path(out), formats=tuple(formats), workers=workers, quiet=True))
    wall = time.perf_counter() - started
    timing = summary["timing"]
    return {"seconds": wall, "import_s": import_s, "scan_s": scan_s, "shard_s": timing["shard_seconds"],
            "after_shards_s": timing["seconds"] - timing["shard_seconds"],
            "images": summary["splits"]["train"]["accepted"], "out_bytes": _tree_bytes(Path(out)), **_usage()}


class _Files:
    """FFCV's documented indexable-dataset path: decode each file to an RGB array."""

    def __init__(self, paths: list[str], labels: list[int]):
        self.paths, self.labels = paths, labels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import numpy as np
        from PIL import Image

        return np.asarray(Image.open(self.paths[index]).convert("RGB")), self.labels[index]


def child_ffcv(src: str, out: str, workers: int) -> dict:
    """FFCV's own DatasetWriter on the same files, in this (fresh) process; its import timed apart."""
    started = time.perf_counter()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    import_s = time.perf_counter() - started
    classes = sorted(p.name for p in Path(src).iterdir())
    files = sorted((str(p), classes.index(p.parent.name)) for p in Path(src).rglob("*.jpg"))
    write_started = time.perf_counter()
    writer = DatasetWriter(out, {"image": RGBImageField(write_mode="jpg"), "label": IntField()}, num_workers=workers)
    writer.from_indexed_dataset(_Files([f for f, _ in files], [c for _, c in files]), chunksize=64)
    return {"seconds": time.perf_counter() - write_started, "import_s": import_s, "images": len(files),
            "out_bytes": os.path.getsize(out), **_usage()}


CHILDREN = {"prepare": child_prepare, "ffcv": child_ffcv}


def run_child(kind: str, **kwargs) -> dict:
    """Run CHILDREN[kind] in a fresh interpreter; its result plus the load average around it."""
    load_before = os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kwargs})]
    checkout = [str(ROOT), str(ROOT / "data_prep")]  # dtrain and dtrain_prep without an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*checkout, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def _pair(src: Path, out: Path, workers: int, formats: list[str]) -> dict:
    ours = run_child("prepare", src=str(src), out=str(out / "prepared"), workers=workers, formats=formats)
    ffcv = run_child("ffcv", src=str(src), out=str(out / "ffcv.beton"), workers=workers)
    for run in (ours, ffcv):
        run["images_per_s"] = round(run["images"] / run["seconds"], 1)
        run["images_per_cpu_s"] = round(run["images"] / run["cpu_s"], 1)
    return {"dtrain_prepare": ours, "ffcv_writer": ffcv,
            "ratio_wall": round(ours["seconds"] / ffcv["seconds"], 2),
            "ratio_wall_with_ffcv_import": round((ours["seconds"] + ours["import_s"])
                                                 / (ffcv["seconds"] + ffcv["import_s"]), 2),
            "ratio_cpu": round(ours["cpu_s"] / ffcv["cpu_s"], 2)}


def throughput(tmp: Path, counts: list[int], width: int, height: int, workers: int, formats: list[str],
               sizes: str) -> dict:
    """Both writers at each image count; with two counts or more, the ratio of the seconds each
    adds per image between the smallest and the largest count: the ratio at scale, without the
    fixed costs (process start-up, imports, pools) that dominate a run of a few thousand images."""
    full = tmp / f"src-{sizes}-{max(counts)}"
    input_bytes = synthesize_tree(full, max(counts), width, height, sizes=sizes)
    runs = []
    for count in sorted(counts):
        src = full if count == max(counts) else tmp / f"src-{sizes}-{count}"
        count_bytes = input_bytes if src == full else linked_subtree(full, src, count)
        run = _pair(src, tmp / f"out-{sizes}-{count}", workers, formats)
        runs.append({"images": count, "input_bytes": count_bytes, **run})
        shutil.rmtree(tmp / f"out-{sizes}-{count}")
    result = {"input": f"{max(counts)} JPEGs {width}x{height} ({sizes} size), "
                       f"{input_bytes / max(counts) / 1024:.1f} KiB each", "sizes": sizes, "workers": workers,
              "formats": formats, "runs": runs}
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        added = {who: (last[who]["seconds"] - first[who]["seconds"]) / (last["images"] - first["images"])
                 for who in ("dtrain_prepare", "ffcv_writer")}
        result["seconds_per_1000_images"] = {who: round(1000 * v, 3) for who, v in added.items()}
        result["ratio_at_scale"] = round(added["dtrain_prepare"] / added["ffcv_writer"], 2)
    return result


def _print_throughput(t: dict) -> None:
    for run in t["runs"]:
        ours, ffcv = run["dtrain_prepare"], run["ffcv_writer"]
        print(f"{t['sizes']} size, {run['images']} images: dtrain prepare {ours['images_per_s']} img/s "
              f"({ours['seconds']} s); FFCV DatasetWriter alone {ffcv['images_per_s']} img/s ({ffcv['seconds']} s "
              f"+ {ffcv['import_s']} s import); ratio {run['ratio_wall']}x wall, {run['ratio_cpu']}x CPU")
    if "ratio_at_scale" in t:
        print(f"{t['sizes']} size, at scale (s per 1000 more images): {t['seconds_per_1000_images']}, "
              f"ratio {t['ratio_at_scale']}x")


def memory(tmp: Path, counts: list[int], workers: int, formats: list[str], fresh_ffcv_min: int | None) -> dict:
    runs = []
    for count in counts:
        src = tmp / f"tiny{count}"
        synthesize_tree(src, count, 16, 16, classes=100)
        run = run_child("prepare", src=str(src), out=str(tmp / f"tiny{count}_out"), workers=workers, formats=formats,
                        fresh_ffcv_min=fresh_ffcv_min)
        runs.append({"images": count, **{k: run[k] for k in ("seconds", "peak_rss_parent_mb",
                                                               "peak_rss_largest_child_mb", "load_average")}})
    result = {"formats": formats, "workers": workers, "fresh_ffcv_process_min_images": fresh_ffcv_min, "runs": runs}
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        for who in ("parent", "largest_child"):
            key = f"peak_rss_{who}_mb"
            slope = (last[key] - first[key]) * 1024 * 1024 / (last["images"] - first["images"])
            result[f"{who}_bytes_per_image"] = round(slope, 1)
            result[f"{who}_imagenet_mb"] = round(last[key] + slope * (IMAGENET_IMAGES - last["images"]) / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="2000,8000", help="comma list of image counts; 0: skip")
    parser.add_argument("--sizes", default="mixed,one", help="comma list of mixed (ImageNet-like) and one (CIFAR-like)")
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--formats", default="wds,ffcv,filelist")
    parser.add_argument("--memory-counts", default="25000,100000", help="comma list; empty: skip")
    parser.add_argument("--fresh-ffcv-min", type=int, default=None,
                        help="override FRESH_FFCV_PROCESS_MIN_IMAGES (0: every run writes the .beton in a "
                             "spawned process, so that all counts measure the same path)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec.pop("kind")](**spec)))
        return

    # Imported here, not at the top: a --child run's imports and peak RSS are what it measures.
    sys.path[:0] = [str(ROOT), str(ROOT / "data_prep")]
    from dtrain.bench.machine import machine_environment, not_quiet_warning

    formats = [f for f in args.formats.split(",") if f]
    counts = [int(c) for c in args.memory_counts.split(",") if c]
    env = machine_environment()  # before this benchmark adds its own load
    if warning := not_quiet_warning(env):
        print(warning)
    result = {"benchmark": "prepare_scale", "environment": env,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load_average_start": env["load_average"]}
    with tempfile.TemporaryDirectory() as tmp:
        image_counts = [int(c) for c in args.images.split(",") if int(c)]
        if image_counts:
            result["throughput"] = {}
            for sizes in [s for s in args.sizes.split(",") if s]:
                result["throughput"][sizes] = throughput(Path(tmp), image_counts, args.width, args.height,
                                                         args.workers, formats, sizes)
                _print_throughput(result["throughput"][sizes])
        if counts:
            result["memory"] = memory(Path(tmp), counts, args.workers, formats, args.fresh_ffcv_min)
            for run in result["memory"]["runs"]:
                print(f"{run['images']} images: peak RSS parent {run['peak_rss_parent_mb']:.0f} MB, "
                      f"largest child {run['peak_rss_largest_child_mb']:.0f} MB ({run['seconds']} s)")
    result["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
