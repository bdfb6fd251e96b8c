"""`dtrain prepare ...`: one subcommand per source, plus `verify`.

Every subcommand writes the layout of dtrain_prep.layout under --out. The webdataset shards are
always written (they are the store the .beton and `verify` read back); --formats picks the rest.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import click

from . import layout
from .errors import DataPrepError
from .ffcv_export import FFCV_MODES, FfcvOptions
from .images import ImageOptions
from .pipeline import PrepareOptions, run_prepare
from .sources.arrays import cifar_plan, digits_plan, synthetic_plan
from .sources.folder import folder_plan
from .sources.imagenet import imagenet_plan
from .verify import verify_output


def _parse_formats(ctx, param, value: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip() for f in value.split(",") if f.strip()))
    unknown = [f for f in chosen if f not in layout.FORMATS]
    if unknown:
        raise click.BadParameter(f"unknown format {unknown[0]!r}; choose from {','.join(layout.FORMATS)}")
    return tuple(sorted(set(chosen) | {"wds"}, key=layout.FORMATS.index))


def output_options(default_quality: int = 95):
    """Options shared by every writing subcommand; they become a PrepareOptions `options`."""
    def decorate(command):
        @click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory.")
        @click.option("--formats", default=",".join(layout.FORMATS), show_default=True, callback=_parse_formats,
                      help="Comma list of wds,ffcv,filelist (wds shards are always written; manifest too).")
        @click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True,
                      help="Worker processes.")
        @click.option("--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
                      help="Samples per webdataset shard (also the resume granularity).")
        @click.option("--max-side", type=click.IntRange(min=8), default=None,
                      help="Shrink images so that the longer side is at most this (default: keep size).")
        @click.option("--jpeg-quality", type=click.IntRange(1, 100), default=default_quality, show_default=True,
                      help="Quality of JPEGs that must be (re-)encoded; clean JPEGs keep their bytes.")
        @click.option("--max-pixels", type=click.IntRange(min=1), default=ImageOptions().max_pixels,
                      show_default=True, help="Reject images with more pixels (read from the header: "
                                              "a decompression bomb is rejected before it is decoded). "
                                              "The only limit: Pillow's own is not applied.")
        @click.option("--ffcv-mode", type=click.Choice(FFCV_MODES), default=None,
                      help="RGBImageField write_mode (default: raw for images <= 64 px, else jpg).")
        @click.option("--ffcv-max-side", type=click.IntRange(min=8), default=None, help="RGBImageField max_resolution.")
        @click.option("--ffcv-quality", type=click.IntRange(1, 100), default=90, show_default=True)
        @click.option("--ffcv-compress-probability", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                      help="Share of images stored as JPEG in --ffcv-mode proportion.")
        @click.option("--copy-jpegs", is_flag=True, help="File lists point at copies under OUT/jpeg, not at --src.")
        @click.option("--overwrite", is_flag=True, help="Rebuild OUT even if it holds a finished output.")
        @click.option("--quiet", is_flag=True, help="No progress bar or messages.")
        @click.option("--minival", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Move this many training images (seeded) to a held-out split 'minival'.")
        @functools.wraps(command)
        def wrapper(*args, out, formats, workers, shard_size, max_side, jpeg_quality, max_pixels, ffcv_mode,
                    ffcv_max_side, ffcv_quality, ffcv_compress_probability, copy_jpegs, overwrite, quiet, minival,
                    **kwargs):
            options = PrepareOptions(
                out=out.resolve(), formats=formats, workers=workers, shard_size=shard_size,
                image=ImageOptions(max_side=max_side, jpeg_quality=jpeg_quality, max_pixels=max_pixels),
                ffcv=FfcvOptions(ffcv_mode, ffcv_max_side, ffcv_quality, ffcv_compress_probability),
                copy_jpegs=copy_jpegs, overwrite=overwrite, quiet=quiet, minival=minival)
            return command(*args, options=options, **kwargs)
        return wrapper
    return decorate


CLASSES_OPTION = click.option(
    "--classes", type=click.Path(path_type=Path), default=None,
    help="Pin the class list: one synset per line, label = line number (e.g. LOC_synset_mapping.txt). "
         "Default: the sorted class folders (or the train tar's per-class tars), empty ones included: "
         "an empty class keeps its label.")


def check_out_outside_src(src: Path, out: Path) -> None:
    """An --out inside --src would be scanned as input (its folders become classes, OUT/src a loop)."""
    src, out = Path(src).resolve(), Path(out).resolve()
    if out == src or out.is_relative_to(src):
        raise DataPrepError(f"--out {out} is inside --src {src}: choose an --out outside the source tree")


@click.group()
def prepare() -> None:
    """Write ImageNet, CIFAR, digits or any image folder into webdataset (DALI), FFCV and Parquet."""


@prepare.command()
@click.option("--src", required=True, type=click.Path(path_type=Path),
              help="ImageNet root: train/ (+ val/) trees, or the original tars, or Kaggle's layout.")
@click.option("--train-tar", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ILSVRC2012_img_train.tar (default: looked up in --src).")
@click.option("--val-tar", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="ILSVRC2012_img_val.tar (default: looked up in --src).")
@click.option("--val-labels", type=click.Path(path_type=Path),
              help="Flat val labels: LOC_val_solution.csv, synsets per line, or the devkit ground truth.")
@click.option("--devkit", type=click.Path(path_type=Path, file_okay=False),
              help="ILSVRC2012_devkit_t12 folder (its data/meta.mat maps ground-truth ids to synsets).")
@click.option("--synset-names", type=click.Path(path_type=Path, dir_okay=False),
              help="LOC_synset_mapping.txt (default: looked up in --src).")
@CLASSES_OPTION
@output_options()
def imagenet(src, train_tar, val_tar, val_labels, devkit, synset_names, classes, options) -> None:
    """ILSVRC-2012 from an extracted tree or the original tars."""
    check_out_outside_src(src, options.out)
    run_prepare(imagenet_plan(src, train_tar, val_tar, val_labels, devkit, synset_names, classes), options)


@prepare.command()
@click.option("--src", required=True, type=click.Path(path_type=Path),
              help="SRC/train/<class>/* (+ SRC/val/<class>/*), or SRC/<class>/*.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Hold out this share of each class as val when SRC has no train/ and val/.")
@click.option("--seed", type=int, default=0, show_default=True)
@CLASSES_OPTION
@output_options()
def folder(src, val_fraction, seed, classes, options) -> None:
    """Any class-per-folder image tree."""
    check_out_outside_src(src, options.out)
    run_prepare(folder_plan(src, val_fraction, seed, classes), options)


@prepare.command()
@click.option("--size", type=click.IntRange(min=8), default=32, show_default=True, help="Side of the upscaled image.")
@click.option("--val-fraction", type=click.FloatRange(0.05, 0.9), default=0.2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@output_options()
def digits(size, val_fraction, seed, options) -> None:
    """scikit-learn's bundled 1,797 handwritten digits (real 8x8 scans), upscaled to RGB."""
    run_prepare(digits_plan(size, val_fraction, seed), options)


