"""Config values parse as a user expects and every bad value is one line, exit 2, never a traceback;
`extends:` takes recipe names; keys, --set and completion come from the dataclasses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dtrain.cli import cli, main
from dtrain.commands.overrides import complete_override, complete_recipe, key_rows, sections
from dtrain.config import RunConfig
from dtrain.errors import ConfigError
from dtrain.recipes import recipe_names
from dtrain.resolve import load_config, parse_override


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-3", 0.001), ("5e-5", 5e-5), (".1", 0.1), ("1.", 1.0), ("-2E+2", -200.0), ("1_000", 1000),
     ("0755", 755), ("true", True), ("False", False), ("no", "no"), ("on", "on"), ("2026-01-01", "2026-01-01"),
     ("[256, 480]", [256, 480]), ("[1e-1, .5]", [0.1, 0.5]), ("null", None)],
)
def test_override_values_follow_yaml_1_2(text, expected) -> None:
    key, value = parse_override(f"a.b={text}")
    assert value == expected and type(value) is type(expected)


def test_the_same_values_parse_alike_in_a_recipe_file_and_on_the_command_line(tmp_path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: digits_resnet20\noptim: {lr: 5e-5, weight_decay: 1e-4}\n"
                      "data: {synthetic_samples: 1_000, flip: false}\ntracking: {run_name: no}\n")
    from_file = load_config(str(recipe))
    from_cli = load_config("digits_resnet20", ["optim.lr=5e-5", "optim.weight_decay=1e-4",
                                               "data.synthetic_samples=1_000", "data.flip=false",
                                               "tracking.run_name=no"])
    for cfg in (from_file, from_cli):
        assert (cfg.optim.lr, cfg.optim.weight_decay) == (5e-5, 1e-4)
        assert (cfg.data.synthetic_samples, cfg.data.flip, cfg.tracking.run_name) == (1000, False, "no")


def test_extends_takes_a_recipe_name_and_the_file_overrides_it(tmp_path) -> None:
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("extends: digits_resnet20\nschedule: {epochs: 3}\n")
    parent, child = load_config("digits_resnet20"), load_config(str(recipe))
    assert child.schedule.epochs == 3 and child.model == parent.model and child.optim == parent.optim
    recipe.write_text("extends: digits_resnet2O\n")
    with pytest.raises(ConfigError, match="did you mean digits_resnet20"):
        load_config(str(recipe))


BAD_VALUES = [
    ("optim.lr=-1e-3", "optim.lr must be positive"),
    ("model.name=resnet2O", "model.name='resnet2O' is not a model (did you mean resnet32, resnet20, resnet200?)"),
    ("model.options.shortcutt=A", "model.options.shortcutt is not an option of resnet50 "
                                  "(did you mean model.options.shortcut?)"),
    ("model.options.shortcut=Z", "unknown shortcut option 'Z'"),
    ("model.options.depth=7", "model.options.depth is fixed by model.name=resnet50"),
    ("data.scale_range=[1]", "data.scale_range must be [low, high]"),
    ("data.scale_range=[480, 256]", "data.scale_range must be [low, high]"),
    ("data.rrc_scale=[0.5, 2]", "data.rrc_scale must be fractions in (0, 1]"),
    ("data.mean=[0.5]", "data.mean must hold 3 values"),
    ("schedule.epochs=-1", "schedule.epochs must be at least 1"),
    ("schedule.milestones=[60, 30]", "schedule.milestones must be non-negative and ascending"),
    ("schedule.warmup=linear", "schedule.warmup=linear needs schedule.warmup_iters > 0"),
    ("data.loader=dalli", "(did you mean dali?)"),
    ("eval.mode=tencrop", "(did you mean ten-crop?)"),
    ("distributed.engine=deepspeeed", "(did you mean deepspeed?)"),
    ("tracking.backend=jsnol", "(did you mean jsonl?)"),
    ("checkpoint.resume=forse", "(did you mean force?)"),
    ("distributed.zero_stage=4", "distributed.zero_stage must be 0, 1, 2 or 3"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_bad_values_are_refused_by_load_config(override, message) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("resnet50", [override])
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("override", ["model.name=resnet2O", "model.options.shortcutt=A", "data.scale_range=[1]",
                                      "schedule.epochs=-1"])
def test_every_bad_value_of_the_issue_is_one_line_and_exit_2_from_train(override, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "digits_resnet20", override, "data.loader=synthetic", f"run_dir={tmp_path}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before anything started


def test_an_exponent_without_a_dot_is_a_learning_rate() -> None:
    result = CliRunner().invoke(cli, ["show-config", "resnet50", "optim.lr=1e-3", "--format", "json"])
    assert result.exit_code == 0 and '"lr": 0.001' in result.output


def test_builder_arguments_are_checked_by_the_builder_without_weights() -> None:
    with pytest.raises(ConfigError, match="model.options of cifar_resnet: .*21"):
        load_config("cifar10_resnet20", ["model.name=cifar_resnet", "model.options.depth=21"])
    assert load_config("cifar10_resnet20", ["model.name=cifar_resnet", "model.options.depth=32"]).model.options == {
        "depth": 32}


def test_shipped_recipes_pass_validation() -> None:
    for name in recipe_names():
        load_config(name)


def test_keys_lists_every_field_with_type_default_and_help() -> None:
    rows = {row.key: row for row in key_rows()}
    assert rows["optim.lr"].type == "float" and rows["optim.lr"].default == 0.1
    assert all(row.help for row in rows.values()), [k for k, r in rows.items() if not r.help]
    assert {s.key for s in sections()} == {"model", "data", "optim", "loss", "schedule", "distributed", "train", "eval",
                                           "checkpoint", "tracking", "augment", "ema"}
    result = CliRunner().invoke(cli, ["keys", "schedule"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == len(key_rows("schedule")) and all(line.startswith("schedule.") for line in lines)


def test_train_help_lists_the_sections_and_points_at_show_config() -> None:
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    for section in sections():
        assert f"  {section.key} " in result.output
    assert "dtrain show-config RECIPE" in result.output and "dtrain keys" in result.output

def test_python_m_dtrain_train_help_is_the_same_help(capsys) -> None:
    from dtrain.train import main as train_main

    assert train_main(["--help"]) == 0
    assert "dtrain show-config RECIPE" in capsys.readouterr().out


def test_set_is_an_alias_of_positional_overrides() -> None:
    positional = CliRunner().invoke(cli, ["show-config", "digits_resnet20", "optim.lr=1e-3", "--format", "json"])
    aliased = CliRunner().invoke(cli, ["show-config", "digits_resnet20", "--set", "optim.lr=1e-3", "--format", "json"])
    assert positional.exit_code == aliased.exit_code == 0 and positional.output == aliased.output
    assert '"lr": 0.001' in aliased.output


@pytest.mark.parametrize("command", [["train"], ["eval"], ["show-config"], ["reproduce"], ["k8s", "render"]])
def test_every_command_taking_overrides_takes_set(command) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "--set KEY=VALUE" in result.output


def test_completion_offers_recipes_and_keys() -> None:
    recipes = [item.value for item in complete_recipe(None, None, "cifar10_resnet11")]
    assert recipes == ["cifar10_resnet110", "cifar10_resnet110_1layer", "cifar10_resnet110_1layer_preact",
                       "cifar10_resnet110_preact"]
    keys = [item.value for item in complete_override(None, None, "optim.l")]
    assert keys == ["optim.lr="]
    assert complete_override(None, None, "optim.lr=0") == []


def test_every_default_passes_validation_for_its_recipe_field_types() -> None:
    # The defaults of RunConfig are themselves a valid run (a synthetic-data ResNet-50).
    from dtrain.validation import validate

    validate(RunConfig())
