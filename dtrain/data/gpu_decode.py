"""Whole-batch JPEG decoding for data.loader=gpu: a list of JPEG byte tensors -> a list of uint8
CHW RGB tensors on the device.

Two decoders behind one batch-level call, chosen by `pick_decoder`:
  torchvision  torchvision.io.decode_jpeg(list, device=...): nvJPEG on CUDA (one batched call),
               libjpeg-turbo on CPU. The GPU machines of this project have it.
  pil          Pillow, one image after the other, then moved to the device. Used where torchvision
               cannot load: the PyPI torchvision wheels are CUDA builds whose ops need
               libtorch_cuda.so, which the CPU torch of the development host lacks.
Both decode the same baseline/progressive JPEGs that `dtrain prepare` writes (odd files were
converted there); a file that still fails is reported by its sample key.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from dtrain.errors import DtrainError

from .gpu_defaults import AUTO

# decoder(jpegs, device) -> list of uint8 [3, H, W] tensors on device
BatchDecoder = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]


class DecodeError(DtrainError):
    """A stored JPEG that does not decode; names the sample so it can be found in the manifest."""


@functools.cache
def torchvision_decode_jpeg() -> Callable[..., list[torch.Tensor]] | None:
    """torchvision.io.decode_jpeg if torchvision imports and its image ops load, else None."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # ImportError, or RuntimeError when its C++ ops do not match this torch
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def decode_torchvision(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    decode = torchvision_decode_jpeg()
    if decode is None:  # pick_decoder chooses torchvision only where it loads
        raise DtrainError("torchvision.io does not load beside this torch; use data.gpu_decoder=pil")
    return decode(jpegs, device=device)  # on CUDA: one nvJPEG batch


def decode_pil(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    images = []
    for jpeg in jpegs:
        with Image.open(io.BytesIO(jpeg.numpy().tobytes())) as image:
            pixels = np.array(image.convert("RGB"), dtype=np.uint8)  # writable, as torch wants
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).to(device))
    return images


DECODERS: dict[str, BatchDecoder] = {"torchvision": decode_torchvision, "pil": decode_pil}
DECODER_CHOICES = (AUTO, *DECODERS)  # what data.gpu_decoder accepts (auto: torchvision when it loads, else pil)


def pick_decoder(requested: str) -> str:
    """data.gpu_decoder: auto -> torchvision when it loads, else pil."""
    available = torchvision_decode_jpeg() is not None
    if requested == AUTO:
        return "torchvision" if available else "pil"
    if requested not in DECODERS:
        raise DtrainError(f"data.gpu_decoder={requested!r} is not one of {', '.join(DECODER_CHOICES)}")
    if requested == "torchvision" and not available:
        raise DtrainError("data.gpu_decoder=torchvision but torchvision.io does not load beside this torch; "
                          "install the torchvision built for it or use data.gpu_decoder=pil")
    return requested


def decode_batch(decoder: str, jpegs: list[torch.Tensor], describe: Callable[[int], str],
                 device: torch.device) -> list[torch.Tensor]:
    """Decode a batch; on failure decode one by one to name the first sample that fails."""
    decode = DECODERS[decoder]
    try:
        return decode(jpegs, device)
    except Exception:
        pass
    for position, jpeg in enumerate(jpegs):
        try:
            decode([jpeg], device)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DecodeError(f"cannot decode the JPEG of sample {describe(position)} ({reason}); "
                              "re-run `dtrain prepare` on its source file") from None
    raise DecodeError(f"decoding a batch of {len(jpegs)} JPEGs failed, though each decodes alone "
                      f"(first sample {describe(0)}); lower optim.batch_size or use data.gpu_decoder=pil")
