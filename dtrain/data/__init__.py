"""Data loaders behind one interface, chosen by data.loader from a registry.

    from dtrain.data import build_train_loader, build_eval_loader, EvalBatch

    loader = build_train_loader(cfg.data, batch_size=per_process, rank=r, world_size=w,
                                seed=cfg.train.seed, device=device, num_classes=cfg.model.num_classes)
    loader.set_epoch(epoch, skip_batches=k)   # k > 0 when resuming in the middle of an epoch
    for images, labels in loader: ...         # float32 NCHW normalised, int64; on `device`

    evaluator = build_eval_loader(cfg.data, mode=cfg.eval.mode, batch_size=per_process, rank=r,
                                  world_size=w, scales=cfg.eval.scales, device=device)
    for batch in evaluator: ...               # EvalBatch(views, labels, valid)

`num_classes` (default 1000) is used by the synthetic loader only (its labels are
index % num_classes). `dtype` / `channels_last` (gpu_defaults.batch_format of train.amp and
train.channels_last) are what the model is fed: loaders registered with formats=True emit their
batches in them; the others emit float32 NCHW and the engine converts. Loaders register in
LOADERS: name -> LoaderBuilders(train, eval), or a "module:attribute" string naming one,
imported only when that loader is chosen (so DALI and FFCV are imported only by runs that use
them), e.g. LOADERS["dali"] = "dtrain.data.dali_loader:BUILDERS".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dtrain.config import DataConfig
from dtrain.errors import ConfigError
from dtrain.extras import missing_module_message

from .eval_views import EvalTransform
from .gpu_defaults import AUTO, auto_loader
from .loaders import EvalBatch, EvalLoader, TrainLoader
from .sources import ManifestSource, SyntheticSource, read_manifest
from .stats import channel_stats
from .transforms import EpochTransforms, check_train_geometry

__all__ = [
    "LOADERS", "LOADER_CHOICES", "LoaderBuilders", "EvalBatch", "EvalLoader", "TrainLoader",
    "build_eval_loader", "build_train_loader", "channel_stats", "loader_names",
]


@dataclass(frozen=True)
class LoaderBuilders:
    # train(data, *, batch_size, rank, world_size, seed, device, num_classes) -> TrainLoader-like
    train: Callable[..., object]
    # eval(data, *, mode, batch_size, rank, world_size, scales, device, num_classes) -> EvalLoader-like
    eval: Callable[..., object]
    # True: both also take dtype= and channels_last= and emit their images in them
    formats: bool = False

    def format_kwargs(self, dtype: torch.dtype, channels_last: bool) -> dict:
        return dict(dtype=dtype, channels_last=channels_last) if self.formats else {}


def _torch_train(data: DataConfig, *, batch_size, rank, world_size, seed, device, num_classes) -> TrainLoader:
    source = ManifestSource(read_manifest(data.root, data.train_split), data.source)
    widths, heights = source.image_sizes()
    check_train_geometry(data, int(widths.min()), int(heights.min()))
    return TrainLoader(source, EpochTransforms(data), batch_size=batch_size, rank=rank,
                       world_size=world_size, seed=seed, workers=data.workers, device=device,
                       repeats=data.repeated_augment_reps)


def _torch_eval(data: DataConfig, *, mode, batch_size, rank, world_size, scales, device, num_classes) -> EvalLoader:
    source = ManifestSource(read_manifest(data.root, data.val_split), data.source)
    return EvalLoader(source, EvalTransform(data, mode, scales), batch_size=batch_size, rank=rank,
                      world_size=world_size, workers=data.workers, device=device)


def _synthetic_train(data: DataConfig, *, batch_size, rank, world_size, seed, device, num_classes) -> TrainLoader:
    source = SyntheticSource(data.synthetic_samples, data.synthetic_image_size, num_classes, "train")
    check_train_geometry(data, data.synthetic_image_size, data.synthetic_image_size)
    return TrainLoader(source, EpochTransforms(data), batch_size=batch_size, rank=rank,
                       world_size=world_size, seed=seed, workers=data.workers, device=device,
                       repeats=data.repeated_augment_reps)


def _synthetic_eval(data: DataConfig, *, mode, batch_size, rank, world_size, scales, device,
                    num_classes) -> EvalLoader:
    source = SyntheticSource(data.synthetic_samples, data.synthetic_image_size, num_classes, "val")
    return EvalLoader(source, EvalTransform(data, mode, scales), batch_size=batch_size, rank=rank,
                      world_size=world_size, workers=data.workers, device=device)


LOADERS: dict[str, LoaderBuilders | str] = {
    "torch": LoaderBuilders(_torch_train, _torch_eval),
    "synthetic": LoaderBuilders(_synthetic_train, _synthetic_eval),
    "gpu": "dtrain.data.gpu_loader:BUILDERS",
    "dali": "dtrain.data.dali_loader:BUILDERS",
    "ffcv": "dtrain.data.ffcv_loader:BUILDERS",
}

# What data.loader accepts: a registered loader, or auto (gpu on CUDA, else torch).
LOADER_CHOICES = (*LOADERS, AUTO)


def loader_names() -> list[str]:
    return sorted(LOADERS)


def _builders(name: str) -> LoaderBuilders:
    entry = LOADERS.get(name)
    if entry is None:
        raise ConfigError(f"data.loader={name!r} is not available; valid loaders: {', '.join(loader_names())}")
    if isinstance(entry, str):
        module_name, _, attribute = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            raise ConfigError(f"data.loader={name} {_unavailable(exc)}; or choose another data.loader") from None
    return entry


def _unavailable(exc: ImportError) -> str:
    """Why a loader module does not import: the extra that installs what is missing, else the error."""
    why = missing_module_message(exc.name) if isinstance(exc, ModuleNotFoundError) else None
    return why or f"cannot run in this install ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"


def build_train_loader(data: DataConfig, *, batch_size: int, rank: int, world_size: int, seed: int,
                       device: torch.device | str = "cpu", num_classes: int = 1000,
                       dtype: torch.dtype = torch.float32, channels_last: bool = False):
    """The training loader of data.loader; batch_size is per process."""
    device = torch.device(device)
    builders = _builders(auto_loader(data.loader, device))
    return builders.train(data, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed, device=device,
                          num_classes=num_classes, **builders.format_kwargs(dtype, channels_last))


def build_eval_loader(data: DataConfig, *, mode: str, batch_size: int, rank: int, world_size: int,
                      scales: Sequence[int] = (), device: torch.device | str = "cpu", num_classes: int = 1000,
                      dtype: torch.dtype = torch.float32, channels_last: bool = False):
    """The evaluation loader of data.loader over data.val_split; batch_size is per process."""
    device = torch.device(device)
    builders = _builders(auto_loader(data.loader, device))
    return builders.eval(data, mode=mode, batch_size=batch_size, rank=rank, world_size=world_size,
                         scales=list(scales), device=device, num_classes=num_classes,
                         **builders.format_kwargs(dtype, channels_last))
