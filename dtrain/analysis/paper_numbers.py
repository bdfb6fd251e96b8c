"""The papers' table rows as data: each row names the recipe that reproduces it and the numbers
the paper reports (R1: He et al., Deep Residual Learning for Image Recognition, CVPR 2016; R2:
He et al., Identity Mappings in Deep Residual Networks, ECCV 2016). `dtrain reproduce ROW` compares a run
with one of these rows. This module holds R1's rows and gathers R2's
(paper_numbers_r2) and, after them, the later recipes' (later_recipes: torchvision, timm, FFCV);
what a row holds is paper_row.PaperRow.
"""

from __future__ import annotations

from dtrain.analysis.later_recipes import later_recipe_rows
from dtrain.analysis.paper_numbers_r2 import r2_rows
from dtrain.analysis.paper_row import R1_IMAGENET_FLOPS, PaperRow
from dtrain.errors import DtrainError
from dtrain.suggest import did_you_mean

# (depth, params in M, test error %) of R1 Table 6.
_R1_TABLE6 = [(20, 0.27, 8.75), (32, 0.46, 7.51), (44, 0.66, 7.17), (56, 0.85, 6.97),
              (110, 1.7, 6.43), (1202, 19.4, 7.93)]


def _r1_table6() -> list[PaperRow]:
    rows = []
    for depth, params, err in _R1_TABLE6:
        best_of_5 = depth == 110  # R1 Table 6: "6.43 (6.61 +- 0.16)", best of 5 runs
        rows.append(PaperRow(f"r1-table6-resnet{depth}", "R1 Table 6", "CIFAR-10", f"cifar10_resnet{depth}",
                             f"resnet{depth}", err, params_m=params,
                             note="best of 5 runs; mean 6.61 +- 0.16" if best_of_5 else "",
                             paper_mean=6.61 if best_of_5 else None, paper_std=0.16 if best_of_5 else None))
    return rows


def _r1_imagenet() -> list[PaperRow]:
    # R1 Table 2 compares plain and residual nets with option A (no extra parameters).
    table2 = [("plain18", "plain18", 18, 27.94), ("resnet18", "resnet18_optionA", 18, 27.88),
              ("plain34", "plain34", 34, 28.54), ("resnet34", "resnet34_optionA", 34, 25.03)]
    rows = [PaperRow(f"r1-table2-{model}", "R1 Table 2", "ImageNet", recipe, model, top1,
                     multiply_adds=R1_IMAGENET_FLOPS[depth],
                     note="option A shortcuts (zero padding)" if model.startswith("resnet") else "")
            for model, recipe, depth, top1 in table2]
    table3 = [("plain34", "plain34", "plain34", 34, 28.54, 10.02, ""),
              ("resnet34a", "resnet34_optionA", "resnet34", 34, 25.03, 7.76, "option A shortcuts"),
              ("resnet34b", "resnet34", "resnet34", 34, 24.52, 7.46, "option B shortcuts"),
              ("resnet34c", "resnet34_optionC", "resnet34", 34, 24.19, 7.40, "option C shortcuts"),
              ("resnet50", "resnet50", "resnet50", 50, 22.85, 6.71, ""),
              ("resnet101", "resnet101", "resnet101", 101, 21.75, 6.05, ""),
              ("resnet152", "resnet152", "resnet152", 152, 21.43, 5.71, "")]
    rows += [PaperRow(f"r1-table3-{key}", "R1 Table 3", "ImageNet", recipe, model, top1, top5,
                      multiply_adds=R1_IMAGENET_FLOPS[depth], note=note)
             for key, recipe, model, depth, top1, top5, note in table3]
    # R1 Table 4: the same nets, single model, multi-scale fully-convolutional test.
    table4 = [("resnet34b", "resnet34", "resnet34", 34, 21.84, 5.71),
              ("resnet34c", "resnet34_optionC", "resnet34", 34, 21.53, 5.60),
              ("resnet50", "resnet50", "resnet50", 50, 20.74, 5.25),
              ("resnet101", "resnet101", "resnet101", 101, 19.87, 4.60),
              ("resnet152", "resnet152", "resnet152", 152, 19.38, 4.49)]
    rows += [PaperRow(f"r1-table4-{key}", "R1 Table 4", "ImageNet", recipe, model, top1, top5,
                      multiply_adds=R1_IMAGENET_FLOPS[depth])
             for key, recipe, model, depth, top1, top5 in table4]
    # R1 Table 5: "six models of different depth ... (only two 152-layer ones at the time of
    # submission)"; R1 does not list the other four, so dtrain ensembles its Table 4 recipes.
    members = (("resnet34", ()), ("resnet50", ()), ("resnet101", ()), ("resnet152", ()),
               ("resnet152", ("train.seed=1",)), ("resnet34_optionC", ()))
    rows.append(PaperRow("r1-table5-ensemble", "R1 Table 5", "ImageNet", "resnet152", "resnet152", None, 3.57,
                         note="top-5 on the ImageNet TEST set (test server); six models of different depth, "
                              "two of them 152-layer; the other members are not named in R1",
                         members=members))
    return rows


def _all_rows() -> list[PaperRow]:
    # the papers' rows, then the later recipes' (torchvision, timm, FFCV: later_recipes)
    return _r1_imagenet() + _r1_table6() + r2_rows() + later_recipe_rows()


ROWS: dict[str, PaperRow] = {row.key: row for row in _all_rows()}


def get_row(key: str) -> PaperRow:
    """The row named `key`, or a one-line error listing the closest names."""
    if key in ROWS:
        return ROWS[key]
    hint = did_you_mean(key, ROWS, n=3, fallback="")
    raise DtrainError(f"unknown table row {key!r}{hint}; `dtrain reproduce --list` shows them all")
