"""`dtrain eval CHECKPOINT --mode center|ten-crop|multi-scale|single-320 [--weights ema]`: errors of a
checkpoint (of its weight EMA with --weights ema).

The model and data settings come from the config saved inside the checkpoint; --data-root and
key=value overrides change them (e.g. data.val_resize=320). Works alone or under torchrun
(the validation split is sharded over the processes; padding is not counted).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dtrain.builders import build_val_loader, load_for_inference
from dtrain.commands.overrides import all_overrides, complete_override, set_option
from dtrain.data.eval_views import EVAL_VIEWS
from dtrain.distributed.context import env_rank, init_distributed, teardown
from dtrain.engine.evaluate import evaluate as evaluate_model
from dtrain.resolve import Placement, check_data_root, place


def evaluate_checkpoint(checkpoint: Path, mode: str, overrides: list[str], batch_size: int | None = None,
                        weights: str = "model"):
    """(config, EvalResult, DistContext) of one checkpoint; a collective under torchrun."""
    loaded = load_for_inference(checkpoint, [f"eval.mode={mode}", *overrides], weights_of=weights)
    check_data_root(loaded.config)
    ctx = init_distributed(loaded.config.distributed, loaded.config.train.device)
    cfg = place(loaded.config, Placement(ctx.device.type))  # data.loader=auto: gpu on CUDA
    model = loaded.model.to(ctx.device)
    loader = build_val_loader(cfg, ctx, global_batch=batch_size)  # float32 NCHW: the model runs in fp32
    return cfg, evaluate_model(model, loader, ctx), ctx


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(list(EVAL_VIEWS)), default="center", show_default=True,
              help="center 224 crop; R1 ten-crop; R1 fully-convolutional multi-scale; R2 single 320 crop.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Prepared dataset (default: the data.root saved in the checkpoint).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global eval batch.")
@click.option("--weights", type=click.Choice(["model", "ema"]), default="model", show_default=True,
              help="The trained weights, or their exponential moving average (runs with ema.enabled=true).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED, shell_complete=complete_override)
@set_option
def evaluate(checkpoint: Path, mode: str, data_root: Path | None, batch_size: int | None, weights: str,
             as_json: bool, overrides: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Top-1/top-5 error of CHECKPOINT on the validation split (key=value overrides allowed)."""
    extra = all_overrides(overrides, sets) + ([f"data.root={data_root}"] if data_root else [])
    cfg, result, ctx = evaluate_checkpoint(checkpoint, mode, extra, batch_size, weights)
    if env_rank() == 0:
        if as_json:
            print(json.dumps({"checkpoint": str(checkpoint), "mode": mode, "model": cfg.model.name,
                              "weights": weights, "top1_err": result.top1_err, "top5_err": result.top5_err,
                              "samples": result.samples}))
        else:
            label = f", {mode}" + (", EMA weights" if weights == "ema" else "")
            print(f"{checkpoint} ({cfg.model.name}{label}): top-1 error {result.top1_err:.2f}%, "
                  f"top-5 error {result.top5_err:.2f}% on {result.samples} images")
    teardown(ctx)
    sys.stdout.flush()
