"""Every value of a RunConfig checked once, by the resolver (dtrain.resolve), before any process starts.

Types are checked while the dataclasses are built (dtrain.config.from_dict); here are the values:
names taken from the registries that use them (one definition each), the model and its options
(checked against the model registry without building weights), list lengths and ranges. Every
failure is a ConfigError: one line naming the key and the fix, with a did-you-mean.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from dtrain.config import ModelConfig, RunConfig
from dtrain.errors import ConfigError
from dtrain.suggest import did_you_mean

# key -> "module:ATTRIBUTE", the registry (a mapping, or a tuple of its keys plus `auto`) of the code
# that implements the key's names: one definition each. Imported only when a config is checked, so
# that describing a recipe (`dtrain recipes`, `dtrain keys`, shell completion) never imports torch.
CHOICES: dict[str, str] = {
    "data.loader": "dtrain.data:LOADER_CHOICES",
    "data.train_augment": "dtrain.data.transforms:TRAIN_AUGMENTS",
    "data.normalize": "dtrain.data.stats:NORMALIZATIONS",
    "data.train_interpolation": "dtrain.data.transforms:INTERPOLATIONS",
    "data.val_interpolation": "dtrain.data.transforms:VAL_INTERPOLATIONS",
    "data.source": "dtrain.data.sources:SOURCES",
    "data.ffcv_order": "dtrain.data.sampling:FFCV_ORDERS",
    "data.gpu_decoder": "dtrain.data.gpu_decode:DECODER_CHOICES",
    "eval.mode": "dtrain.data.eval_views:EVAL_VIEWS",
    "optim.name": "dtrain.engine.optimizer:OPTIMIZERS",
    "optim.no_decay": "dtrain.engine.optimizer:NO_DECAY",
    "loss.name": "dtrain.engine.loss:LOSSES",
    "schedule.kind": "dtrain.engine.lr_schedule:SCHEDULES",
    "schedule.warmup": "dtrain.engine.lr_schedule:WARMUPS",
    "schedule.step_on": "dtrain.engine.lr_schedule:STEP_ON",
    "schedule.decay_over": "dtrain.engine.lr_schedule:DECAY_OVER",
    "distributed.engine": "dtrain.engine.engine:ENGINES",
    "distributed.backend": "dtrain.distributed.context:BACKEND_CHOICES",
    "distributed.grad_compression": "dtrain.distributed.wrap:GRAD_COMPRESSION_HOOKS",
    "train.device": "dtrain.distributed.context:DEVICE_CHOICES",
    "train.amp": "dtrain.engine.precision:AMP_CHOICES",
    "tracking.backend": "dtrain.tracking:BACKENDS",
}
# data.auto_augment: its spec parser (the result names the loaders that run it; the others refuse it here).
AUTO_AUGMENT_PARSER = "dtrain.data.auto_augment:parse_auto_augment"
# checkpoint.resume: these words (dtrain/engine/state.py) or a checkpoint path.
RESUME_SOURCE = "dtrain.engine.state:RESUME_MODES"
# Every key whose help text says `{choices}`, and where its names live.
NAMED_KEYS = {**CHOICES, "checkpoint.resume": RESUME_SOURCE}
# The model registry (importing it registers every net), resolved when model.name is checked.
MODEL_REGISTRY = "dtrain.models"
# The largest training crop of any epoch (progressive resizing): one definition, imported when checked.
LARGEST_TRAIN_CROP = "dtrain.data.resolution:largest_train_crop"


def _imported(source: str) -> Any:
    """The object a "module:ATTRIBUTE" source names."""
    module_name, _, attribute = source.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _names(source: str) -> list[str]:
    return list(_imported(source))


def bool_for_name_hint(key: str, value: bool) -> str:
    """What to write instead of true/false for a key that takes names (train.amp=false -> none)."""
    if key not in NAMED_KEYS:
        return ""
    names = choices(key)
    off = next((n for n in ("none", "never") if n in names), None)
    if value is False and off:
        return f"; to turn it off use {key}={off}"
    return f"; use one of {', '.join(names)}"


def choices(key: str) -> list[str]:
    """The names `key` accepts (checkpoint.resume: besides a path), read from the registry that implements them."""
    return _names(NAMED_KEYS[key])


def validate(config: RunConfig) -> None:
    """Raise ConfigError for the first bad value (order: names, model, numbers)."""
    for rule in RULES:
        rule(config)


def check_choices(config: RunConfig) -> None:
    for key in CHOICES:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        allowed = choices(key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}{did_you_mean(str(value), allowed)}")
    if config.train.channels_last not in (True, False, "auto"):
        raise ConfigError(f"train.channels_last={config.train.channels_last!r} is not one of true, false, auto")
    resume, modes = config.checkpoint.resume, _names(RESUME_SOURCE)
    if resume not in modes and not (resume.endswith(".pt") or "/" in resume):
        raise ConfigError(f"checkpoint.resume={resume!r} is not one of {', '.join(modes)} or a checkpoint "
                          f"path (.pt){did_you_mean(resume, modes, fallback='')}")


def check_model(model: ModelConfig) -> None:
    """The name is registered and every option is one its builder takes, with a valid value.

    Mirrors the checks of dtrain.models.build on the registry's entries, without building weights
    (models.registry.check_options builds on the meta device where only the builder can check)."""
    models: ModuleType = importlib.import_module(MODEL_REGISTRY)
    spec = models.registry.option_spec(model.name)
    if spec is None:
        raise ConfigError(f"model.name={model.name!r} is not a model{did_you_mean(model.name, models.names(), n=3)}; "
                          "`dtrain models` lists them")
    if model.num_classes < 1:
        raise ConfigError(f"model.num_classes must be at least 1, got {model.num_classes}")
    valid = sorted(set(spec.unit_fields) | set(spec.builder_arguments) - set(spec.preset))
    for key in model.options:
        if key in spec.preset and key not in spec.unit_fields:
            raise ConfigError(f"model.options.{key} is fixed by model.name={model.name}; use the generic "
                              f"cifar_resnet or imagenet_resnet to choose {key}")
        if key not in spec.unit_fields and key not in spec.builder_arguments:
            raise ConfigError(f"model.options.{key} is not an option of {model.name}"
                              f"{did_you_mean(key, valid, 'model.options.')}")
    try:
        models.registry.check_options(model.name, model.num_classes, model.options)
    except (ValueError, TypeError, KeyError, AssertionError) as exc:
        raise ConfigError(f"model.options of {model.name}: {exc}".splitlines()[0]) from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _pair(key: str, value: list[Any], low_ok: Callable[[Any], bool], what: str) -> None:
    _check(len(value) == 2 and low_ok(value[0]) and value[0] <= value[1],
           f"{key} must be [low, high] with {what} and low <= high, got {value}")


def check_data(config: RunConfig) -> None:
    d = config.data
    _pair("data.scale_range", d.scale_range, lambda v: v > 0, "positive sizes")
    _pair("data.rrc_scale", d.rrc_scale, lambda v: v > 0, "fractions in (0, 1]")
    _check(d.rrc_scale[1] <= 1, f"data.rrc_scale must be fractions in (0, 1], got {d.rrc_scale}")
    _pair("data.rrc_ratio", d.rrc_ratio, lambda v: v > 0, "positive aspect ratios")
    for key, value in (("data.mean", d.mean), ("data.std", d.std)):
        _check(len(value) == 3, f"{key} must hold 3 values (R, G, B), got {value}")
    _check(all(s > 0 for s in d.std), f"data.std must be positive, got {d.std}")
    _positive(config, ["data.crop_size", "data.val_crop", "data.val_resize", "data.synthetic_samples",
                       "data.synthetic_image_size"])
    _non_negative(config, ["data.pad", "data.workers", "data.lighting_std"])


def check_progressive(config: RunConfig) -> None:
    """data.min_res / max_res / start_ramp / end_ramp (dtrain.data.resolution: FFCV's rule)."""
    d = config.data
    if d.min_res is None and d.max_res is None:
        return
    if d.min_res is None or d.max_res is None:
        raise ConfigError(f"data.min_res={d.min_res} and data.max_res={d.max_res}: progressive resizing needs both "
                          "(or both null)")
    _check(32 <= d.min_res <= d.max_res, f"progressive resizing needs 32 <= data.min_res <= data.max_res (the ramp "
                                         f"is rounded to multiples of 32), got {d.min_res} and {d.max_res}")
    _check(0 <= d.start_ramp <= d.end_ramp, f"progressive resizing needs 0 <= data.start_ramp <= data.end_ramp "
                                            f"(epochs), got {d.start_ramp} and {d.end_ramp}")
    # Before any process starts; `place` validates again once data.loader=auto is decided.
    _check(d.loader != "dali", "data.loader=dali cannot change the crop size per epoch (data.min_res/max_res); "
                               "use data.loader=torch, gpu or ffcv, or set data.min_res=null data.max_res=null")


def check_synthetic_size(config: RunConfig) -> None:
    """Synthetic images smaller than the crop would be upscaled and train at the crop size (224 for
    ImageNet recipes), not the small size that was asked for."""
    d = config.data
    size, crop = d.synthetic_image_size, _imported(LARGEST_TRAIN_CROP)(d)
    if d.loader != "synthetic" or size >= crop:
        return
    if config.train.smoke:  # smoke_config scaled both: the override was small already
        raise ConfigError(f"data.synthetic_image_size is {size} once train.smoke=true scaled it, below the smoke "
                          f"crop data.crop_size={crop}: drop the data.synthetic_image_size override (smoke mode "
                          "scales the recipe's image sizes together)")
    if d.min_res is not None:  # progressive resizing: the crop of the ramp's largest epoch
        raise ConfigError(f"data.synthetic_image_size={size} is smaller than the largest progressive-resizing crop "
                          f"({crop}, data.min_res/max_res): the images would be upscaled; raise "
                          f"data.synthetic_image_size to {crop} or lower data.max_res")
    raise ConfigError(f"data.synthetic_image_size={size} is smaller than data.crop_size={crop}: the images would be "
                      f"upscaled and trained at {crop}x{crop}; for a small fast run use train.smoke=true in place of "
                      f"data.synthetic_image_size={size} (every image size scaled down together), or set "
                      f"data.crop_size={size}")


def check_optim(config: RunConfig) -> None:
    o = config.optim
    _positive(config, ["optim.batch_size", "optim.reference_batch", "optim.grad_accum", "optim.lr"])
    _non_negative(config, ["optim.momentum", "optim.weight_decay", "optim.clip_grad_norm"])
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
           f"optim.betas must be [beta1, beta2] in [0, 1), got {o.betas}")
    _check(o.eps is None or o.eps > 0, f"optim.eps must be positive (or null), got {o.eps}")


