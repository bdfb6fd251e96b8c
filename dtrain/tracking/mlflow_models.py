"""A trained network as an MLflow 3 LoggedModel that a team can compare and register.

- The weights are logged with `mlflow.pytorch.log_model` in the pickle format (`torch.save` of the
  module): `mlflow.pytorch.load_model("models:/<model id>")` gives it back where dtrain is
  installed. MLflow 3's default "pt2" format would need a traced graph of fixed shape; pickle
  keeps every input size.
- The model carries the run's params and the validation metrics that measured its weights (the
  run's `val/` points at `evaluated_at`), each linked to the run's validation dataset: the Models
  view compares models by `val/top1_err`, and the model page lists the dataset under "Datasets
  used". The model is created first (`mlflow.initialize_logged_model`) and the weights logged
  into it without naming the run: `log_model(run_id=...)` would attach every run metric at the
  model's step (system/ and train/ charts included) and none with its dataset.
- The metrics are sent again with the run's own timestamps, so the run's charts get no second
  point (the store ignores an exact duplicate).
- `register_as`: a new version of that registered model (created on first use), from the logged
  model, after its metrics.
"""

from __future__ import annotations

import copy
import logging
from importlib import metadata
from typing import Any

from dtrain.tracking.base import VALIDATION
from dtrain.tracking.mlflow_extras import DATASET_CONTEXT_TAG

log = logging.getLogger(__name__)

# The run metrics that describe one model's weights: its evaluation, not the run's best so far.
MODEL_METRIC_PREFIX = "val/"
RUN_ONLY_PREFIX = "val/best_"


def log_model(uri: str, experiment_id: str, run_id: str, model: Any, example_input: Any, *, name: str,
              register_as: str | None = None, evaluated_at: int | None = None) -> str:
    """Log `model` (a CPU copy, eval mode) under `name` with a signature inferred from
    `example_input`, as an output of the run at step `evaluated_at` with the validation metrics of
    that step; register it as `register_as` when given. Returns the model URI."""
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)  # the fluent calls below use the global URI
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    logged = mlflow.initialize_logged_model(name=name, source_run_id=run_id, params=dict(run.data.params),
                                            experiment_id=experiment_id)
    _log_weights(mlflow, model, example_input, name=name, model_id=logged.model_id)
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=evaluated_at or 0)])
    if evaluated_at is not None:
        _link_evaluation(client, run, logged.model_id, evaluated_at)
    if register_as:
        register(mlflow, register_as, logged.model_id)
    return f"models:/{logged.model_id}"


def _log_weights(mlflow: Any, model: Any, example_input: Any, *, name: str, model_id: str) -> None:
    import torch
    from mlflow.models import infer_signature

    cpu_model = copy.deepcopy(model).cpu().eval()
    example = example_input.detach().cpu().float()
    with torch.no_grad():
        output = cpu_model(example)
    signature = infer_signature(example.numpy(), output.numpy())
    pytorch_log = logging.getLogger("mlflow.pytorch")
    level = pytorch_log.level
    pytorch_log.setLevel(logging.ERROR)  # its warning about pickle: a choice made above, for a reason
    try:
        mlflow.pytorch.log_model(cpu_model, name=name, signature=signature, serialization_format="pickle",
                                 pip_requirements=_requirements(), model_id=model_id)
    finally:
        pytorch_log.setLevel(level)


def _link_evaluation(client: Any, run: Any, model_id: str, step: int) -> None:
    """The run's val/ metrics at `step` as the model's metrics, on the run's validation dataset."""
    from mlflow.entities import Metric

    dataset = validation_dataset(run)
    name, digest = (dataset.name, dataset.digest) if dataset is not None else (None, None)
    metrics = []
    for key in sorted(run.data.metrics):
        if not key.startswith(MODEL_METRIC_PREFIX) or key.startswith(RUN_ONLY_PREFIX):
            continue
        points = [m for m in client.get_metric_history(run.info.run_id, key) if m.step == step]
        if points:
            point = points[-1]
            metrics.append(Metric(key, point.value, point.timestamp, step, model_id=model_id,
                                  dataset_name=name, dataset_digest=digest))
    if metrics:
        client.log_batch(run.info.run_id, metrics=metrics, synchronous=True)
    else:
        log.warning("no validation metrics at step %d: model %s is logged without metrics", step, model_id)


def validation_dataset(run: Any) -> Any:
    """The run input (an mlflow Dataset) tagged as the validation split, or None."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    for dataset_input in inputs:
        if any(t.key == DATASET_CONTEXT_TAG and t.value == VALIDATION for t in dataset_input.tags):
            return dataset_input.dataset
    return None


def register(mlflow: Any, name: str, model_id: str) -> str:
    """A new version of registered model `name` (created on first use) whose source is the logged
    model (the version's run is the model's); returns the version. MLflow's own call, which also
    lists the version on the logged model's page (its mlflow.modelVersions tag)."""
    # No waiting for the version to become READY: an MLflow server creates it at once, and the wait
    # only logs a line ("Waiting up to 300 seconds ...").
    return str(mlflow.register_model(f"models:/{model_id}", name, await_registration_for=0).version)


def _requirements() -> list[str]:
    """Pinned instead of inferred: MLflow's inference loads the model in a subprocess (seconds)."""
    pins = []
    for name in ("torch", "dtrain"):
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return pins
