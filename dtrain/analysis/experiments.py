"""The degradation experiment of R1 (Fig. 1, 6 and section 4.2): plain and residual CIFAR nets of
20, 32, 44 and 56 layers trained with the same recipe; deeper plain nets end with a *higher
training error*, residual nets do not.

Each (net, seed) is trained from scratch by the real trainer into OUT/runs/NET-seedS (the seed
is the config's train.seed). A run directory this invocation did not make is never reused
silently: training refuses it (or deletes and retrains it with overwrite), and tabulating
(train=False) accepts only runs whose marker file records the same settings, marked as not
trained here. Curves and final errors are read from each run's metrics.jsonl; the summary over
seeds, the tables and the figure are in dtrain.analysis.degradation_report.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from dtrain import models
from dtrain.analysis.curves import RunCurves, RunRef, load_curves
from dtrain.analysis.training_runs import ensure_prepared_digits, prepared_summary, run_training, shorten_recipe
from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME

DEPTHS = (20, 32, 44, 56)
SEEDS = (0,)
# "Final training error" = mean of the last TRAIN_WINDOWS logged training-error windows (each the
# mean over tracking.metrics_every_iters iterations): less minibatch noise than the last window
# alone, still the end of training. The report says how many images that is.
TRAIN_WINDOWS = 3
# dataset -> (recipe for a net, default data root). digits: one recipe, model.name overridden;
# cifar10: R1's own per-net recipes.
DATASETS = {
    "digits": (lambda name: "digits_resnet20", "runs/data/digits"),
    "cifar10": (lambda name: f"cifar10_{name}", ""),
}
# Written into every run directory before it trains: which invocation made it, with what settings.
MARKER_NAME = "degradation_run.json"


@dataclass
class DegradationOptions:
    out: Path
    dataset: str = "digits"
    dataset_root: Path | None = None
    depths: tuple[int, ...] = DEPTHS
    seeds: tuple[int, ...] = SEEDS
    budget_iters: int | None = None
    overrides: tuple[str, ...] = ()
    overwrite: bool = False
    train: bool = True  # False: tabulate and plot the runs already in OUT/runs (same settings only)
    train_windows: int = TRAIN_WINDOWS
    record: Path | None = None  # a second folder that gets the tables, the SVG and every run's metrics.jsonl
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)

    def data_root(self) -> str:
        return str(self.dataset_root or DATASETS[self.dataset][1])


@dataclass
class SeedRun:
    """One (net, seed) run and what it ended with."""

    name: str
    kind: str  # "plain" | "resnet"
    depth: int
    seed: int
    params: int
    iterations: int
    final_train_err: float | None
    final_test_err: float | None
    train_samples: int | None  # images the final training error averages over
    test_samples: int | None  # images of the validation split the test error is measured on
    seconds: float | None  # the trainer's training time (RUN_DIR/final_metrics.json)
    trained_here: bool  # trained from scratch by this invocation
    run_dir: str
    curves: RunCurves | None = field(default=None, repr=False)


def net_names(depths: tuple[int, ...]) -> list[tuple[str, str, int]]:
    return [(f"{kind}{depth}", kind, depth) for kind in ("plain", "resnet") for depth in depths]


def run_name(net: str, seed: int) -> str:
    return f"{net}-seed{seed}"


def run_dir_of(opts: DegradationOptions, net: str, seed: int) -> Path:
    return opts.out / "runs" / run_name(net, seed)


def run_settings(opts: DegradationOptions, net: str, seed: int) -> dict:
    """What makes two runs the same experiment (the marker compares these)."""
    return {"dataset": opts.dataset, "dataset_root": opts.data_root(), "net": net, "seed": seed,
            "budget_iters": opts.budget_iters, "overrides": list(opts.overrides)}


def run_degradation(opts: DegradationOptions, echo=print) -> list[SeedRun]:
    """Train (or, with train=False, check) every (net, seed) run, then read each back."""
    planned = [(name, kind, depth, seed) for name, kind, depth in net_names(opts.depths) for seed in opts.seeds]
    if opts.train:
        _refuse_foreign_runs(opts, [run_dir_of(opts, name, seed) for name, _, _, seed in planned])
        base = _prepare_data(opts, echo)
        for name, _, _, seed in planned:
            _train_one(opts, name, seed, base, echo)
    results = []
    for name, kind, depth, seed in planned:
        run_dir = run_dir_of(opts, name, seed)
        marker = _check_marker(opts, run_dir, name, seed)
        results.append(_read_result(opts, run_dir, name, kind, depth, seed,
                                    trained_here=marker.get("invocation") == opts.invocation))
    return results


def _refuse_foreign_runs(opts: DegradationOptions, run_dirs: list[Path]) -> None:
    """Before anything trains: an existing run directory is retrained only when asked to."""
    existing = [d for d in run_dirs if d.exists() and any(d.iterdir())]
    if existing and not opts.overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        shown = ", ".join(str(d) for d in existing[:3]) + more
        raise DtrainError(f"{shown} already exist(s), made outside this invocation; pass --overwrite to delete and "
                          "retrain them from scratch, another --out, or --no-train to tabulate them as they are")


def _train_one(opts: DegradationOptions, name: str, seed: int, base: list[str], echo) -> None:
    recipe = DATASETS[opts.dataset][0](name)
    run_dir = run_dir_of(opts, name, seed)
    echo(f"training {run_name(name, seed)} ({opts.dataset}) -> {run_dir}")
    net = [*base, f"model.name={name}", f"tracking.run_name={run_name(name, seed)}", f"train.seed={seed}"]
    # the recipe's schedule compressed in its own proportions (user overrides still win)
    short = shorten_recipe(recipe, [*net, *opts.overrides], opts.budget_iters).overrides if opts.budget_iters else []
    if run_dir.exists():  # only with --overwrite (_refuse_foreign_runs): from scratch, nothing resumed
        shutil.rmtree(run_dir)
    _write_marker(opts, run_dir, name, seed)
    run_training(recipe, run_dir, [*net, *short, *opts.overrides], echo=echo)


def _write_marker(opts: DegradationOptions, run_dir: Path, name: str, seed: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = {"made_by": "dtrain experiment degradation", "invocation": opts.invocation,
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "settings": run_settings(opts, name, seed)}
    (run_dir / MARKER_NAME).write_text(json.dumps(marker, indent=1))


def _check_marker(opts: DegradationOptions, run_dir: Path, name: str, seed: int) -> dict:
    """The run's marker; a run made with other settings (or by something else) is refused."""
    path = run_dir / MARKER_NAME
    if not (run_dir / JSONL_NAME).is_file():
        raise DtrainError(f"{run_dir} holds no finished run ({JSONL_NAME} missing); train it first "
                          "(drop --no-train)")
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DtrainError(f"{run_dir} was not made by `dtrain experiment degradation` ({MARKER_NAME} missing or "
                          "unreadable); retrain it with --overwrite") from None
    wanted, recorded = run_settings(opts, name, seed), marker.get("settings", {})
    differ = [key for key in wanted if recorded.get(key) != wanted[key]]
    if differ:
        key = differ[0]
        raise DtrainError(f"{run_dir} was trained with {key}={recorded.get(key)!r}, this invocation asks for "
                          f"{wanted[key]!r}; give the same settings, or retrain with --overwrite")
    return marker


