"""`dtrain bench`: loader-only, model-only, end-to-end and framework-overhead throughput, and
the time a checkpoint save blocks training.

Every subcommand prints a table and, with --json PATH, writes the figures with the device name,
library versions, git commit, date and load average (benchmarks/RESULTS.md records them).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from dtrain import models
from dtrain.bench.checkpoint_save import bench_checkpoint
from dtrain.bench.machine import not_quiet_warning
from dtrain.bench.overhead import bench_overhead
from dtrain.bench.runs import ModelSetup, Timing, bench_end_to_end, bench_loaders, bench_model, loader_config
from dtrain.bench.timing import Measurement, environment
from dtrain.data import loader_names
from dtrain.data.sources import SOURCES
from dtrain.distributed.context import DEVICE_CHOICES
from dtrain.engine.precision import AMP_DTYPES
from dtrain.errors import DtrainError

# The choices of the options come from the registries that implement them (as the config's do).
DEVICE = click.Choice(DEVICE_CHOICES)
AMP = click.Choice(["none", *AMP_DTYPES])  # explicit: a benchmark names its precision


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise click.UsageError("--device cuda: no CUDA device here; use --device cpu")
    return torch.device(name)


def _one_line_errors(run, *args, **kwargs):
    """A dtrain error (bad data dir, AMP on CPU, ...) becomes one line, not a traceback."""
    try:
        return run(*args, **kwargs)
    except DtrainError as exc:
        raise click.ClickException(str(exc)) from None


def _report(kind: str, results: list[Measurement], device: torch.device, json_path: Path | None, **extra) -> None:
    env = environment(device)
    click.echo(f"{kind} on {env['device_name']} ({env['device']}), load average {env['load_average'][0]}, "
               f"commit {env['commit']}")
    if warning := not_quiet_warning(env):  # other processes' load moves img/s by up to 2x
        click.echo(warning)
    click.echo(f"{'benchmark':<16} {'img/s':>10} {'repeats':<30} details")
    for r in results:
        rate = f"{r.images_per_s:>10.1f}" if r.batch_size else f"{'-':>10}"  # e.g. checkpoint: no images
        click.echo(f"{r.name:<16} {rate} {str(r.repeats_images_per_s):<30} "
                   + ", ".join(f"{k}={v}" for k, v in r.details.items()))
    for key, value in extra.items():
        click.echo(f"{key}: {value}")
    if json_path is not None:
        payload = {"benchmark": kind, "environment": env, "results": [r.to_dict() for r in results], **extra}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(payload, indent=1) + "\n")
        click.echo(f"wrote {json_path}")


def _common(command):
    options = [
        click.option("--device", type=DEVICE, default="auto", show_default=True),
        click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed iterations."),
        click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True, help="Timed per repeat."),
        click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True, help="Median of these."),
        click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write JSON here."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _model_options(command):
    options = [
        click.option("--model", default="resnet50", show_default=True, help="A name of `dtrain models`."),
        click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True, help="Per device."),
        click.option("--amp", type=AMP, default="none", show_default=True),
        click.option("--channels-last", is_flag=True),
        click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
        click.option("--image-size", type=click.IntRange(min=8), default=224, show_default=True),
        click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _setup(model, batch, amp, channels_last, compile_, image_size, num_classes) -> ModelSetup:
    if model not in models.names():
        raise click.UsageError(f"--model {model} is not a model; see `dtrain models`")
    return ModelSetup(model, batch, amp, channels_last, compile_, num_classes, image_size)


def _loader_options(command):
    options = [
        click.option("--data", "root", required=True, type=click.Path(exists=True, file_okay=False),
                     help="A directory written by `dtrain prepare`."),
        click.option("--source", type=click.Choice(SOURCES), default="files", show_default=True),
        click.option("--augment", default="random_resized_crop", show_default=True,
                     help="data.train_augment of every loader."),
        click.option("--crop", type=click.IntRange(min=8), default=224, show_default=True),
        click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
                     help="Worker processes (torch) / threads (DALI, FFCV)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group()
def bench() -> None:
    """Loader, model and end-to-end throughput benchmarks (img/s, median of repeats)."""


@bench.command("loaders")
@_loader_options
@click.option("--loaders", "names", default="torch,dali,ffcv", show_default=True, help="Comma list.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True)
@_common
def loaders_command(root, source, augment, crop, workers, names, batch, device, warmup, iters, repeats, json_path):
    """Loader-only img/s of each loader over the same prepared data, measured round-robin."""
    device = _device(device)
    timing = Timing(warmup, iters, repeats)
    configs = [loader_config(str(root), n.strip(), source=source, augment=augment, crop=crop, workers=workers)
               for n in names.split(",") if n.strip()]
    results = _one_line_errors(bench_loaders, configs, batch_size=batch, device=device, timing=timing)
    extra = {}
    base = next((r for r in results if r.name == "loader:torch"), None)
    if base is not None:
        extra["ratio_to_torch"] = {r.name: round(r.images_per_s / base.images_per_s, 3) for r in results}
        per_core = base.details["images_per_cpu_second"]
        extra["ratio_to_torch_per_core"] = {r.name: round(r.details["images_per_cpu_second"] / per_core, 3)
                                            for r in results}
    _report("loaders", results, device, json_path, **extra)


@bench.command("model")
@_model_options
@_common
def model_command(model, batch, amp, channels_last, compile_, image_size, num_classes, device, warmup, iters, repeats,
                  json_path):
    """Model-only img/s on a synthetic on-device batch: fwd + bwd + SGD step."""
    device = _device(device)
    setup = _setup(model, batch, amp, channels_last, compile_, image_size, num_classes)
    result = _one_line_errors(bench_model, setup, device, Timing(warmup, iters, repeats))
    _report("model", [result], device, json_path)


@bench.command("e2e")
@_model_options
@_loader_options
@click.option("--loader", "name", type=click.Choice(loader_names()), default="dali", show_default=True)
@_common
def e2e_command(model, batch, amp, channels_last, compile_, image_size, num_classes, root, source, augment, crop,
                workers, name, device, warmup, iters, repeats, json_path):
    """End-to-end img/s (loader + training step) next to model-only on the same setup."""
    device = _device(device)
    setup = _setup(model, batch, amp, channels_last, compile_, crop, num_classes)
    data = loader_config(str(root), name, source=source, augment=augment, crop=crop, workers=workers)
    timing = Timing(warmup, iters, repeats)
    results = [_one_line_errors(bench_model, setup, device, timing),
               _one_line_errors(bench_end_to_end, setup, data, device, timing)]
    ratio = round(results[1].images_per_s / results[0].images_per_s, 4)
    _report("e2e", results, device, json_path, e2e_over_model=ratio)


@bench.command("overhead")
@_model_options
@_common
def overhead_command(model, batch, amp, channels_last, compile_, image_size, num_classes, device, warmup, iters,
                     repeats, json_path):
    """The whole loop iteration of `dtrain train` vs a bare torch loop, same model and in-memory batch."""
    device = _device(device)
    setup = _setup(model, batch, amp, channels_last, compile_, image_size, num_classes)
    results = _one_line_errors(bench_overhead, setup, device, Timing(warmup, iters, repeats))
    _report("overhead", results, device, json_path, dtrain_over_bare=results[1].details["ratio_to_bare"],
            dtrain_over_bare_cpu_time=results[1].details["ratio_to_bare_cpu_time"])


@bench.command("checkpoint")
@click.option("--models", "names", default="resnet50,resnet200", show_default=True, help="Comma list.")
@click.option("--saves", type=click.IntRange(min=1), default=3, show_default=True, help="Median of these.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write JSON here.")
def checkpoint_command(names, saves, device, json_path):
    """Seconds a checkpoint save blocks training (state copied to CPU; written in the background)."""
    device = _device(device)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in models.names()]
    if unknown:
        raise click.UsageError(f"--models: {', '.join(unknown)} not a model; see `dtrain models`")
    results = [_one_line_errors(bench_checkpoint, name, device, saves) for name in chosen]
    _report("checkpoint", results, device, json_path)
