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
ABOVE_THE_LEAVES = ("dtrain.engine", "dtrain.train", "dtrain.training", "dtrain.resolve", "dtrain.builders",
                    "dtrain.models", "dtrain.commands", "dtrain.cli", "dtrain.analysis", "dtrain.bench")


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


# ---- no import cycles --------------------------------------------------------------------------
# A function-local import hides a cycle, it does not cut it: the two modules still need each other,
# and a later top-level import (or importing the other module first) makes `import` fail on a
# half-initialised module. So every import statement counts, wherever it stands in the file.

# Checkout folder -> the package's installed name (data_prep/ installs as dtrain_prep).
INSTALLED_AS = {"dtrain": "dtrain", "data_prep": "dtrain_prep", "dtrain_prep": "dtrain_prep"}


def _installed(dotted: str) -> str:
    head, dot, rest = dotted.partition(".")
    return INSTALLED_AS.get(head, head) + dot + rest


def import_edges(source: str, module_name: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that `source` (the module `module_name`) imports. `from pkg import
    name` is an edge to the submodule pkg.name when there is one, else to pkg (whose __init__
    re-exports the name, so importing it runs pkg's own imports)."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(_installed(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
            else:
                base = _installed(node.module or "")
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names)
    return {target for target in targets if target in known and target != module_name}


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module -> the modules it imports, for modules given as name -> (source, is_package)."""
    known = set(sources)
    return {name: import_edges(source, name, is_package, known) for name, (source, is_package) in sources.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def _project_sources() -> dict[str, tuple[str, bool]]:
    sources: dict[str, tuple[str, bool]] = {}
    for folder in ("dtrain", "data_prep"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name, is_package = _module_name(path)
            sources[_installed(name)] = (path.read_text(), is_package)
    return sources


def describe_cycles(graph: dict[str, set[str]]) -> str:
    lines = []
    for cycle in import_cycles(graph):
        members = set(cycle)
        edges = ", ".join(f"{a} -> {b}" for a in cycle for b in sorted(graph[a] & members))
        lines.append(f"{' <-> '.join(cycle)} ({edges})")
    return "\n".join(lines)


def test_no_import_cycles() -> None:
    graph = import_graph(_project_sources())
    assert len(graph) > 100 and "dtrain_prep.layout" in graph["dtrain.data.sources"]  # it sees the project
    cycles = describe_cycles(graph)
    assert not cycles, ("import cycles (a function-local import hides one, it does not cut it: move what both "
                        f"need into a module of its own):\n{cycles}")


@pytest.mark.parametrize(
    "sources, expected",
    [
        # a function-local import closes the loop
        ({"p.a": ("import p.b", False), "p.b": ("def f():\n    from p.a import x", False)}, [["p.a", "p.b"]]),
        # `from package import submodule` is an edge to the submodule: here no cycle through p
        ({"p": ("from p import a", True), "p.a": ("from p import b", False), "p.b": ("", False)}, []),
        # `from package import name` re-exported by its __init__ is an edge to the package
        ({"p": ("from p.a import name", True), "p.a": ("from p import other", False)}, [["p", "p.a"]]),
        # relative imports, three modules around
        ({"p": ("", True), "p.a": ("from .b import x", False), "p.b": ("from . import c", False),
          "p.c": ("from .a import y", False)}, [["p.a", "p.b", "p.c"]]),
        # the checkout folder data_prep is the package dtrain_prep
        ({"dtrain_prep.a": ("from data_prep.b import x", False), "dtrain_prep.b": ("import dtrain_prep.a", False)},
         [["dtrain_prep.a", "dtrain_prep.b"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(sources: dict[str, tuple[str, bool]], expected: list[list[str]]) -> None:
    # Guards the guard: a finder that never finds a cycle would pass test_no_import_cycles.
    assert import_cycles(import_graph(sources)) == expected


def private_imports(source: str, module_name: str, is_package: bool) -> list[str]:
    """`from M import _name` where M is one of the project's modules other than the importer: a
    private name used outside its owner (make it public where it is shared)."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
        if base.split(".")[0] not in ("dtrain", "dtrain_prep") or base == module_name:
            continue
        found += [f"{module_name} imports {base}.{alias.name}" for alias in node.names
                  if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names() -> None:
    found = [line for name, (source, is_package) in _project_sources().items()
             for line in private_imports(source, name, is_package)]
    assert not found, "\n".join(found)


def test_the_private_import_check_sees_relative_and_absolute_imports() -> None:
    assert private_imports("from .loaders import _helper, public", "dtrain.data.gpu_loader", False) == [
        "dtrain.data.gpu_loader imports dtrain.data.loaders._helper"]
    assert private_imports("from dtrain.tracking.store import _client", "dtrain.tracking", True) == [
        "dtrain.tracking imports dtrain.tracking.store._client"]
    assert private_imports("from torch.nn.modules.batchnorm import _BatchNorm", "dtrain.x", False) == []
