"""Sources that hold decoded pixels: scikit-learn's digits, CIFAR-10/100 pickles, synthetic images."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import TypedDict

import numpy as np
from PIL import Image

from ..errors import DataPrepError
from ..plan import ClassInfo, SourcePlan
from ..samples import Sample


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a deterministic per-class holdout (numpy's PCG64: stable across versions)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen = rng.permutation(members)[: round(len(members) * fraction)]
        mask[chosen] = True
    return mask


def _array_samples(split: str, pixels: np.ndarray, labels: np.ndarray, sources: list[str],
                   classes: list[ClassInfo]) -> list[Sample]:
    return [
        Sample(split=split, position=i, source=sources[i], label=int(labels[i]),
               synset=classes[int(labels[i])].synset, kind="array", pixels=pixels[i])
        for i in range(len(labels))
    ]


def _split_plan(dataset, classes, pixels, labels, sources, val_mask, details) -> SourcePlan:
    sources = np.asarray(sources)
    splits = {
        split: _array_samples(split, pixels[mask], labels[mask], list(sources[mask]), classes)
        for split, mask in (("train", ~val_mask), ("val", val_mask)) if mask.any()
    }
    return SourcePlan(dataset, classes, splits, small_images=True, details=details)


def digits_plan(size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> SourcePlan:
    """sklearn's 1,797 real 8x8 scans (values 0..16), upscaled bilinearly to size x size RGB."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BILINEAR)) for g in gray])
    pixels = np.repeat(big[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    classes = [ClassInfo(i, str(i), str(i)) for i in range(10)]
    mask = stratified_holdout(labels, val_fraction, seed)
    sources = [f"sklearn-digits:{i}" for i in range(len(labels))]
    return _split_plan("digits", classes, pixels, labels, sources, mask,
                       {"size": size, "val_fraction": val_fraction, "seed": seed})


class CifarFiles(TypedDict):
    train: list[str]  # member names of the training batches
    test: list[str]
    meta: str
    names: bytes      # keys inside the pickled meta and batches
    labels: bytes


CIFAR_FILES: dict[str, CifarFiles] = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "names": b"label_names", "labels": b"labels"},
    "cifar100": {"train": ["train"], "test": ["test"],
                 "meta": "meta", "names": b"fine_label_names", "labels": b"fine_labels"},
}


def _read_cifar_members(src: Path, wanted: set[str]) -> dict[str, dict]:
    """The pickled batches, from the extracted python-version folder or its .tar.gz."""
    found: dict[str, bytes] = {}
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            if path.is_file() and path.name in wanted and path.name not in found:
                found[path.name] = path.read_bytes()
    elif src.is_file():
        try:
            with tarfile.open(src, "r:*") as tar:
                for member in tar:
                    name = Path(member.name).name
                    extracted = tar.extractfile(member) if member.isreg() else None
                    if extracted is not None and name in wanted and name not in found:
                        found[name] = extracted.read()
        except tarfile.ReadError as exc:
            raise DataPrepError(f"{src} is not a CIFAR python archive (.tar.gz): {exc}") from None
    else:
        raise DataPrepError(f"--src {src} does not exist: give the CIFAR python-version folder or .tar.gz")
    missing = sorted(wanted - set(found))
    if missing:
        raise DataPrepError(f"{src} lacks {', '.join(missing)}: is it the python version of this CIFAR?")
    return {name: pickle.loads(data, encoding="bytes") for name, data in found.items()}


def cifar_plan(src: Path, variant: str, holdout: bool = False, seed: int = 0) -> SourcePlan:
    """train/val = the 50k training set / the 10k test set, or with holdout 45k / 5k of training."""
    spec = CIFAR_FILES[variant]
    batches = _read_cifar_members(Path(src), set(spec["train"] + spec["test"] + [spec["meta"]]))
    names = [n.decode() for n in batches[spec["meta"]][spec["names"]]]
    classes = [ClassInfo(i, name, name) for i, name in enumerate(names)]

    def stack(files):
        pixels = np.concatenate([batches[f][b"data"] for f in files]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(batches[f][spec["labels"]]) for f in files]).astype(np.int64)
        sources = [f"{f}:{row}" for f in files for row in range(len(batches[f][spec["labels"]]))]
        return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)), labels, sources

    details = {"src": str(Path(src).resolve()), "holdout": holdout, "seed": seed}
    if holdout:
        pixels, labels, sources = stack(spec["train"])
        mask = stratified_holdout(labels, 0.1, seed)
        return _split_plan(variant, classes, pixels, labels, sources, mask, details)
    train_pixels, train_labels, train_sources = stack(spec["train"])
    test_pixels, test_labels, test_sources = stack(spec["test"])
    splits = {"train": _array_samples("train", train_pixels, train_labels, train_sources, classes),
              "val": _array_samples("val", test_pixels, test_labels, test_sources, classes)}
    return SourcePlan(variant, classes, splits, small_images=True, details=details)


def synthetic_plan(count: int, val_count: int, width: int, height: int, num_classes: int,
                   seed: int = 0) -> SourcePlan:
    """Smooth random colour images; label = position modulo num_classes."""
    if count < 1 or num_classes < 1:
        raise DataPrepError("--count and --num-classes must be at least 1")
    classes = [ClassInfo(i, f"class{i:04d}", f"class{i:04d}") for i in range(num_classes)]
    splits = {}
    for split_no, (split, n) in enumerate((("train", count), ("val", val_count))):
        if n > 0:
            splits[split] = [
                Sample(split=split, position=i, source=f"synthetic:{split}:{i}", label=i % num_classes,
                       synset=classes[i % num_classes].synset, kind="synthetic",
                       ref=(seed * 1_000_003 + split_no * 100_000_000 + i, width, height))
                for i in range(n)
            ]
    details = {"count": count, "val_count": val_count, "width": width, "height": height, "seed": seed}
    return SourcePlan("synthetic", classes, splits, small_images=max(width, height) <= 64, details=details)
