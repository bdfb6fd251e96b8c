"""The degradation experiment's record: per net the mean and spread over seeds of the final
training and test error (with every seed's value), the verdict against R1 Fig. 6, and the files
OUT/degradation.{md,csv,json,png,svg} plus OUT/curves/RUN.metrics.jsonl (each run's per-iteration
curves, so that the record can be re-plotted without the run directories).
"""

from __future__ import annotations

import csv
import json
import shlex
import shutil
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from dtrain.analysis.experiments import DegradationOptions, SeedRun, read_metrics_curves, run_name
from dtrain.analysis.reports import repeat_statistics
from dtrain.errors import DtrainError
from dtrain.tracking.jsonl import JSONL_NAME

CURVES_DIR = "curves"
# Two mean training errors closer than this (percentage points) count as equal: the final training
# error is a mean over a few small batches, one image of a batch of 32 is already 3 points.
TIE_POINTS = 1.0


@dataclass(frozen=True)
class Spread:
    """One error over seeds: mean, sample standard deviation (n-1; None for one seed), min, max."""

    mean: float
    std: float | None
    min: float
    max: float
    per_seed: dict[int, float]

    @classmethod
    def of(cls, per_seed: dict[int, float]) -> Spread | None:
        if not per_seed:
            return None
        values = list(per_seed.values())
        stats = repeat_statistics(values)
        return cls(stats["mean"], stats["std"] if len(values) > 1 else None, min(values), max(values), per_seed)

    def overlaps(self, other: Spread) -> bool:
        return self.min <= other.max and other.min <= self.max

    def text(self) -> str:
        if len(self.per_seed) == 1:
            return f"{self.mean:.2f} (1 seed)"
        return f"{self.mean:.2f} ({self.min:.2f}-{self.max:.2f}, sd {self.std:.2f})"


@dataclass
class NetSummary:
    name: str
    kind: str
    depth: int
    params: int
    runs: list[SeedRun]
    train: Spread | None
    test: Spread | None


def summarise(runs: list[SeedRun]) -> list[NetSummary]:
    """One summary per net (in run order), over the seeds it was trained with."""
    nets: dict[str, list[SeedRun]] = {}
    for run in runs:
        nets.setdefault(run.name, []).append(run)
    return [NetSummary(name, group[0].kind, group[0].depth, group[0].params, group,
                       Spread.of({r.seed: r.final_train_err for r in group if r.final_train_err is not None}),
                       Spread.of({r.seed: r.final_test_err for r in group if r.final_test_err is not None}))
            for name, group in nets.items()]


def direction_verdict(nets: list[NetSummary]) -> dict[str, str]:
    """Does the mean over seeds show the paper's direction? plain: training error rises with depth;
    resnet: the deepest net's is not above the shallowest's (within TIE_POINTS). Adjacent depths whose
    ranges over seeds overlap are named: their order is not resolved by these seeds."""
    verdict = {}
    for kind in ("plain", "resnet"):
        measured = sorted((n.depth, n.train) for n in nets if n.kind == kind and n.train is not None)
        if len(measured) < 2:
            verdict[kind] = "not enough nets to compare"
            continue
        means = [spread.mean for _, spread in measured]
        series = ", ".join(f"{depth}: {spread.text()}" for depth, spread in measured)
        if kind == "plain":
            shows = "yes: the mean training error rises with depth" if all(b > a for a, b in pairwise(means)) else (
                "partly: the deepest net's mean is above the shallowest's" if means[-1] > means[0] else "no")
        else:
            shows = "yes: the deepest ResNet's mean training error is not above the shallowest's" \
                if means[-1] <= means[0] + TIE_POINTS else "no: the deepest ResNet has a higher mean training error"
        verdict[kind] = f"{shows} ({series}){_overlap_note(measured)}"
    return verdict


def _overlap_note(measured: list[tuple[int, Spread]]) -> str:
    seeds = min(len(spread.per_seed) for _, spread in measured)
    if seeds < 2:
        return "; one seed per net: no spread measured, so no step in depth is tested against seed noise"
    overlapping = [f"{a}-{b}" for (a, sa), (b, sb) in pairwise(measured) if sa.overlaps(sb)]
    if not overlapping:
        return f"; no adjacent depths' ranges (min-max over {seeds} seeds) overlap"
    return (f"; the ranges (min-max over {seeds} seeds) overlap between depths {', '.join(overlapping)}: "
            "those steps are not resolved by these seeds")