def _cifar_command(variant: str):
    @prepare.command(name=variant)
    @click.option("--src", required=True, type=click.Path(path_type=Path),
                  help=f"The python-version {variant} folder or its .tar.gz (no download).")
    @click.option("--holdout", is_flag=True, help="train/val = 45k/5k of the training set (the papers' split) "
                                                  "instead of training set/test set.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @output_options()
    def command(src, holdout, seed, options) -> None:
            run_prepare(cifar_plan(src, variant, holdout, seed), options)

    command.__doc__ = f"{variant.upper()} from its python pickle archive."
    return command


cifar10 = _cifar_command("cifar10")
cifar100 = _cifar_command("cifar100")


@prepare.command()
@click.option("--count", type=click.IntRange(min=1), default=1000, show_default=True, help="Train images.")
@click.option("--val-count", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--width", type=click.IntRange(min=8), default=500, show_default=True)
@click.option("--height", type=click.IntRange(min=8), default=375, show_default=True)
@click.option("--num-classes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@output_options(default_quality=90)
def synthetic(count, val_count, width, height, num_classes, seed, options) -> None:
    """Random images of a given size and count (for benchmarks)."""
    run_prepare(synthetic_plan(count, val_count, width, height, num_classes, seed), options)


@prepare.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True)
def verify(out, quiet) -> None:
    """Re-read every output of OUT; exit 1 with the first mismatch."""
    report = verify_output(out.resolve(), show_progress=not quiet)
    if not quiet:
        click.echo(report)
