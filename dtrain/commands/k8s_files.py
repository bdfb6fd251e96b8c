"""Where the Helm chart and the bundled values files of this install are, and what `--values`
names: a file, or a bundled values file by name (`--values resnet200-preact-4node`).

A checkout has them in launch/; a wheel carries a copy (dtrain.resources), so every command and
every hint must name the copy that exists here, not a path relative to a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from dtrain.resources import resource_dir
from dtrain.resources import shown_path as shown
from dtrain.suggest import did_you_mean

VALUES_SUFFIX = ".yaml"


def _launch_dir(*parts: str, marker: str) -> Path:
    """launch/PARTS of $DTRAIN_HOME (e.g. /opt/dtrain in the image), of this install or checkout,
    or of the working directory."""
    roots = [Path(os.environ["DTRAIN_HOME"]) / "launch"] if os.environ.get("DTRAIN_HOME") else []
    roots += [resource_dir("launch"), Path.cwd() / "launch"]
    for root in roots:
        candidate = root.joinpath(*parts)
        if (candidate / marker).is_file():
            return candidate
    raise click.ClickException(f"launch/{'/'.join(parts)} is missing from this install: reinstall dtrain, or "
                               "set DTRAIN_HOME to a dtrain checkout")


def k8s_dir() -> Path:
    """launch/k8s: the bundled values files and the PyTorchJob schema."""
    return _launch_dir("k8s", marker="schema/pytorchjob-kubeflow-v1.schema.json")


def chart_dir() -> Path:
    """launch/helm/dtrain: the templates and the default of every value."""
    return _launch_dir("helm", "dtrain", marker="Chart.yaml")


def bundled_values() -> dict[str, Path]:
    """{name: file} of the values files dtrain ships (launch/k8s/values/NAME.yaml)."""
    files = {path.stem: path for path in (k8s_dir() / "values").glob(f"*{VALUES_SUFFIX}")}
    return dict(sorted(files.items()))


def describe(path: Path) -> str:
    """The first sentence of the file's leading comment: what the values are for."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#") or line.startswith("#   "):  # the comment ends, or a command example
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    return text.split(". ")[0].rstrip(".")


def resolve_values(given: str | Path) -> Path:
    """`--values GIVEN`: an existing file, else a bundled values file by name; else a one-line
    error that names what exists here."""
    path = Path(given)
    if path.is_file():
        return path
    bundled = bundled_values()
    name = path.name[:-len(VALUES_SUFFIX)] if path.name.endswith(VALUES_SUFFIX) else path.name
    if name in bundled and path.name == str(given):  # a bare name, with or without .yaml
        return bundled[name]
    listing = "`dtrain k8s values` lists them"
    if name in bundled:  # e.g. a checkout's launch/k8s/values/X.yaml, given outside a checkout
        raise click.UsageError(f"values file {given} does not exist here; dtrain carries it as "
                               f"--values {name} ({shown(bundled[name])})")
    raise click.UsageError(f"values file {given} does not exist and is not a bundled values name"
                           f"{did_you_mean(name, bundled, fallback='')}; bundled: {', '.join(bundled)} ({listing})")