def check_loss(config: RunConfig) -> None:
    loss = config.loss
    _check(0 <= loss.label_smoothing < 1, f"loss.label_smoothing must be in [0, 1), got {loss.label_smoothing}")
    threshold = loss.bce_target_threshold
    _check(threshold is None or (loss.name == "bce" and 0 <= threshold < 1),
           f"loss.bce_target_threshold={threshold} needs loss.name=bce and a value in [0, 1); or set it to null")


def check_engine_features(config: RunConfig) -> None:
    """What DeepSpeed cannot do: ZeRO partitions and its fp16/bf16 optimisers flatten the parameters
    into one buffer per group, so LAMB's per-layer trust ratio would be taken per flat partition."""
    d = config.distributed
    flattens = d.zero_stage > 0 or config.train.amp != "none"  # train.amp=auto is resolved by now
    _check(not (config.optim.name == "lamb" and d.engine == "deepspeed" and flattens),
           "optim.name=lamb takes its trust ratio layer by layer, which DeepSpeed's ZeRO and fp16/bf16 "
           "optimisers flatten away; use distributed.engine=ddp (or zero_stage=0 with train.amp=none)")


def check_schedule(config: RunConfig) -> None:
    s = config.schedule
    if s.epochs is None and s.max_iters is None:
        raise ConfigError("set schedule.epochs or schedule.max_iters: the run needs an end")
    for key, value in (("schedule.epochs", s.epochs), ("schedule.max_iters", s.max_iters)):
        _check(value is None or value >= 1, f"{key} must be at least 1 (or null), got {value}")
    _check(list(s.milestones) == sorted(s.milestones) and all(m >= 0 for m in s.milestones),
           f"schedule.milestones must be non-negative and ascending, got {s.milestones}")
    _positive(config, ["schedule.gamma", "schedule.plateau_patience"])
    _non_negative(config, ["schedule.warmup_iters", "schedule.warmup_epochs", "schedule.min_lr", "schedule.warmup_lr"])
    _check(s.warmup == "none" or s.warmup_iters > 0 or s.warmup_epochs > 0,
           f"schedule.warmup={s.warmup} needs schedule.warmup_iters > 0 or schedule.warmup_epochs > 0")
    _check(s.warmup_iters == 0 or s.warmup_epochs == 0,
           f"schedule.warmup_iters={s.warmup_iters} and schedule.warmup_epochs={s.warmup_epochs} both set the "
           "warm-up's length; set one of them to 0")
    _check(s.warmup_until_err is None or (s.warmup == "constant" and 0 < s.warmup_until_err <= 100),
           f"schedule.warmup_until_err={s.warmup_until_err} needs schedule.warmup=constant and a training "
           "error in (0, 100] (%); or set it to null")