def command_line(opts: DegradationOptions) -> str:
    """The command that reruns this experiment (every option spelled out)."""
    parts = ["dtrain", "experiment", "degradation", "--dataset", opts.dataset]
    if opts.dataset_root:
        parts += ["--dataset-root", str(opts.dataset_root)]
    parts += ["--depths", ",".join(map(str, opts.depths)), "--seeds", ",".join(map(str, opts.seeds))]
    if opts.budget_iters:
        parts += ["--budget-iters", str(opts.budget_iters)]
    parts += ["--train-windows", str(opts.train_windows), "--out", str(opts.out)]
    if opts.record:
        parts += ["--record", str(opts.record)]
    parts += ["--overwrite"] * opts.overwrite + ["--no-train"] * (not opts.train) + list(opts.overrides)
    return shlex.join(parts)


def _samples(values: set[int | None]) -> str:
    known = sorted(v for v in values if v is not None)
    return "/".join(map(str, known)) if known else "n/a"


def _val_images(values: set[int | None]) -> str:
    known = _samples(values)
    return "validation split (its size unknown: no summary.json in the data root)" if known == "n/a" \
        else f"{known} validation images"


def markdown_table(runs: list[SeedRun], opts: DegradationOptions) -> str:
    nets = summarise(runs)
    iterations = sorted({r.iterations for r in runs})
    budget = f"{opts.budget_iters} iterations (shortened: the recipe's lr drops at the same fractions of the run)" \
        if opts.budget_iters else f"{', '.join(map(str, iterations))} iterations"
    fresh = sum(r.trained_here for r in runs)
    lines = [f"# Degradation experiment (R1 Fig. 6) on {opts.dataset}", "",
             f"Command: `{command_line(opts)}`", "",
             f"Seeds: {', '.join(map(str, opts.seeds))} (train.seed; one run per net and seed, "
             f"{fresh} of {len(runs)} runs trained from scratch by this invocation). Schedule: {budget}."
             + (f" Overrides: `{' '.join(opts.overrides)}`." if opts.overrides else ""), "",
             f"Final training error = mean of the last {opts.train_windows} logged training-error windows "
             f"(training mode, with augmentation, as the paper's curves): {_samples({r.train_samples for r in runs})} "
             f"training images per run. Final test error = the last evaluation on the "
             f"{_val_images({r.test_samples for r in runs})}. Spread over seeds: "
             "min-max and the sample standard deviation (sd, n-1).", "",
             "| net | depth | params | iterations | seeds | final training error % | final test error % |",
             "|---|---|---|---|---|---|---|"]
    for n in nets:
        lines.append(f"| {n.name} | {n.depth} | {n.params / 1e6:.2f}M | {_samples({r.iterations for r in n.runs})} "
                     f"| {len(n.runs)} | {_spread(n.train)} | {_spread(n.test)} |")
    verdict = direction_verdict(nets)
    lines += ["", "Paper's expectation: deeper plain nets have a higher training error; residual nets do not.", "",
              f"- plain nets, deeper = higher training error? {verdict['plain']}",
              f"- ResNets, deeper = no higher training error? {verdict['resnet']}", "",
              "## Every run", "",
              "| run | seed | final training error % | training images | final test error % | test images "
              "| training s | trained in this invocation |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {run_name(r.name, r.seed)} | {r.seed} | {_fmt(r.final_train_err)} | {_fmt(r.train_samples)} "
                     f"| {_fmt(r.final_test_err)} | {_fmt(r.test_samples)} | {_fmt(r.seconds, 0)} "
                     f"| {'yes' if r.trained_here else 'no (an earlier invocation, same settings)'} |")
    return "\n".join(lines) + "\n"


def _spread_json(spread: Spread | None) -> dict | None:
    if spread is None:
        return None
    return {"mean": spread.mean, "std": spread.std, "min": spread.min, "max": spread.max,
            "per_seed": {str(seed): value for seed, value in spread.per_seed.items()}}


def _run_json(r: SeedRun) -> dict:
    return {"seed": r.seed, "final_train_err": r.final_train_err, "final_test_err": r.final_test_err,
            "train_samples": r.train_samples, "test_samples": r.test_samples, "iterations": r.iterations,
            "seconds": r.seconds, "trained_here": r.trained_here, "run_dir": r.run_dir,
            "metrics_file": f"{CURVES_DIR}/{run_name(r.name, r.seed)}.{JSONL_NAME}"}


