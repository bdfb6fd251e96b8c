"""Tiny raw datasets in their real layouts, with the odd files real ImageNet holds.

Used by the tests and the benchmark (and usable by dtrain.data's tests through the CLI output):
an ImageNet-layout tree (train/<synset>/*.JPEG, flat val + LOC_val_solution.csv,
LOC_synset_mapping.txt), the same data as the original tars, and a CIFAR python archive.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .samples import synthetic_pixels

SYNSETS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
           "n01484850": "great white shark, white shark, man-eater"}


@dataclass
class TreeFacts:
    """What a correct prepare of the tree must report."""
    train_good: int = 0
    val_good: int = 0
    converted: dict[str, str] = field(default_factory=dict)   # relpath -> kind
    rejected: dict[str, str] = field(default_factory=dict)    # relpath -> kind
    val_labels: dict[str, str] = field(default_factory=dict)  # file name -> synset


def _jpeg(pixels: np.ndarray, mode: str = "RGB", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_file(width: int, height: int, bit_depth: int, colour_type: int, pixel_data: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixel_data))
            + chunk(b"IEND", b""))


def png_declaring(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header declares width x height (a decompression bomb's shape)."""
    return _png_file(width, height, 8, 2, b"\0" * 64)


def bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of width x height: a huge image in a small file (182 Mpx: 48 KB)."""
    row = b"\0" * (1 + -(-width // 8))  # filter byte "none", then 8 pixels a byte
    return _png_file(width, height, 1, 0, row * height)


# Planted files: name -> (how to make its bytes from a clean image's pixels, what must happen to it)
ODD_FILES = {
    "png_named_jpeg": (_png, "converted"),
    "cmyk": (lambda p: _jpeg(p, "CMYK"), "converted"),
    "grayscale": (lambda p: _jpeg(p, "L"), "converted"),
    "truncated": (lambda p: _jpeg(p)[: len(_jpeg(p)) // 2], "rejected"),
    "zero_bytes": (lambda p: b"", "rejected"),
    "text": (lambda p: b"this is not an image\n", "rejected"),
}


def build_imagenet_tree(root: Path, per_class: int = 8, val_per_class: int = 3, width: int = 64,
                        height: int = 48, odd_files: bool = True) -> TreeFacts:
    """root/train/<synset>/<synset>_<i>.JPEG, root/val/ILSVRC2012_val_<n>.JPEG, label files."""
    facts = TreeFacts()
    seed = 0
    for synset in SYNSETS:
        class_dir = root / "train" / synset
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed += 1
            (class_dir / f"{synset}_{i}.JPEG").write_bytes(_jpeg(synthetic_pixels(seed, width, height)))
            facts.train_good += 1
    if odd_files:
        for n, (kind, (make, fate)) in enumerate(ODD_FILES.items()):
            synset = list(SYNSETS)[n % len(SYNSETS)]
            relpath = f"train/{synset}/{synset}_odd_{kind}.JPEG"
            (root / relpath).write_bytes(make(synthetic_pixels(1000 + n, width, height)))
            (facts.converted if fate == "converted" else facts.rejected)[relpath] = kind
            facts.train_good += fate == "converted"
    val_dir = root / "val"
    val_dir.mkdir(parents=True, exist_ok=True)
    number = 0
    for _ in range(val_per_class):
        for synset in SYNSETS:
            number += 1
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            mode = "L" if odd_files and number == 2 else "RGB"
            (val_dir / name).write_bytes(_jpeg(synthetic_pixels(5000 + number, width, height), mode))
            if mode == "L":
                facts.converted[f"val/{name}"] = "grayscale"
            facts.val_labels[name] = synset
            facts.val_good += 1
    lines = ["ImageId,PredictionString"]
    lines += [f"{Path(n).stem},{s} 10 10 40 30" for n, s in sorted(facts.val_labels.items(), reverse=True)]
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{s} {w}\n" for s, w in SYNSETS.items()))
    return facts


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def build_imagenet_tars(tree: Path, dest: Path) -> None:
    """The original distribution of `tree`: a tar of per-class tars and a flat val tar."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / "ILSVRC2012_img_train.tar", "w") as outer:
        for class_dir in sorted((tree / "train").iterdir()):
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as inner:
                for image in sorted(class_dir.iterdir()):
                    _add_bytes(inner, image.name, image.read_bytes())
            _add_bytes(outer, f"{class_dir.name}.tar", buffer.getvalue())
    if (tree / "val").is_dir():
        with tarfile.open(dest / "ILSVRC2012_img_val.tar", "w") as val:
            for image in sorted((tree / "val").iterdir()):
                _add_bytes(val, image.name, image.read_bytes())
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        (dest / name).write_bytes((tree / name).read_bytes())


def build_cifar_archive(path: Path, variant: str = "cifar10", per_batch: int = 10, seed: int = 0) -> dict:
    """A .tar.gz in the real python-pickle format with per_batch images in each batch file."""
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        top, names, label_key, meta_name, names_key = "cifar-10-batches-py", [f"c{i}" for i in range(10)], \
            b"labels", "batches.meta", b"label_names"
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        top, names, label_key, meta_name, names_key = "cifar-100-python", [f"c{i:03d}" for i in range(100)], \
            b"fine_labels", "meta", b"fine_label_names"
        batches = ["train", "test"]
    contents = {}
    with tarfile.open(path, "w:gz") as tar:
        for batch in batches:
            count = per_batch * (5 if variant == "cifar100" and batch == "train" else 1)
            data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, len(names), size=count)]
            contents[batch] = (data, labels)
            record = {b"batch_label": batch.encode(), b"data": data, label_key: labels,
                      b"filenames": [f"{batch}_{i}.png".encode() for i in range(count)]}
            _add_bytes(tar, f"{top}/{batch}", pickle.dumps(record))
        _add_bytes(tar, f"{top}/{meta_name}", pickle.dumps({names_key: [n.encode() for n in names]}))
    return contents
