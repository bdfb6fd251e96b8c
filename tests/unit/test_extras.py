"""README "Install" says what pyproject.toml and the installed mlflow really hold: each extra's
packages, and why the plot/demo extras do not slim the default install."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def _extras_paragraph() -> str:
    start = README.index("Extras: ")
    return " ".join(README[start:README.index("\n\n", start)].split())


def test_the_k8s_extra_is_described_by_its_packages() -> None:
    packages = [_name(r) for r in PROJECT["optional-dependencies"]["k8s"]]
    text = _extras_paragraph()
    assert all(package in text for package in packages), (packages, text)
    # No package the extra does not install is claimed for it (jinja2 was, once).
    claimed = re.search(r"`k8s` \(([^)]*)\)", text).group(1)
    assert "jinja2" not in claimed and "jinja2" not in packages


def test_the_full_mlflow_pulls_what_the_readme_says() -> None:
    assert "mlflow" in [_name(r) for r in PROJECT["dependencies"]]  # the full package, not only skinny
    needs = {_name(r) for r in metadata.requires("mlflow") or [] if "extra ==" not in r}
    text = _extras_paragraph()
    for package in ("matplotlib", "scikit-learn", "pandas", "scipy"):
        assert package in text and package in needs, package
    assert "do not make the default install any smaller" in text
