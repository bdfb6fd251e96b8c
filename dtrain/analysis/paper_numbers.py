"""The papers' table rows as data: each row names the recipe that reproduces it and the numbers
the paper reports (all from SPEC.md, which cites R1/R2). `dtrain reproduce ROW` compares a run
with one of these rows.

Errors are in percent. `params_m` is in millions as printed by the paper; `multiply_adds` is
R1 Table 1's FLOPs (multiply-adds). None means the paper does not give the number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtrain.errors import DtrainError


@dataclass(frozen=True)
class PaperRow:
    key: str  # e.g. "r1-table6-resnet110"
    source: str  # e.g. "R1 Table 6"
    dataset: str  # "CIFAR-10", "CIFAR-100", "ImageNet"
    recipe: str  # configs/<recipe>.yaml
    model: str
    top1_err: float
    top5_err: float | None = None
    params_m: float | None = None
    multiply_adds: float | None = None
    protocol: str = ""  # how the paper tested (the report says whether the run matches it)
    note: str = ""
    overrides: tuple[str, ...] = field(default=())  # recipe overrides that the row needs


_CIFAR_TEST = "single original 32x32 view of the CIFAR test set"
_R1_TEN_CROP = "ImageNet val, 10-crop (R1 Tables 2/3)"
_R2_320 = "ImageNet val, single 320x320 crop of the image resized to shorter side 320 (R2 Table 5)"

# (depth, params in M, test error %) of R1 Table 6.
_R1_TABLE6 = [(20, 0.27, 8.75), (32, 0.46, 7.51), (44, 0.66, 7.17), (56, 0.85, 6.97),
              (110, 1.7, 6.43), (1202, 19.4, 7.93)]
# R1 Table 1 FLOPs (multiply-adds) per ImageNet depth; plain nets have the same.
_R1_IMAGENET_FLOPS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


def _r1_table6() -> list[PaperRow]:
    rows = []
    for depth, params, err in _R1_TABLE6:
        note = "best of 5 runs; mean 6.61 +- 0.16" if depth == 110 else ""
        rows.append(PaperRow(f"r1-table6-resnet{depth}", "R1 Table 6", "CIFAR-10", f"cifar10_resnet{depth}",
                             f"resnet{depth}", err, params_m=params, protocol=_CIFAR_TEST, note=note))
    return rows


def _r1_imagenet() -> list[PaperRow]:
    # R1 Table 2 compares plain and residual nets with option A (no extra parameters).
    table2 = [("plain18", "plain18", 18, 27.94), ("resnet18", "resnet18", 18, 27.88),
              ("plain34", "plain34", 34, 28.54), ("resnet34", "resnet34_optionA", 34, 25.03)]
    rows = [PaperRow(f"r1-table2-{model}", "R1 Table 2", "ImageNet", recipe, model, top1,
                     multiply_adds=_R1_IMAGENET_FLOPS[depth], protocol=_R1_TEN_CROP,
                     note="option A shortcuts (zero padding)" if model.startswith("resnet") else "",
                     overrides=("model.options.shortcut=A",) if recipe == "resnet18" else ())
            for model, recipe, depth, top1 in table2]
    table3 = [("plain34", "plain34", "plain34", 34, 28.54, 10.02, ""),
              ("resnet34a", "resnet34_optionA", "resnet34", 34, 25.03, 7.76, "option A shortcuts"),
              ("resnet34b", "resnet34", "resnet34", 34, 24.52, 7.46, "option B shortcuts"),
              ("resnet34c", "resnet34_optionC", "resnet34", 34, 24.19, 7.40, "option C shortcuts"),
              ("resnet50", "resnet50", "resnet50", 50, 22.85, 6.71, ""),
              ("resnet101", "resnet101", "resnet101", 101, 21.75, 6.05, ""),
              ("resnet152", "resnet152", "resnet152", 152, 21.43, 5.71, "")]
    rows += [PaperRow(f"r1-table3-{key}", "R1 Table 3", "ImageNet", recipe, model, top1, top5,
                      multiply_adds=_R1_IMAGENET_FLOPS[depth], protocol=_R1_TEN_CROP, note=note)
             for key, recipe, model, depth, top1, top5, note in table3]
    return rows


def _r2_table3() -> list[PaperRow]:
    # (dataset, recipe prefix, depth, params M, original error, pre-activation error)
    table3 = [("CIFAR-10", "cifar10", 110, 1.7, 6.61, 6.37), ("CIFAR-10", "cifar10", 164, 1.7, 5.93, 5.46),
              ("CIFAR-10", "cifar10", 1001, 10.2, 7.61, 4.92), ("CIFAR-100", "cifar100", 164, 1.7, 25.16, 24.33),
              ("CIFAR-100", "cifar100", 1001, 10.2, 27.82, 22.71)]
    rows = []
    for dataset, prefix, depth, params, original, preact in table3:
        tag = "" if dataset == "CIFAR-10" else "-cifar100"
        rows.append(PaperRow(f"r2-table3-resnet{depth}{tag}", "R2 Table 3", dataset,
                             f"{prefix}_resnet{depth}", f"resnet{depth}", original, params_m=params,
                             protocol=_CIFAR_TEST, note="original (post-activation) unit"))
        rows.append(PaperRow(f"r2-table3-resnet{depth}-preact{tag}", "R2 Table 3", dataset,
                             f"{prefix}_resnet{depth}_preact", f"resnet{depth}_preact", preact,
                             params_m=params, protocol=_CIFAR_TEST,
                             note="full pre-activation unit" + ("; 4.62 with batch 64" if depth == 1001 and tag == "" else "")))
    return rows


def _r2_table5() -> list[PaperRow]:
    # R2 Table 5 also lists the original ResNet-200 (21.8/6.0); dtrain has no post-activation
    # ResNet-200 recipe (R1 never trained one), so that row is left out.
    return [
        PaperRow("r2-table5-resnet152", "R2 Table 5", "ImageNet", "resnet152", "resnet152", 21.3, 5.5,
                 multiply_adds=_R1_IMAGENET_FLOPS[152], protocol=_R2_320, note="original unit, R1 recipe"),
        PaperRow("r2-table5-resnet152-preact", "R2 Table 5", "ImageNet", "resnet152_preact", "resnet152_preact",
                 21.1, 5.5, protocol=_R2_320),
        PaperRow("r2-table5-resnet200-preact", "R2 Table 5", "ImageNet", "resnet200_preact", "resnet200_preact",
                 20.7, 5.3, protocol=_R2_320),
    ]


ROWS: dict[str, PaperRow] = {row.key: row for row in _r1_table6() + _r1_imagenet() + _r2_table3() + _r2_table5()}


def get_row(key: str) -> PaperRow:
    """The row named `key`, or a one-line error listing the closest names."""
    from dtrain.suggest import did_you_mean

    if key in ROWS:
        return ROWS[key]
    hint = did_you_mean(key, ROWS, n=3, fallback="")
    raise DtrainError(f"unknown table row {key!r}{hint}; `dtrain reproduce --list` shows them all")
