"""`dtrain analyze ...`: the papers' analyses of trained models (R1 Fig. 7 layer responses)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import torch

from dtrain.analysis.model_source import from_checkpoint, from_registry
from dtrain.analysis.responses import STATISTICS, LayerResponse, layer_responses, to_records
from dtrain.builders import build_val_loader
from dtrain.config import RunConfig
from dtrain.distributed.context import DistContext
from dtrain.resolve import check_data_root

DEFAULT_RECIPE = "digits_resnet20"


@click.group("analyze")
def analyze() -> None:
    """Analyses from the papers, run on your own checkpoints and data."""


@analyze.command("layer-responses")
@click.argument("checkpoints", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "model_names", multiple=True,
              help="Also measure this registry model with fresh He-initialised weights (repeatable).")
@click.option("--recipe", default=DEFAULT_RECIPE, show_default=True,
              help="Recipe giving num_classes and the data section for --model nets.")
@click.option("--data-root", default=None, help="Prepared dataset to measure on (default: the checkpoint's data.root).")
@click.option("--split", default=None, help="Split to measure on (default: the config's val split).")
@click.option("--statistic", type=click.Choice(STATISTICS), default="overall", show_default=True,
              help="overall: std of all elements of a response; channel: per-channel std averaged over channels.")
@click.option("--batch-size", type=int, default=250, show_default=True)
@click.option("--max-batches", type=int, default=None, help="Stop after this many batches (a quick look).")
@click.option("--label", "labels", multiple=True,
              help="Legend label per model, checkpoints first, then --model nets.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("layer_responses"), show_default=True,
              help="Output path without suffix: OUT.png, OUT.svg and OUT.json.")
@click.option("--title", default="", help="Figure title.")
@click.option("--log-scale", is_flag=True, help="Logarithmic std axis (when one model dwarfs the others).")
def layer_responses_command(checkpoints: tuple[Path, ...], model_names: tuple[str, ...], recipe: str,
                            data_root: str | None, split: str | None, statistic: str, batch_size: int,
                            max_batches: int | None, labels: tuple[str, ...], out: Path, title: str,
                            log_scale: bool) -> None:
    """Std of each 3x3 layer's response (after BN, before ReLU/addition), R1 Fig. 7.

    CHECKPOINT is a .pt written by `dtrain train` or a run directory (its best or newest
    checkpoint). Each model is measured over the whole validation set in eval mode; the figure
    shows the values per layer in network order (top) and sorted by magnitude (bottom).
    """
    from dtrain.analysis.figures import layer_responses_figure, save_figure  # matplotlib: an optional extra

    count = len(checkpoints) + len(model_names)
    if count == 0:
        raise click.UsageError("give at least one CHECKPOINT or --model NAME")
    if labels and len(labels) != count:
        raise click.UsageError(f"--label given {len(labels)} times for {count} models; give one per model or none")
    label_of = list(labels) if labels else [None] * count
    loaded = [from_checkpoint(path, label_of[i]) for i, path in enumerate(checkpoints)]
    loaded += [from_registry(name, recipe, label=label_of[len(checkpoints) + i]) for i, name in enumerate(model_names)]

    # Fresh --model nets have no data of their own: measure them on the checkpoints' data.
    shared_root = data_root or (loaded[0].config.data.root if checkpoints else None)
    results: dict[str, list[LayerResponse]] = {}
    records: dict[str, dict[str, Any]] = {}
    for item in loaded:
        own_data = item.source != "He init"
        config = _centre_eval_config(item.config, data_root if own_data else shared_root, split)
        data = config.data
        batches = _eval_batches(config, batch_size, max_batches)
        responses = layer_responses(item.model, batches, device=torch.device("cpu"))
        label = _unique(item.label, results)
        results[label] = responses
        records[label] = {"source": item.source, "model": item.config.model.name, "data_root": data.root,
                          "split": data.val_split, "statistic": statistic, "layers": to_records(responses)}
        mean = sum(r.value(statistic) for r in responses) / len(responses)
        click.echo(f"{label}: {len(responses)} 3x3 layers, mean std {mean:.4f} over {responses[0].samples} "
                   f"{data.val_split} images")
    fig = layer_responses_figure(results, statistic, title, log_scale=log_scale)
    paths = save_figure(fig, out)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(records, indent=1))
    for path in [*paths, json_path]:
        click.echo(f"wrote {path}")


def _centre_eval_config(config: RunConfig, data_root: str | None, split: str | None) -> RunConfig:
    """`config` evaluating the centre view of `split` under `data_root` (default: its own)."""
    data = replace(config.data, root=data_root or config.data.root, val_split=split or config.data.val_split)
    config = replace(config, data=data, eval=replace(config.eval, mode="center"))
    check_data_root(config)
    return config


def _eval_batches(config: RunConfig, batch_size: int, max_batches: int | None):
    """(images, valid) of the centre view of every validation image (the papers' test view), on the CPU."""
    loader = build_val_loader(config, DistContext(), global_batch=batch_size)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            return
        yield batch.views[0], batch.valid


def _unique(label: str, taken: dict) -> str:
    candidate, n = label, 2
    while candidate in taken:
        candidate, n = f"{label} #{n}", n + 1
    return candidate
