"""The degradation experiment of R1 (Fig. 1, 6 and section 4.2): plain and residual CIFAR nets of
20, 32, 44 and 56 layers trained with the same recipe; deeper plain nets end with a *higher
training error*, residual nets do not.

Each net is trained by the real trainer into OUT/runs/NAME; curves and final errors are read
back from each run's MLflow store, tabulated (markdown, CSV, JSON) and drawn like R1 Fig. 6.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path

from dtrain import models
from dtrain.analysis.curves import RunCurves, load_curves, resolve_run
from dtrain.analysis.training_runs import ensure_prepared_digits, run_training, shorten_recipe
from dtrain.errors import DtrainError

DEPTHS = (20, 32, 44, 56)
# dataset -> (recipe for a net, default data root). digits: one recipe, model.name overridden;
# cifar10: R1's own per-net recipes.
DATASETS = {
    "digits": (lambda name: "digits_resnet20", "runs/data/digits"),
    "cifar10": (lambda name: f"cifar10_{name}", ""),
}


@dataclass
class DegradationOptions:
    out: Path
    dataset: str = "digits"
    dataset_root: Path | None = None
    depths: tuple[int, ...] = DEPTHS
    budget_iters: int | None = None
    overrides: tuple[str, ...] = ()
    overwrite: bool = False
    train: bool = True  # False: tabulate and plot the runs already in OUT/runs


@dataclass
class NetResult:
    name: str
    kind: str  # "plain" | "resnet"
    depth: int
    params: int
    iterations: int
    final_train_err: float | None
    final_test_err: float | None
    seconds: float | None
    run_dir: str
    curves: RunCurves | None = field(default=None, repr=False)

    def row(self) -> dict:
        out = asdict(self)
        out.pop("curves")
        return out


def net_names(depths: tuple[int, ...]) -> list[tuple[str, str, int]]:
    return [(f"{kind}{depth}", kind, depth) for kind in ("plain", "resnet") for depth in depths]


def run_degradation(opts: DegradationOptions, echo=print) -> list[NetResult]:
    recipe_of, default_root = DATASETS[opts.dataset]
    base = _prepare_data(opts, default_root, echo) if opts.train else []
    results = []
    for name, kind, depth in net_names(opts.depths):
        run_dir = opts.out / "runs" / name
        if opts.train:
            echo(f"training {name} ({opts.dataset}) -> {run_dir}")
            net = [*base, f"model.name={name}", f"tracking.run_name={name}"]
            # the recipe's schedule compressed in its own proportions (user overrides still win)
            short = shorten_recipe(recipe_of(name), [*net, *opts.overrides], opts.budget_iters).overrides \
                if opts.budget_iters else []
            run_training(recipe_of(name), run_dir, [*net, *short, *opts.overrides], overwrite=opts.overwrite,
                         echo=echo)
        curves = load_curves(resolve_run(str(run_dir)), label=name)
        params = models.parameter_count(models.build(name, num_classes=10))
        results.append(NetResult(name, kind, depth, params, curves.last_step(), curves.final_train_error(),
                                 curves.final_test_error(), _training_seconds(run_dir), str(run_dir), curves))
    return results


def _prepare_data(opts: DegradationOptions, default_root: str, echo) -> list[str]:
    """Check (digits: prepare) the dataset; the overrides that point every run at it."""
    if not (opts.dataset_root or default_root):
        raise DtrainError(f"--dataset-root is needed for {opts.dataset}: a directory written by "
                          f"`dtrain prepare {opts.dataset} --out DIR`")
    root = Path(opts.dataset_root or default_root)
    if opts.dataset == "digits":
        ensure_prepared_digits(root, echo)
    elif not (root / "manifest.parquet").is_file():
        raise DtrainError(f"{root} holds no prepared dataset; run `dtrain prepare {opts.dataset} --out {root}` first")
    return [f"data.root={root}", "tracking.experiment=degradation"]


def _training_seconds(run_dir: Path) -> float | None:
    """The trainer's own measure (RUN_DIR/final_metrics.json): training, not process start-up."""
    try:
        return round(float(json.loads((run_dir / "final_metrics.json").read_text())["seconds"]), 1)
    except (OSError, ValueError, KeyError, TypeError):
        return None


