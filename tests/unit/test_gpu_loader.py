"""data.loader=gpu against the reference loader (data.loader=torch), on CPU.

Which decoder is compared: both loaders decode with PIL here (data.gpu_decoder=pil; the
torchvision wheels on PyPI are CUDA builds that do not load beside the CPU torch), so any
difference comes from the device-side augmentation. Tolerance: at most 1 pixel level (1/255
before normalisation) on under 10% of the pixels. Single-axis resizes, crops, padding, flips,
lighting and normalisation are bit-exact; Pillow 13 runs some two-axis resizes vertical pass
first (the order of its Resample.c we could read is horizontal first) and rounds between the
passes, which gives +-1 level on ~4% of the pixels of random-resized crops.
nvJPEG against libjpeg-turbo is measured on a GPU by benchmarks/gpu_check.sh.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data import build_eval_loader, build_train_loader
from dtrain.data.gpu_decode import DecodeError, decode_batch, pick_decoder
from dtrain.data.gpu_loader import SampleNames
from dtrain.data.gpu_resample import axis_coefficients, resample, source_rows
from dtrain.data.sources import ManifestSource, read_manifest
from dtrain.errors import DtrainError

SIZES = [(60, 45), (45, 60), (50, 50), (70, 40)]
SMALL = dict(crop_size=32, scale_range=[40, 56], val_resize=40, val_crop=32, gpu_decoder="pil")
LEVEL = 1.0 / 255.0  # one pixel level before normalisation


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("gpu_prepared", counts={"train": 32, "val": 7}, sizes=SIZES)


def _unit(root, **kw) -> dict:
    # mean 0, std 1: batch values are pixel levels / 255 (+ lighting), so tolerances read in levels
    return dict(root=str(root), mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], **SMALL) | kw


def _batches(loader, epoch: int = 0, skip: int = 0):
    loader.set_epoch(epoch, skip)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def _pair(prepared, **kw):
    return [build_train_loader(DataConfig(loader=name, **_unit(prepared, **kw)), batch_size=8, rank=0,
                               world_size=1, seed=11) for name in ("torch", "gpu")]


def _assert_close(pairs) -> None:
    """Every pixel within 1 level, and under 10% of them off at all."""
    differing = total = 0
    for a, b in pairs:
        assert a.shape == b.shape and a.dtype == b.dtype
        gap = (a - b).abs()
        assert gap.max().item() <= LEVEL * 1.001
        differing, total = differing + int((gap > LEVEL / 2).sum()), total + gap.numel()
    assert total > 0 and differing / total < 0.10


@pytest.mark.parametrize("augment", ["scale_jitter", "random_resized_crop", "pad_crop", "none"])
def test_train_batches_equal_the_torch_loader(prepared, augment):
    torch_loader, gpu_loader = _pair(prepared, train_augment=augment, workers=0)
    reference, ours = _batches(torch_loader, 1), _batches(gpu_loader, 1)
    assert len(reference) == len(ours) == 4 and ours[0][0].shape == (8, 3, 32, 32)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(reference, ours, strict=True))
    _assert_close((a[0], b[0]) for a, b in zip(reference, ours, strict=True))


@pytest.mark.parametrize("mode", ["center", "ten-crop", "single-320", "multi-scale"])
def test_eval_views_equal_the_torch_loader(prepared, mode):
    data = _unit(prepared, workers=0)
    batches = [list(build_eval_loader(DataConfig(loader=name, **data), mode=mode, batch_size=3, rank=0,
                                      world_size=1, scales=[40, 64]))
               for name in ("torch", "gpu")]
    assert len(batches[0]) == len(batches[1]) > 0
    for a, b in zip(*batches, strict=True):
        assert len(a.views) == len(b.views) and torch.equal(a.labels, b.labels) and torch.equal(a.valid, b.valid)
    _assert_close((x, y) for a, b in zip(*batches, strict=True) for x, y in zip(a.views, b.views, strict=True))


@pytest.fixture(scope="module")
def one_size(make_prepared):
    """CIFAR-like: one image size, and a mean image stored where `dtrain prepare` puts it. The mean
    is random rather than the data's own, so a loader that skipped it would be far off (levels
    of up to 255), not within the 1-level tolerance."""
    from dtrain_prep import layout

    root = make_prepared("gpu_one_size", counts={"train": 16, "val": 5}, sizes=[(32, 32)])
    np.save(root / layout.PER_PIXEL_MEAN, np.random.default_rng(7).random((32, 32, 3), dtype=np.float32))
    return root


PER_PIXEL = dict(normalize="per_pixel_mean", crop_size=32, val_resize=32, val_crop=32, std=[0.5, 0.25, 1.0])


@pytest.mark.parametrize("augment", ["pad_crop", "scale_jitter"])
def test_per_pixel_mean_train_batches_equal_the_torch_loader(one_size, augment):
    kw = _unit(one_size, workers=0, train_augment=augment, pad=4, **(PER_PIXEL | dict(scale_range=[32, 40])))
    torch_loader, gpu_loader = [build_train_loader(DataConfig(loader=name, **kw), batch_size=8, rank=0,
                                                   world_size=1, seed=11) for name in ("torch", "gpu")]
    reference, ours = _batches(torch_loader, 1), _batches(gpu_loader, 1)
    assert len(reference) == len(ours) == 2
    # std 0.25 stretches one level to 4/255: compare in pixel levels again
    scale = torch.tensor(PER_PIXEL["std"]).view(1, 3, 1, 1)
    _assert_close((a[0] * scale, b[0] * scale) for a, b in zip(reference, ours, strict=True))


@pytest.mark.parametrize("mode", ["center", "multi-scale"])
def test_per_pixel_mean_eval_views_equal_the_torch_loader(one_size, mode):
    # multi-scale views of 40x40 get the mean image resized to them, in both loaders
    kw = _unit(one_size, workers=0, **PER_PIXEL)
    batches = [list(build_eval_loader(DataConfig(loader=name, **kw), mode=mode, batch_size=5, rank=0,
                                      world_size=1, scales=[32, 40])) for name in ("torch", "gpu")]
    scale = torch.tensor(PER_PIXEL["std"]).view(1, 3, 1, 1)
    _assert_close((x * scale, y * scale)
                  for a, b in zip(*batches, strict=True) for x, y in zip(a.views, b.views, strict=True))


def test_per_pixel_mean_without_a_stored_mean_is_one_line_with_the_fix(prepared):
    with pytest.raises(DtrainError, match="data.normalize=channel"):
        build_train_loader(DataConfig(loader="gpu", **_unit(prepared, workers=0, normalize="per_pixel_mean")),
                           batch_size=4, rank=0, world_size=1, seed=0)


def test_workers_resume_and_epochs(prepared):
    data = DataConfig(loader="gpu", **_unit(prepared, workers=0))
    single = _batches(build_train_loader(data, batch_size=4, rank=0, world_size=1, seed=5), epoch=2)
    loader = build_train_loader(DataConfig(loader="gpu", **_unit(prepared, workers=2)), batch_size=4, rank=0,
                                world_size=1, seed=5)
    resumed = _batches(loader, epoch=2, skip=3)
    assert len(resumed) == len(single) - 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(single[3:], resumed, strict=True))
    other = _batches(loader, epoch=3)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(single, other, strict=True))


def test_two_ranks_read_each_used_sample_once_per_epoch(prepared, monkeypatch):
    seen = Counter()
    from dtrain.data import gpu_loader

    original = gpu_loader._GpuTrainSamples.__getitem__

    def recording(self, key):
        seen[key[1]] += 1
        return original(self, key)

    monkeypatch.setattr(gpu_loader._GpuTrainSamples, "__getitem__", recording)
    for rank in range(2):
        loader = build_train_loader(DataConfig(loader="gpu", **_unit(prepared, workers=0)), batch_size=5, rank=rank,
                                    world_size=2, seed=3)
        assert len(loader) == 32 // 10
        _batches(loader, epoch=4)
    assert len(seen) == 30 and set(seen.values()) == {1}  # 3 global batches of 10; the last 2 dropped


def test_output_dtype_and_channels_last(prepared):
    from dtrain.data.gpu_loader import build_train

    loader = build_train(DataConfig(loader="gpu", **_unit(prepared, workers=0)), batch_size=4, rank=0,
                         world_size=1, seed=0, device=torch.device("cpu"), dtype=torch.bfloat16, channels_last=True)
    images, _ = next(iter(loader))
    assert images.dtype == torch.bfloat16 and images.is_contiguous(memory_format=torch.channels_last)


def test_a_broken_jpeg_is_named_by_its_sample(prepared):
    good = torch.frombuffer(bytearray(next((prepared / "jpeg" / "train").iterdir()).read_bytes()), dtype=torch.uint8)
    broken = good[: len(good) // 3].clone()
    broken[:2] = 0  # not even a JPEG marker
    names = SampleNames(ManifestSource(read_manifest(prepared, "train")))
    with pytest.raises(DecodeError, match=r"sample train\[17\] \(train/\S+\.png\)"):
        decode_batch("pil", [good, broken], lambda i: names(16 + i), torch.device("cpu"))


def test_decoder_choice(monkeypatch):
    from dtrain.data import gpu_decode

    monkeypatch.setattr(gpu_decode, "torchvision_decode_jpeg", lambda: None)
    assert pick_decoder("auto") == "pil"
    with pytest.raises(DtrainError, match="gpu_decoder=pil"):
        pick_decoder("torchvision")


def test_single_axis_resampling_equals_pillow():
    rng = np.random.default_rng(0)
    for _ in range(40):
        width, height = int(rng.integers(8, 90)), int(rng.integers(8, 90))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        out_w, out_h = (int(rng.integers(4, 120)), height) if rng.random() < 0.5 else (width, int(rng.integers(4, 120)))
        reference = np.asarray(Image.fromarray(pixels).resize((out_w, out_h), Image.BILINEAR))
        arrays = (*axis_coefficients(width, 0, width, out_w, 0, out_w),
                  *axis_coefficients(height, 0, height, out_h, 0, out_h))
        ours = resample(torch.from_numpy(pixels).permute(2, 0, 1), *map(torch.from_numpy, arrays),
                        source_rows(arrays[2], arrays[3])).permute(1, 2, 0).numpy()
        assert np.array_equal(ours, reference)


def test_imagenet_recipes_are_gpu_first_and_overridable(prepared):
    from dtrain.resolve import Placement, load_config

    cfg = load_config("resnet50")
    assert (cfg.train.amp, cfg.train.channels_last, cfg.data.loader) == ("auto", "auto", "auto")
    on_cuda = load_config("resnet50", placement=Placement("cuda"))  # the resolver's device stage
    assert (on_cuda.train.amp, on_cuda.train.channels_last, on_cuda.data.loader) == ("bf16", True, "gpu")
    on_cpu = load_config("resnet50", placement=Placement("cpu"))
    assert (on_cpu.train.amp, on_cpu.train.channels_last, on_cpu.data.loader) == ("none", False, "torch")
    explicit = ["train.amp=none", "train.channels_last=false", "data.loader=dali"]
    kept = load_config("resnet50", explicit, Placement("cuda"))
    assert (kept.train.amp, kept.train.channels_last, kept.data.loader) == ("none", False, "dali")
    loader = build_train_loader(DataConfig(loader="auto", **_unit(prepared, workers=0)), batch_size=4, rank=0,
                                world_size=1, seed=0, device="cpu")
    assert type(loader).__name__ == "TrainLoader"  # auto on CPU is the torch loader


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_cuda_batches_match_the_cpu_torch_loader(prepared, decoder):
    """On the device: same samples and labels; pixels within 1 level with PIL decoding, and with
    nvJPEG within its decoder difference (mean under 2 levels: nvJPEG's IDCT/upsampling differ)."""
    if decoder == "torchvision" and pick_decoder("auto") != "torchvision":
        pytest.skip("torchvision.io does not load here")
    data = _unit(prepared, workers=2, train_augment="random_resized_crop", gpu_decoder=decoder)
    reference = _batches(build_train_loader(DataConfig(loader="torch", **data), batch_size=8, rank=0,
                                            world_size=1, seed=11), 1)
    loader = build_train_loader(DataConfig(loader="gpu", **data), batch_size=8, rank=0, world_size=1, seed=11,
                                device="cuda")
    ours = _batches(loader, 1)
    assert all(b[0].is_cuda and torch.equal(a[1], b[1].cpu()) for a, b in zip(reference, ours, strict=True))
    if decoder == "pil":
        _assert_close((a[0], b[0].cpu()) for a, b in zip(reference, ours, strict=True))
    else:
        gaps = torch.cat([(a[0] - b[0].cpu()).abs().flatten() for a, b in zip(reference, ours, strict=True)])
        assert gaps.mean().item() < 2 * LEVEL


def test_repeated_augmentation_equals_the_torch_loader(prepared):
    """data.repeated_augment_reps: the torch loader's repeated order and per-copy augmentation."""
    torch_loader, gpu_loader = _pair(prepared, train_augment="random_resized_crop", repeated_augment_reps=2, workers=0)
    reference, ours = _batches(torch_loader, 1), _batches(gpu_loader, 1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(reference, ours, strict=True))
    _assert_close((a[0], b[0]) for a, b in zip(reference, ours, strict=True))
    images, labels = ours[0]  # one process: a sample's 2 copies are neighbours, each cropped its own way
    assert labels[0] == labels[1] and not torch.equal(images[0], images[1])