def _prepare_data(opts: DegradationOptions, echo) -> list[str]:
    """Check (digits: prepare) the dataset; the overrides that point every run at it."""
    if not opts.data_root():
        raise DtrainError(f"--dataset-root is needed for {opts.dataset}: a directory written by "
                          f"`dtrain prepare {opts.dataset} --out DIR`")
    root = Path(opts.data_root())
    if opts.dataset == "digits":
        ensure_prepared_digits(root, echo)
    elif not (root / "manifest.parquet").is_file():
        raise DtrainError(f"{root} holds no prepared dataset; run `dtrain prepare {opts.dataset} --out {root}` first")
    return [f"data.root={root}", "tracking.experiment=degradation"]


def read_metrics_curves(metrics_file: Path, label: str) -> RunCurves:
    """A run's curves from its metrics.jsonl (the run directory's or a record's copy)."""
    return load_curves(RunRef("", "", metrics_file=metrics_file), label=label)


def _read_result(opts: DegradationOptions, run_dir: Path, name: str, kind: str, depth: int, seed: int,
                 trained_here: bool) -> SeedRun:
    curves = read_metrics_curves(run_dir / JSONL_NAME, label=run_name(name, seed))
    final = _final_metrics(run_dir)
    seconds = final.get("seconds")
    params = models.parameter_count(models.build(name, num_classes=10))
    return SeedRun(name, kind, depth, seed, params, curves.last_step(), curves.final_train_error(opts.train_windows),
                   curves.final_test_error(), train_samples(curves, opts.train_windows, final.get("global_batch")),
                   _val_samples(curves), round(float(seconds), 1) if seconds is not None else None, trained_here,
                   str(run_dir), curves)


def train_samples(curves: RunCurves, windows: int, global_batch: int | None) -> int | None:
    """Images behind the mean of the last `windows` training-error windows: each window logged at
    step s covers the steps since the previous one (the last window of a run may be shorter)."""
    if not curves.train or not global_batch:
        return None
    steps = [0] + [step for step, _ in curves.train]
    return (steps[-1] - steps[max(0, len(steps) - 1 - windows)]) * int(global_batch)


def _val_samples(curves: RunCurves) -> int | None:
    """Images of the validation split (the prepared dataset's summary.json), if it can be read."""
    root, split = curves.params.get("data.root"), curves.params.get("data.val_split", "val")
    accepted = prepared_summary(root).get("splits", {}).get(split, {}).get("accepted") if root else None
    return int(accepted) if accepted else None


def _final_metrics(run_dir: Path) -> dict:
    """RUN_DIR/final_metrics.json: the trainer's own training seconds (not process start-up), the global batch."""
    try:
        final = json.loads((run_dir / "final_metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return final if isinstance(final, dict) else {}
