"""What data.loader=gpu hands to its neighbours, checked on a CPU-only machine.

- the batch format: `dtrain train` and `dtrain bench e2e` ask the loader for train.amp's dtype
  (on CUDA) and train.channels_last's memory format, and it emits them;
- the decode call used on GPUs: torchvision.io.decode_jpeg(list of uint8 1-D tensors,
  device=<the loader's device>, mode=RGB), one call per batch. torchvision does not load beside
  the CPU torch here, so a fake torchvision.io records the call (and decodes with PIL on CPU).
"""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from dtrain import data as data_package
from dtrain.builders import build_loaders
from dtrain.config import DataConfig
from dtrain.data import LoaderBuilders, build_train_loader, gpu_decode, gpu_loader
from dtrain.data.gpu_defaults import BatchFormat, batch_format
from dtrain.distributed.context import DistContext
from dtrain.resolve import load_config

SMALL = dict(crop_size=32, scale_range=[40, 56], val_resize=40, val_crop=32, workers=0)
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(make_prepared):
    return make_prepared("gpu_contract", counts={"train": 8, "val": 4}, sizes=[(48, 40), (40, 48)])


# ---- batch format --------------------------------------------------------------------------


@pytest.mark.parametrize("amp,channels_last,device,expected", [
    ("bf16", True, CUDA, BatchFormat(torch.bfloat16, True)),
    ("fp16", False, CUDA, BatchFormat(torch.float16, False)),
    ("none", True, CUDA, BatchFormat(torch.float32, True)),
    ("auto", "auto", CUDA, BatchFormat(torch.bfloat16, True)),  # the ImageNet recipes on a GPU
    ("auto", "auto", CPU, BatchFormat(torch.float32, False)),
    ("none", True, CPU, BatchFormat(torch.float32, True)),  # channels_last is honoured on CPU too
])
def test_batch_format_of_train_amp_and_channels_last(amp, channels_last, device, expected):
    assert batch_format(amp, channels_last, device) == expected


def _run_config(root, *extra):
    return load_config("cifar10_resnet20", [f"data.root={root}", "data.loader=gpu", "data.gpu_decoder=pil",
                                            "model.num_classes=3", "data.normalize=channel", "data.workers=0",
                                            "data.val_resize=32", "data.val_crop=32", "eval.batch_size=4",
                                            "train.amp=none", *extra])


@pytest.mark.parametrize("channels_last", [True, False])
def test_dtrain_train_gets_gpu_batches_in_train_channels_last_on_cpu(prepared, channels_last):
    cfg = _run_config(prepared, f"train.channels_last={str(channels_last).lower()}")
    train_loader, eval_loader = build_loaders(cfg, DistContext(device=CPU), per_process_batch=4)
    images, _ = next(iter(train_loader))
    view = next(iter(eval_loader)).views[0]
    for batch in (images, view):
        assert batch.dtype == torch.float32  # train.amp=none (AMP is CUDA-only)
        assert batch.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert batch.is_contiguous() != channels_last  # 3 channels: the two formats differ


def _recording_builders(calls: list, formats: bool) -> LoaderBuilders:
    def train(data, **kwargs):
        calls.append(("train", kwargs))

    def evaluate(data, **kwargs):
        calls.append(("eval", kwargs))

    return LoaderBuilders(train, evaluate, formats=formats)


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_on_cuda_the_gpu_loader_is_asked_for_the_amp_dtype_and_channels_last(prepared, monkeypatch, amp, dtype):
    calls: list = []
    monkeypatch.setitem(data_package.LOADERS, "gpu", _recording_builders(calls, formats=True))
    cfg = _run_config(prepared, f"train.amp={amp}", "train.channels_last=true")
    build_loaders(cfg, DistContext(device=CUDA), per_process_batch=4)  # builds, never touches CUDA
    assert [which for which, _ in calls] == ["train", "eval"]
    for _, kwargs in calls:
        assert kwargs["device"] == CUDA and kwargs["dtype"] == dtype and kwargs["channels_last"] is True


def test_loaders_without_formats_get_no_format_arguments(prepared, monkeypatch):
    calls: list = []
    monkeypatch.setitem(data_package.LOADERS, "torch", _recording_builders(calls, formats=False))
    cfg = _run_config(prepared, "data.loader=torch", "train.amp=bf16", "train.channels_last=true")
    build_loaders(cfg, DistContext(device=CUDA), per_process_batch=4)
    assert len(calls) == 2 and all("dtype" not in kw and "channels_last" not in kw for _, kw in calls)


