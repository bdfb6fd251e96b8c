"""The reproduction report: a table row of the papers next to what a run measured (markdown)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dtrain.analysis.paper_numbers import PaperRow


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

    @property
    def shortened(self) -> bool:
        """Cut by --budget-iters, or stopped before the recipe's end (a report on a partial run)."""
        return self.budget_iters is not None or bool(self.full_iterations and self.iterations < self.full_iterations)


_DATASET_ALIASES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


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


def render_report(row: PaperRow, m: Measured) -> str:
    """Markdown comparing the paper's numbers (SPEC.md) with the run's; caveats first."""
    title = f"# Reproduction of {row.source}: {row.model} on {row.dataset}"
    caveats = []
    if m.shortened:
        share = f" ({100 * m.iterations / m.full_iterations:.2f}% of the recipe's {m.full_iterations})" \
            if m.full_iterations else ""
        how = f" (--budget-iters {m.budget_iters})" if m.budget_iters else ""
        caveats.append(f"**SHORTENED RUN**: {m.iterations} iterations{share}{how}; "
                       "the error is not comparable with the paper's, the params and multiply-adds are.")
    if not dataset_matches(row, m):
        caveats.append(f"**Different dataset**: the paper measured on {row.dataset}, this run used "
                       f"{m.dataset or 'an unknown dataset'} ({m.data_root}).")
    caveats.append(f"Paper's test protocol: {row.protocol}. This run evaluated with eval.mode={m.eval_mode}.")
    params_paper = row.params_m * 1e6 if row.params_m is not None else None
    lines = [title, "", *[f"- {c}" for c in caveats], "",
             "| quantity | paper | measured | difference |", "|---|---|---|---|",
             f"| top-1 error % | {_num(row.top1_err)} | {_num(m.top1_err)} | {_diff(m.top1_err, row.top1_err)} |"]
    if row.top5_err is not None:
        lines.append(f"| top-5 error % | {_num(row.top5_err)} | {_num(m.top5_err)} | {_diff(m.top5_err, row.top5_err)} |")
    lines.append(f"| params | {_num(row.params_m, 2, 'M')} | {m.params / 1e6:.2f}M | {_ratio(m.params, params_paper)} |")
    paper_madds = _madds(row.multiply_adds) if row.multiply_adds else "—"
    lines.append(f"| multiply-adds ({m.input_size}x{m.input_size}) | {paper_madds} | {_madds(m.multiply_adds)} "
                 f"| {_ratio(m.multiply_adds, row.multiply_adds)} |")
    if row.note:
        lines += ["", f"Paper's note: {row.note}."]
    lines += ["", "## Run", "",
              f"- row: `{row.key}` ({row.source}); numbers from SPEC.md",
              f"- recipe: `{m.recipe}`" + (f" with `{' '.join(m.overrides)}`" if m.overrides else ""),
              f"- data: {m.data_root} ({m.dataset or 'unknown'})",
              f"- iterations: {m.iterations}" + (f" of {m.full_iterations}" if m.full_iterations else ""),
              f"- run dir: {m.run_dir}" + (f", MLflow run `{m.run_id}`" if m.run_id else "")]
    if m.seconds is not None:
        lines.append(f"- training time: {m.seconds:.0f} s")
    return "\n".join(lines) + "\n"
