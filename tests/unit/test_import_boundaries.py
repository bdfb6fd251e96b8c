"""One direction of dependency (README, Development): models import nothing of dtrain but themselves and
no process group, loader or logger; data, checkpoint, tracking and distributed are leaves that
never import the engine, the trainer or the models; data_prep never imports dtrain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Anything under these prefixes is off limits for dtrain/models.
MODELS_FORBIDDEN = (
    "dtrain",  # except dtrain.models itself, see _models_violations
    "dtrain_prep",
    "torch.distributed",
    "torch.utils.data",
    "deepspeed",
    "mlflow",
    "nvidia",  # DALI
    "ffcv",
)
# dtrain.suggest is standard-library only: the one did-you-mean helper, shared with the models.
MODELS_ALLOWED = ("dtrain.models", "dtrain.suggest")


def imported_modules(source: str, module_name: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module that `source` (the module `module_name`) imports, with
    relative imports resolved and `from a import b` counted as both a and a.b."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _models_violations(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if any(_under(name, prefix) for prefix in MODELS_FORBIDDEN)
        and not any(_under(name, allowed) for allowed in MODELS_ALLOWED)
    )


def _module_name(path: Path) -> tuple[str, bool]:
    # data_prep/ is the folder that holds the dtrain_prep package, not a package itself
    parts = list(path.relative_to(ROOT / "data_prep" if path.is_relative_to(ROOT / "data_prep") else ROOT)
                 .with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _python_files(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}"
    return files


@pytest.mark.parametrize("path", _python_files("dtrain/models"), ids=lambda p: p.name)
def test_models_import_only_models_and_torch(path: Path) -> None:
    name, is_package = _module_name(path)
    violations = _models_violations(imported_modules(path.read_text(), name, is_package))
    assert not violations, f"{path.relative_to(ROOT)} imports {violations}; models must stay free of the rest of dtrain"


def test_data_prep_never_imports_dtrain() -> None:
    offenders = {}
    for path in _python_files("data_prep"):
        name, is_package = _module_name(path)
        bad = sorted(m for m in imported_modules(path.read_text(), name, is_package) if _under(m, "dtrain"))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"data_prep imports dtrain: {offenders}"


# Leaves may use dtrain.config/errors and each other's public APIs, never what sits above them.
LEAVES = ("dtrain/data", "dtrain/checkpoint", "dtrain/tracking", "dtrain/distributed")
ABOVE_THE_LEAVES = ("dtrain.engine", "dtrain.train", "dtrain.builders", "dtrain.models", "dtrain.commands",
                    "dtrain.cli", "dtrain.analysis", "dtrain.bench")


@pytest.mark.parametrize("path", [p for leaf in LEAVES for p in _python_files(leaf)],
                         ids=lambda p: str(p.relative_to(ROOT / "dtrain")))
def test_leaves_never_import_the_engine_or_the_models(path: Path) -> None:
    name, is_package = _module_name(path)
    bad = sorted(m for m in imported_modules(path.read_text(), name, is_package)
                 if any(_under(m, prefix) for prefix in ABOVE_THE_LEAVES))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}; it is a leaf used by the engine"


@pytest.mark.parametrize(
    "source, module_name, expected",
    [
        ("from dtrain.data import loaders", "dtrain.models.resnet", ["dtrain.data", "dtrain.data.loaders"]),
        ("from dtrain import errors", "dtrain.models.resnet", ["dtrain", "dtrain.errors"]),
        ("from ..tracking import base", "dtrain.models.resnet", ["dtrain.tracking", "dtrain.tracking.base"]),
        ("import torch.distributed as dist", "dtrain.models.resnet", ["torch.distributed"]),
        (
            "from torch.utils.data import Dataset",
            "dtrain.models.cifar",
            ["torch.utils.data", "torch.utils.data.Dataset"],
        ),
        ("import mlflow", "dtrain.models.blocks", ["mlflow"]),
        ("from .blocks import UnitOptions\nimport torch.nn", "dtrain.models.resnet", []),
        ("from dtrain.models.registry import build", "dtrain.models.complexity", []),
    ],
)
def test_the_checker_catches_forbidden_imports(source: str, module_name: str, expected: list[str]) -> None:
    # Guards the guard: a checker that never flags anything would pass the tests above.
    assert _models_violations(imported_modules(source, module_name)) == expected


def _prep_import_violations(path: Path) -> list[str]:
    name, is_package = _module_name(path)
    modules = imported_modules(path.read_text(), name, is_package)
    bare = [m for m in modules if _under(m, "data_prep")]  # the checkout's folder: not installed
    inner = [m for m in modules
             if _under(m, "dtrain_prep") and m != "dtrain_prep" and not _under(m, "dtrain_prep.layout")]
    return sorted(bare + (inner if _under(name, "dtrain.data") else []))


def test_dtrain_reaches_the_prep_tool_by_its_installed_name_and_the_loaders_only_its_layout() -> None:
    # An install has `dtrain_prep`, not `data_prep`; the loaders depend only on the layout
    # contract, so prep's internals stay free to change (the CLI may run prep's commands).
    offenders = {str(p.relative_to(ROOT)): bad for p in _python_files("dtrain") if (bad := _prep_import_violations(p))}
    assert not offenders, f"import dtrain_prep.layout instead: {offenders}"
