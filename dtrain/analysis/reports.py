"""The reproduction report: a table row of the papers next to what a run measured (markdown)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from dtrain.analysis.later_recipes import is_later_recipe
from dtrain.analysis.paper_row import PaperRow


@dataclass
class Measured:
    top1_err: float | None
    top5_err: float | None
    params: int
    multiply_adds: int
    input_size: int
    iterations: int
    full_iterations: int | None  # what the recipe runs unshortened (None: epoch-based, unknown here)
    dataset: str  # what `dtrain prepare` recorded in summary.json
    data_root: str
    eval_mode: str
    recipe: str
    overrides: list[str] = field(default_factory=list)
    run_id: str | None = None
    run_dir: str = ""
    seconds: float | None = None
    budget_iters: int | None = None
    # protocol_eval.ProtocolResult: final, best (and final_ema, best_ema) / ensemble
    protocol_results: list = field(default_factory=list)
    protocol_changes: list[str] = field(default_factory=list)  # the user's overrides of the paper's protocol
    model_changes: list[str] = field(default_factory=list)  # the user's overrides that changed the network
    model: str = ""  # model.name the run trained
    schedule_note: str = ""  # what a --budget-iters run's lr did (training_runs.ShortenedSchedule)
    normalize: str = ""  # data.normalize of the run
    normalization: str = ""  # what it subtracted, in words (the mean image's size and geometry)

    def tested(self, which: str = "final"):
        return next((r for r in self.protocol_results if r.which == which), None)

    @property
    def compared(self) -> tuple[float | None, float | None, str]:
        """(top-1, top-5, how measured) compared with the paper: the protocol test of the final
        checkpoint (or ensemble), else the training run's own last validation."""
        for which in ("final", "ensemble"):
            result = self.tested(which)
            if result is not None:
                return result.top1_err, result.top5_err, f"{result.protocol} on the {which} checkpoint" + (
                    "s" if which == "ensemble" else "")
        return self.top1_err, self.top5_err, f"the run's last validation (eval.mode={self.eval_mode})"

    @property
    def shortened(self) -> bool:
        """Cut by --budget-iters, or stopped before the recipe's end (a report on a partial run)."""
        return self.budget_iters is not None or bool(self.full_iterations and self.iterations < self.full_iterations)


_DATASET_ALIASES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
# R1 sec. 3.4 (ImageNet) and 4.2 (CIFAR) subtract "the per-pixel mean"; R2 trains "as [1]".
PAPER_NORMALIZE = "per_pixel_mean"


def dataset_matches(row: PaperRow, measured: Measured) -> bool:
    return _DATASET_ALIASES.get(measured.dataset.lower().replace("-", ""), measured.dataset) == row.dataset