def check_run(config: RunConfig) -> None:
    _positive(config, ["eval.batch_size", "train.log_every_iters", "tracking.metrics_every_iters",
                       "distributed.timeout_minutes"])
    _non_negative(config, ["eval.every_epochs", "eval.every_iters", "checkpoint.every_iters",
                           "checkpoint.keep_last", "eval.max_samples"])
    _check(config.distributed.zero_stage in (0, 1, 2, 3),
           f"distributed.zero_stage must be 0, 1, 2 or 3, got {config.distributed.zero_stage}")
    _check(all(s > 0 for s in config.eval.scales), f"eval.scales must be positive, got {config.eval.scales}")


def check_ema(config: RunConfig) -> None:
    ema = config.ema
    _check(0.0 <= ema.decay < 1.0, f"ema.decay must be in [0, 1), got {ema.decay}")
    _positive(config, ["ema.every_steps"])
    _non_negative(config, ["ema.warmup_epochs"])


def check_tracking(config: RunConfig) -> None:
    """A registry name MLflow accepts, checked now rather than when the run ends."""
    tracking, name = config.tracking, config.tracking.register_model
    if name is None:
        return
    _check(bool(str(name).strip()) and not any(c in str(name) for c in "/:"),
           f"tracking.register_model={name!r} is not a model registry name: use a non-empty name without '/' or ':'")
    _check(tracking.backend == "mlflow" and tracking.log_model,
           "tracking.register_model needs tracking.backend=mlflow and tracking.log_model=true (the registered "
           "model is the logged one)")


