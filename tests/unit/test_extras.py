"""The extras install what dtrain's one-line errors send users to them for, and the `plot` and
`demo` extras add nothing to the default install (the full mlflow already pulls matplotlib and
scikit-learn: README "Install" says so)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dtrain.extras import DALI_CPU_EXTRA, DALI_EXTRA_OF_CUDA, EXTRA_OF_MODULE, missing_module_message

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(requirements: list[str]) -> set[str]:
    """Every distribution those requirements install directly: dtrain's own extras expanded, and a
    `pkg[extra]` brings what pkg requires for that extra."""
    found: set[str] = set()
    for text in requirements:
        requirement = Requirement(text)
        if _canonical(requirement.name) == "dtrain":
            for extra in requirement.extras:
                found |= _distributions(PROJECT["optional-dependencies"][extra])
            continue
        found.add(_canonical(requirement.name))
        for extra in requirement.extras:
            found |= {_canonical(Requirement(r).name) for r in metadata.requires(requirement.name) or []
                      if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": extra})}
    return found


def _extra_named_in(message: str) -> str:
    return re.search(r"pip install 'dtrain\[(\w+)\]'", message).group(1)


@pytest.mark.parametrize("module", sorted(set(EXTRA_OF_MODULE) - {"nvidia"}))
def test_the_extra_a_missing_module_names_installs_that_module(module: str) -> None:
    providers = metadata.packages_distributions().get(module)
    if not providers:
        pytest.skip(f"{module} is not installed here: which distribution provides it is unknown")
    extra = _extra_named_in(missing_module_message(module))
    installed = _distributions(PROJECT["optional-dependencies"][extra])
    assert installed & {_canonical(p) for p in providers}, (module, extra, installed)


def test_every_extra_a_missing_dali_can_name_installs_a_dali_build() -> None:
    # which one is named follows torch's CUDA (tests/unit/test_missing_extras.py)
    assert _extra_named_in(missing_module_message("nvidia.dali")) in {*DALI_EXTRA_OF_CUDA.values(), DALI_CPU_EXTRA}
    for major, extra in [*DALI_EXTRA_OF_CUDA.items(), ("13", DALI_CPU_EXTRA)]:
        assert _distributions(PROJECT["optional-dependencies"][extra]) == {f"nvidia-dali-cuda{major}0"}, extra


def test_the_plot_and_demo_extras_add_nothing_to_the_default_install() -> None:
    assert "mlflow" in _distributions(PROJECT["dependencies"])  # the full package, not only mlflow-skinny
    always = {_canonical(Requirement(r).name) for r in metadata.requires("mlflow") or [] if "extra ==" not in r}
    for extra in ("plot", "demo"):
        assert _distributions(PROJECT["optional-dependencies"][extra]) <= always, extra
