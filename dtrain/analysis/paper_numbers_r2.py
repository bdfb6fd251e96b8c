"""R2's table rows (He et al., Identity Mappings in Deep Residual Networks, ECCV 2016) as data.

Numbers from R2's Tables 1-5 and sec. 5, as printed there. The ablations of Tables 1 and 2
are the ResNet-110 / ResNet-164 recipes with the model options that make each variant
(`model.options.*`, see dtrain.models.shortcuts and blocks).
"""

from __future__ import annotations

from dtrain.analysis.paper_row import R1_IMAGENET_FLOPS, PaperRow

_OPT = "model.options."


def _table1() -> list[PaperRow]:
    """Shortcut variants on ResNet-110, CIFAR-10: (key, recipe, overrides, error or None=fail, note)."""
    variants = [
        ("original", "cifar10_resnet110", (), 6.61, "identity shortcut (Fig. 2a)"),
        ("constant-scaling-0", "cifar10_plain110", (), None, "shortcut scaled by 0: 'this is a plain net'"),
        ("constant-scaling-0.5-f1", "cifar10_resnet110",
         ("shortcut_mode=constant_scaling", "scale_shortcut=0.5", "scale_residual=1.0"), None,
         "shortcut x0.5, F unscaled (Fig. 2b)"),
        ("constant-scaling-0.5", "cifar10_resnet110",
         ("shortcut_mode=constant_scaling", "scale_shortcut=0.5", "scale_residual=0.5"), 12.35,
         "shortcut x0.5, F x0.5: 'frozen gating'"),
        ("exclusive-gating-bg0", "cifar10_resnet110", ("shortcut_mode=exclusive_gating", "gate_bias=0.0"), None,
         "fails for every init b_g in 0..-5 (Fig. 2c)"),
        ("exclusive-gating-bg-6", "cifar10_resnet110", ("shortcut_mode=exclusive_gating", "gate_bias=-6.0"), 8.70,
         "init b_g = -6"),
        ("exclusive-gating-bg-7", "cifar10_resnet110", ("shortcut_mode=exclusive_gating", "gate_bias=-7.0"), 9.81,
         "init b_g = -7"),
        ("shortcut-only-gating-bg0", "cifar10_resnet110", ("shortcut_mode=shortcut_only_gating", "gate_bias=0.0"),
         12.86, "init b_g = 0 (Fig. 2d)"),
        ("shortcut-only-gating-bg-6", "cifar10_resnet110",
         ("shortcut_mode=shortcut_only_gating", "gate_bias=-6.0"), 6.91, "init b_g = -6"),
        ("conv-shortcut", "cifar10_resnet110", ("shortcut_mode=conv_shortcut",), 12.22, "1x1 conv shortcut (Fig. 2e)"),
        ("dropout-shortcut", "cifar10_resnet110", ("shortcut_mode=dropout_shortcut", "shortcut_dropout=0.5"), None,
         "dropout 0.5 on the shortcut (Fig. 2f): expected scale 0.5"),
    ]
    return [PaperRow(f"r2-table1-{key}", "R2 Table 1", "CIFAR-10", recipe,
                     "plain110" if recipe == "cifar10_plain110" else "resnet110", err,
                     note=note, overrides=tuple(_OPT + o for o in overrides), fails=err is None)
            for key, recipe, overrides, err, note in variants]


def _table2() -> list[PaperRow]:
    """Activation placement (Fig. 4 a-e) on ResNet-110 and ResNet-164, CIFAR-10."""
    units = [("original", 6.61, 5.93), ("bn_after_add", 8.17, 6.50), ("relu_before_add", 7.84, 6.14),
             ("relu_preact", 6.71, 5.91), ("full_preact", 6.37, 5.46)]
    rows = []
    for unit, err110, err164 in units:
        for depth, err in ((110, err110), (164, err164)):
            rows.append(PaperRow(f"r2-table2-resnet{depth}-{unit.replace('_', '-')}", "R2 Table 2", "CIFAR-10",
                                 f"cifar10_resnet{depth}", f"resnet{depth}", err,
                                 note=f"unit {unit} (R2 Fig. 4)", overrides=(f"{_OPT}unit={unit}",)))
    return rows


def _table3() -> list[PaperRow]:
    # (dataset, recipe prefix, net, params M, baseline error, pre-activation error)
    table3 = [("CIFAR-10", "cifar10", "resnet110_1layer", None, 9.90, 8.91),
              ("CIFAR-10", "cifar10", "resnet110", 1.7, 6.61, 6.37),
              ("CIFAR-10", "cifar10", "resnet164", 1.7, 5.93, 5.46),
              ("CIFAR-10", "cifar10", "resnet1001", 10.2, 7.61, 4.92),
              ("CIFAR-100", "cifar100", "resnet164", 1.7, 25.16, 24.33),
              ("CIFAR-100", "cifar100", "resnet1001", 10.2, 27.82, 22.71)]
    rows = []
    for dataset, prefix, net, params, original, preact in table3:
        tag = "" if dataset == "CIFAR-10" else "-cifar100"
        name = net.replace("_", "-")
        rows.append(PaperRow(f"r2-table3-{name}{tag}", "R2 Table 3", dataset, f"{prefix}_{net}", net, original,
                             params_m=params, note="original (post-activation) unit"))
        rows.append(PaperRow(f"r2-table3-{name}-preact{tag}", "R2 Table 3", dataset, f"{prefix}_{net}_preact",
                             f"{net}_preact", preact, params_m=params, note="full pre-activation unit"))
    return rows