def check_augment(config: RunConfig) -> None:
    """augment.* (dtrain.data.batch_mix) and data.repeated_augment_reps."""
    a = config.augment
    _non_negative(config, ["augment.mixup_alpha", "augment.cutmix_alpha"])
    for key, value in _values(config, ["augment.mix_prob", "augment.switch_prob", "augment.erasing_prob"]):
        _check(0 <= value <= 1, f"{key} must be a probability in [0, 1], got {value}")
    _pair("augment.erasing_scale", a.erasing_scale, lambda v: v > 0, "fractions in (0, 1)")
    _check(a.erasing_scale[1] < 1, f"augment.erasing_scale must be fractions in (0, 1), got {a.erasing_scale}")
    _pair("augment.erasing_ratio", a.erasing_ratio, lambda v: v > 0, "positive aspect ratios")
    reps, loader = config.data.repeated_augment_reps, config.data.loader
    _check(reps >= 1, f"data.repeated_augment_reps must be at least 1 (1: off), got {reps}")
    _check(reps == 1 or not (loader == "dali" or (loader == "ffcv" and config.data.ffcv_order != "random")),
           f"data.repeated_augment_reps={reps} needs a loader that reads dtrain's sample order: torch, synthetic, "
           f"gpu, or ffcv with data.ffcv_order=random (data.loader={loader} orders the samples itself)")


def _values(config: RunConfig, keys: Iterable[str]) -> Iterable[tuple[str, Any]]:
    for key in keys:
        section, name = key.split(".")
        yield key, getattr(getattr(config, section), name)


def _positive(config: RunConfig, keys: Iterable[str]) -> None:
    for key, value in _values(config, keys):
        _check(value > 0, f"{key} must be positive, got {value}")


def _non_negative(config: RunConfig, keys: Iterable[str]) -> None:
    for key, value in _values(config, keys):
        _check(value >= 0, f"{key} must not be negative, got {value}")


def check_interpolation(config: RunConfig) -> None:
    """data.train_interpolation / val_interpolation: on a loader that resizes with that filter."""
    loader = config.data.loader
    for key in ("data.train_interpolation", "data.val_interpolation"):
        name = getattr(config.data, key.split(".")[1])
        loaders = _imported(CHOICES[key])[name].loaders  # the registry; check_choices ran first
        _check(loader in (*loaders, "auto"), f"{key}={name} resizes in the {', '.join(loaders)} loaders, not "
               f"data.loader={loader}; use one of those or set {key}=bilinear")


def check_auto_augment(config: RunConfig) -> None:
    """data.auto_augment: a spec the parser takes (its own one-line error), on a loader that runs it."""
    spec, loader = config.data.auto_augment, config.data.loader
    augment = _imported(AUTO_AUGMENT_PARSER)(spec)
    # data.loader=auto is checked again once the device has decided it
    _check(augment is None or loader in (*augment.loaders, "auto"),
           f"data.auto_augment={spec} runs in the {', '.join(augment.loaders) if augment else ''} loaders, not "
           f"data.loader={loader}; use one of those or set data.auto_augment=none")


RULES: list[Callable[[RunConfig], None]] = [
    check_choices, lambda c: check_model(c.model), check_data, check_progressive, check_synthetic_size, check_optim,
    check_loss, check_engine_features, check_schedule, check_run, check_tracking, check_augment, check_ema,
    check_auto_augment, check_interpolation,
]
