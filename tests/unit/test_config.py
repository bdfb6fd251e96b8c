"""Recipes carry the papers' numbers (R1 sec. 3.4 and 4.2; R2 for its pre-activation nets); bad keys and
values fail with one clear line."""

from __future__ import annotations

import pytest

from dtrain.config import RunConfig, flatten, to_dict
from dtrain.errors import ConfigError
from dtrain.recipes import recipe_names
from dtrain.resolve import check_data_root, check_world_size, load_config

IMAGENET_R1 = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "plain18", "plain34"]
IMAGENET_R2 = ["resnet152_preact", "resnet200_preact", "resnet152_r2", "resnet200", "resnet101_r2"]
CIFAR_R1 = [f"cifar10_resnet{n}" for n in (20, 32, 44, 56, 110, 1202)] + [
    f"cifar10_plain{n}" for n in (20, 32, 44, 56)
]
CIFAR_R2 = [
    "cifar10_resnet110_preact",
    "cifar10_resnet164_preact",
    "cifar10_resnet1001_preact",
    "cifar100_resnet164_preact",
    "cifar100_resnet1001_preact",
]


def test_every_paper_setting_has_a_recipe():
    names = set(recipe_names())
    missing = [n for n in IMAGENET_R1 + IMAGENET_R2 + CIFAR_R1 + CIFAR_R2 + ["digits_resnet20"] if n not in names]
    assert not missing, f"recipes missing: {missing}"


@pytest.mark.parametrize("recipe", IMAGENET_R1 + IMAGENET_R2)
def test_imagenet_recipes_follow_the_papers(recipe):
    c = load_config(recipe)
    assert (c.optim.batch_size, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (256, 0.1, 0.9, 1e-4)
    assert c.model.num_classes == 1000
    assert c.data.crop_size == 224 and c.data.lighting_std > 0
    assert c.schedule.warmup == "none"  # R2: "lr 0.1 (no warm-up)"
    if recipe in IMAGENET_R1:
        assert c.data.train_augment == "scale_jitter" and c.data.scale_range == [256, 480]
        assert c.schedule.kind == "plateau" and c.schedule.max_iters == 600_000
    else:
        assert c.schedule.kind == "step_epochs" and c.schedule.milestones == [30, 60]
        assert c.schedule.gamma == 0.1


@pytest.mark.parametrize("recipe", CIFAR_R1 + CIFAR_R2)
def test_cifar_recipes_follow_the_papers(recipe):
    c = load_config(recipe)
    assert (c.optim.batch_size, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (128, 0.1, 0.9, 1e-4)
    assert c.schedule.kind == "step_iters"
    assert c.schedule.milestones == [32_000, 48_000] and c.schedule.max_iters == 64_000
    assert (c.data.train_augment, c.data.pad, c.data.crop_size, c.data.flip) == ("pad_crop", 4, 32, True)
    assert c.model.num_classes == (100 if recipe.startswith("cifar100") else 10)


@pytest.mark.parametrize("recipe", ["cifar10_resnet110", "cifar10_resnet1202", "cifar10_plain110"] + CIFAR_R2)
def test_warm_up_where_the_papers_use_it(recipe):
    # R1 sec. 4.2: 0.01 "until the training error is below 80% (about 400 iterations)"; R2's
    # appendix: every CIFAR run, following R1 (plain-110 is R2 Table 1's "constant scaling 0" row)
    s = load_config(recipe).schedule
    assert (s.warmup, s.warmup_lr, s.warmup_until_err, s.warmup_iters) == ("constant", 0.01, 80.0, 400)


def test_r1_cifar_nets_other_than_110_have_no_warm_up():
    assert load_config("cifar10_resnet56").schedule.warmup == "none"


def test_recipe_variants_set_model_options():
    assert load_config("resnet34_optionA").model.options == {"shortcut": "A"}
    assert load_config("resnet34_optionC").model.options == {"shortcut": "C"}


def test_dotted_overrides_are_typed():
    c = load_config("cifar10_resnet20", ["optim.lr=0.2", "schedule.milestones=[10,20]", "train.amp=bf16",
                                         "model.options.zero_init_residual=true", "tracking.uri=null"])
    assert c.optim.lr == 0.2 and c.schedule.milestones == [10, 20] and c.train.amp == "bf16"
    assert c.model.options == {"zero_init_residual": True}
    assert c.tracking.uri is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.2", "unknown config key optim.lrr (did you mean optim.lr?)"),
        ("optimm.lr=0.2", "unknown config key optimm (did you mean optim?)"),
        ("optim.lr=fast", "optim.lr must be a number"),
        ("optim.batch_size=12.5", "optim.batch_size must be an integer"),
        ("data.flip=maybe", "data.flip must be true or false"),
        ("schedule.kind=step_epoch", "did you mean step_epochs?"),
        ("data.loader=dalli", "did you mean dali?"),
        ("optim.batch_size=0", "optim.batch_size must be positive"),
        ("optim.lr", "must look like key=value"),
    ],
)
def test_bad_overrides_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=None) as info:
        load_config("resnet50", [override])
    assert message in str(info.value)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean resnet50"):
        load_config("resnet5O")


def test_batch_must_divide_by_world_size():
    c = load_config("resnet50")
    assert check_world_size(c, 8) == 32
    with pytest.raises(ConfigError, match="does not divide by world size 3"):
        check_world_size(c, 3)


def test_training_needs_a_prepared_root(tmp_path):
    c = load_config("cifar10_resnet20")
    with pytest.raises(ConfigError, match="data.root is empty"):
        check_data_root(c)
    c = load_config("cifar10_resnet20", [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="run `dtrain prepare"):
        check_data_root(c)
    assert check_data_root(load_config("resnet50", ["data.loader=synthetic"])) is None


def test_flatten_gives_every_value_a_dotted_name():
    flat = flatten(to_dict(RunConfig()))
    assert flat["optim.lr"] == 0.1 and flat["schedule.milestones"] == [30, 60]


