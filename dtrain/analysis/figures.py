"""The papers' figures drawn with matplotlib (Agg backend: no display needed).

- error curves (R1 Fig. 4/6): thin line = training error, bold line = test error, one colour per run
- degradation (R1 Fig. 6 left/middle): plain nets in one panel, ResNets in the other; each net's
  mean curve over seeds with a min-max band
- layer responses (R1 Fig. 7): std per 3x3 layer in network order (top) and sorted (bottom)
Every figure is written as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, searchable, editable
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from dtrain.analysis.curves import RunCurves  # noqa: E402
from dtrain.analysis.responses import LayerResponse, sorted_descending  # noqa: E402

TRAIN_WIDTH = 0.9
TEST_WIDTH = 2.4
DPI = 110
BAND_ALPHA = 0.18


def colours(n: int) -> list:
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def save_figure(fig, out_stem: Path) -> list[Path]:
    """OUT_STEM.png and OUT_STEM.svg; returns both paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return paths


def draw_error_curves(ax, runs: list[RunCurves], ylim: tuple[float, float] | None = None) -> None:
    for run, colour in zip(runs, colours(len(runs)), strict=True):
        if run.train:
            ax.plot(*zip(*run.train, strict=True), color=colour, linewidth=TRAIN_WIDTH, alpha=0.85)
        if run.test:
            ax.plot(*zip(*run.test, strict=True), color=colour, linewidth=TEST_WIDTH, label=run.label)
        elif run.train:  # still name the run in the legend
            ax.plot([], [], color=colour, linewidth=TEST_WIDTH, label=run.label)
    _error_axes(ax, runs, ylim)


def _error_axes(ax, runs: list[RunCurves], ylim: tuple[float, float] | None, band: bool = False) -> None:
    """Scale, labels and the legend (outside the axes, on the right: curves of any shape stay visible)."""
    ax.set_ylim(ylim or (0.0, min(100.0, _highest(runs) * 1.05)))
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    style: list[Artist] = [Line2D([], [], color="grey", linewidth=TRAIN_WIDTH, label="training error (thin)"),
                           Line2D([], [], color="grey", linewidth=TEST_WIDTH, label="test error (bold)")]
    if band:
        style.append(Patch(color="grey", alpha=BAND_ALPHA, label="min-max over seeds"))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + style, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)


def _highest(runs: list[RunCurves]) -> float:
    return max([v for r in runs for _, v in r.train + r.test] + [1.0])


def error_curves_figure(runs: list[RunCurves], title: str = "", ylim=None):
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    draw_error_curves(ax, runs, ylim)
    if title:
        ax.set_title(title)
    return fig


def seed_band(series: list[list[tuple[int, float]]]) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds, at the steps every seed logged (the runs of one net share
    their schedule, so these are all of them unless a run stopped early)."""
    series = [s for s in series if s]
    if not series:
        return [], np.empty(0), np.empty(0), np.empty(0)
    steps = sorted(set.intersection(*({step for step, _ in s} for s in series)))
    values = np.array([[dict(s)[step] for step in steps] for s in series]).reshape(len(series), len(steps))
    return steps, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def draw_seed_bands(ax, nets: dict[str, list[RunCurves]], ylim: tuple[float, float]) -> None:
    """One colour per net: its mean curve over seeds, with a band from the min to the max."""
    for (name, runs), colour in zip(nets.items(), colours(len(nets)), strict=True):
        for which, width in (("train", TRAIN_WIDTH), ("test", TEST_WIDTH)):
            steps, mean, low, high = seed_band([getattr(run, which) for run in runs])
            if not steps:
                continue
            if len(runs) > 1:
                ax.fill_between(steps, low, high, color=colour, alpha=BAND_ALPHA, linewidth=0)
            label = (name if len(runs) == 1 else f"{name} (mean of {len(runs)})") if which == "test" else None
            # a series of one or two points (a very short run) would be invisible as a bare line
            ax.plot(steps, mean, color=colour, linewidth=width, label=label, marker="o" if len(steps) < 3 else None,
                    markersize=width * 2)
    _error_axes(ax, [run for runs in nets.values() for run in runs], ylim, band=True)


def degradation_figure(plain: dict[str, list[RunCurves]], residual: dict[str, list[RunCurves]], title: str = ""):
    """R1 Fig. 6: plain nets (left) and ResNets (right) on the same error scale; each net's runs
    (one per seed) as their mean curve with a min-max band."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    every_run = [run for nets in (plain, residual) for runs in nets.values() for run in runs]
    ylim = (0.0, min(100.0, _highest(every_run) * 1.05))
    for ax, nets, name in ((axes[0], plain, "plain"), (axes[1], residual, "ResNet")):
        draw_seed_bands(ax, nets, ylim)
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def layer_responses_figure(models: dict[str, list[LayerResponse]], statistic: str, title: str = "",
                           log_scale: bool = False):
    """R1 Fig. 7: top, std per layer in network order; bottom, the same values sorted."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.2))
    for (label, responses), colour in zip(models.items(), colours(len(models)), strict=True):
        layers = [r.index for r in responses]
        top.plot(layers, [r.value(statistic) for r in responses], "-o", markersize=3, color=colour,
                 linewidth=1.2, label=label)
        ordered = sorted_descending(responses, statistic)
        bottom.plot(range(1, len(ordered) + 1), ordered, "-o", markersize=3, color=colour, linewidth=1.2,
                    label=label)
    what = "std over all elements" if statistic == "overall" else "per-channel std, mean over channels"
    top.set_xlabel("layer index (original order)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel(f"std ({what})", fontsize=8)
        if log_scale:  # a diverged plain net can be 100x the others: a log axis keeps all readable
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    top.set_title(title or "Responses of 3x3 layers (after BN, before ReLU/addition)")
    fig.tight_layout()
    return fig