def _table4() -> list[PaperRow]:
    """CIFAR results; R2's own rows are the median of 5 runs (mean +- std in brackets), the two
    CIFAR-10 rows cited from R1 are R1 Table 6's (ResNet-110: mean of 5; ResNet-1202: one run)."""
    rows = [
        ("cifar10-resnet110", "CIFAR-10", "cifar10_resnet110", "resnet110", 1.7, 6.61, 6.61, 0.16,
         "R1's number: the mean of R1 Table 6's 5 runs"),
        ("cifar10-resnet1202", "CIFAR-10", "cifar10_resnet1202", "resnet1202", 19.4, 7.93, None, None,
         "R1's number (one run)"),
        ("cifar10-resnet164-preact", "CIFAR-10", "cifar10_resnet164_preact", "resnet164_preact", 1.7, 5.46, None,
         None, ""),
        ("cifar10-resnet1001-preact", "CIFAR-10", "cifar10_resnet1001_preact", "resnet1001_preact", 10.2, 4.92,
         4.89, 0.14, ""),
        ("cifar10-resnet1001-preact-b64", "CIFAR-10", "cifar10_resnet1001_preact_b64", "resnet1001_preact", 10.2,
         4.62, 4.69, 0.20, "mini-batch 64 (the dagger row), same number of epochs"),
        ("cifar100-resnet164", "CIFAR-100", "cifar100_resnet164", "resnet164", 1.7, 25.16, None, None,
         "R1-style unit, R2's runs (R2 Table 3)"),
        ("cifar100-resnet1001", "CIFAR-100", "cifar100_resnet1001", "resnet1001", 10.2, 27.82, None, None,
         "R1-style unit, R2's runs (R2 Table 3)"),
        ("cifar100-resnet164-preact", "CIFAR-100", "cifar100_resnet164_preact", "resnet164_preact", 1.7, 24.33,
         None, None, ""),
        ("cifar100-resnet1001-preact", "CIFAR-100", "cifar100_resnet1001_preact", "resnet1001_preact", 10.2, 22.71,
         22.68, 0.22, ""),
    ]
    # statistics over runs per row: paper_protocols.TABLES / ROW_STATISTICS
    return [PaperRow(f"r2-table4-{key}", "R2 Table 4", dataset, recipe, model, err, params_m=params, note=note,
                     paper_mean=mean, paper_std=std)
            for key, dataset, recipe, model, params, err, mean, std, note in rows]


def _table5() -> list[PaperRow]:
    """R2 Table 5: "All ResNets are trained using the same hyper-parameters and implementations"
    (caption), R2's ImageNet recipe (appendix: lr 0.1 / 10 at epochs 30 and 60) for every row, so
    the rows differ in the unit only (and the last row in its augmentation); the original-unit
    ResNet-152 is `resnet152_r2`, not R1's plateau recipe `resnet152`."""
    rows = [
        ("resnet152-224", "resnet152_r2", "resnet152", 23.0, 6.7, "original unit [1], 224 test crop"),
        ("resnet152", "resnet152_r2", "resnet152", 21.3, 5.5, "original unit [1]"),
        ("resnet152-preact", "resnet152_preact", "resnet152_preact", 21.1, 5.5, ""),
        ("resnet200", "resnet200", "resnet200", 21.8, 6.0, "original unit: overfits (R2 sec. 5)"),
        ("resnet200-preact", "resnet200_preact", "resnet200_preact", 20.7, 5.3, ""),
        ("resnet200-preact-scale-aspect", "resnet200_preact_scale_aspect", "resnet200_preact", 20.1, 4.8,
         "scale+aspect ratio augmentation (fb.resnet.torch model)"),
    ]
    return [PaperRow(f"r2-table5-{key}", "R2 Table 5", "ImageNet", recipe, model, top1, top5,
                     multiply_adds=R1_IMAGENET_FLOPS[152] if model == "resnet152" else None, note=note)
            for key, recipe, model, top1, top5, note in rows]


def _section5() -> list[PaperRow]:
    """R2 sec. 5: ResNet-101 on ImageNet, original unit vs. BN after addition (Fig. 4b)."""
    return [
        PaperRow("r2-sec5-resnet101", "R2 sec. 5", "ImageNet", "resnet101_r2", "resnet101", 23.6, 7.1,
                 multiply_adds=R1_IMAGENET_FLOPS[101], note="original unit"),
        PaperRow("r2-sec5-resnet101-bn-after-add", "R2 sec. 5", "ImageNet", "resnet101_bn_after_add", "resnet101",
                 24.6, 7.5, multiply_adds=R1_IMAGENET_FLOPS[101], note="BN after addition (Fig. 4b)"),
    ]


def r2_rows() -> list[PaperRow]:
    return _table1() + _table2() + _table3() + _table4() + _table5() + _section5()
