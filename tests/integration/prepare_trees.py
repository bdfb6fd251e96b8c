"""Shared helpers of the `dtrain prepare` tests: run the CLI in-process, build tiny image trees,
read the manifest back."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner
from PIL import Image

from dtrain_prep import layout
from dtrain_prep.cli import prepare
from dtrain_prep.samples import synthetic_pixels

COMMON = ["--shard-size", "4", "--quiet", "--workers", "1"]


def run_cli(*args, expect: int = 0):
    result = CliRunner().invoke(prepare, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def jpeg(seed: int, width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_pixels(seed, width, height)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_tree(root: Path, classes=("a", "b", "c"), per_class: int = 3) -> Path:
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{name}{i}.jpg").write_bytes(jpeg(c * 100 + i))
    return root


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / layout.MANIFEST).to_pylist()


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]
