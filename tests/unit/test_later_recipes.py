"""The later recipes (torchvision's ResNet-50 V2, timm's ResNet strikes back A1-A3, FFCV's rn50
configs) resolve, and every key equals the setting its project publishes; their `dtrain reproduce`
rows hold the published numbers and are listed in their own group with their cost.

The expected values below are written from the sources, not from the recipe files:
- torchvision: the IMAGENET1K_V2 command (--batch-size 128 on 8 GPUs, --lr 0.5, --lr-warmup-epochs 5,
  --epochs 600, --weight-decay 0.00002, --norm-weight-decay 0.0, --label-smoothing 0.1, --mixup-alpha 0.2,
  --cutmix-alpha 1.0, --random-erase 0.1, --train-crop-size 176, --val-resize-size 232, --ra-reps 4,
  --model-ema, --auto-augment ta_wide) and train.py's defaults (--lr-warmup-decay 0.01, --model-ema-steps 32,
  --model-ema-decay 0.99998 rescaled by 8 x 128 x 32 / 600, --val-crop-size 224).
- RSB (arXiv:2110.00476) Table 1: A1 / A2 / A3 = epochs 600 / 300 / 100, LR 5e-3 / 5e-3 / 8e-3, weight
  decay 0.01 / 0.02 / 0.02, mixup 0.2 / 0.1 / 0.1, CutMix 1.0, stochastic depth 0.05 / 0.05 / none,
  repeated augmentation yes / yes / no, train res 224 / 224 / 160, RandAugment 7/0.5, 7/0.5, 6/0.5 (timm's
  rand-mM-mstd0.5-inc1), batch 2048, LAMB, BCE, warm-up 5,
  test 224 at crop ratio 0.95.
- FFCV rn50_configs/rn50_{E}_epochs.yaml: lr 1.7, batch_size 512 x world_size 8, momentum 0.9,
  weight_decay 1e-4, label_smoothing 0.1, use_blurpool 1, min_res 160, max_res 192, start_ramp / end_ramp
  16: 11/13, 24: 17/20, 32: 23/27, 40: 29/34, 56: 41/48, 88: 65/76, validation resolution 256,
  lr_tta true; train_imagenet.py: lr_peak_epoch 2, start 1e-4 x lr, linear to 0.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dtrain.analysis.later_recipes import IMAGENET_TRAIN_IMAGES, later_recipe_rows
from dtrain.analysis.paper_numbers import ROWS
from dtrain.analysis.reports import Measured, render_report
from dtrain.analysis.row_cost import row_cost
from dtrain.config import flatten, to_dict
from dtrain.data.resolution import train_crop_size
from dtrain.resolve import load_config

COMMON = {"model.name": "resnet50_v1_5", "model.num_classes": 1000, "data.train_augment": "random_resized_crop",
          "data.rrc_scale": [0.08, 1.0], "data.flip": True, "data.lighting_std": 0.0, "data.normalize": "channel",
          "data.val_split": "val", "schedule.max_iters": None, "schedule.warmup": "linear", "eval.mode": "center"}

TV2 = {"optim.name": "sgd", "optim.batch_size": 8 * 128, "optim.lr": 0.5, "optim.scale_lr": False,
       "optim.momentum": 0.9, "optim.weight_decay": 2e-5, "optim.no_decay": "norm",
       "loss.name": "cross_entropy", "loss.label_smoothing": 0.1,
       "schedule.kind": "cosine", "schedule.epochs": 600, "schedule.warmup_epochs": 5,
       "schedule.warmup_lr": 0.01 * 0.5, "schedule.min_lr": 0.0, "schedule.step_on": "epoch",
       "schedule.decay_over": "after_warmup",
       "augment.mixup_alpha": 0.2, "augment.cutmix_alpha": 1.0, "augment.mix_prob": 1.0, "augment.switch_prob": 0.5,
       "augment.erasing_prob": 0.1, "data.crop_size": 176, "data.val_resize": 232, "data.val_crop": 224,
       "data.repeated_augment_reps": 4, "data.auto_augment": "ta_wide",
       "ema.enabled": True, "ema.every_steps": 32, "ema.warmup_epochs": 5,
       "ema.decay": pytest.approx(1 - (1 - 0.99998) * 8 * 128 * 32 / 600, abs=1e-8),
       "distributed.bn_group_size": 128, "eval.flip_tta": False}

RSB_SHARED = {"optim.name": "lamb", "optim.batch_size": 2048, "optim.scale_lr": False,
              "optim.no_decay": "norm_and_bias", "optim.clip_grad_norm": 1.0, "loss.name": "bce",
              "schedule.kind": "cosine",
              "schedule.warmup_epochs": 5, "schedule.step_on": "epoch", "schedule.decay_over": "whole_run",
              "augment.cutmix_alpha": 1.0, "augment.erasing_prob": 0.0,
              "ema.enabled": False, "data.val_resize": 235, "data.val_crop": 224,
              "model.options.zero_init_residual": True}
RSB = {  # procedure: (epochs, lr, weight decay, mixup, stochastic depth, RA reps, train res, RandAugment)
    "a1": (600, 5e-3, 0.01, 0.2, 0.05, 3, 224, "rand-m7-mstd0.5-inc1"),
    "a2": (300, 5e-3, 0.02, 0.1, 0.05, 3, 224, "rand-m7-mstd0.5-inc1"),
    "a3": (100, 8e-3, 0.02, 0.1, 0.0, 1, 160, "rand-m6-mstd0.5-inc1"),
}

FFCV_RAMPS = {16: (11, 13), 24: (17, 20), 32: (23, 27), 40: (29, 34), 56: (41, 48), 88: (65, 76)}  # start, end
FFCV = {"optim.name": "sgd", "optim.batch_size": 512 * 8, "optim.lr": 1.7, "optim.scale_lr": False,
        "optim.momentum": 0.9, "optim.weight_decay": 1e-4, "optim.no_decay": "bn_named",
        "loss.name": "cross_entropy", "loss.label_smoothing": 0.1, "model.options.blurpool": True,
        "schedule.kind": "linear", "schedule.warmup_epochs": 2, "schedule.warmup_lr": pytest.approx(1e-4 * 1.7),
        "schedule.min_lr": 0.0, "schedule.step_on": "iteration", "schedule.decay_over": "after_warmup",
        "data.min_res": 160, "data.max_res": 192, "data.val_crop": 256, "eval.flip_tta": True,
        "augment.mixup_alpha": 0.0, "augment.cutmix_alpha": 0.0, "ema.enabled": False,
        "distributed.bn_group_size": 512}


def _expected() -> dict[str, dict]:
    cases = {"resnet50_tv2": {**COMMON, **TV2}}
    for name, (epochs, lr, wd, mixup, depth, reps, res, rand) in RSB.items():
        cases[f"resnet50_rsb_{name}"] = {**COMMON, **RSB_SHARED, "schedule.epochs": epochs, "optim.lr": lr,
                                         "optim.weight_decay": wd, "augment.mixup_alpha": mixup,
                                         "model.options.stochastic_depth": depth, "data.repeated_augment_reps": reps,
                                         "data.crop_size": res, "data.auto_augment": rand}
    for epochs, (start, end) in FFCV_RAMPS.items():
        cases[f"resnet50_ffcv_{epochs}"] = {**COMMON, **FFCV, "schedule.epochs": epochs, "data.start_ramp": start,
                                            "data.end_ramp": end}
    return cases


EXPECTED = _expected()


@pytest.mark.parametrize("recipe", sorted(EXPECTED))
def test_recipe_resolves_to_its_sources_settings(recipe):
    config = flatten(to_dict(load_config(recipe, [])))
    differ = {key: (config.get(key, "<missing>"), want) for key, want in EXPECTED[recipe].items()
              if config.get(key, "<missing>") != want}
    assert not differ, f"{recipe}: key -> (recipe, source) {differ}"


def test_every_later_row_names_a_tested_recipe_with_its_epochs():
    rows = later_recipe_rows()
    assert {row.recipe for row in rows} == set(EXPECTED)
    for row in rows:
        assert row.epochs == load_config(row.recipe, []).schedule.epochs, row.key
        assert row.images_seen == row.epochs * IMAGENET_TRAIN_IMAGES
        cost = row_cost(row)
        assert (cost.epochs, cost.images) == (row.epochs, row.images_seen), row.key
        assert row.citation and row.turns_on and row.note, row.key


def test_later_rows_hold_the_published_numbers():
    # torchvision resnet.py IMAGENET1K_V2 acc@1 80.858 acc@5 95.434; RSB Table 1 80.4 / 79.8 / 78.1 with
    # timm's results-imagenet.csv top-5 94.598 / 94.560 / 93.780; ffcv-imagenet README top_1 / top_5.
    published = {"tv2-resnet50": (80.858, 95.434), "rsb-a1-resnet50": (80.4, 94.598),
                 "rsb-a2-resnet50": (79.8, 94.560), "rsb-a3-resnet50": (78.1, 93.780),
                 "ffcv-rn50-88": (78.4, 94.1), "ffcv-rn50-56": (78.0, 93.7), "ffcv-rn50-40": (77.2, 93.2),
                 "ffcv-rn50-32": (76.6, 92.7), "ffcv-rn50-24": (75.6, 92.1), "ffcv-rn50-16": (73.8, 90.8)}
    rows = {row.key: row for row in later_recipe_rows()}
    assert set(rows) == set(published)
    for key, (top1, top5) in published.items():
        assert rows[key].top1_err == pytest.approx(100 - top1) and rows[key].top5_err == pytest.approx(100 - top5)
        assert ROWS[key] is not None and ROWS[key].dataset == "ImageNet"


def test_later_rows_test_as_their_project_evaluates():
    protocols = {row.key: row.protocol for row in later_recipe_rows()}
    assert protocols["tv2-resnet50"].overrides == ("data.val_resize=232", "data.val_crop=224",
                                                   "data.val_interpolation=bilinear")
    assert all(p.overrides == ("data.val_resize=235", "data.val_crop=224", "data.val_interpolation=bicubic")
               for key, p in protocols.items() if key.startswith("rsb-"))
    assert all(p.overrides == ("data.val_resize=292", "data.val_crop=256", "eval.flip_tta=true")
               for key, p in protocols.items() if key.startswith("ffcv-"))
    assert all(p.eval_mode == "center" for p in protocols.values())
    # the protocol is the recipe's own validation: a run's periodic validation tests the same views
    for row in later_recipe_rows():
        config = flatten(to_dict(load_config(row.recipe, [])))
        for override in row.protocol.overrides:
            key, _, value = override.partition("=")
            assert str(config[key]).lower() == value, (row.key, key)


def test_list_groups_the_papers_rows_then_the_later_recipes_with_their_cost():
    from dtrain.commands.reproduce import LATER_TITLE, PAPERS_TITLE, reproduce

    out = CliRunner().invoke(reproduce, ["--list"]).output
    papers_at, later_at = out.index(PAPERS_TITLE), out.index(LATER_TITLE)
    assert papers_at < later_at
    papers, later = out[papers_at:later_at], out[later_at:]
    for row in later_recipe_rows():
        line = next(line for line in later.splitlines() if line.startswith(row.key + " "))
        assert f" {row.epochs} " in line and f" {row.images_seen / 1e6:.1f}M " in line, line
        assert f" {row.top1_err:.2f} " in line and row.source in line and row.protocol.name in line
        assert row.key not in papers
    assert "r1-table6-resnet110" in papers and "r1-table6-resnet110" not in later
    # the papers' rows show their cost too: R1 CIFAR 64k iterations x 128 = 8.2M images, 164 epochs
    line = next(line for line in papers.splitlines() if line.startswith("r1-table6-resnet110 "))
    assert " 164 " in line and " 8.2M " in line


def test_a_later_rows_report_does_not_ask_for_the_papers_normalisation():
    row = ROWS["tv2-resnet50"]
    measured = Measured(top1_err=30.0, top5_err=10.0, params=25_557_032, multiply_adds=4.1e9, input_size=224,
                        iterations=4, full_iterations=None, dataset="imagenet", data_root="/x", eval_mode="center",
                        recipe=row.recipe, overrides=[], normalize="channel")
    report = render_report(row, measured)
    assert "Normalisation differs" not in report and "center-232" in report and "19.14" in report


def test_ffcv_recipes_train_at_ffcvs_resolution_per_epoch():
    """FFCV's get_resolution for the 16-epoch config (start_ramp 11, end_ramp 13): 160 through epoch 11,
    then np.interp(12, [11, 13], [160, 192]) = 176 -> round(5.5) * 32 = 192 (half to even), 192 on."""
    data = load_config("resnet50_ffcv_16", []).data
    assert [train_crop_size(data, epoch) for epoch in range(16)] == [160] * 12 + [192] * 4
