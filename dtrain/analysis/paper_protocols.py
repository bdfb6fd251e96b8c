"""How each table of the papers measured its numbers: the test protocol and the statistic over runs.

A reproduction is only comparable with a table when it is tested the way the table was, so every
table of R1/R2 that `dtrain reproduce` covers is listed in TABLES with the words of its caption or
column that fix the protocol (quoted from R1 and R2 themselves). Each row of
`paper_numbers.ROWS` takes its protocol from here; tests check that they agree.

Protocols (PROTOCOLS) map onto `dtrain eval --mode` (dtrain.data.eval_views):

    center       one view: CIFAR's original 32x32 image; ImageNet's 224 crop of the image
                 resized to shorter side 256 (R2 Table 5 "test crop 224x224", R2 sec. 5)
    ten-crop     R1 Tables 2/3: 4 corners + centre 224 crops and their flips
    multi-scale  R1 Table 4: fully-convolutional, scores averaged over shorter sides
                 {224, 256, 384, 480, 640}; dtrain also averages each scale's flip, which R1
                 does not name (Protocol.beyond_paper says so in the report)
    single-320   R2 Table 5: one 320x320 crop of the image resized to shorter side 320
    ensemble     R1 Table 5: multi-scale scores averaged over several models

The later recipes (later_recipes) are tested as their own project evaluates them, one centre crop
at that project's resize and crop: center-232 (torchvision), center-235 (timm), center-256-flip
(FFCV, with flip test-time augmentation).
"""

from __future__ import annotations

from dataclasses import dataclass

R1_SCALES = (224, 256, 384, 480, 640)  # R1 sec. 3.4: shorter sides of the multi-scale test


@dataclass(frozen=True)
class Protocol:
    name: str
    eval_mode: str  # eval.mode of `dtrain eval` that runs it
    description: str
    overrides: tuple[str, ...] = ()  # config overrides the evaluation needs (e.g. the scales)
    ensemble: bool = False  # scores averaged over several checkpoints
    beyond_paper: str = ""  # what the test does that the paper does not name (the report says so)


# R1 sec. 3.4 names the scales of its fully-convolutional test, not flips; dtrain's multi-scale
# views include each scale's horizontal flip (dtrain.data.eval_views.MultiScale).
_FLIPS = ("dtrain's multi-scale test also averages the horizontal flip of every scale (2 views per scale), "
          "which R1 sec. 3.4 does not name")

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("center", "center", "single view: CIFAR's original image, ImageNet's 224 centre crop of shorter side 256"),
    Protocol("ten-crop", "ten-crop", "10-crop: 4 corners + centre 224 crops and their flips (R1 sec. 3.4)"),
    Protocol("multi-scale", "multi-scale", "fully-convolutional, scores averaged over shorter sides "
             "{224, 256, 384, 480, 640} (R1 sec. 3.4)",
             overrides=(f"eval.scales=[{','.join(str(s) for s in R1_SCALES)}]",), beyond_paper=_FLIPS),
    Protocol("single-320", "single-320", "single 320x320 crop of the image resized to shorter side 320 (R2 sec. 5)"),
    Protocol("ensemble", "multi-scale", "multi-scale scores averaged over the ensemble's models (R1 Table 5)",
             overrides=(f"eval.scales=[{','.join(str(s) for s in R1_SCALES)}]",), ensemble=True,
             beyond_paper=_FLIPS),
    # The later recipes (later_recipes): one centre crop, at the resize and crop their project tests with.
    Protocol("center-232", "center", "224 centre crop of shorter side 232, bilinear (torchvision's "
             "ResNet50_Weights.IMAGENET1K_V2 transforms)",
             overrides=("data.val_resize=232", "data.val_crop=224", "data.val_interpolation=bilinear")),
    Protocol("center-235", "center", "224 centre crop of shorter side 235 = floor(224 / crop_pct 0.95), bicubic "
             "(timm)", overrides=("data.val_resize=235", "data.val_crop=224", "data.val_interpolation=bicubic")),
    Protocol("center-256-flip", "center", "256 centre crop of shorter side 292 (FFCV: the centre 224/256 of the "
             "shorter side resized to 256) and its horizontal flip", overrides=("data.val_resize=292",
             "data.val_crop=256", "eval.flip_tta=true"),
             beyond_paper="FFCV sums the image's and the flip's logits; dtrain averages their softmax scores"),
)}


@dataclass(frozen=True)
class TableProtocol:
    """One table (or one column of it) of a paper: the protocol its caption or header names."""

    source: str  # as PaperRow.source, e.g. "R1 Table 3"
    protocol: str  # key of PROTOCOLS
    evidence: str  # the caption / column words that fix the protocol
    statistic: str = "single run"  # one of STATISTICS: what its numbers are over runs
    statistic_evidence: str = ""  # the words that fix the statistic (none: one run, nothing said)


# What a table's number is over repeated runs (R1 Table 6, R2 sec. 3.1 / Table 4).
STATISTICS = ("single run", "best of 5", "median of 5", "mean of 5")
_R2_MEDIAN = "R2 sec. 3.1: 'all CIFAR results in this paper are the median of 5 runs'"


