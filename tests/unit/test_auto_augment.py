"""TrivialAugment-wide and RandAugment (dtrain.data.auto_augment, the data.auto_augment key): the ops
and magnitude bins of torchvision's autoaugment.py, draws that are a function of the sample's generator,
uniform op choice, and one-line refusals."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dtrain.config import DataConfig
from dtrain.data.auto_augment import (
    NUM_MAGNITUDE_BINS,
    OPS,
    OpDraw,
    RandAugment,
    TrivialAugmentWide,
    apply_op,
    parse_auto_augment,
    rand_augment_space,
    ta_wide_space,
)
from dtrain.data.sampling import sample_rng
from dtrain.data.timm_rand_augment import INCREASING_OPS, RESAMPLINGS, TimmRandAugment
from dtrain.data.timm_rand_augment import OPS as TIMM_OPS
from dtrain.data.transforms import TrainTransform
from dtrain.errors import ConfigError
from dtrain.resolve import Placement, load_config


def _image(width: int = 40, height: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8), "RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


# torchvision/transforms/autoaugment.py: op -> (first bin, last bin, signed); None: takes no magnitude.
TA_WIDE_TABLE = {
    "Identity": None, "ShearX": (0.0, 0.99, True), "ShearY": (0.0, 0.99, True),
    "TranslateX": (0.0, 32.0, True), "TranslateY": (0.0, 32.0, True), "Rotate": (0.0, 135.0, True),
    "Brightness": (0.0, 0.99, True), "Color": (0.0, 0.99, True), "Contrast": (0.0, 0.99, True),
    "Sharpness": (0.0, 0.99, True), "Posterize": (8.0, 2.0, False), "Solarize": (255.0, 0.0, False),
    "AutoContrast": None, "Equalize": None,
}
RAND_TABLE_331 = {  # at a 331 x 331 image: translations of 150 pixels at the top bin
    "Identity": None, "ShearX": (0.0, 0.3, True), "ShearY": (0.0, 0.3, True),
    "TranslateX": (0.0, 150.0, True), "TranslateY": (0.0, 150.0, True), "Rotate": (0.0, 30.0, True),
    "Brightness": (0.0, 0.9, True), "Color": (0.0, 0.9, True), "Contrast": (0.0, 0.9, True),
    "Sharpness": (0.0, 0.9, True), "Posterize": (8.0, 4.0, False), "Solarize": (255.0, 0.0, False),
    "AutoContrast": None, "Equalize": None,
}


@pytest.mark.parametrize("space, table", [(ta_wide_space(), TA_WIDE_TABLE),
                                          (rand_augment_space(331, 331), RAND_TABLE_331)])
def test_magnitude_bins_are_torchvisions(space, table) -> None:
    assert list(space) == list(table)  # the same ops in the same order (the index drawn picks by order)
    for name, expected in table.items():
        op = space[name]
        if expected is None:
            assert op.magnitudes == () and not op.signed, name
            continue
        first, last, signed = expected
        assert len(op.magnitudes) == NUM_MAGNITUDE_BINS, name
        assert op.magnitudes[0] == first and op.magnitudes[-1] == pytest.approx(last, rel=1e-6), name
        assert op.signed == signed, name
        steps = np.diff(op.magnitudes)
        assert np.all(steps <= 0) if first > last else np.all(steps >= 0), name  # monotone
    # Posterize: 8 - round(i / 5) bits (wide, down to 2) and 8 - round(i / 7.5) (RandAugment, down to 4)
    assert ta_wide_space()["Posterize"].magnitudes[:8] == (8, 8, 8, 7, 7, 7, 7, 7)
    assert rand_augment_space(331, 331)["Posterize"].magnitudes[:5] == (8, 8, 8, 8, 7)
    assert rand_augment_space(64, 32)["TranslateY"].magnitudes[-1] == pytest.approx(150 / 331 * 32, rel=1e-6)


@pytest.mark.parametrize("name", sorted(OPS))
def test_each_op_at_magnitude_zero_is_the_identity_where_torchvisions_is(name: str) -> None:
    image = _image()
    image.putpixel((0, 0), (255, 255, 255))  # Solarize's threshold-255 bin still inverts 255
    space = ta_wide_space()
    zero = space[name].magnitudes[0] if space[name].magnitudes else 0.0  # Posterize 8 bits, Solarize 255
    out = _pixels(apply_op(image, OpDraw(name, zero)))
    if name in ("AutoContrast", "Equalize"):  # no magnitude: they stretch a low-contrast image
        dull = Image.fromarray(_pixels(image) // 4 + 100, "RGB")
        assert not np.array_equal(_pixels(apply_op(dull, OpDraw(name, zero))), _pixels(dull))
    elif name == "Solarize":
        white = _pixels(image) == 255
        assert np.array_equal(out != _pixels(image), white) and (out[white] == 0).all() and white[0, 0].all()
    else:
        assert np.array_equal(out, _pixels(image)), name
        if name != "Identity":  # and a nonzero magnitude does change it (the op is wired)
            assert not np.array_equal(_pixels(apply_op(image, OpDraw(name, space[name].magnitudes[-1]))),
                                      _pixels(image)), name


def test_geometric_ops_move_pixels_as_torchvision_does() -> None:
    image = _image()
    source = _pixels(image)
    moved = _pixels(apply_op(image, OpDraw("TranslateX", 3.9)))  # int(3.9) = 3 pixels to the right
    assert np.array_equal(moved[:, 3:], source[:, :-3]) and (moved[:, :3] == 0).all()
    moved = _pixels(apply_op(image, OpDraw("TranslateY", -2.5)))  # int(-2.5) = -2: up by 2
    assert np.array_equal(moved[:-2], source[2:]) and (moved[-2:] == 0).all()
    # about the origin, in PIL's pixel-centre coordinates: row y reads from x + m * (y + 0.5)
    sheared = _pixels(apply_op(image, OpDraw("ShearX", 2.0)))
    assert np.array_equal(sheared[0, :-1], source[0, 1:]) and np.array_equal(sheared[1, :-3], source[1, 3:])
    sheared = _pixels(apply_op(image, OpDraw("ShearY", -2.0)))  # column x reads from y - m * (x + 0.5)
    assert np.array_equal(sheared[1:, 0], source[:-1, 0]) and (sheared[0, 0] == 0).all()


@pytest.mark.parametrize("augment", [TrivialAugmentWide(), RandAugment(9, 2), TimmRandAugment(7, 2, 0.5, 10, True)])
def test_same_seed_epoch_index_gives_the_same_image_and_other_indices_other_ops(augment) -> None:
    image = _image()
    first = _pixels(augment(image, sample_rng(7, 3, 11)))
    assert np.array_equal(first, _pixels(augment(image, sample_rng(7, 3, 11))))
    sequences = {tuple(augment.draws(image, sample_rng(7, 3, index))) for index in range(200)}
    assert len(sequences) > 50  # the index (and the epoch) pick other ops and magnitudes
    other_epoch = [augment.draws(image, sample_rng(7, 4, index)) for index in range(20)]
    assert other_epoch != [augment.draws(image, sample_rng(7, 3, index)) for index in range(20)]


def test_ta_wide_picks_ops_and_bins_uniformly() -> None:
    draws = 14 * 2000
    augment, image = TrivialAugmentWide(), _image(8, 8)
    picked = [augment.draws(image, sample_rng(0, 0, i))[0] for i in range(draws)]
    counts = Counter(d.name for d in picked)
    assert set(counts) == set(ta_wide_space())
    expected = draws / 14
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 34.5  # chi-square, 13 degrees of freedom, p = 0.001
    rotations = Counter(abs(d.magnitude) for d in picked if d.name == "Rotate")
    assert len(rotations) == NUM_MAGNITUDE_BINS  # every bin is reached
    negative = sum(d.magnitude < 0 for d in picked if d.name == "Rotate")
    assert 0.4 < negative / sum(rotations.values()) < 0.6  # signed: negated half the time


def test_rand_augment_applies_n_ops_at_the_fixed_bin() -> None:
    augment, image = RandAugment(magnitude=30, num_ops=3), _image(64, 32)
    space = rand_augment_space(64, 32)
    for index in range(50):
        draws = augment.draws(image, sample_rng(1, 0, index))
        assert len(draws) == 3
        for d in draws:
            expected = space[d.name].magnitudes[30] if space[d.name].magnitudes else 0.0
            assert abs(d.magnitude) == expected


@pytest.mark.parametrize("spec, expected", [
    ("none", None), ("ta_wide", TrivialAugmentWide()), ("ra-m9", RandAugment(9, 2)),
    ("ra-m7-n3", RandAugment(7, 3)), ("ra-m0-n1", RandAugment(0, 1)),
    ("rand-m7-mstd0.5-inc1", TimmRandAugment(7, 2, 0.5, 10, True)), ("rand-m9-n3", TimmRandAugment(9, 3)),
    ("rand-mstd101", TimmRandAugment(10, 2, float("inf"))),
])
def test_specs_parse(spec: str, expected) -> None:
    assert parse_auto_augment(spec) == expected


@pytest.mark.parametrize("spec, says", [
    ("trivial", "is not one of none | ta_wide | ra-mM[-nN]"),
    ("ra-m31", "magnitude bin M in 0..30"),
    ("ra-m9-n0", "at least 1 op"),
    ("rand-m9-w0", "op weights w are not implemented"),
    ("rand-mx", "section 'mx' is not one of mM, nN"),
    ("rand-m9.5", "section 'm9.5' needs a number"),
    ("rand-m9-n0", "needs n >= 1"),
])
def test_bad_specs_are_one_line_errors(spec: str, says: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_auto_augment(spec)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_train_transform_applies_it_after_the_crop_and_drops_the_pad_window() -> None:
    raw = dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], lighting_std=0.0, train_augment="pad_crop",
               crop_size=32, pad=4)
    plain, augmented = TrainTransform(DataConfig(**raw)), TrainTransform(DataConfig(**raw, auto_augment="ta_wide"))
    image = _image(32, 32)
    assert plain.sample(image, sample_rng(0, 0, 0))[2] is not None
    outputs = [augmented.sample(image, sample_rng(0, 0, i)) for i in range(30)]
    assert all(window is None for _, _, window in outputs)  # the ops move the padding: black pixels now
    same = [torch_equal(augmented.sample(image, sample_rng(0, 0, i))[0], outputs[i][0]) for i in range(30)]
    assert all(same)
    differs = [not torch_equal(plain.sample(image, sample_rng(0, 0, i))[0], outputs[i][0]) for i in range(30)]
    assert sum(differs) > 15  # most draws change the image (Identity, and some others at bin 0, do not)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_solarize_inverts_from_the_float_threshold_up() -> None:
    image = Image.fromarray(np.array([[[246, 247, 0]]], dtype=np.uint8), "RGB")
    threshold = ta_wide_space()["Solarize"].magnitudes[1]  # 246.5
    assert np.array_equal(_pixels(apply_op(image, OpDraw("Solarize", threshold)))[0, 0], [246, 8, 0])


@pytest.mark.parametrize("overrides, says", [
    (["data.auto_augment=ta_wid"], "data.auto_augment='ta_wid' is not one of none | ta_wide"),
    (["data.auto_augment=ta_wide", "data.loader=gpu"], "the torch, synthetic, dali loaders, not data.loader=gpu"),
    (["data.auto_augment=ra-m9", "data.loader=ffcv"], "the torch, synthetic, dali loaders, not data.loader=ffcv"),
    (["data.auto_augment=rand-m9", "data.loader=dali"], "runs in the torch, synthetic loaders, not data.loader=dali"),
])
def test_config_refusals_are_one_line(overrides: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("digits_resnet20", overrides)
    assert says in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("spec", ["ta_wide", "ra-m9-n2", "rand-m7-mstd0.5-inc1"])
def test_config_accepts_the_specs(spec: str) -> None:
    assert load_config("digits_resnet20", [f"data.auto_augment={spec}"]).data.auto_augment == spec


def test_loader_auto_is_refused_once_placed_on_cuda() -> None:
    """data.loader=auto passes until the device is known; on CUDA it is the gpu loader, which refuses."""
    with pytest.raises(ConfigError, match="not data.loader=gpu"):
        load_config("digits_resnet20", ["data.auto_augment=ta_wide", "data.loader=auto"], Placement("cuda"))
    assert load_config("digits_resnet20", ["data.auto_augment=ta_wide", "data.loader=auto"],
                       Placement("cpu")).data.loader == "torch"


@pytest.mark.parametrize("name", sorted(TIMM_OPS))
def test_timm_ops_at_level_zero_and_ten_are_timms(name: str) -> None:
    """timm's *_level_to_arg at M=0 and M=10 (the 'increasing' ops: the identity at 0)."""
    image = _image()
    source = _pixels(image)
    at = {level: _pixels(INCREASING_OPS[name](image, level, False, Image.Resampling.BILINEAR, (0, 0, 0)))
          for level in (0.0, 10.0)}
    if name in ("AutoContrast", "Equalize", "Invert"):
        assert np.array_equal(at[0.0], at[10.0])  # no level
    elif name == "Posterize":  # increasing: 4 bits kept at 0, none at 10
        assert np.array_equal(at[0.0], source & 0xF0) and (at[10.0] == 0).all()
    elif name == "Solarize":  # increasing: threshold 256 (nothing) at 0, 0 (everything) at 10
        assert np.array_equal(at[0.0], source) and np.array_equal(at[10.0], 255 - source)
    else:
        assert np.array_equal(at[0.0], source), name
        assert not np.array_equal(at[10.0], source), name
    plain = {level: _pixels(TIMM_OPS[name](image, level, False, Image.Resampling.BILINEAR, (0, 0, 0)))
             for level in (0.0, 10.0)}
    if name == "Posterize":  # not increasing: 0 bits at 0, 4 at 10
        assert (plain[0.0] == 0).all() and np.array_equal(plain[10.0], source & 0xF0)
    if name == "Brightness":  # not increasing: factor 0.1 at 0, 1.9 at 10
        assert plain[0.0].mean() < source.mean() / 5 < source.mean() < plain[10.0].mean()