def _num(value: float | None, digits: int = 2, unit: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def _diff(measured: float | None, paper: float | None, digits: int = 2, unit: str = "") -> str:
    if measured is None or paper is None:
        return "—"
    return f"{measured - paper:+.{digits}f}{unit}"


def _ratio(measured: float | None, paper: float | None) -> str:
    if measured is None or paper is None or paper == 0:
        return "—"
    return f"{100 * (measured / paper - 1):+.1f}%"


def _madds(value: float) -> str:
    """As the papers write FLOPs: 1.8e9; small CIFAR nets in e6 (ResNet-20: 40.6e6)."""
    return f"{value / 1e9:.2f}e9" if value >= 1e9 else f"{value / 1e6:.1f}e6"


def _caveats(row: PaperRow, m: Measured) -> list[str]:
    caveats = []
    if m.shortened:
        share = f" ({100 * m.iterations / m.full_iterations:.2f}% of the recipe's {m.full_iterations})" \
            if m.full_iterations else ""
        how = f" (--budget-iters {m.budget_iters})" if m.budget_iters else ""
        caveats.append(f"**SHORTENED RUN**: {m.iterations} iterations{share}{how}; "
                       "the error is not comparable with the paper's, the params and multiply-adds are.")
        if m.schedule_note:
            caveats.append(f"Shortened schedule, {m.schedule_note}.")
    if not dataset_matches(row, m):
        caveats.append(f"**Different dataset**: the paper measured on {row.dataset}, this run used "
                       f"{m.dataset or 'an unknown dataset'} ({m.data_root}).")
    # the later recipes' projects normalise per channel, as their recipes do (later_recipes)
    if m.normalize and m.normalize != PAPER_NORMALIZE and not is_later_recipe(row):
        caveats.append(f"**Normalisation differs**: this run subtracted {m.normalization or m.normalize}; the papers "
                       "subtract the per-pixel mean image (R1 sec. 3.4, 4.2): data.normalize=per_pixel_mean.")
    if m.model_changes:
        caveats.append(f"**Model changed**: the row's network is {row.model}; this run trained "
                       f"{m.model or 'another one'} (`{' '.join(m.model_changes)}`), so its error and params "
                       "are not the row's network's.")
    protocol = row.protocol
    tested = m.compared[2]
    caveats.append(f"Paper's test protocol: **{protocol.name}** ({protocol.description}; {row.source}). "
                   f"Compared here: {tested}.")
    ema = [r for r in m.protocol_results if r.which.endswith("_ema")]
    if ema:
        errors = ", ".join(f"{r.which} {_num(r.top1_err)}%" for r in ema)
        caveats.append(f"**Weight EMA**: the run kept an EMA of its weights; compared above are the live weights, "
                       f"the EMA's top-1 errors are {errors} (table below).")
    if protocol.beyond_paper:
        caveats.append(f"**Beyond the paper**: {protocol.beyond_paper}.")
    if m.protocol_changes:
        caveats.append(f"**Protocol changed**: the {protocol.name} test ran with `{' '.join(m.protocol_changes)}` "
                       "(--eval-set, or --set of its views), so it is not the paper's protocol as is.")
    if not m.protocol_results:
        caveats.append("**Protocol not run**: the error below is the run's own validation, not the paper's protocol.")
    if row.fails:
        caveats.append("The paper reports this row as **fail** (test error above 20%).")
    return caveats


# The paper's statistic over runs -> the key of repeat_statistics that matches it (else the median).
_PAPER_STATISTIC = {"best of 5": "best", "median of 5": "median", "mean of 5": "mean"}


def _headline(row: PaperRow, m: Measured, repeats: list[Measured]) -> tuple[float | None, float | None, str]:
    """(top-1, top-5, label) compared with the paper: one run's, or over --seeds runs the statistic
    the paper reports (R1 Table 6: best; R2 Tables 1-4: median), top-5 of the run closest to it."""
    runs = [(top1, r.compared[1]) for r in repeats if (top1 := r.compared[0]) is not None]
    if not runs:
        return m.compared[0], m.compared[1], ""
    key = _PAPER_STATISTIC.get(row.runs_statistic, "median")
    target = repeat_statistics([top1 for top1, _ in runs])[key]
    _, closest_top5 = min(runs, key=lambda run: abs(run[0] - target))
    return target, closest_top5, f" ({key} of {len(runs)} runs)"


def _error_lines(row: PaperRow, m: Measured, repeats: list[Measured]) -> list[str]:
    top1, top5, label = _headline(row, m, repeats)
    paper1 = "fail (>20)" if row.fails else _num(row.top1_err)
    lines = [f"| top-1 error %{label} | {paper1} | {_num(top1)} | {_diff(top1, row.top1_err)} |"]
    if row.top5_err is not None:
        lines.append(f"| top-5 error % | {_num(row.top5_err)} | {_num(top5)} | {_diff(top5, row.top5_err)} |")
    return lines


def _tested_lines(m: Measured) -> list[str]:
    if not m.protocol_results and m.top1_err is None:
        return []
    lines = ["", "## Errors by checkpoint and test", "", "| checkpoint | test | top-1 % | top-5 % | images |",
             "|---|---|---|---|---|"]
    for r in m.protocol_results:
        lines.append(f"| {r.which} | {r.protocol} | {_num(r.top1_err)} | {_num(r.top5_err)} | {r.samples} |")
    lines.append(f"| final (training loop) | {m.eval_mode} | {_num(m.top1_err)} | {_num(m.top5_err)} | — |")
    return lines


def repeat_statistics(errors: list[float]) -> dict[str, float]:
    """best / median / mean / std (sample) of the runs' errors, as R1 Table 6 and R2 Table 4 give them."""
    return {"best": min(errors), "median": statistics.median(errors), "mean": statistics.fmean(errors),
            "std": statistics.stdev(errors) if len(errors) > 1 else 0.0}


def _repeat_lines(row: PaperRow, repeats: list[Measured]) -> list[str]:
    if not repeats:
        return []
    errors = [r.compared[0] for r in repeats if r.compared[0] is not None]
    if not errors:
        return []
    stats = repeat_statistics(errors)
    paper_stat = _PAPER_STATISTIC.get(row.runs_statistic)
    paper_mean = f"{row.paper_mean:.2f} +- {row.paper_std:.2f}" if row.paper_mean is not None else "—"
    lines = ["", f"## {len(errors)} runs (seeds 0..{len(repeats) - 1}); the paper reports: {row.runs_statistic}", "",
             "| statistic | paper | measured |", "|---|---|---|",
             f"| best | {_num(row.top1_err) if paper_stat == 'best' else '—'} | {_num(stats['best'])} |",
             f"| median | {_num(row.top1_err) if paper_stat == 'median' else '—'} | {_num(stats['median'])} |",
             f"| mean +- std | {paper_mean} | {stats['mean']:.2f} +- {stats['std']:.2f} |",
             "", "per run: " + ", ".join(f"{e:.2f}" for e in errors)]
    return lines


def _protocol_run_lines(m: Measured) -> list[str]:
    """Every override the protocol test ran with (its own, the reported split, the user's)."""
    tested = m.tested("final") or m.tested("ensemble")
    return [f"- protocol test: `{' '.join(tested.overrides)}`"] if tested is not None and tested.overrides else []


def render_report(row: PaperRow, m: Measured, repeats: list[Measured] | None = None) -> str:
    """Markdown comparing the paper's numbers (paper_numbers.ROWS) with the run's; caveats first."""
    title = f"# Reproduction of {row.source}: {row.model} on {row.dataset}"
    params_paper = row.params_m * 1e6 if row.params_m is not None else None
    lines = [title, "", *[f"- {c}" for c in _caveats(row, m)], "",
             "| quantity | paper | measured | difference |", "|---|---|---|---|",
             *_error_lines(row, m, repeats or [])]
    lines.append(f"| params | {_num(row.params_m, 2, 'M')} | {m.params / 1e6:.2f}M "
                 f"| {_ratio(m.params, params_paper)} |")
    paper_madds = _madds(row.multiply_adds) if row.multiply_adds else "—"
    lines.append(f"| multiply-adds ({m.input_size}x{m.input_size}) | {paper_madds} | {_madds(m.multiply_adds)} "
                 f"| {_ratio(m.multiply_adds, row.multiply_adds)} |")
    if row.note:
        lines += ["", f"Paper's note: {row.note}."]
    lines += _tested_lines(m) + _repeat_lines(row, repeats or [])
    lines += ["", "## Run", "",
              f"- row: `{row.key}`; numbers as printed in {row.source}",
              f"- recipe: `{m.recipe}`" + (f" with `{' '.join(m.overrides)}`" if m.overrides else ""),
              *_protocol_run_lines(m),
              f"- data: {m.data_root} ({m.dataset or 'unknown'})",
              *([f"- normalisation: `data.normalize={m.normalize}`: {m.normalization}"] if m.normalize else []),
              f"- iterations: {m.iterations}" + (f" of {m.full_iterations}" if m.full_iterations else ""),
              f"- run dir: {m.run_dir}" + (f", MLflow run `{m.run_id}`" if m.run_id else "")]
    if m.seconds is not None:
        lines.append(f"- training time: {m.seconds:.0f} s")
    return "\n".join(lines) + "\n"
