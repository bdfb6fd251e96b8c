"""What rank 0 records at the start and end of a run, in one place so every entry point agrees.

    tracker = build_tracker(cfg.tracking, run_dir=..., rank=rank, run_name=..., resume_run_id=...)
    record_run_start(tracker, cfg, world_size=world, device_names=names)
    ... tracker.log_metrics(...) ...
    record_models(tracker, cfg, model, last_checkpoint=path, best_checkpoint=best)   # rank 0
    record_run_end(tracker, {"val/top1_err": 0.236, ...}, status="FINISHED")

Params are the values that apply to the run's choices (`applicable_params`): `data.scale_range`
is a param of a scale-jitter run, not of a pad-crop one. The whole resolved config stays an
artifact. Checkpoints stay on the run directory; MLflow gets their paths as tags.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from dtrain.checkpoint.atomic import read_checkpoint, read_meta
from dtrain.config import RunConfig, dump_yaml, flatten, to_dict
from dtrain.provenance import system_tags
from dtrain.tracking.base import TRAINING, VALIDATION, DatasetRecord, Tracker
from dtrain_prep import layout

CONFIG_ARTIFACT = "config.yaml"
FINAL_METRICS_ARTIFACT = "final_metrics.json"
MODEL_NAME, BEST_MODEL_NAME = "model", "best_model"

_Rule = Callable[[RunConfig], bool]
# Dotted config key (or prefix ending in "_"/".") -> when it applies to a run. Keys not listed
# always apply; a key whose rule says no is not a param (it is still in config.yaml).
PARAM_APPLIES: dict[str, _Rule] = {
    "data.scale_range": lambda c: c.data.train_augment == "scale_jitter",
    "data.rrc_": lambda c: c.data.train_augment == "random_resized_crop",
    "data.pad": lambda c: c.data.train_augment == "pad_crop",
    "data.lighting_std": lambda c: c.data.train_augment != "none",
    "data.flip": lambda c: c.data.train_augment != "none",
    "data.source": lambda c: c.data.loader == "torch",
    "data.ffcv_": lambda c: c.data.loader == "ffcv",
    "data.synthetic_": lambda c: c.data.loader == "synthetic",
    "data.root": lambda c: c.data.loader != "synthetic",
    "data.train_split": lambda c: c.data.loader != "synthetic",
    "data.val_split": lambda c: c.data.loader != "synthetic",
    "optim.momentum": lambda c: c.optim.name == "sgd",
    "optim.nesterov": lambda c: c.optim.name == "sgd",
    "optim.betas": lambda c: c.optim.name in ("adamw", "lamb"),
    "optim.eps": lambda c: c.optim.name in ("adamw", "lamb"),
    "loss.bce_target_threshold": lambda c: c.loss.name == "bce",
    "optim.reference_batch": lambda c: c.optim.scale_lr,
    "schedule.milestones": lambda c: c.schedule.kind in ("step_epochs", "step_iters"),
    "schedule.gamma": lambda c: c.schedule.kind in ("step_epochs", "step_iters", "plateau"),
    "schedule.plateau_": lambda c: c.schedule.kind == "plateau",
    "schedule.min_lr": lambda c: c.schedule.kind in ("plateau", "cosine", "linear"),
    "schedule.warmup_": lambda c: c.schedule.warmup != "none",
    "distributed.zero_stage": lambda c: c.distributed.engine == "deepspeed",
    "distributed.deepspeed_config": lambda c: c.distributed.engine == "deepspeed",
    "distributed.find_unused_parameters": lambda c: c.distributed.engine == "ddp",
    "eval.scales": lambda c: c.eval.mode == "multi-scale",
    "eval.every_epochs": lambda c: c.eval.every_iters <= 0,
    "eval.every_iters": lambda c: c.eval.every_iters > 0,
    # Where files go and how the run is watched are not choices that change the result.
    "run_dir": lambda c: False,
    "description": lambda c: False,
    "checkpoint.": lambda c: False,
    "tracking.": lambda c: False,
}


def applicable_params(config: RunConfig) -> dict[str, Any]:
    """The resolved config's values that apply to this run (None values are left out)."""
    params = {}
    for key, value in flatten(to_dict(config)).items():
        rule = _rule_for(key)
        if value is not None and (rule is None or rule(config)):
            params[key] = value
    return params


def _rule_for(key: str) -> _Rule | None:
    for pattern, rule in PARAM_APPLIES.items():
        if key == pattern or (pattern.endswith(("_", ".")) and key.startswith(pattern)):
            return rule
    return None


def dataset_records(config: RunConfig) -> list[DatasetRecord]:
    """The train and validation splits the run reads, from `dtrain prepare`'s summary.json."""
    data = config.data
    if data.loader == "synthetic":
        digest = hashlib.sha256(json.dumps(to_dict(data), sort_keys=True).encode()).hexdigest()
        profile: dict[str, Any] = {"samples": data.synthetic_samples, "classes": config.model.num_classes}
        return [DatasetRecord("synthetic", context, _split_digest(digest, context), "synthetic", profile)
                for context in (TRAINING, VALIDATION)]
    root = Path(data.root)
    try:
        summary = json.loads((root / layout.SUMMARY).read_text())
    except (OSError, ValueError):
        return []
    digest = _file_digest(root / layout.MANIFEST) or hashlib.sha256(json.dumps(summary["splits"], sort_keys=True,
                                                                            default=str).encode()).hexdigest()
    records = []
    for context, split in ((TRAINING, data.train_split), (VALIDATION, data.val_split)):
        counts = summary.get("splits", {}).get(split, {})
        profile = {"split": split, "samples": counts.get("accepted"), "rejected": counts.get("rejected"),
                   "classes": len(summary.get("per_class", {}).get(split, {})) or config.model.num_classes}
        records.append(DatasetRecord(str(summary.get("dataset", root.name)), context, _split_digest(digest, split),
                                     str(root.resolve()), profile))
    return records


