"""A loader whose optional package is missing is one clear line naming the extra that
installs it: for DALI the build of torch's CUDA major (cuda12 / cuda13), or the CPU install."""

from __future__ import annotations

import sys

import pytest
import torch

from dtrain.config import DataConfig
from dtrain.data import build_train_loader
from dtrain.errors import ConfigError
from dtrain.extras import missing_module_message


def _block(monkeypatch, package: str, *importers: str) -> None:
    """Imports of `package` fail as if it were not installed, also after an earlier import of it."""
    for name in [m for m in sys.modules if m == package or m.startswith((f"{package}.", *importers))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def _loader_error(loader: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build_train_loader(DataConfig(loader=loader, root="/nonexistent"), batch_size=2, rank=0, world_size=1,
                           seed=0, device="cpu")
    return str(caught.value)


@pytest.mark.parametrize(("cuda", "extra"), [(None, "dali"), ("12.8", "cuda12"), ("13.0", "cuda13"),
                                             ("11.8", "cuda12")])
def test_missing_dali_names_the_extra_of_torchs_cuda(cuda, extra, monkeypatch) -> None:
    _block(monkeypatch, "nvidia", "dtrain.data.dali_loader")
    monkeypatch.setattr(torch.version, "cuda", cuda)
    message = _loader_error("dali")
    assert message.startswith("data.loader=dali needs NVIDIA DALI (nvidia.dali), which is not installed: "
                              f"pip install 'dtrain[{extra}]'"), message
    assert message.count("pip install") == 1 and "\n" not in message and "halted" not in message
    if cuda is None:
        assert "CPU" in message  # README: with a CPU torch, dtrain[dali] runs the pipelines on the CPU


def test_missing_ffcv_names_its_extra_once(monkeypatch) -> None:
    _block(monkeypatch, "ffcv", "dtrain.data.ffcv_loader")
    message = _loader_error("ffcv")
    assert message.startswith("data.loader=ffcv needs FFCV, which is not installed: pip install 'dtrain[ffcv]'")
    assert message.count("pip install") == 1 and message.endswith("or choose another data.loader")


def test_a_loader_that_fails_to_import_otherwise_says_why_in_one_line(monkeypatch) -> None:
    _block(monkeypatch, "nvidia", "dtrain.data.dali_loader")

    def broken(name, *args, **kwargs):
        if name.startswith("nvidia"):
            raise ImportError("libcudart.so.12: cannot open shared object file\nmore detail")
        return real_import(name, *args, **kwargs)

    real_import = __import__
    monkeypatch.delitem(sys.modules, "nvidia")
    monkeypatch.setattr("builtins.__import__", broken)
    message = _loader_error("dali")
    assert message == ("data.loader=dali cannot run in this install (libcudart.so.12: cannot open shared object "
                       "file); or choose another data.loader")


def test_modules_of_no_extra_get_no_message() -> None:
    assert missing_module_message("yaml") is None and missing_module_message(None) is None
