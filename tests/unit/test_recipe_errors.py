"""A wrong recipe name suggests the close ones (never a wall of all 40 names), and a bad key in a
recipe file, or in a file it `extends:`, names that file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dtrain.cli import cli
from dtrain.errors import ConfigError
from dtrain.recipes import recipe_names
from dtrain.resolve import load_config


def test_an_unknown_recipe_far_from_every_name_lists_none_of_them() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("nosuchrecipe")
    message = str(caught.value)
    assert message == "unknown recipe 'nosuchrecipe'; `dtrain recipes` lists them"
    assert not any(name in message for name in recipe_names())


def test_a_near_miss_gets_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'resnet5O' \(did you mean resnet50[,?]"):
        load_config("resnet5O")


def test_train_says_it_in_one_line() -> None:
    result = CliRunner().invoke(cli, ["train", "cifar10_resnet11"])
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if "unknown recipe" in line]
    assert "did you mean cifar10_resnet110" in line and "plain34" not in result.output


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """mine.yaml extends _base/team.yaml, which extends the shipped digits_resnet20."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "team.yaml").write_text("extends: digits_resnet20\noptim: {lr: 0.05}\n")
    (tmp_path / "mine.yaml").write_text("extends: _base/team.yaml\nschedule: {epochs: 3}\n")
    return tmp_path


@pytest.mark.parametrize("file, text, message", [
    ("_base/team.yaml", "extends: digits_resnet20\noptim: {lrr: 0.05}\n",
     "_base/team.yaml: unknown config key optim.lrr (did you mean optim.lr?)"),
    ("_base/team.yaml", "extends: digits_resnet20\noptim: {batch_size: many}\n",
     "_base/team.yaml: optim.batch_size must be an integer, got 'many'"),
    ("mine.yaml", "extends: _base/team.yaml\nschedul: {epochs: 3}\n",
     "mine.yaml: unknown config key schedul (did you mean schedule?)"),
])
def test_a_bad_key_names_the_file_that_holds_it(chain: Path, file: str, text: str, message: str) -> None:
    (chain / file).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config("mine.yaml")
    assert str(caught.value) == message


def test_a_bad_override_names_no_file(chain: Path) -> None:
    assert load_config("mine.yaml").optim.lr == 0.05
    with pytest.raises(ConfigError) as caught:
        load_config("mine.yaml", ["optim.lrr=0.1"])
    assert str(caught.value) == "unknown config key optim.lrr (did you mean optim.lr?)"