# Two training errors closer than this (percentage points) count as equal: the final training
# error is a mean over a few small batches, one image of a batch of 32 is already 3 points.
TIE_POINTS = 1.0


def direction_verdict(results: list[NetResult]) -> dict[str, str]:
    """Does the run show the paper's direction? plain: training error rises with depth;
    resnet: the deepest net's training error is not above the shallowest's (within TIE_POINTS)."""
    verdict = {}
    for kind in ("plain", "resnet"):
        measured = sorted((r.depth, r.final_train_err) for r in results
                          if r.kind == kind and r.final_train_err is not None)
        if len(measured) < 2:
            verdict[kind] = "not enough nets to compare"
            continue
        errors = [error for _, error in measured]
        series = ", ".join(f"{depth}: {error:.2f}%" for depth, error in measured)
        rising = all(b > a for a, b in pairwise(errors))
        if kind == "plain":
            shows = "yes: training error rises with depth" if rising else (
                "partly: deepest above shallowest" if errors[-1] > errors[0] else "no")
        else:
            shows = "yes: the deepest ResNet trains at least as well as the shallowest" \
                if errors[-1] <= errors[0] + TIE_POINTS else "no: the deepest ResNet has a higher training error"
        verdict[kind] = f"{shows} ({series})"
    return verdict


def markdown_table(results: list[NetResult], opts: DegradationOptions) -> str:
    iterations = sorted({r.iterations for r in results})
    budget = f"{opts.budget_iters} iterations (shortened: the recipe's lr drops at the same fractions of the run)" \
        if opts.budget_iters \
        else f"{', '.join(map(str, iterations))} iterations"
    lines = [f"# Degradation experiment (R1 Fig. 6) on {opts.dataset}", "",
             f"Schedule: {budget}. Final training error = mean of the last 3 logged training-error "
             "windows (training mode, with augmentation, as the paper's curves); test error = the last "
             "validation evaluation." + (f" Overrides: `{' '.join(opts.overrides)}`." if opts.overrides else ""), "",
             "| net | depth | params | iterations | final training error % | final test error % | training s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.depth} | {r.params / 1e6:.2f}M | {r.iterations} | {_fmt(r.final_train_err)} "
                     f"| {_fmt(r.final_test_err)} | {_fmt(r.seconds, 0)} |")
    verdict = direction_verdict(results)
    lines += ["", "Paper's expectation: deeper plain nets have a higher training error; residual nets do not.", "",
              f"- plain nets, deeper = higher training error? {verdict['plain']}",
              f"- ResNets, deeper = no higher training error? {verdict['resnet']}", ""]
    return "\n".join(lines)


def write_outputs(results: list[NetResult], opts: DegradationOptions) -> list[Path]:
    from dtrain.analysis.figures import degradation_figure, save_figure  # imports matplotlib (optional)

    opts.out.mkdir(parents=True, exist_ok=True)
    md = opts.out / "degradation.md"
    md.write_text(markdown_table(results, opts))
    rows = [r.row() for r in results]
    csv_path = opts.out / "degradation.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    json_path = opts.out / "degradation.json"
    json_path.write_text(json.dumps({"dataset": opts.dataset, "budget_iters": opts.budget_iters,
                                     "verdict": direction_verdict(results), "nets": rows}, indent=1))
    plain = [r.curves for r in results if r.kind == "plain" and r.curves]
    residual = [r.curves for r in results if r.kind == "resnet" and r.curves]
    fig = degradation_figure(plain, residual, title=f"{opts.dataset}: plain (left) vs ResNet (right)")
    return [md, csv_path, json_path, *save_figure(fig, opts.out / "degradation")]


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
