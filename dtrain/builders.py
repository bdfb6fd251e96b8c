"""The composition root: a resolved config in, the parts of a run out.

    build_model(cfg.model)                    the network (He-initialised)
    build_loaders(cfg, ctx, per_process)      train and eval loaders of this rank
    build_val_loader(cfg, ctx)                the validation loader alone (eval, analyses)
    build_engine(cfg, ctx, model)             the distribution engine (DDP or DeepSpeed)
    start_tracker(cfg, ctx, ...)              the experiment tracker, config and tags logged
    build_trainer(cfg, ctx, per_process)      all of the above, as the loop that trains them
    load_for_inference(path, overrides)       model + config of a checkpoint (eval, analyses, bench)

`dtrain train`, `dtrain eval`, the analyses and the benchmarks all build through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtrain import models
from dtrain.checkpoint import read_checkpoint
from dtrain.checkpoint.rng import derived_seed
from dtrain.config import ModelConfig, RunConfig, dump_yaml, to_dict
from dtrain.data import build_eval_loader, build_train_loader
from dtrain.data.eval_views import FLIPPED_MODES
from dtrain.data.flip_tta import FlipViews
from dtrain.data.gpu_defaults import BatchFormat, batch_format
from dtrain.distributed.context import DistContext
from dtrain.engine.ema import EMA_PART
from dtrain.engine.engine import engine_class
from dtrain.engine.loop import Trainer
from dtrain.engine.state import run_checkpoints
from dtrain.errors import DtrainError
from dtrain.resolve import saved_config
from dtrain.smoke import limit_eval
from dtrain.tracking import build_tracker, default_run_name, record_run_start

# Where a checkpoint may hold the weights and the resolved config: the trainer writes the first of
# each; the others accept plain `torch.save({"state_dict": ...})` files.
MODEL_KEYS = ("model", "state_dict", "model_state")
CONFIG_KEYS = ("config", "cfg", "run_config")
# What a model outside the run's autocast is fed (`dtrain eval`, the analyses).
FLOAT32_NCHW = BatchFormat()


def build_model(model: ModelConfig) -> nn.Module:
    """The network a config's model section names (He-initialised)."""
    return models.build(model.name, num_classes=model.num_classes, **model.options)