def summary_json(runs: list[SeedRun], opts: DegradationOptions) -> dict:
    nets = summarise(runs)
    return {"command": command_line(opts), "dataset": opts.dataset, "seeds": list(opts.seeds),
            "budget_iters": opts.budget_iters, "overrides": list(opts.overrides), "train_windows": opts.train_windows,
            "std": "sample standard deviation over seeds (n-1); null for one seed",
            "verdict": direction_verdict(nets),
            "nets": [{"name": n.name, "kind": n.kind, "depth": n.depth, "params": n.params,
                      "train_err": _spread_json(n.train), "test_err": _spread_json(n.test),
                      "runs": [_run_json(r) for r in n.runs]} for n in nets]}


CSV_FIELDS = ["name", "kind", "depth", "params", "seeds", "train_err_mean", "train_err_std", "train_err_min",
              "train_err_max", "test_err_mean", "test_err_std", "test_err_min", "test_err_max",
              "train_err_per_seed", "test_err_per_seed", "train_samples_per_seed", "seconds_per_seed",
              "trained_here_per_seed"]


def _csv_row(net: dict) -> dict:
    row = {key: net[key] for key in ("name", "kind", "depth", "params")}
    row["seeds"] = ";".join(str(r["seed"]) for r in net["runs"])
    for which in ("train_err", "test_err"):
        spread = net[which] or {}
        row.update({f"{which}_{stat}": spread.get(stat) for stat in ("mean", "std", "min", "max")})
    for column, key in (("train_err_per_seed", "final_train_err"), ("test_err_per_seed", "final_test_err"),
                        ("train_samples_per_seed", "train_samples"), ("seconds_per_seed", "seconds"),
                        ("trained_here_per_seed", "trained_here")):
        row[column] = ";".join(f"{r['seed']}:{r[key]}" for r in net["runs"])
    return row


def write_outputs(runs: list[SeedRun], opts: DegradationOptions) -> list[Path]:
    """The record in OUT (and in opts.record): tables, figure, and a copy of every run's metrics.jsonl."""
    written = _write_record(runs, opts, opts.out, png=True)
    if opts.record and opts.record.resolve() != opts.out.resolve():
        written += _write_record(runs, opts, opts.record, png=False)
    return written


def _write_record(runs: list[SeedRun], opts: DegradationOptions, folder: Path, png: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CURVES_DIR).mkdir(exist_ok=True)
    summary = summary_json(runs, opts)
    for r in runs:
        shutil.copyfile(Path(r.run_dir) / JSONL_NAME, folder / CURVES_DIR / f"{run_name(r.name, r.seed)}.{JSONL_NAME}")
    md = folder / "degradation.md"
    md.write_text(markdown_table(runs, opts))
    json_path = folder / "degradation.json"
    json_path.write_text(json.dumps(summary, indent=1))
    csv_path = folder / "degradation.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(net) for net in summary["nets"])
    figures = plot_record(folder, png=png)
    return [md, csv_path, json_path, *figures, folder / CURVES_DIR]


def plot_record(folder: Path, png: bool = True) -> list[Path]:
    """FOLDER/degradation.svg (and .png) from FOLDER/degradation.json and the curves it lists: a
    record re-plots without the run directories."""
    from dtrain.analysis.figures import degradation_figure, save_figure  # imports matplotlib (optional)

    summary = json.loads((folder / "degradation.json").read_text())
    missing = [r["metrics_file"] for net in summary["nets"] for r in net["runs"]
               if not (folder / r["metrics_file"]).is_file()]
    if missing:
        raise DtrainError(f"{folder} lacks {len(missing)} run curve(s) its degradation.json lists, e.g. "
                          f"{missing[0]}; copy them back or rerun the experiment with --record {folder}")
    by_kind: dict[str, dict[str, list]] = {"plain": {}, "resnet": {}}
    for net in summary["nets"]:
        by_kind[net["kind"]][net["name"]] = [read_metrics_curves(folder / r["metrics_file"],
                                                                 label=run_name(net["name"], r["seed"]))
                                             for r in net["runs"]]
    seeds = len(summary["seeds"])
    band = f", mean of {seeds} seeds, band = min-max" if seeds > 1 else ", 1 seed"
    fig = degradation_figure(by_kind["plain"], by_kind["resnet"],
                             title=f"{summary['dataset']}: plain (left) vs ResNet (right){band}")
    paths = save_figure(fig, folder / "degradation")
    if not png:
        paths[0].unlink()
        return paths[1:]
    return paths


def _spread(spread: Spread | None) -> str:
    return "n/a" if spread is None else spread.text()


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"