def test_timm_draws_apply_half_the_ops_and_noise_the_magnitude() -> None:
    image = _image(8, 8)
    noisy = [d for i in range(3000) for d in TimmRandAugment(7, 2, 0.5).draws(image, sample_rng(0, 0, i))]
    assert 0.45 < np.mean([d.applied for d in noisy]) < 0.55
    levels = np.array([d.level for d in noisy])
    assert abs(levels.mean() - 7) < 0.05 and 0.45 < levels.std() < 0.55
    flat = TimmRandAugment(9, 2, float("inf"))  # timm: mstd > 100 samples uniformly in [0, M]
    uniform = [d.level for i in range(3000) for d in flat.draws(image, sample_rng(0, 0, i))]
    assert 0 <= min(uniform) < 0.1 and 8.9 < max(uniform) <= 9 and abs(np.mean(uniform) - 4.5) < 0.15
    clipped = [d.level for i in range(500) for d in TimmRandAugment(10, 2, 2.0).draws(image, sample_rng(0, 0, i))]
    assert max(clipped) == 10.0  # clipped to [0, 10] (mmax)
    assert len({d.name for d in noisy}) == 15 and {d.resample for d in noisy} == set(RESAMPLINGS)


def test_timm_fill_is_the_datasets_mean_colour() -> None:
    augment = parse_auto_augment("rand-m9-mstd0.5-inc1", [0.485, 0.456, 0.406])
    assert isinstance(augment, TimmRandAugment) and augment.fill == (124, 116, 104)  # timm's img_mean
    moved = _pixels(augment.__class__(10, 1, fill=(1, 2, 3))(_image(), sample_rng(0, 0, 0)))
    assert moved.shape == (32, 40, 3)
