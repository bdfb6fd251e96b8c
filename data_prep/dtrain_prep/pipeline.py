"""Run a SourcePlan into OUT: shards in a process pool, then manifest, file lists, FFCV, summary.

Resumable at shard granularity: a shard whose manifest fragment exists is not redone, and the
run's options are pinned in OUT/.work/state.json so a resumed run cannot mix settings.
summary.json is written last; its presence means the output is complete.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click

from . import layout
from .duplicates import DigestPrefixes, DuplicateMarker
from .errors import DataPrepError, PrepareFailure
from .ffcv_export import FfcvOptions, ffcv_available, write_betons
from .images import ImageOptions
from .lock import LOCK_NAME, locked_out
from .manifest import ManifestStats, ManifestWriter, build_summary, write_atomic_text, write_classes
from .minival import MinivalCarver
from .pixel_stats import PIXEL_STATS, PixelAccumulator, write_pixel_statistics
from .plan import SourcePlan
from .run_state import STATE, differences, recorded_state, run_state
from .shard_writer import ShardTask, fragment_path, load_fragment, pixel_sums_path, process_shard

# Test hook: exit hard (os._exit, no cleanup) after this many shards, to test kill-and-resume.
TEST_HOOK_EXIT_AFTER_SHARDS = "DATA_PREP_TEST_HOOK_EXIT_AFTER_SHARDS"

# What --overwrite removes: only entries this tool writes, never the rest of a user's directory.
OWNED_ENTRIES = (layout.SUMMARY, layout.CLASSES, layout.MANIFEST, layout.WDS_DIR, layout.FFCV_DIR,
                 layout.FILELIST_DIR, layout.JPEG_DIR, layout.SOURCE_LINK, layout.QUARANTINE_DIR, layout.WORK_DIR)


@dataclass(frozen=True)
class PrepareOptions:
    out: Path
    formats: tuple[str, ...] = layout.FORMATS
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    shard_size: int = 1000
    image: ImageOptions = ImageOptions()
    ffcv: FfcvOptions = FfcvOptions()
    copy_jpegs: bool = False      # filelist points at copies under OUT/jpeg, never at --src
    overwrite: bool = False
    quiet: bool = False
    minival: int = 0              # training images moved to split "minival" (dtrain_prep.minival)
    minival_seed: int = 0

    def pinned(self) -> dict:
        """The options that shape the output bytes (a resumed run must use the same)."""
        return {"formats": sorted(self.formats), "shard_size": self.shard_size, "image": asdict(self.image),
                "ffcv": asdict(self.ffcv), "copy_jpegs": self.copy_jpegs, "minival": self.minival}


def _say(options: PrepareOptions, message: str) -> None:
    if not options.quiet:
        click.echo(message, err=True)


def _prepare_out(plan: SourcePlan, options: PrepareOptions) -> bool:
    """Create/check OUT. False when OUT already holds the finished output of this very run (same
    dataset, options and source): a re-run is a no-op; one with anything else is refused."""
    out = options.out
    if plan.source_root is not None and out.resolve().is_relative_to(plan.source_root.resolve()):
        raise DataPrepError(f"--out {out} is inside --src {plan.source_root}: choose an --out outside the source tree")
    state = run_state(plan.dataset, options.pinned(), plan.splits)
    if options.overwrite:
        for name in OWNED_ENTRIES:
            path = out / name
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
    elif (out / layout.SUMMARY).exists():
        recorded = recorded_state(out)  # summary.json is there: never None
        differs = differences(recorded, state) if recorded is not None else "an unrecorded run"
        if differs:
            raise DataPrepError(f"--out {out} holds a finished output of {differs}: pass --overwrite to rebuild "
                                "it with these, or choose another --out")
        return False
    elif any(p.name != LOCK_NAME for p in out.iterdir()) and not (out / layout.WORK_DIR).exists():
        raise DataPrepError(f"--out {out} is not empty and holds no dtrain prepare output: "
                            "choose an empty directory, or pass --overwrite")
    recorded = recorded_state(out)
    differs = differences(recorded, state) if recorded else ""
    if differs:
        raise DataPrepError(f"{out} holds an unfinished run of {differs}: re-run it with its options to resume, "
                            "or pass --overwrite to start over")
    try:
        write_atomic_text(out / STATE, json.dumps(state, indent=1))
    except OSError as exc:
        raise DataPrepError(f"cannot write to --out {out}: {exc.strerror or exc}") from None
    return True


def _link_source(plan: SourcePlan, options: PrepareOptions) -> bool:
    """OUT/src -> --src, so clean original JPEGs need no copy for fn.readers.file."""
    if plan.source_root is None or options.copy_jpegs or "filelist" not in options.formats:
        return False
    link = options.out / layout.SOURCE_LINK
    if link.is_symlink() and Path(os.readlink(link)) == plan.source_root:
        return True
    if link.is_symlink():
        link.unlink()
    link.symlink_to(plan.source_root, target_is_directory=True)
    return True


def _tasks(plan: SourcePlan, options: PrepareOptions, link_originals: bool) -> list[ShardTask]:
    tasks = []
    for split in layout.SPLITS:
        samples = plan.splits.get(split, [])
        for shard_index, start in enumerate(range(0, len(samples), options.shard_size)):
            tasks.append(ShardTask(split, shard_index, tuple(samples[start:start + options.shard_size]),
                                   str(options.out), options.image, "filelist" in options.formats,
                                   link_originals))
    return tasks


def _run_shards(pending: list[ShardTask], options: PrepareOptions) -> None:
    from tqdm import tqdm

    exit_after = int(os.environ.get(TEST_HOOK_EXIT_AFTER_SHARDS, "0"))
    progress = tqdm(total=sum(len(t.samples) for t in pending), unit="img", desc="prepare",
                    disable=options.quiet or not sys.stderr.isatty(), smoothing=0.05)
    done = 0

    def finished(task_size: int, pool=None) -> None:
        nonlocal done
        progress.update(task_size)
        done += 1
        if exit_after and done >= exit_after:
            if pool is not None:
                pool.terminate()  # like a killed job: the workers die mid-shard too
            os._exit(17)

    if options.workers <= 1 or len(pending) <= 1:
        for task in pending:
            process_shard(task)
            finished(len(task.samples))
    else:
        # spawn: workers share nothing implicit with a parent that may hold threads (tqdm, FFCV).
        context = multiprocessing.get_context("spawn")
        sizes = {(t.split, t.shard_index): len(t.samples) for t in pending}
        with context.Pool(min(options.workers, len(pending))) as pool:
            for done_key in pool.imap_unordered(_process_shard_keyed, pending):
                finished(sizes[done_key], pool)
    progress.close()


def _remove_stale_temporaries(out: Path) -> None:
    """Half-written files of a killed run (their shards are redone)."""
    for folder in (layout.WDS_DIR, layout.JPEG_DIR, layout.QUARANTINE_DIR, layout.WORK_DIR):
        for path in (out / folder).rglob("*.tmp.*"):
            path.unlink(missing_ok=True)


def _process_shard_keyed(task: ShardTask) -> tuple[str, int]:
    process_shard(task)
    return task.split, task.shard_index


def run_prepare(plan: SourcePlan, options: PrepareOptions) -> dict | None:
    """Write OUT for plan; returns the summary, or None when OUT was already complete."""
    if options.out.exists() and not options.out.is_dir():
        raise DataPrepError(f"--out {options.out} is a file: give a directory")
    try:
        with locked_out(options.out):
            return _run(plan, options)
    except OSError as exc:  # the shard stage reports its own; this covers manifest, lists, FFCV
        if exc.errno == errno.ENOSPC:
            raise DataPrepError(f"disk full while writing {options.out}: free space, then re-run the same "
                                "command to resume") from None
        raise DataPrepError(f"cannot write {exc.filename or options.out}: {exc.strerror or exc}") from None


def _written_fragment(out: Path, task: ShardTask) -> list[dict]:
    """The rows a shard task recorded; every task has run when the manifest is written."""
    rows = load_fragment(out, task.split, task.shard_index)
    if rows is None:
        raise DataPrepError(f"{fragment_path(out, task.split, task.shard_index)} is missing: run the same "
                            "`dtrain prepare` command again to redo that shard")
    return rows


def _write_manifest(options: PrepareOptions, tasks: list, filelist_splits: list):
    """Shard fragments -> manifest, file lists, counts, duplicates and the train split's pixel
    statistics, one shard's rows at a time so memory stays flat in the number of images. A first
    pass counts the accepted training rows (all the minival choice needs) and collects digest
    prefixes (dtrain_prep.duplicates)."""
    accepted_train, prefixes = 0, DigestPrefixes()
    for task in tasks:
        rows = _written_fragment(options.out, task)
        accepted_train += sum(1 for r in rows if r["split"] == "train" and r["status"] != layout.STATUS_REJECTED)
        prefixes.add(rows)
    carver = MinivalCarver(options.minival, accepted_train, options.minival_seed)
    duplicates = DuplicateMarker(prefixes.repeated())
    manifest, pixels = ManifestWriter(options.out, filelist_splits), PixelAccumulator(options.out)
    for task in tasks:
        rows = duplicates.mark(carver.apply(_written_fragment(options.out, task)))
        manifest.add(rows)
        pixels.add_shard(pixel_sums_path(options.out, task.split, task.shard_index), rows, task.split)
    return manifest.close(), pixels.result(), duplicates.summary()


def _refuse_empty_splits(out: Path, stats: ManifestStats) -> None:
    """A split whose every file was rejected is no usable output: a one-line error, not a finished
    "train: 0 images". The manifest (with every reason) is written, summary.json is not."""
    for split, counts in stats.split_counts().items():
        if counts["candidates"] and not counts["accepted"]:
            first = next(r for r in stats.rejects if r["split"] == split)
            raise DataPrepError(f"all {counts['candidates']} {split} files were rejected (first: {first['source']}: "
                                f"{first['reason']}); every reason is in {out / layout.MANIFEST}: fix the source or "
                                "the option that rejects them (e.g. --max-pixels), then re-run with --overwrite")


def _run(plan: SourcePlan, options: PrepareOptions) -> dict | None:
    started = time.time()
    if not _prepare_out(plan, options):
        _say(options, f"{options.out} is already complete: nothing to do (pass --overwrite to rebuild)")
        return None
    for warning in plan.warnings:
        _say(options, f"warning: {warning}")
    _remove_stale_temporaries(options.out)
    link_originals = _link_source(plan, options)
    tasks = _tasks(plan, options, link_originals)
    pending = [t for t in tasks if load_fragment(options.out, t.split, t.shard_index) is None]
    if len(pending) < len(tasks):
        _say(options, f"resuming: {len(tasks) - len(pending)} of {len(tasks)} shards already done")
    _run_shards(pending, options)
    shard_seconds = time.time() - started

    filelist_splits = list(plan.splits) if "filelist" in options.formats else []
    stats, pixels, duplicates = _write_manifest(options, tasks, filelist_splits)
    _refuse_empty_splits(options.out, stats)
    write_classes(options.out, plan.classes)
    outputs = {"manifest": layout.MANIFEST, "classes": layout.CLASSES,
               "wds": {s: stats.shard_names(s) for s in plan.splits}}  # an all-rejected shard has no tar
    if filelist_splits:
        outputs["filelists"] = {s: layout.filelist_name(s) for s in plan.splits}
    if "ffcv" in options.formats:
        outputs["ffcv"] = _write_ffcv(plan, options, stats)
    elapsed = time.time() - started
    images = sum(len(s) for s in plan.splits.values())
    timing = {"seconds": round(elapsed, 3), "shard_seconds": round(shard_seconds, 3),
              "workers": options.workers, "images_per_s_shards": round(images / max(shard_seconds, 1e-9), 1)}
    options_record = {**options.pinned(), "workers": options.workers}
    if write_pixel_statistics(options.out, pixels):  # R1's per-pixel mean (dtrain_prep.pixel_stats)
        outputs["pixel_stats"] = PIXEL_STATS
    summary = build_summary(options.out, plan.dataset, stats, outputs, options_record,
                            {**plan.details, "warnings": plan.warnings}, timing, duplicates)
    write_atomic_text(options.out / layout.SUMMARY, json.dumps(summary, indent=1) + "\n")
    counts = ", ".join(f"{s}: {c['accepted']} images ({c['rejected']} rejected)" for s, c in summary["splits"].items())
    if duplicates["images"]:
        counts += (f"; {duplicates['images']} duplicates (identical to an image read before, "
                   f"{duplicates['other_class']} of another class), kept and marked in the manifest")
    _say(options, f"wrote {options.out} in {elapsed:.1f} s: {counts}")
    return summary


# Above this many images the FFCV stage runs in a spawned process: FFCV forks its writers from
# there, so they inherit a small process (one split's manifest columns) instead of this one and
# its plan of every image (a forked child starts with its parent's resident pages). Below it, the
# fresh process's own FFCV import (~5 CPU-seconds) would cost more than it saves.
FRESH_FFCV_PROCESS_MIN_IMAGES = 50_000


def _in_fresh_process(function, *args):
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as executor:
        try:
            return executor.submit(function, *args).result()
        except BrokenProcessPool:
            raise PrepareFailure(f"the FFCV writer process died writing a .beton in {args[0]}: re-run the same "
                                "command to resume (look for an out-of-memory kill in the system log)") from None


def _write_ffcv(plan: SourcePlan, options: PrepareOptions, stats: ManifestStats) -> dict | str:
    if not ffcv_available():
        _say(options, "note: ffcv is not installed, no .beton written (pip install 'dtrain[ffcv]')")
        return "skipped: ffcv is not installed"
    counts = {split: stats.split_counts().get(split, {}).get("accepted", 0) for split in plan.splits}
    # FFCV forks all its workers up front; more than one per 64-image chunk only costs start-up.
    # A .beton is renamed into place only once complete: one in place is done.
    jobs = [(split, max(1, min(options.workers, -(-count // 64)))) for split, count in counts.items()
            if count and not (options.out / layout.ffcv_name(split)).exists()]
    args = (options.out, jobs, options.ffcv, plan.small_images, not options.quiet and sys.stderr.isatty())
    if jobs and sum(counts.values()) >= FRESH_FFCV_PROCESS_MIN_IMAGES:
        _in_fresh_process(write_betons, *args)
    elif jobs:
        write_betons(*args)
    return {split: layout.ffcv_name(split) for split, count in counts.items() if count}
