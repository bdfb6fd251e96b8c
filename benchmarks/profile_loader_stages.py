"""Where a CPU loader's time goes: CPU milliseconds per image of each stage, for PIL (the torch
loader's path) and DALI's CPU operators, on the same prepared JPEGs.

CPU time (this process and its threads), not wall time: on a shared machine it barely moves with
other users' load. Usage: python benchmarks/profile_loader_stages.py DATA_DIR [--images 256]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from dtrain.bench.timing import cpu_seconds, environment
from dtrain.config import DataConfig
from dtrain.data.sampling import sample_rng
from dtrain.data.sources import ManifestSource, decode_jpeg, read_manifest
from dtrain.data.transforms import TrainTransform


def pil_stages(root: str, count: int) -> dict:
    source = ManifestSource(read_manifest(root, "train"), "files")
    transform = TrainTransform(DataConfig(train_augment="random_resized_crop", crop_size=224))
    blobs = [source.read_bytes(i % len(source)) for i in range(count)]
    stages = {}
    began = cpu_seconds()
    images = [decode_jpeg(b) for b in blobs]
    stages["pil_decode_full"] = cpu_seconds() - began
    began = cpu_seconds()
    for i, image in enumerate(images):
        transform.sample(image, sample_rng(0, 0, i))
    stages["pil_random_resized_crop_flip_to_uint8"] = cpu_seconds() - began
    return {k: round(1000 * v / count, 3) for k, v in stages.items()}


def dali_stages(root: str, count: int, batch: int = 64) -> dict:
    from nvidia.dali import fn, pipeline_def, types

    files = read_manifest(root, "train").jpeg_paths.to_pylist()

    def run(stage: str) -> float:
        @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=0, prefetch_queue_depth=1)
        def pipeline():
            jpegs, labels = fn.readers.file(file_root=root, files=files, random_shuffle=True)
            if stage == "read":
                return labels
            if stage == "decode_full":
                return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                                   random_area=[0.08, 1.0], random_aspect_ratio=[0.75, 4 / 3])
            if stage == "decode_roi":
                return images
            images = fn.resize(images, resize_x=224, resize_y=224, antialias=True)
            if stage == "decode_roi_resize":
                return images
            return fn.crop_mirror_normalize(images, mean=[124.0] * 3, std=[58.0] * 3, dtype=types.FLOAT,
                                            output_layout="CHW", mirror=fn.random.coin_flip())

        pipe = pipeline()
        pipe.build()
        pipe.run()
        runs = max(1, count // batch)
        began = cpu_seconds()
        for _ in range(runs):
            pipe.run()
        return 1000 * (cpu_seconds() - began) / (runs * batch)

    return {f"dali_{s}": round(run(s), 3) for s in ("read", "decode_full", "decode_roi", "decode_roi_resize",
                                                     "decode_roi_resize_cmn")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    started = time.time()
    result = {"environment": environment(__import__("torch").device("cpu")),
              "cpu_ms_per_image": {**pil_stages(args.data, args.images), **dali_stages(args.data, args.images)},
              "images": args.images, "seconds": round(time.time() - started, 1)}
    print(json.dumps(result["cpu_ms_per_image"], indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
