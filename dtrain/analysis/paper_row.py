"""One row of the papers' tables (R1: He et al., Deep Residual Learning for Image Recognition,
CVPR 2016; R2: Identity Mappings in Deep Residual Networks, ECCV 2016): what the paper reports
and the recipe that reproduces it. The rows themselves are in paper_numbers (R1) and
paper_numbers_r2 (R2).

Errors are in percent. `params_m` is in millions as printed by the paper; `multiply_adds` is
R1 Table 1's FLOPs (multiply-adds). None means the paper does not give the number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtrain.analysis.paper_protocols import Protocol, protocol_of, statistic_of

# R1 Table 1 FLOPs (multiply-adds) per ImageNet depth; plain nets have the same.
R1_IMAGENET_FLOPS = {18: 1.8e9, 34: 3.6e9, 50: 3.8e9, 101: 7.6e9, 152: 11.3e9}


@dataclass(frozen=True)
class PaperRow:
    key: str  # e.g. "r1-table6-resnet110"
    source: str  # e.g. "R1 Table 6": a key of paper_protocols.TABLES
    dataset: str  # "CIFAR-10", "CIFAR-100", "ImageNet"
    recipe: str  # configs/<recipe>.yaml
    model: str
    top1_err: float | None  # None: the paper gives no top-1 (R1 Table 5) or the run failed
    top5_err: float | None = None
    params_m: float | None = None
    multiply_adds: float | None = None
    note: str = ""
    overrides: tuple[str, ...] = field(default=())  # recipe overrides that the row needs
    fails: bool = False  # the paper reports "fail" (R2 Table 1: test error above 20%)
    paper_mean: float | None = None  # mean of the paper's runs (R1 Table 6, R2 Table 4)
    paper_std: float | None = None
    # Ensembles (R1 Table 5): (recipe, overrides) of every member model
    members: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def protocol(self) -> Protocol:
        return protocol_of(self.source, self.key)

    @property
    def runs_statistic(self) -> str:
        """What top1_err is over runs ("best of 5", "median of 5", ...): paper_protocols'."""
        return statistic_of(self.source, self.key)
