"""One definition per enum: the names a config key (and a CLI option) accepts are the keys of the
registry that implements them, so adding or removing an implementation changes what validation,
`dtrain keys` and the CLI accept, with no second list to forget."""

from __future__ import annotations

import click
import pytest

from dtrain import data
from dtrain.analysis.responses import STATISTICS
from dtrain.commands.overrides import complete_override, key_rows
from dtrain.commands.registry_names import registry_names
from dtrain.data.eval_views import EVAL_VIEWS
from dtrain.data.gpu_decode import DECODERS
from dtrain.data.sampling import FFCV_ORDERS
from dtrain.data.sources import SOURCES
from dtrain.data.stats import NORMALIZATIONS
from dtrain.data.transforms import INTERPOLATIONS, TRAIN_AUGMENTS
from dtrain.distributed.context import BACKEND_DEVICES, DEVICE_CHOICES
from dtrain.distributed.wrap import GRAD_COMPRESSION_HOOKS
from dtrain.engine import lr_schedule
from dtrain.engine.engine import ENGINES
from dtrain.engine.loss import LOSSES
from dtrain.engine.optimizer import NO_DECAY, OPTIMIZERS
from dtrain.engine.precision import AMP_DTYPES
from dtrain.engine.state import RESUME_MODES
from dtrain.errors import ConfigError
from dtrain.resolve import load_config
from dtrain.tracking import BACKENDS
from dtrain.validation import NAMED_KEYS, choices

# key -> the names the implementation handles (the registry's keys, plus `auto` where the code
# resolves it). Written from the implementations, not from dtrain/validation.py.
IMPLEMENTED = {
    "data.loader": [*data.LOADERS, "auto"],
    "data.train_augment": list(TRAIN_AUGMENTS),
    "data.normalize": list(NORMALIZATIONS),
    "data.train_interpolation": list(INTERPOLATIONS),
    "data.val_interpolation": ["bilinear", "bicubic"],
    "data.source": list(SOURCES),
    "data.ffcv_order": list(FFCV_ORDERS),
    "data.gpu_decoder": ["auto", *DECODERS],
    "eval.mode": list(EVAL_VIEWS),
    "optim.name": list(OPTIMIZERS),
    "loss.name": list(LOSSES),
    "optim.no_decay": list(NO_DECAY),
    "schedule.kind": list(lr_schedule.SCHEDULES),
    "schedule.warmup": list(lr_schedule.WARMUPS),
    "schedule.step_on": list(lr_schedule.STEP_ON),
    "schedule.decay_over": list(lr_schedule.DECAY_OVER),
    "distributed.engine": list(ENGINES),
    "distributed.backend": ["auto", *BACKEND_DEVICES],
    "distributed.grad_compression": list(GRAD_COMPRESSION_HOOKS),
    "train.device": ["auto", "cpu", "cuda"],  # resolve_device: torch device types
    "train.amp": ["none", *AMP_DTYPES, "auto"],
    "tracking.backend": list(BACKENDS),
    "checkpoint.resume": list(RESUME_MODES),
}


def test_every_named_key_has_its_registry_here() -> None:
    assert set(NAMED_KEYS) == set(IMPLEMENTED)


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_validation_choices_are_the_registry_keys(key: str) -> None:
    assert choices(key) == IMPLEMENTED[key]


def test_no_choice_list_is_written_out_in_validation() -> None:
    assert all(isinstance(source, str) and ":" in source for source in NAMED_KEYS.values())
    assert tuple(IMPLEMENTED["train.device"]) == DEVICE_CHOICES


def test_a_name_added_to_a_registry_is_accepted_and_a_removed_one_refused(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="schedule.warmup='gradual' is not one of none, constant, linear"):
        load_config("digits_resnet20", ["schedule.warmup=gradual", "schedule.warmup_iters=5"])
    # New dicts, not edits in place: the registries' order is what the help texts show.
    monkeypatch.setattr(lr_schedule, "WARMUPS", {**lr_schedule.WARMUPS, "gradual": lambda cfg, lr, step: lr})
    assert load_config("digits_resnet20", ["schedule.warmup=gradual", "schedule.warmup_iters=5"]).schedule.warmup \
        == "gradual"
    monkeypatch.setattr(lr_schedule, "SCHEDULES", {k: v for k, v in lr_schedule.SCHEDULES.items() if k != "cosine"})
    with pytest.raises(ConfigError, match="schedule.kind='cosine' is not one of"):
        load_config("digits_resnet20", ["schedule.kind=cosine"])


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_keys_help_lists_the_registry_names(key: str) -> None:
    (row,) = [row for row in key_rows() if row.key == key]
    assert " | ".join(IMPLEMENTED[key]) in row.help and "{choices}" not in row.help


def test_no_other_help_text_has_a_choices_placeholder() -> None:
    assert [row.key for row in key_rows() if "{choices}" in row.help] == []
    # Completion answers without importing the registries, and shows their names.
    items = complete_override(None, None, "data.lo")  # type: ignore[arg-type]
    assert [item.value for item in items] == ["data.loader="]
    assert " | ".join(IMPLEMENTED["data.loader"]) in items[0].help


@pytest.mark.parametrize("key", sorted(IMPLEMENTED))
def test_help_reads_each_registry_from_its_source_without_importing_it(key: str) -> None:
    """`dtrain keys` and completion read the registry's literal (no torch import): it must say what
    importing it says, or a registry written another way would fall back to the slow import."""
    assert registry_names(NAMED_KEYS[key]) == IMPLEMENTED[key]


def test_a_registry_that_cannot_be_read_statically_is_imported(monkeypatch) -> None:
    from dtrain.commands import overrides

    monkeypatch.setattr(overrides, "registry_names", lambda source: None)
    assert overrides.listed_choices("schedule.warmup") == IMPLEMENTED["schedule.warmup"]
    assert registry_names("dtrain.engine.lr_schedule:keep_epochs") is None  # a function, not a literal


def _choice(command: click.Command, option: str) -> list[str]:
    (param,) = [p for p in command.params if p.name == option]
    assert isinstance(param.type, click.Choice)
    return list(param.type.choices)


def test_cli_option_choices_come_from_the_same_registries() -> None:
    from dtrain.commands.analyze import analyze
    from dtrain.commands.bench import bench
    from dtrain.commands.evaluate import evaluate

    e2e = bench.commands["e2e"]
    assert _choice(e2e, "device") == IMPLEMENTED["train.device"]
    assert _choice(e2e, "amp") == ["none", *AMP_DTYPES]
    assert _choice(e2e, "source") == list(SOURCES)
    assert sorted(_choice(e2e, "name")) == sorted(data.LOADERS)
    assert _choice(bench.commands["checkpoint"], "device") == IMPLEMENTED["train.device"]
    assert _choice(evaluate, "mode") == list(EVAL_VIEWS)
    assert _choice(analyze.commands["layer-responses"], "statistic") == list(STATISTICS)