def _split_digest(data_digest: str, split: str) -> str:
    """One digest per split: MLflow keeps one input per (name, digest), so the splits of one
    manifest need their own."""
    return hashlib.sha256(f"{data_digest}:{split}".encode()).hexdigest()[:32]


def _file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):  # hashlib.file_digest is Python 3.11+; dtrain runs on 3.10
                digest.update(chunk)
            return digest.hexdigest()
    except OSError:
        return None


def default_run_name(recipe: str, started: datetime | None = None) -> str:
    """RECIPE-MMDD-HHMM-xxxx: the recipe, the local start time and 4 random hex digits, so that
    every run of a recipe has a name of its own in MLflow's run list (the recipe stays the run's
    `recipe` tag, to filter on)."""
    return f"{recipe or 'run'}-{(started or datetime.now()):%m%d-%H%M}-{secrets.token_hex(2)}"


def record_run_start(tracker: Tracker, config: RunConfig, *, world_size: int,
                     device_names: Sequence[str] | None = None, resumed_at_step: int | None = None,
                     extra_tags: Mapping[str, Any] | None = None) -> None:
    """Params, datasets and the resolved config for a new run; only the config again on resume
    (params are immutable: the resumed config is a second artifact). Tags every time."""
    config_yaml = dump_yaml(config)
    if resumed_at_step is None:
        tracker.log_params(applicable_params(config))
        tracker.log_text(config_yaml, CONFIG_ARTIFACT)
        tracker.log_datasets(dataset_records(config))
    else:
        tracker.log_text(config_yaml, f"config-resumed-at-step-{resumed_at_step}.yaml")
    tracker.set_tags({**system_tags(world_size, device_names), "recipe": getattr(config, "recipe", ""),
                      **(extra_tags or {})})


def record_models(tracker: Tracker, config: RunConfig, model: Any, *, last_checkpoint: Path | None,
                  best_checkpoint: Path | None = None, with_models: bool = True) -> None:
    """Checkpoint paths as tags; the trained network (and the best checkpoint's, when it is another
    one) as MLflow models with a signature and the validation metrics of their step; the best one
    registered as `tracking.register_model`. Rank 0, at the end of a run."""
    tags = {"dtrain.run_dir": str(config.resolved_run_dir().resolve())}
    if last_checkpoint:
        tags["dtrain.checkpoint.last"] = str(Path(last_checkpoint).resolve())
    if best_checkpoint and Path(best_checkpoint).is_file():
        tags["dtrain.checkpoint.best"] = str(Path(best_checkpoint).resolve())
    tracker.set_tags(tags)
    if not (with_models and config.tracking.log_model) or tracker.run_id is None:
        return
    size = config.data.synthetic_image_size if config.data.loader == "synthetic" else config.data.val_crop
    example = torch.zeros(1, 3, size, size)
    registry_name = config.tracking.register_model
    best = _best_model(model, best_checkpoint, last_checkpoint)
    # The final weights were evaluated at the last checkpoint's step (the final evaluation).
    tracker.log_model(model, example, name=MODEL_NAME, register_as=None if best else registry_name,
                      evaluated_at=_checkpoint_step(last_checkpoint))
    if best is not None:
        best_model, best_step = best
        tracker.log_model(best_model, example, name=BEST_MODEL_NAME, register_as=registry_name,
                          evaluated_at=best_step)


def _checkpoint_step(checkpoint: Path | None) -> int | None:
    step = (read_meta(Path(checkpoint)) or {}).get("step") if checkpoint else None
    return int(step) if step is not None else None


def _best_model(model: Any, best_checkpoint: Path | None,
                last_checkpoint: Path | None) -> tuple[Any, int | None] | None:
    """`model` with the best checkpoint's weights and that checkpoint's step, or None when the
    best is the last one (or there is none)."""
    if not best_checkpoint or not Path(best_checkpoint).is_file():
        return None
    source = (read_meta(Path(best_checkpoint)) or {}).get("source")
    if last_checkpoint and source == Path(last_checkpoint).name:
        return None
    state = read_checkpoint(best_checkpoint)
    best = copy.deepcopy(model).cpu()
    best.load_state_dict(state["model"])
    return best, _checkpoint_step(best_checkpoint)


def record_run_end(tracker: Tracker, final_metrics: Mapping[str, Any], *, status: str = "FINISHED",
                   step: int | None = None) -> None:
    """The final metrics as an artifact (and as metrics when a step is given), then close the run."""
    if step is not None:
        numbers = {k: float(v) for k, v in final_metrics.items() if isinstance(v, (int, float))}
        if numbers:
            tracker.log_metrics(numbers, step=step)
    tracker.log_text(json.dumps(dict(final_metrics), indent=2, default=str) + "\n", FINAL_METRICS_ARTIFACT)
    tracker.close(status)
