"""`dtrain k8s`: render the Kubernetes manifests of a cluster run from one values file, and
validate manifests offline.

    dtrain k8s render --values resnet200-preact-4node --out k8s-out    # a bundled values file, or a path
    dtrain k8s validate k8s-out
    dtrain k8s values                                                   # the bundled values files
    helm install resnet200 "$(dtrain k8s chart)" -f "$(dtrain k8s values resnet200-preact-4node)"   # the same

One copy of the templates: the Helm chart launch/helm/dtrain (Go templates, defaults in its
values.yaml). `dtrain k8s render` runs those templates itself (dtrain/commands/helm_template.py),
so it needs no helm binary and gives what `helm template` gives; on top it refuses unknown values
by name, checks the recipe loads with the job's arguments, and validates offline: core kinds with
kubernetes-validate, the Kubeflow PyTorchJob with jsonschema against launch/k8s/schema (its pod
templates as core PodTemplateSpecs). Where the chart and values files of this install are:
dtrain/commands/k8s_files.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from dtrain.commands.helm_template import Renderer, TemplateError
from dtrain.commands.k8s_completion import complete_chart_value, complete_values_file
from dtrain.commands.k8s_files import bundled_values, chart_dir, describe, k8s_dir, resolve_values, shown
from dtrain.commands.overrides import all_overrides
from dtrain.config import RunConfig
from dtrain.errors import DtrainError
from dtrain.extras import missing_module_message
from dtrain.resolve import Placement, load_config, parse_value
from dtrain.suggest import did_you_mean

# Kubernetes version the manifests are checked against: Indexed Jobs with pod hostnames need >= 1.24;
# 1.31 is a release every managed offering still runs.
KUBERNETES_VERSION = "1.31.0"
# Values whose content is free-form (their keys are not checked against the defaults).
OPEN_MAPS = ("overrides", "env", "nodeSelector", "labels", "annotations", "podLabels", "podAnnotations",
             "affinity", "extraResources", "securityContext", "serviceAccount.annotations",
             "pytorchJob.schedulingPolicy")
JOB_KINDS = ("PyTorchJob", "IndexedJob")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# What `dtrain k8s render` passes as Helm's built-in objects (helm install sets them from the release).
RELEASE_NAMESPACE = "default"


# ------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------


def load_values(values_file: str | Path | None, sets: Sequence[str] = ()) -> dict[str, Any]:
    """The chart's values.yaml <- values file (a path or a bundled name) <- key=value (positional
    or --set), refusing keys the defaults do not know. Files are YAML as helm reads them; a value
    typed after `key=` is parsed as every dtrain override is (dtrain.resolve.parse_value)."""
    values = _read_yaml(chart_dir() / "values.yaml")
    if values_file is not None:
        _merge_checked(values, _read_yaml(resolve_values(values_file)), prefix="", source=str(values_file))
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{item!r} must look like key=value, e.g. nodes=2 or overrides.optim.lr=0.2")
        # Inside a free-form map the rest of the key is one name: overrides.optim.lr -> "optim.lr",
        # labels.kueue.x-k8s.io/queue-name -> "kueue.x-k8s.io/queue-name".
        open_map = next((m for m in sorted(OPEN_MAPS, key=len, reverse=True) if key.startswith(f"{m}.")), None)
        *parents, leaf = [*open_map.split("."), key[len(open_map) + 1:]] if open_map else key.split(".")
        nested: dict[str, Any] = {}
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_value(text)
        try:
            _merge_checked(values, nested, prefix="", source=item)
        except click.UsageError:
            if open_map is None and _is_config_key(key):  # a key of the recipe, given as a chart value
                raise click.UsageError(f"{key} is a training config key, not a chart value: write "
                                       f"overrides.{item} (the job's `dtrain train` overrides)") from None
            raise
    check_values(values)
    check_schema(values)
    return values


def check_schema(values: dict[str, Any]) -> None:
    """The chart's values.schema.json, which `helm install/template/lint` also enforce."""
    try:
        import jsonschema
    except ModuleNotFoundError:
        return  # the checks above cover the same ground with better messages
    schema = json.loads((chart_dir() / "values.schema.json").read_text())
    error = next(iter(jsonschema.Draft7Validator(schema).iter_errors(values)), None)
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "values"
        raise click.UsageError(f"{where}: {error.message} ({shown(chart_dir() / 'values.schema.json')})")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise click.UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"{path} must hold a mapping of values")
    return data


