"""The ResNet-50 recipes people train today, beyond the papers, as `dtrain reproduce` rows: each with
the number its own project publishes, the test protocol that project evaluates with, its source,
and what it costs (epochs, images seen). paper_numbers gathers them after the papers' rows;
`dtrain reproduce --list` lists them in their own group.

Sources (each recipe file in configs/ quotes the settings line by line):
- torchvision's ResNet-50 IMAGENET1K_V2: pytorch/vision torchvision/models/resnet.py
  (ResNet50_Weights.IMAGENET1K_V2 meta: acc@1 80.858, acc@5 95.434, resize 232 / crop 224; recipe
  github.com/pytorch/vision/issues/3995#issuecomment-1013906621).
- timm's "ResNet strikes back" (Wightman, Touvron, Jegou, arXiv:2110.00476, 2021), Table 1: A1 80.4,
  A2 79.8, A3 78.1 top-1 at 224; top-5 from huggingface/pytorch-image-models results/results-imagenet.csv
  (timm's evaluation of the released seed-0 weights resnet50.a{1,2,3}_in1k at 224, crop_pct 0.95).
- FFCV's ResNet-50 configs: libffcv/ffcv-imagenet README.md (top-1 / top-5 per epoch budget, 8 x A100)
  and rn50_configs/rn50_{16..88}_epochs.yaml.

Errors are in percent (100 - the published accuracy), like the papers' rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtrain.analysis.paper_row import R1_IMAGENET_FLOPS, PaperRow

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 train set: images seen = epochs x this
RESNET50_PARAMS_M = 25.6  # torchvision's num_params 25,557,032

TV2_SOURCE = "torchvision IMAGENET1K_V2"
RSB_SOURCE = "RSB Table 1"
FFCV_SOURCE = "FFCV rn50 configs"
SOURCES = (TV2_SOURCE, RSB_SOURCE, FFCV_SOURCE)  # keys of paper_protocols.TABLES


@dataclass(frozen=True)
class RecipeRow(PaperRow):
    """A later recipe's row: a PaperRow with what the recipe costs and turns on, and where its
    numbers come from."""

    epochs: int = 0
    turns_on: str = ""  # the features beyond R1/R2 the recipe turns on, for the table a user chooses from
    citation: str = ""  # the file / URL the number comes from
    normalize: str = "channel"  # what the project subtracts (per channel, not R1's mean image)

    @property
    def images_seen(self) -> int:
        return self.epochs * IMAGENET_TRAIN_IMAGES


def _err(accuracy: float | None) -> float | None:
    return None if accuracy is None else round(100.0 - accuracy, 3)


def _row(key: str, source: str, recipe: str, top1_acc: float, top5_acc: float | None, epochs: int,
         turns_on: str, citation: str, note: str) -> RecipeRow:
    return RecipeRow(key, source, "ImageNet", recipe, "resnet50_v1_5", _err(top1_acc), _err(top5_acc),
                     params_m=RESNET50_PARAMS_M, multiply_adds=R1_IMAGENET_FLOPS[50], note=note, epochs=epochs,
                     turns_on=turns_on, citation=citation)


_TV2_NOTE = ("not expressed: EMA steps counted per epoch there; "
             "fp32 there, bf16 autocast here on CUDA; the reference is the released weights' accuracy, whether "
             "the EMA's or the live model's is not stated: `dtrain reproduce` compares the live weights and "
             "reports the EMA's beside them")


def tv2_row() -> RecipeRow:
    return _row("tv2-resnet50", TV2_SOURCE, "resnet50_tv2", 80.858, 95.434, 600,
                "SGD 0.5 @1024, cosine + 5-epoch warm-up, label smoothing 0.1, mixup 0.2 / CutMix 1.0, "
                "TrivialAugment-wide, random erasing 0.1, EMA, no norm decay, repeated augmentation x4, "
                "train 176 / test 224",
                "pytorch/vision torchvision/models/resnet.py ResNet50_Weights.IMAGENET1K_V2; recipe: "
                "github.com/pytorch/vision/issues/3995#issuecomment-1013906621", _TV2_NOTE)


_RSB_NOTE = ("Table 1 could not be read in this session (settings cross-checked with timm's model configs and "
             "mmpretrain's RSB configs); top-5 is timm's results-imagenet.csv for the released seed-0 weights; "
             "not expressed: fp16, timm's default 10 cooldown epochs; BCE target threshold and label smoothing "
             "unverified (left off); training resizes with timm train.py's default (bilinear or bicubic per "
             "sample), which the paper does not confirm")


def rsb_rows() -> list[RecipeRow]:
    # (procedure, top-1 of Table 1, top-5 of results-imagenet.csv, epochs, what differs between them)
    procedures = [("a1", 80.4, 94.598, 600, "LAMB 5e-3, wd 0.01, mixup 0.2, RandAugment m7, stochastic depth 0.05, "
                                            "repeated augmentation x3, train 224"),
                  ("a2", 79.8, 94.560, 300, "LAMB 5e-3, wd 0.02, mixup 0.1, RandAugment m7, stochastic depth 0.05, "
                                            "repeated augmentation x3, train 224"),
                  ("a3", 78.1, 93.780, 100, "LAMB 8e-3, wd 0.02, mixup 0.1, RandAugment m6, train 160")]
    return [_row(f"rsb-{name}-resnet50", RSB_SOURCE, f"resnet50_rsb_{name}", top1, top5, epochs,
                 f"{own} / test 224; BCE loss, CutMix 1.0, cosine + 5-epoch warm-up, batch 2048, no bias/norm decay",
                 "arXiv:2110.00476 Table 1; huggingface/pytorch-image-models results/results-imagenet.csv "
                 f"(resnet50.{name}_in1k)", _RSB_NOTE)
            for name, top1, top5, epochs, own in procedures]


_FFCV_NOTE = ("not expressed: its data are written at 500 px, JPEG 90; flip TTA sums logits there, "
              "averages softmaxes here; fp16 there, bf16 here")

# libffcv/ffcv-imagenet README.md, the configurations table (ResNet-50, 8 x A100): epochs -> top-1, top-5
FFCV_RN50 = {88: (78.4, 94.1), 56: (78.0, 93.7), 40: (77.2, 93.2), 32: (76.6, 92.7), 24: (75.6, 92.1),
             16: (73.8, 90.8)}


def ffcv_rows() -> list[RecipeRow]:
    return [_row(f"ffcv-rn50-{epochs}", FFCV_SOURCE, f"resnet50_ffcv_{epochs}", top1, top5, epochs,
                 "SGD 1.7 @4096, linear warm-up 2 epochs then linear decay to 0, label smoothing 0.1, BlurPool, "
                 "no BN decay, progressive resizing 160 -> 192, test 256 with flip TTA",
                 f"libffcv/ffcv-imagenet README.md (configurations table); rn50_configs/rn50_{epochs}_epochs.yaml",
                 _FFCV_NOTE)
            for epochs, (top1, top5) in sorted(FFCV_RN50.items())]


def later_recipe_rows() -> list[RecipeRow]:
    return [tv2_row(), *rsb_rows(), *ffcv_rows()]


def is_later_recipe(row: PaperRow) -> bool:
    return isinstance(row, RecipeRow)