TABLES: dict[str, TableProtocol] = {t.source: t for t in (
    TableProtocol("R1 Table 2", "ten-crop", "caption: 'Top-1 error (%, 10-crop testing) on ImageNet validation'"),
    TableProtocol("R1 Table 3", "ten-crop", "caption: 'Error rates (%, 10-crop testing) on ImageNet validation'"),
    TableProtocol("R1 Table 4", "multi-scale", "caption: 'single-model results on the ImageNet validation set'; "
                  "sec. 3.4: best results with the fully-convolutional multi-scale test"),
    TableProtocol("R1 Table 5", "ensemble", "caption: 'Error rates (%) of ensembles. The top-5 error is on the "
                  "test set of ImageNet'; column top-5 err. (test)"),
    TableProtocol("R1 Table 6", "center", "sec. 4.2: 'For testing, we only evaluate the single view of the "
                  "original 32x32 image'; column error (%) (ResNet-110: 'best of 5 runs', mean +- std beside it)",
                  statistic_evidence="caption: only 'For ResNet-110, we run it 5 times' (ROW_STATISTICS); "
                  "every other row is one run"),
    TableProtocol("R2 Table 1", "center", "R1's CIFAR test (single original view); column error (%) on the "
                  "CIFAR-10 test set, 'fail' = error above 20%", statistic="median of 5",
                  statistic_evidence=_R2_MEDIAN),
    TableProtocol("R2 Table 2", "center", "R1's CIFAR test (single original view); columns ResNet-110 and ResNet-164, "
                  "error (%)", statistic="median of 5", statistic_evidence=_R2_MEDIAN),
    TableProtocol("R2 Table 3", "center", "R1's CIFAR test (single original view); columns baseline unit and "
                  "pre-activation unit, error (%)", statistic="median of 5", statistic_evidence=_R2_MEDIAN),
    TableProtocol("R2 Table 4", "center", "R1's CIFAR test (single original view); caption: 'Our results are the "
                  "median of 5 runs with mean +- std in the brackets'; column error (%)", statistic="median of 5",
                  statistic_evidence="caption: 'Our results are the median of 5 runs' (the rows cited from R1: "
                  "ROW_STATISTICS)"),
    TableProtocol("R2 Table 5", "single-320", "column 'test crop' 320x320 (224x224 for the first row); "
                  "caption: 'single-crop error'"),
    TableProtocol("R2 sec. 5", "center", "text: 'single-crop (224x224) validation error 24.6%/7.5% vs. 23.6%/7.1%'"),
    # Beyond the papers (later_recipes): each project's own evaluation.
    TableProtocol("torchvision IMAGENET1K_V2", "center-232", "torchvision/models/resnet.py: transforms="
                  "partial(ImageClassification, crop_size=224, resize_size=232)"),
    TableProtocol("RSB Table 1", "center-235", "RSB Table 1: test res 224, test crop ratio 0.95; timm/models/"
                  "resnet.py resnet50.a*_in1k crop_pct 0.95, bicubic"),
    TableProtocol("FFCV rn50 configs", "center-256-flip", "rn50_configs/*.yaml: validation resolution 256, lr_tta "
                  "true; train_imagenet.py: CenterCropRGBImageDecoder(ratio=224/256), logits + flipped logits"),
)}

# Rows of a table whose protocol differs from the table's usual one, with the column that says so.
ROW_PROTOCOLS: dict[str, tuple[str, str]] = {
    "r2-table5-resnet152-224": ("center", "R2 Table 5 row 1, column 'test crop' 224x224"),
}


# Rows whose statistic over runs differs from their table's, with the words that say so.
ROW_STATISTICS: dict[str, tuple[str, str]] = {
    "r1-table6-resnet110": ("best of 5", "R1 Table 6 caption: 'For ResNet-110, we run it 5 times and show best "
                            "(mean +- std)'; column error (%): 6.43 (6.61 +- 0.16)"),
    "r2-table4-cifar10-resnet110": ("mean of 5", "R2 Table 4 row 'ResNet-110 [1]', column error (%) 6.61: R1 "
                                    "Table 6's mean of its 5 runs (6.43 best), not one of R2's 'our results'"),
    "r2-table4-cifar10-resnet1202": ("single run", "R2 Table 4 row 'ResNet-1202 [1]', column error (%) 7.93: R1 "
                                     "Table 6's one run"),
    # The CIFAR-100 rows cited '[1]' are R2's own runs of R1's unit (R1 has no CIFAR-100 result):
    # the baseline-unit column of R2 Table 3, so the median of 5 (R2 sec. 3.1) like the table's.
}


def statistic_of(source: str, key: str) -> str:
    """The statistic over runs of a row of `source` (its table's, or its own exception)."""
    return ROW_STATISTICS[key][0] if key in ROW_STATISTICS else TABLES[source].statistic


def protocol_of(source: str, key: str) -> Protocol:
    """The protocol a row of `source` was measured with (its table's, or its own exception)."""
    name = ROW_PROTOCOLS[key][0] if key in ROW_PROTOCOLS else TABLES[source].protocol
    return PROTOCOLS[name]