def _merge_checked(base: dict[str, Any], update: dict[str, Any], prefix: str, source: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            hint = did_you_mean(key, base, prefix, fallback=f" (every value: {shown(chart_dir() / 'values.yaml')})")
            raise click.UsageError(f"{source}: unknown value {dotted}{hint}")
        if isinstance(base[key], dict) and dotted not in OPEN_MAPS:
            if not isinstance(value, dict):
                raise click.UsageError(f"{source}: {dotted} must be a mapping, got {value!r}")
            _merge_checked(base[key], value, f"{dotted}.", source)
        elif isinstance(base[key], dict):
            if not isinstance(value or {}, dict):
                raise click.UsageError(f"{source}: {dotted} must be a mapping, got {value!r}")
            base[key] = {**base[key], **(value or {})}
        else:
            base[key] = value


def check_values(v: dict[str, Any]) -> None:
    for key in ("name", "mlflow.name"):
        name = v["name"] if key == "name" else v["mlflow"]["name"]
        # Pods are NAME-worker-N: keep room under the 63-character DNS label limit.
        if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 50:
            raise click.UsageError(f"{key}={name!r} must be a DNS label of at most 50 characters "
                                   "(lower-case letters, digits, '-'; starting with a letter)")
    for key in ("nodes", "nprocPerNode", "rdzvPort", "shutdownTimeoutSeconds"):
        if not isinstance(v[key], int) or isinstance(v[key], bool) or v[key] < 1:
            raise click.UsageError(f"{key}={v[key]!r} must be a positive integer")
    for key in ("gpusPerNode", "maxRestarts"):
        if not isinstance(v[key], int) or isinstance(v[key], bool) or v[key] < 0:
            raise click.UsageError(f"{key}={v[key]!r} must be a non-negative integer")
    min_nodes = v["minNodes"] if v["minNodes"] is not None else v["nodes"]
    if not isinstance(min_nodes, int) or not 1 <= min_nodes <= v["nodes"]:
        raise click.UsageError(f"minNodes={v['minNodes']!r} must be between 1 and nodes={v['nodes']}")
    if v["gpusPerNode"] and v["nprocPerNode"] != v["gpusPerNode"]:  # the chart's dtrain.checkValues too
        what = "GPUs would sit idle" if v["nprocPerNode"] < v["gpusPerNode"] else "processes would share a GPU"
        raise click.UsageError(f"nprocPerNode={v['nprocPerNode']} with gpusPerNode={v['gpusPerNode']}: {what}; "
                               "dtrain runs one training process per GPU, so set nprocPerNode to the GPUs of a "
                               "pod (gpusPerNode=0 for a CPU run)")
    if v["jobKind"] not in JOB_KINDS:
        raise click.UsageError(f"jobKind={v['jobKind']!r} must be one of {', '.join(JOB_KINDS)}")
    for key in ("ttlSecondsAfterFinished", "activeDeadlineSeconds", "indexedJob.backoffLimitPerIndex",
                "indexedJob.maxFailedIndexes"):
        section, _, name = key.rpartition(".")
        value = (v[section] if section else v)[name]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise click.UsageError(f"{key}={value!r} must be a non-negative integer or null")
    for key in ("imagePullSecrets", "tolerations", "topologySpreadConstraints", "capabilities"):
        if not isinstance(v[key], list):
            raise click.UsageError(f"{key} must be a list, got {v[key]!r}")
    for key, value in v["overrides"].items():
        if isinstance(value, dict) and _is_config_section(key):
            example = next(iter(value), "KEY")
            raise click.UsageError(f"overrides.{key} is a mapping; write config overrides as dotted keys, "
                                   f"e.g. overrides: {{{key}.{example}: ...}} (a mapping would replace the section)")
    if not v["image"]:
        raise click.UsageError("image is empty: set the image built from the Dockerfile "
                               "(e.g. --set image=REG/dtrain:TAG)")


def _config_node(dotted: str) -> Any:
    """What `dotted` names in a default run config (a section or a value), or None."""
    node: Any = RunConfig()
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or not hasattr(node, part):
            return None
        node = getattr(node, part)
    return node


def _is_config_section(dotted: str) -> bool:
    """Whether `dotted` names a section of the run config (data, optim ...), not one value."""
    return dataclasses.is_dataclass(_config_node(dotted))


def _is_config_key(dotted: str) -> bool:
    """Whether `dotted` names one value of the run config (optim.lr, model.options.x, run_dir)."""
    if dotted.startswith("model.options."):
        return True
    node = _config_node(dotted)
    return node is not None and not dataclasses.is_dataclass(node)


def check_recipe(v: dict[str, Any], rendered: dict[str, str]) -> None:
    """The recipe resolves with the job's own arguments where it will run (the pods' device; the
    global batch divides by every world size an elastic job may shrink to)."""
    args = training_args(rendered)
    min_nodes = v["minNodes"] if v["minNodes"] is not None else v["nodes"]
    world_sizes = tuple(nodes * v["nprocPerNode"] for nodes in range(min_nodes, v["nodes"] + 1))
    placement = Placement(device_type="cuda" if v["gpusPerNode"] else "cpu", world_sizes=world_sizes)
    try:
        load_config(args[0], args[1:], placement)
    except DtrainError as exc:
        raise click.UsageError(f"recipe {v['recipe']!r} with these values: {exc}") from None


def training_args(rendered: dict[str, str]) -> list[str]:
    """`dtrain train`'s arguments (recipe, overrides) in the rendered training pods."""
    for name, text in rendered.items():
        for doc in parse_documents(text, name):
            if doc.get("kind") == "PyTorchJob":
                return doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
            if doc.get("kind") == "Job":
                return doc["spec"]["template"]["spec"]["containers"][0]["args"]
    raise click.ClickException("the chart rendered no training job")


# ------------------------------------------------------------------------------------------------
# Rendering and validation
# ------------------------------------------------------------------------------------------------


def render(v: dict[str, Any], values_file: str | Path | None = None) -> dict[str, str]:
    """{output file name: YAML text}: the chart's templates that render a manifest for these values
    (pytorchjob.yaml or indexed-job.yaml after jobKind; mlflow.yaml when mlflow.enabled; ...)."""
    chart = _read_yaml(chart_dir() / "Chart.yaml")
    root = {"Values": v, "Release": {"Name": v["name"], "Namespace": RELEASE_NAMESPACE, "Service": "Helm"},
            "Chart": {"Name": chart["name"], "Version": chart["version"], "AppVersion": chart.get("appVersion")}}
    try:
        rendered = Renderer(chart_dir()).render_all(root)
    except TemplateError as exc:
        raise click.ClickException(f"{shown(chart_dir())}: {exc}") from None
    if values_file is None:
        source = f"the chart's defaults ({shown(chart_dir() / 'values.yaml')})"
    else:
        resolved = resolve_values(values_file)
        source = str(values_file) if resolved == Path(values_file) else f"{values_file} ({shown(resolved)})"
    return {name: f"# Values: {source}\n{text.strip()}\n" for name, text in rendered.items()
            if parse_documents(text, name)}


def validate_documents(documents: list[dict[str, Any]]) -> list[str]:
    """One line per problem; empty when every manifest is valid."""
    try:
        import jsonschema
        import kubernetes_validate
    except ModuleNotFoundError as exc:
        raise DtrainError(f"validation {missing_module_message(exc.name)} (or pass --no-validate)") from None
    problems = []
    for doc in documents:
        what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if doc.get("kind") == "PyTorchJob":
            schema = json.loads((k8s_dir() / "schema" / "pytorchjob-kubeflow-v1.schema.json").read_text())
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                problems.append(f"{what}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            for role, replica in ((doc.get("spec") or {}).get("pytorchReplicaSpecs") or {}).items():
                template = {"apiVersion": "v1", "kind": "PodTemplate",
                            "metadata": {"name": f"{what}-{role}"}, "template": replica.get("template")}
                problems += _core_problems(kubernetes_validate, template, f"{what} {role} template")
        else:
            problems += _core_problems(kubernetes_validate, doc, what)
    return problems


def _core_problems(kubernetes_validate: Any, doc: dict[str, Any], what: str) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(map(str, exc.path)) if getattr(exc, "path", None) else ""
        return [f"{what}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{what}: no Kubernetes {KUBERNETES_VERSION} schema for {doc.get('apiVersion')} {doc.get('kind')}"]
    return []


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


@click.group("k8s")
def k8s() -> None:
    """Kubernetes manifests for a cluster run (Kubeflow PyTorchJob or Indexed Job, MLflow server)."""


@k8s.command("render")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...", shell_complete=complete_chart_value)
@click.option("--values", "values_file", default=None, metavar="FILE|NAME", shell_complete=complete_values_file,
              help="A values file, or the name of a bundled one (`dtrain k8s values` lists them); unset values "
                   "come from the chart's values.yaml (`dtrain k8s chart` prints where it is).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", shell_complete=complete_chart_value,
              help="The same as a positional KEY=VALUE (repeatable).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Directory to write the manifests into (storage.yaml, mlflow.yaml, and pytorchjob.yaml or "
                   "indexed-job.yaml).")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Check the manifests offline (kubernetes-validate, PyTorchJob schema) before writing.")
@click.option("--check-recipe/--no-check-recipe", "recipe_check", default=True, show_default=True,
              help="Load the recipe with the overrides and check the batch divides by the world size.")
def render_command(overrides: tuple[str, ...], values_file: str | None, sets: tuple[str, ...], out: Path,
                   validate: bool, recipe_check: bool) -> None:
    """Render the manifests of one run into OUT; then `kubectl apply -f OUT/storage.yaml -f
    OUT/mlflow.yaml` once, and `-f OUT/pytorchjob.yaml` (Kubeflow operator) or
    `-f OUT/indexed-job.yaml` (plain Kubernetes).

    KEY=VALUE sets a chart value (the chart's values.yaml lists them), e.g. nodes=2; the training
    config's keys go under overrides., e.g. overrides.optim.lr=0.2. --set KEY=VALUE is the same."""
    values = load_values(values_file, all_overrides(overrides, sets))
    rendered = render(values, values_file)
    if recipe_check:
        check_recipe(values, rendered)
    if validate:
        documents = [doc for name, text in rendered.items() for doc in parse_documents(text, name)]
        problems = validate_documents(documents)
        if problems:
            raise click.ClickException("invalid manifest: " + "; ".join(problems))
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (out / name).write_text(text)
        click.echo(out / name)
    world = values["nodes"] * values["nprocPerNode"]
    click.echo(f"{values['name']}: {values['nodes']} node(s) x {values['nprocPerNode']} process(es) = "
               f"world size {world}")


@k8s.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def validate_command(paths: tuple[Path, ...]) -> None:
    """Validate manifest files (or directories of *.yaml) offline, as `render` does."""
    files = [f for p in paths for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
    documents = [doc for f in files for doc in parse_documents(f.read_text(), str(f))]
    problems = validate_documents(documents)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) in {len(documents)} manifest(s)")
    click.echo(f"{len(documents)} manifest(s) valid for Kubernetes {KUBERNETES_VERSION}")


@k8s.command("values")
@click.argument("name", required=False, shell_complete=complete_values_file)
def values_command(name: str | None) -> None:
    """List the bundled values files; with NAME, print that file's path (for helm -f)."""
    if name is not None:
        click.echo(resolve_values(name))
        return
    bundled = bundled_values()
    width = max(map(len, bundled))
    for value_name, path in bundled.items():
        click.echo(f"{value_name.ljust(width)}  {describe(path)}")
    click.echo(f"\nIn {k8s_dir() / 'values'}. Use one with `dtrain k8s render --values NAME` or "
               "`helm install RELEASE \"$(dtrain k8s chart)\" -f \"$(dtrain k8s values NAME)\"`.")


@k8s.command("chart")
def chart_command() -> None:
    """Print the directory of the Helm chart this install carries (`helm install RELEASE DIR`)."""
    click.echo(chart_dir())
