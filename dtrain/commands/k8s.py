"""`dtrain k8s`: render the Kubernetes manifests of a cluster run from one values file, and
validate manifests offline.

    dtrain k8s render --values launch/k8s/values/resnet200-preact-4node.yaml --out k8s-out
    dtrain k8s validate k8s-out

Templates (Jinja2) live in launch/k8s/templates, the defaults of every value in
launch/k8s/defaults.yaml; a values file sets only what differs, so a new cluster size is a short
file, not a copy of the manifests. Core kinds are checked with kubernetes-validate, the Kubeflow
PyTorchJob with jsonschema against launch/k8s/schema (its pod templates as core PodTemplateSpecs).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click
import yaml

from dtrain.errors import DtrainError
from dtrain.resources import resource_dir
from dtrain.suggest import did_you_mean

# Kubernetes version the manifests are checked against: Indexed Jobs with pod hostnames need >= 1.24;
# 1.31 is a release every managed offering still runs.
KUBERNETES_VERSION = "1.31.0"
# One output file per template; apply storage and mlflow once, then ONE of the two job kinds.
OUTPUTS = {
    "storage.yaml": "storage.yaml.j2",
    "mlflow.yaml": "mlflow.yaml.j2",
    "pytorchjob.yaml": "pytorchjob.yaml.j2",
    "indexed-job.yaml": "indexed-job.yaml.j2",
}
# Values whose content is free-form (their keys are not checked against the defaults).
OPEN_MAPS = ("overrides", "env", "nodeSelector")
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def k8s_dir() -> Path:
    """launch/k8s of this checkout (or of $DTRAIN_HOME, e.g. /opt/dtrain in the image)."""
    candidates = [Path(os.environ["DTRAIN_HOME"]) / "launch" / "k8s"] if os.environ.get("DTRAIN_HOME") else []
    candidates += [resource_dir("launch") / "k8s", Path.cwd() / "launch" / "k8s"]  # the checkout's or the wheel's
    for candidate in candidates:
        if (candidate / "defaults.yaml").is_file():
            return candidate
    raise click.ClickException("launch/k8s not found: run from the dtrain repository or set DTRAIN_HOME to it")


# ------------------------------------------------------------------------------------------------
# Values
# ------------------------------------------------------------------------------------------------


def load_values(values_file: Path | None, sets: tuple[str, ...] = ()) -> dict[str, Any]:
    """defaults.yaml <- values file <- --set key=value, refusing keys the defaults do not know."""
    values = _read_yaml(k8s_dir() / "defaults.yaml")
    if values_file is not None:
        _merge_checked(values, _read_yaml(values_file), prefix="", source=str(values_file))
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--set {item!r} must look like key=value, e.g. --set nodes=2")
        nested: dict[str, Any] = {}
        node = nested
        head, _, rest = key.partition(".")
        # Inside a free-form map the rest of the key is one name: overrides.optim.lr -> "optim.lr".
        *parents, leaf = [head, rest] if head in OPEN_MAPS and rest else key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text) if text.strip() else ""
        _merge_checked(values, nested, prefix="", source="--set")
    check_values(values)
    return values


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise click.UsageError(f"values file {path} does not exist (examples: launch/k8s/values/)") from None
    except yaml.YAMLError as exc:
        raise click.UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise click.UsageError(f"{path} must hold a mapping of values")
    return data


def _merge_checked(base: dict[str, Any], update: dict[str, Any], prefix: str, source: str) -> None:
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            hint = did_you_mean(key, base, prefix, fallback=" (see launch/k8s/defaults.yaml)")
            raise click.UsageError(f"{source}: unknown value {dotted}{hint}")
        if isinstance(base[key], dict) and dotted not in OPEN_MAPS:
            if not isinstance(value, dict):
                raise click.UsageError(f"{source}: {dotted} must be a mapping, got {value!r}")
            _merge_checked(base[key], value, f"{dotted}.", source)
        elif isinstance(base[key], dict):
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
    if v["gpusPerNode"] and v["nprocPerNode"] > v["gpusPerNode"]:
        raise click.UsageError(f"nprocPerNode={v['nprocPerNode']} is more than gpusPerNode={v['gpusPerNode']}: "
                               "one training process per GPU")
    if not v["image"]:
        raise click.UsageError("image is empty: set the image built from the Dockerfile (e.g. --set image=REG/dtrain:TAG)")


def check_recipe(v: dict[str, Any]) -> None:
    """The recipe and overrides load, and the global batch divides by every possible world size."""
    from dtrain import config as dtrain_config

    try:
        cfg = dtrain_config.load_config(v["recipe"], training_overrides(v))
        min_nodes = v["minNodes"] if v["minNodes"] is not None else v["nodes"]
        for nodes in range(min_nodes, v["nodes"] + 1):
            dtrain_config.check_world_size(cfg, nodes * v["nprocPerNode"])
    except DtrainError as exc:
        raise click.UsageError(f"recipe {v['recipe']!r} with these values: {exc}") from None


def training_overrides(v: dict[str, Any]) -> list[str]:
    from dtrain.config import flatten

    overrides = flatten(v["overrides"])  # nested mappings in a values file become dotted keys
    # Every node and every restart must find the same run directory: put it on the shared volume.
    overrides.setdefault("run_dir", f"{v['runs']['mountPath']}/{v['name']}")
    return [f"{key}={_override_text(value)}" for key, value in overrides.items()]


def _override_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)  # JSON is YAML: lists, numbers and booleans parse back as they were


def derived(v: dict[str, Any], values_file: Path | None) -> dict[str, Any]:
    """What the templates need beyond the values themselves."""
    mlflow = v["mlflow"]
    allowed_hosts = ",".join(f"{host}{port}" for host in (
        mlflow["name"], f"{mlflow['name']}.{v['namespace']}", f"{mlflow['name']}.{v['namespace']}.svc",
        f"{mlflow['name']}.{v['namespace']}.svc.cluster.local", "localhost", "127.0.0.1") for port in ("", ":*"))
    return {
        "values_file": str(values_file) if values_file else "launch/k8s/defaults.yaml",
        "train_args": [v["recipe"], *training_overrides(v)],
        "min_nodes": v["minNodes"] if v["minNodes"] is not None else v["nodes"],
        "indexed_rdzv_endpoint": f"{v['name']}-0.{v['name']}:{v['rdzvPort']}",
        "mlflow_uri": f"http://{mlflow['name']}:{mlflow['port']}",
        # The image's entrypoint is `dtrain`; the Host header guard must accept the Service's names.
        "mlflow_args": ["mlflow-server", "--backend-store-uri", mlflow["backendStoreUri"],
                        "--artifacts-destination", mlflow["artifactsDestination"],
                        "--host", "0.0.0.0", "--port", str(mlflow["port"]), "--allowed-hosts", allowed_hosts],
    }


# ------------------------------------------------------------------------------------------------
# Rendering and validation
# ------------------------------------------------------------------------------------------------


def render(v: dict[str, Any], values_file: Path | None = None) -> dict[str, str]:
    """{output file name: YAML text}; mlflow.yaml only when mlflow.enabled."""
    import jinja2  # a dependency of mlflow (Flask)

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(k8s_dir() / "templates")), undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False,
    )
    d = derived(v, values_file)
    rendered = {}
    for output, template in OUTPUTS.items():
        if output == "mlflow.yaml" and not v["mlflow"]["enabled"]:
            continue
        rendered[output] = environment.get_template(template).render(v=v, d=d)
    return rendered


def validate_documents(documents: list[dict[str, Any]]) -> list[str]:
    """One line per problem; empty when every manifest is valid."""
    try:
        import jsonschema
        import kubernetes_validate
    except ModuleNotFoundError as exc:
        raise click.ClickException(f"validation needs {exc.name}: pip install 'dtrain[dev]'") from None
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
@click.option("--values", "values_file", type=click.Path(path_type=Path), default=None,
              help="A values file (examples in launch/k8s/values/); unset values come from launch/k8s/defaults.yaml.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one value, e.g. --set nodes=2 --set overrides.optim.lr=0.2 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Directory to write storage.yaml, mlflow.yaml, pytorchjob.yaml, indexed-job.yaml.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Check the manifests offline (kubernetes-validate, PyTorchJob schema) before writing.")
@click.option("--check-recipe/--no-check-recipe", "recipe_check", default=True, show_default=True,
              help="Load the recipe with the overrides and check the batch divides by the world size.")
def render_command(values_file: Path | None, sets: tuple[str, ...], out: Path, validate: bool,
                   recipe_check: bool) -> None:
    """Render the manifests of one run into OUT; then `kubectl apply -f OUT/storage.yaml -f
    OUT/mlflow.yaml` once, and `-f OUT/pytorchjob.yaml` (Kubeflow operator) or
    `-f OUT/indexed-job.yaml` (plain Kubernetes)."""
    values = load_values(values_file, sets)
    if recipe_check:
        check_recipe(values)
    rendered = render(values, values_file)
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
    click.echo(f"{values['name']}: {values['nodes']} node(s) x {values['nprocPerNode']} process(es) = world size {world}")


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
