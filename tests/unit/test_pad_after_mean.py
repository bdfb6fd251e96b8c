"""CIFAR's pad-and-crop in the papers' order: the mean is subtracted first, then the image is padded
with zeros and cropped (R1 sec. 4.2; Caffe's mean file, fb.resnet.torch's ColorNormalize before
RandomCrop(32, 4)). Every loader of the CIFAR pipeline is checked against a direct numpy computation
of that order: each training image it yields must equal (image / 255 - mean) / std, zero-padded by
4, cropped and maybe flipped, for one of the dataset's images and one crop position."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data import build_train_loader
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.data.transforms import TrainTransform
from dtrain_prep import layout

PAD, SIZE = 4, 32
STD = [0.25, 0.5, 0.2]
CHANNEL_MEAN = [0.3, 0.5, 0.7]
CIFAR = dict(train_augment="pad_crop", pad=PAD, crop_size=SIZE, flip=True, lighting_std=0.0, std=STD,
             val_resize=SIZE, val_crop=SIZE, workers=1, gpu_decoder="pil", source="files")


def reference_pad_crop(image: np.ndarray, mean, left: int, top: int, flip: bool) -> np.ndarray:
    """numpy, the papers' order: (image / 255 - mean) / std, zero-pad, crop, flip -> float64 CHW.
    mean: HxWx3 (per pixel) or 3 (per channel), in [0, 1]."""
    normalised = (image.astype(np.float64) / 255.0 - mean) / np.asarray(STD)
    padded = np.pad(normalised, ((PAD, PAD), (PAD, PAD), (0, 0)))
    crop = padded[top:top + SIZE, left:left + SIZE]
    return (crop[:, ::-1] if flip else crop).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    """`dtrain prepare synthetic` at 32x32: shards, JPEG files, a raw-pixel .beton and the mean image
    of the train split (a one-size dataset, as CIFAR)."""
    from dtrain_prep.cli import prepare

    out = tmp_path_factory.mktemp("cifar_like") / "data"
    result = CliRunner().invoke(prepare, ["synthetic", "--count", "24", "--val-count", "4", "--width", "32",
                                          "--height", "32", "--num-classes", "3", "--workers", "1", "--quiet",
                                          "--ffcv-mode", "raw", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / layout.PER_PIXEL_MEAN).is_file()
    return out


def _candidates(root, mean) -> tuple[np.ndarray, list[tuple[int, int, int, bool]]]:
    """Every (train image, crop position, flip) of the numpy reference: [N, 3, 32, 32] and their keys."""
    source = ManifestSource(read_manifest(root, "train"), "files")
    references, keys = [], []
    for index in range(len(source)):
        image = np.asarray(source.image(index).convert("RGB"))  # PIL's decode, as the torch loader's
        for top in range(2 * PAD + 1):
            for left in range(2 * PAD + 1):
                for flip in (False, True):
                    references.append(reference_pad_crop(image, mean, left, top, flip))
                    keys.append((index, left, top, flip))
    return np.stack(references).astype(np.float32), keys


def _decoded(root, index: int) -> np.ndarray:
    return np.asarray(ManifestSource(read_manifest(root, "train"), "files").image(index).convert("RGB"))


def _matches(batches, references: np.ndarray, keys, tolerance: float) -> list[tuple[int, int, int, bool]]:
    """For each yielded image, the reference it equals (within `tolerance`); the padding must be 0."""
    flat = references.reshape(len(references), -1)
    found = []
    for images, _ in batches:
        for image in images.float().numpy():
            gaps = np.abs(flat - image.reshape(-1)).max(axis=1)
            best = int(gaps.argmin())
            assert gaps[best] <= tolerance, f"no numpy mean-then-pad view within {tolerance}: {gaps[best]}"
            index, left, top, flip = keys[best]
            padded = np.ones((3, SIZE + 2 * PAD, SIZE + 2 * PAD), dtype=bool)
            padded[:, PAD:PAD + SIZE, PAD:PAD + SIZE] = False
            border = padded[:, top:top + SIZE, left:left + SIZE][:, :, ::-1 if flip else 1]
            assert np.all(image[border] == 0.0), "the padding must be exactly 0 after the normalisation"
            found.append(keys[best])
    return found


def _batches(loader, epochs=(0, 1)):
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(images.clone(), labels.clone()) for images, labels in loader]
    return out


def _check(root, name: str, normalize: str, tolerance: float) -> None:
    per_pixel = normalize == "per_pixel_mean"
    mean = np.load(root / layout.PER_PIXEL_MEAN).astype(np.float64) if per_pixel else np.asarray(CHANNEL_MEAN)
    data = DataConfig(root=str(root), loader=name, normalize=normalize, mean=CHANNEL_MEAN, **CIFAR)
    loader = build_train_loader(data, batch_size=8, rank=0, world_size=1, seed=3, device="cpu", num_classes=3)
    references, keys = _candidates(root, mean)
    found = _matches(_batches(loader), references, keys, tolerance)
    assert len(found) == 2 * 3 * 8
    # the test is not vacuous: crops off the centre (into the padding) and both flips occur
    assert any((left, top) != (PAD, PAD) for _, left, top, _ in found)
    assert {flip for *_, flip in found} == {False, True}


@pytest.mark.parametrize("normalize", ["per_pixel_mean", "channel"])
@pytest.mark.parametrize("name", ["torch", "gpu"])
def test_torch_and_gpu_loaders_subtract_the_mean_then_pad_with_zeros(cifar_like, name, normalize):
    _check(cifar_like, name, normalize, tolerance=1e-5)


@pytest.mark.parametrize("normalize", ["per_pixel_mean", "channel"])
def test_ffcv_subtracts_the_mean_then_pads_with_zeros(cifar_like, normalize):
    pytest.importorskip("ffcv", reason="FFCV is not installed")
    _check(cifar_like, "ffcv", normalize, tolerance=1e-5)  # raw pixels in the .beton: PIL's decode


def test_dali_normalises_then_pads_with_zeros_and_refuses_the_mean_image_naming_who_can(cifar_like):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from dtrain.errors import ConfigError

    # DALI's own JPEG decoder may differ from PIL's by a level: compare within 2 levels / std
    _check(cifar_like, "dali", "channel", tolerance=2.0 / 255.0 / min(STD))
    with pytest.raises(ConfigError, match="use data.loader=torch, gpu or ffcv for R1's per-pixel mean"):
        build_train_loader(DataConfig(root=str(cifar_like), loader="dali", normalize="per_pixel_mean", **CIFAR),
                           batch_size=8, rank=0, world_size=1, seed=3, device="cpu")


def test_one_sample_equals_numpy_for_its_own_draws(cifar_like):
    # The torch transform's own draws (crop origin, then flip) give exactly numpy's view of them.
    from dtrain.data.sampling import sample_rng

    image = Image.fromarray(_decoded(cifar_like, 5))
    mean = np.load(cifar_like / layout.PER_PIXEL_MEAN).astype(np.float64)
    transform = TrainTransform(DataConfig(root=str(cifar_like), normalize="per_pixel_mean", **CIFAR))
    for epoch in range(6):
        rng = sample_rng(1, epoch, 5)
        left, top = int(rng.integers(0, SIZE + 2 * PAD - SIZE + 1)), int(rng.integers(0, SIZE + 2 * PAD - SIZE + 1))
        flip = bool(rng.random() < 0.5)
        expected = reference_pad_crop(np.asarray(image), mean, left, top, flip)
        got = transform(image, sample_rng(1, epoch, 5)).double().numpy()
        assert np.abs(got - expected).max() < 1e-5
    # the old order (pad the raw pixels, then subtract the crop's positions of the mean) differs
    old = (np.pad(np.asarray(image) / 255.0, ((PAD, PAD), (PAD, PAD), (0, 0)))[:SIZE, :SIZE] - mean) / STD
    assert np.abs(old[:PAD, :PAD]).min() > 0.5  # its border is (0 - mean) / std, not 0
