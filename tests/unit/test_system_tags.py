"""A run is always traceable to its code: besides the git commit (only in a checkout) it records
dtrain's version and a digest of its source, which a wheel install has too."""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path

from click.testing import CliRunner

import dtrain
from dtrain.cli import cli

tags_module = importlib.import_module("dtrain.provenance")


def test_every_run_records_the_version_and_the_source_digest() -> None:
    tags = tags_module.system_tags(world_size=1, device_names=["cpu"])
    assert tags["version.dtrain"] == dtrain.__version__
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", tags["source.digest"])


def test_without_git_the_version_and_digest_remain(monkeypatch) -> None:
    """Installed from a wheel there is no repository: no commit tag, but the code is still named."""
    monkeypatch.setattr(tags_module, "_git", lambda args, directory=None: None)
    tags = tags_module.system_tags(world_size=1, device_names=["cpu"])
    assert "git.commit" not in tags and "mlflow.source.git.commit" not in tags
    assert tags["version.dtrain"] == dtrain.__version__ and tags["source.digest"].startswith("sha256:")


def test_the_digest_covers_the_code_recipes_and_launchers() -> None:
    names = set(tags_module.source_files())
    assert {"dtrain/train.py", "dtrain/provenance.py", "dtrain_prep/cli.py", "configs/resnet50.yaml",
            "launch/torchrun.sh", "launch/helm/dtrain/values.yaml"} <= names
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_the_digest_follows_content_not_location(tmp_path: Path) -> None:
    files = tags_module.source_files()
    some = dict(sorted(files.items())[:20])
    copy = {}
    for name, path in some.items():
        copy[name] = tmp_path / name
        copy[name].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy[name])
    assert tags_module.digest_files(copy) == tags_module.digest_files(some)  # a wheel's copy digests the same
    edited = next(iter(copy.values()))
    edited.write_bytes(edited.read_bytes() + b"\n# changed\n")
    assert tags_module.digest_files(copy) != tags_module.digest_files(some)


def test_version_prints_what_a_run_records() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"dtrain {dtrain.__version__} (source {tags_module.source_digest()}")