def build_loaders(cfg: RunConfig, ctx: DistContext, per_process_batch: int):
    """The train and eval loaders of a run on this rank (eval: at most eval.max_samples, smoke runs)."""
    # Batches in what the engine feeds the model (train.amp's dtype on CUDA, train.channels_last):
    # a loader that can emit them saves the engine's cast and copy; training and eval run under
    # the same autocast, so both loaders get it.
    fmt = batch_format(cfg.train.amp, cfg.train.channels_last, ctx.device)
    train_loader = build_train_loader(cfg.data, batch_size=per_process_batch, rank=ctx.rank,
                                      world_size=ctx.world_size, seed=cfg.train.seed, device=ctx.device,
                                      num_classes=cfg.model.num_classes, dtype=fmt.dtype,
                                      channels_last=fmt.channels_last)
    eval_loader = build_val_loader(cfg, ctx, fmt=fmt)
    eval_batch = max(1, cfg.eval.batch_size // ctx.world_size)
    eval_loader = limit_eval(eval_loader, cfg.eval.max_samples, eval_batch * ctx.world_size)  # smoke runs
    return train_loader, eval_loader


def build_val_loader(cfg: RunConfig, ctx: DistContext, *, global_batch: int | None = None,
                     fmt: BatchFormat = FLOAT32_NCHW):
    """The loader of the validation split in cfg.eval.mode's views, sharded over ctx's processes
    (global_batch: instead of eval.batch_size). `fmt`: float32 NCHW unless the model runs under the
    run's autocast (the trainer's evaluation)."""
    per_process = max(1, (global_batch or cfg.eval.batch_size) // ctx.world_size)
    loader = build_eval_loader(cfg.data, mode=cfg.eval.mode, batch_size=per_process, rank=ctx.rank,
                               world_size=ctx.world_size, scales=cfg.eval.scales, device=ctx.device,
                               num_classes=cfg.model.num_classes, dtype=fmt.dtype, channels_last=fmt.channels_last)
    flip = cfg.eval.flip_tta and cfg.eval.mode not in FLIPPED_MODES  # eval.flip_tta: every loader, on the device
    return FlipViews(loader) if flip else loader


def build_engine(cfg: RunConfig, ctx: DistContext, model: nn.Module):
    return engine_class(cfg.distributed.engine)(cfg, ctx, model)


def start_tracker(cfg: RunConfig, ctx: DistContext, *, resume_run_id: str | None = None,
                  resumed_at: int | None = None):
    """The run's tracker; rank 0 writes RUN_DIR/config.yaml and logs params (or, on a resume,
    the config it resumed with) and the system tags."""
    run_dir = cfg.resolved_run_dir()
    run_name = cfg.tracking.run_name or default_run_name(cfg.recipe)  # resuming keeps the MLflow run's own name
    tracker = build_tracker(cfg.tracking, run_dir=run_dir, rank=ctx.rank, run_name=run_name,
                            resume_run_id=resume_run_id)
    if not ctx.is_main:
        return tracker
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    record_run_start(tracker, cfg, world_size=ctx.world_size, resumed_at_step=resumed_at,
                     extra_tags={"model": cfg.model.name, "global_batch": str(cfg.optim.batch_size),
                                 "backend": str(ctx.backend or "none"), "device_type": ctx.device.type})
    return tracker


def decorrelate_rank_streams(seed: int, rank: int) -> None:
    """After the model is built (the same initialisation on every rank), give each rank its own
    torch stream: the training-time draws from it (stochastic depth, R2's dropout shortcut) would
    otherwise repeat across ranks for the same position in each local batch. Rank 0 keeps its
    stream, so a single-process run draws what it always drew. A resume restores every rank's
    saved state over this (dtrain.checkpoint.rng)."""
    if rank:
        torch.manual_seed(derived_seed(seed, rank, step=0))


def build_trainer(cfg: RunConfig, ctx: DistContext, per_process_batch: int, *, stream=None, loaders=None):
    """The Trainer of `cfg` on this rank (`loaders`: (train, eval) to use instead of the config's)."""
    engine = build_engine(cfg, ctx, build_model(cfg.model))
    decorrelate_rank_streams(cfg.train.seed, ctx.rank)
    train_loader, eval_loader = loaders or build_loaders(cfg, ctx, per_process_batch)
    return Trainer(cfg, ctx, engine, train_loader, eval_loader, run_checkpoints(cfg, ctx.rank),
                   start_tracker=start_tracker, stream=stream)


# -- inference -----------------------------------------------------------------------------------


@dataclass
class Inference:
    config: RunConfig
    model: nn.Module  # on the CPU
    state: dict[str, Any]  # the whole checkpoint (step, history, ...)
    path: Path


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((mapping[k] for k in keys if k in mapping), None)


def config_from_state(state: dict[str, Any], overrides: list[str] | tuple[str, ...], path: Path) -> RunConfig:
    """The RunConfig saved in a checkpoint, with dotted key=value overrides applied (the resolver's
    stages, as for a recipe)."""
    raw = _first(state, CONFIG_KEYS)
    if isinstance(raw, RunConfig):
        raw = to_dict(raw)
    if not isinstance(raw, dict):
        raise DtrainError(f"{path} holds no training config ({CONFIG_KEYS[0]!r}): was it written by `dtrain train`?")
    return saved_config(raw, overrides)


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DDP saves 'module.x', torch.compile '_orig_mod.x': the bare model has plain 'x'."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_for_inference(path: Path | str, overrides: list[str] | tuple[str, ...] = (),
                       weights_of: str = "model") -> Inference:
    """The model of a checkpoint file, rebuilt from the config saved in it (plus overrides);
    weights_of="ema": with the weight EMA's weights (dtrain/engine/ema.py) in place of the live ones."""
    path = Path(path)
    if not path.is_file():
        raise DtrainError(f"checkpoint {path} does not exist")
    state = read_checkpoint(path)
    weights = _first(state, MODEL_KEYS)
    if weights_of == "ema":
        weights = (state.get(EMA_PART) or {}).get("weights")
        if weights is None:
            raise DtrainError(f"{path} holds no EMA weights (it was trained with ema.enabled=false); evaluate "
                              "its own weights with --weights model")
    if weights is None:
        raise DtrainError(f"{path} holds no model weights ({MODEL_KEYS[0]!r}); is it a checkpoint written by "
                          "`dtrain train`?")
    cfg = config_from_state(state, overrides, path)
    model = build_model(cfg.model)
    try:
        model.load_state_dict(strip_wrappers(dict(weights)))
    except RuntimeError as exc:
        saved = _saved_model_name(state)
        if saved and saved != cfg.model.name:  # a model.name override: say which model the file holds
            raise DtrainError(f"{path} holds {saved} weights, which do not fit {cfg.model.name}: drop the "
                              f"model.name={cfg.model.name} override, or pass a {cfg.model.name} checkpoint") from None
        raise DtrainError(f"{path}: weights do not fit {cfg.model.name} ({str(exc).splitlines()[0]})") from None
    return Inference(cfg, model, state, path)


def _saved_model_name(state: dict[str, Any]) -> str | None:
    raw = _first(state, CONFIG_KEYS)
    if isinstance(raw, RunConfig):
        return raw.model.name
    return ((raw or {}).get("model") or {}).get("name") if isinstance(raw, dict) else None