def test_bench_e2e_feeds_the_gpu_loaders_channels_last_batches(prepared, monkeypatch):
    from dtrain.bench import runs

    seen = []
    real = runs.build_train_loader

    class Recording:
        def __init__(self, loader):
            self.loader = loader

        def set_epoch(self, epoch, skip_batches=0):
            self.loader.set_epoch(epoch, skip_batches)

        def __iter__(self):
            for images, labels in self.loader:
                seen.append((images.dtype, images.is_contiguous(memory_format=torch.channels_last)))
                yield images, labels

    monkeypatch.setattr(runs, "build_train_loader", lambda *a, **kw: Recording(real(*a, **kw)))
    setup = runs.ModelSetup(name="resnet20", batch_size=4, channels_last=True, num_classes=3, image_size=32)
    data = DataConfig(root=str(prepared), loader="gpu", gpu_decoder="pil", **SMALL)
    runs.bench_end_to_end(setup, data, CPU, runs.Timing(warmup=0, iterations=1, repeats=1))
    assert seen and set(seen) == {(torch.float32, True)}


# ---- the decode call used on GPUs ------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the fake after recording the call: not an Exception, so decode_batch's per-image
    retry does not swallow it and nothing after the decode needs a real CUDA device."""


@pytest.fixture
def fake_torchvision(monkeypatch):
    """torchvision.io with a decode_jpeg that records every call and decodes with PIL on the CPU
    (or raises _Stop when `stop` is set)."""
    calls: list = []
    state = {"stop": False}
    read_mode = types.SimpleNamespace(RGB="RGB-mode")

    def decode_jpeg(data, *, device, mode):
        calls.append(dict(data=data, device=torch.device(device), mode=mode))
        if state["stop"]:
            raise _Stop
        return [torch.from_numpy(np.array(Image.open(io.BytesIO(t.numpy().tobytes())).convert("RGB"))).permute(2, 0, 1)
                for t in data]

    package = types.ModuleType("torchvision")
    package.io = types.SimpleNamespace(decode_jpeg=decode_jpeg, ImageReadMode=read_mode)
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.io", package.io)
    gpu_decode.torchvision_decode_jpeg.cache_clear()
    yield calls, state
    gpu_decode.torchvision_decode_jpeg.cache_clear()


def _assert_one_batched_call(call, source, indices, device):
    assert isinstance(call["data"], list) and len(call["data"]) == len(indices)
    for tensor, index in zip(call["data"], indices.tolist(), strict=True):
        assert tensor.dtype == torch.uint8 and tensor.dim() == 1
        assert tensor.numpy().tobytes() == source.read_bytes(index)  # that sample's JPEG, whole
    assert call["device"] == device and call["mode"] == "RGB-mode"


def test_auto_picks_torchvision_when_it_loads(fake_torchvision):
    assert gpu_decode.pick_decoder("auto") == "torchvision"


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")  # device=cuda on a CPU host
@pytest.mark.parametrize("split", ["train", "eval"])
def test_the_loader_decodes_each_batch_with_one_call_on_its_cuda_device(prepared, fake_torchvision, split):
    calls, state = fake_torchvision
    state["stop"] = True
    data = DataConfig(root=str(prepared), loader="gpu", gpu_decoder="torchvision", **SMALL)
    common = dict(batch_size=4, rank=0, world_size=1, device=CUDA)
    loader = (gpu_loader.build_train(data, seed=0, **common) if split == "train"
              else gpu_loader.build_eval(data, mode="center", scales=[], **common))
    raw = next(iter(loader.loader))  # what the workers hand over; indices last
    with pytest.raises(_Stop):
        loader._batch(raw)  # the device step, up to the decode (nothing else may run without CUDA)
    assert len(calls) == 1
    _assert_one_batched_call(calls[0], loader.source, raw[-1], CUDA)


def test_on_cpu_the_torchvision_path_gives_the_pil_paths_batches(prepared, fake_torchvision):
    calls, _ = fake_torchvision
    batches = {}
    for decoder in ("torchvision", "pil"):
        loader = build_train_loader(DataConfig(root=str(prepared), loader="gpu", gpu_decoder=decoder, **SMALL),
                                    batch_size=4, rank=0, world_size=1, seed=3)
        batches[decoder] = [images for images, _ in loader]
    assert len(calls) == len(batches["pil"]) == 2  # one decode_jpeg call per batch, none by PIL's path
    assert all(c["device"] == CPU for c in calls)
    assert all(torch.equal(a, b) for a, b in zip(batches["torchvision"], batches["pil"], strict=True))
