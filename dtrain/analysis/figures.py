"""The papers' figures drawn with matplotlib (Agg backend: no display needed).

- error curves (R1 Fig. 4/6): thin line = training error, bold line = test error, one colour per run
- degradation (R1 Fig. 6 left/middle): plain nets in one panel, ResNets in the other
- layer responses (R1 Fig. 7): std per 3x3 layer in network order (top) and sorted (bottom)
Every figure is written as PNG and SVG.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: smaller, searchable, editable
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.lines import Line2D  # noqa: E402

from dtrain.analysis.curves import RunCurves  # noqa: E402
from dtrain.analysis.responses import LayerResponse, sorted_descending  # noqa: E402

TRAIN_WIDTH = 0.9
TEST_WIDTH = 2.4
DPI = 110


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
    highest = max([v for r in runs for _, v in r.train + r.test] + [1.0])
    ax.set_ylim(ylim or (0.0, min(100.0, highest * 1.05)))
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(True, alpha=0.3)
    style = [Line2D([], [], color="grey", linewidth=TRAIN_WIDTH, label="training error (thin)"),
             Line2D([], [], color="grey", linewidth=TEST_WIDTH, label="test error (bold)")]
    handles, _ = ax.get_legend_handles_labels()
    # Outside the axes, on the right: curves of any shape stay visible.
    ax.legend(handles=handles + style, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)


def error_curves_figure(runs: list[RunCurves], title: str = "", ylim=None):
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    draw_error_curves(ax, runs, ylim)
    if title:
        ax.set_title(title)
    return fig


def degradation_figure(plain: list[RunCurves], residual: list[RunCurves], title: str = ""):
    """R1 Fig. 6: plain nets (left) and ResNets (right) on the same error scale."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    highest = max([v for r in plain + residual for _, v in r.train + r.test] + [1.0])
    ylim = (0.0, min(100.0, highest * 1.05))
    for ax, runs, name in ((axes[0], plain, "plain"), (axes[1], residual, "ResNet")):
        draw_error_curves(ax, runs, ylim)
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
