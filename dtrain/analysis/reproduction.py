"""`dtrain reproduce ROW`: train the recipe of a paper's table row, test its final and best
checkpoints with the row's test protocol (paper_protocols), measure params and multiply-adds, and
write a report comparing them with the paper (RUN_DIR/report.md, also logged to the run in MLflow
as reproduction/report.md).

`--seeds N` trains N runs (train.seed=0..N-1, one after the other, in RUN_DIR/seed-i) and reports
best / median / mean +- std as the papers did (R1 Table 6: best of 5; R2's CIFAR tables: median of 5).
Ensemble rows (R1 Table 5) train every member and test the mean of their scores (no --seeds:
the members are fixed). The report names every change the user made to the paper's protocol.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from dtrain import models
from dtrain.analysis.paper_row import PaperRow
from dtrain.analysis.protocol_eval import evaluate_protocol, run_checkpoints, weights_to_test
from dtrain.analysis.reports import Measured, render_report
from dtrain.analysis.training_runs import (
    ShortenedSchedule,
    full_iterations,
    prepared_pixel_stats,
    prepared_summary,
    run_training,
    shorten_recipe,
)
from dtrain.builders import build_model
from dtrain.config import RunConfig, flatten, to_dict
from dtrain.data.eval_views import VIEW_KEYS
from dtrain.errors import DtrainError
from dtrain.resolve import check_data_root, load_config
from dtrain.tracking.store import make_client, resolve_uri

REPORT_NAME = "report.md"
RESULTS_NAME = "protocol_results.json"
ARTIFACT_PATH = "reproduction/report.md"
REPORTED_SPLIT = "val"  # the papers' tables report the validation/test split, never minival
# Recipe keys that shape some protocol's views (eval_views.VIEW_KEYS): a --set of one reaches the
# test through the checkpoint's saved config, unless the protocol sets the key itself.
ALL_VIEW_KEYS = frozenset(key for keys in VIEW_KEYS.values() for key in keys)


@dataclass
class ReproduceOptions:
    data_root: str | None = None
    budget_iters: int | None = None
    run_dir: Path | None = None
    overrides: tuple[str, ...] = ()
    train: bool = True  # False: report on an existing run in run_dir
    overwrite: bool = False
    seeds: int = 1
    eval_overrides: tuple[str, ...] = ()  # applied to the protocol test only (e.g. eval.scales on tiny data)


def _base_overrides(row: PaperRow, opts: ReproduceOptions, recipe_overrides: tuple[str, ...] | None) -> list[str]:
    overrides = list(row.overrides if recipe_overrides is None else recipe_overrides)
    return overrides + ([f"data.root={opts.data_root}"] if opts.data_root else [])


def shortened(row: PaperRow, opts: ReproduceOptions, recipe: str | None = None,
              recipe_overrides: tuple[str, ...] | None = None) -> ShortenedSchedule | None:
    """--budget-iters: the recipe's schedule (with the user's overrides) compressed, keeping its shape."""
    if not opts.budget_iters:
        return None
    base = _base_overrides(row, opts, recipe_overrides)
    return shorten_recipe(recipe or row.recipe, base + list(opts.overrides), opts.budget_iters)


def run_overrides(row: PaperRow, opts: ReproduceOptions, recipe_overrides: tuple[str, ...] | None = None,
                  recipe: str | None = None) -> list[str]:
    """The row's overrides, the data root, a --budget-iters schedule, then the user's (which win)."""
    short = shortened(row, opts, recipe, recipe_overrides)
    return _base_overrides(row, opts, recipe_overrides) + (short.overrides if short else []) + list(opts.overrides)


def default_run_dir(row: PaperRow) -> Path:
    return Path("runs") / "reproduce" / row.key


def protocol_overrides(config: RunConfig, opts: ReproduceOptions) -> list[str]:
    """What the protocol test changes in the run's saved config: the reported split (a recipe that
    validates on minival for its plateau rule is still reported on val) and the user's eval overrides."""
    split = [f"data.val_split={REPORTED_SPLIT}"] if config.data.val_split != REPORTED_SPLIT else []
    root = [f"data.root={opts.data_root}"] if opts.data_root else []
    return split + root + list(opts.eval_overrides)


def _key(override: str) -> str:
    return override.partition("=")[0].strip()


def user_protocol_changes(row: PaperRow, opts: ReproduceOptions) -> list[str]:
    """The user's changes to the paper's test protocol, which the report names: a --set of a key
    the protocol's views read (eval_views.VIEW_KEYS) and the protocol does not fix itself, and
    every --eval-set but one of a view key these views do not read (data.val_crop changes nothing
    in a multi-scale or single-320 test)."""
    read = set(VIEW_KEYS[row.protocol.eval_mode]) - {_key(o) for o in row.protocol.overrides}
    inherited = [o for o in opts.overrides if _key(o) in read]
    unread = ALL_VIEW_KEYS - set(VIEW_KEYS[row.protocol.eval_mode])
    return inherited + [o for o in opts.eval_overrides if _key(o) not in unread]


def normalization(config: RunConfig) -> str:
    """What the run subtracted, in words: the per-channel mean, or the mean image with its geometry
    (pixel_stats.json of the prepared dataset: the images' own size, or the 224 input of ImageNet)."""
    data = config.data
    if data.normalize != "per_pixel_mean":
        return f"the per-channel mean {list(data.mean)}, / std {list(data.std)}"
    stats = prepared_pixel_stats(data.root)
    if not stats:
        return "the per-pixel mean image of the training set"
    return (f"the per-pixel mean image of the training set, {stats.get('height')}x{stats.get('width')} "
            f"({stats.get('geometry', 'native')}), / std per channel")


def model_changes(row_config: RunConfig, config: RunConfig, overrides: list[str]) -> list[str]:
    """The overrides that made the run's network differ from the row's (model.name, model.options...):
    its params and error are then not the row's network's."""
    row_model, run_model = flatten(to_dict(row_config.model)), flatten(to_dict(config.model))
    changed = {key for key in row_model.keys() | run_model.keys() if row_model.get(key) != run_model.get(key)}
    def names(override: str, key: str) -> bool:
        return f"model.{key}" == _key(override) or f"model.{key}".startswith(_key(override) + ".")

    named = [o for o in overrides if any(names(o, key) for key in changed)]
    return named or [f"model.{key}={run_model.get(key)}" for key in sorted(changed)]


def protocol_test(row: PaperRow, config: RunConfig, run_dir: Path, opts: ReproduceOptions, echo=print) -> list:
    """The row's protocol on the run's final and best checkpoints (and their weight EMA when the run kept
    one); saved to RUN_DIR/protocol_results.json."""
    results = []
    for tested in weights_to_test(run_dir, config.ema.enabled):
        echo(f"  testing the {tested.which} weights with {row.protocol.name} ({tested.path.name})")
        results.append(evaluate_protocol([tested.path], row.protocol, protocol_overrides(config, opts),
                                         which=tested.which, weights_of=tested.weights_of))
    (run_dir / RESULTS_NAME).write_text(json.dumps([r.as_dict() for r in results], indent=1) + "\n")
    return results


def measure(row: PaperRow, config: RunConfig, full_config: RunConfig, run_dir: Path, opts: ReproduceOptions,
            overrides: list[str], seconds: float | None, protocol_results: list | None = None,
            short: ShortenedSchedule | None = None) -> Measured:
    final_path = run_dir / "final_metrics.json"
    if not final_path.is_file():
        raise DtrainError(f"{run_dir} holds no final_metrics.json: the run did not finish; train it first")
    final = json.loads(final_path.read_text())
    params, madds = models.complexity(build_model(config.model), config.data.val_crop)
    return Measured(top1_err=final.get("top1_err"), top5_err=final.get("top5_err"), params=params,
                    multiply_adds=madds, input_size=config.data.val_crop, iterations=int(final.get("step", 0)),
                    full_iterations=full_iterations(full_config),
                    dataset=prepared_summary(config.data.root).get("dataset", ""),
                    data_root=config.data.root, eval_mode=config.eval.mode, recipe=row.recipe, overrides=overrides,
                    run_id=final.get("run_id"), run_dir=str(run_dir),
                    seconds=seconds if seconds is not None else final.get("seconds"), budget_iters=opts.budget_iters,
                    protocol_results=list(protocol_results or []), protocol_changes=user_protocol_changes(row, opts),
                    model_changes=model_changes(full_config, config, list(opts.overrides)), model=config.model.name,
                    schedule_note=short.description if short else "", normalize=config.data.normalize,
                    normalization=normalization(config))


def log_report(config: RunConfig, run_dir: Path, run_id: str | None, report: str, row: PaperRow) -> bool:
    """Attach the report to the run in MLflow; a tracking failure only warns (the file is written)."""
    if not run_id or config.tracking.backend != "mlflow":
        return False
    try:
        client = make_client(resolve_uri(config.tracking.uri, run_dir))  # imports mlflow (optional)
        client.log_text(run_id, report, ARTIFACT_PATH)
        client.set_tag(run_id, "dtrain.reproduce", row.key)
        return True
    except Exception as exc:  # the report on disk is the result; MLflow is a copy
        warnings.warn(f"could not log the report to MLflow run {run_id}: {str(exc).splitlines()[0]}", stacklevel=2)
        return False


def _one_run(row: PaperRow, recipe: str, recipe_overrides: tuple[str, ...], run_dir: Path, opts: ReproduceOptions,
             echo, extra: tuple[str, ...] = (), test: bool = True) -> tuple[RunConfig, Measured]:
    overrides = run_overrides(row, opts, recipe_overrides, recipe) + list(extra)
    config = load_config(recipe, [*overrides, f"run_dir={run_dir}"])
    full_config = load_config(recipe, [*recipe_overrides, *([f"data.root={opts.data_root}"] if opts.data_root else [])])
    seconds = None
    if opts.train:
        check_data_root(config)  # fail before starting a subprocess
        echo(f"training {recipe} for {row.key} -> {run_dir}")
        seconds = run_training(recipe, run_dir, overrides, overwrite=opts.overwrite, echo=echo,
                               keep_tracking_env=True).seconds
    results = protocol_test(row, config, run_dir, opts, echo) if test else []
    return config, measure(row, config, full_config, run_dir, opts, overrides, seconds, results,
                           shortened(row, opts, recipe, recipe_overrides))


def _seed_runs(row: PaperRow, run_dir: Path, opts: ReproduceOptions, echo) -> tuple[RunConfig, Measured, list]:
    if opts.seeds <= 1:
        config, measured = _one_run(row, row.recipe, row.overrides, run_dir, opts, echo)
        return config, measured, []
    runs = [_one_run(row, row.recipe, row.overrides, run_dir / f"seed-{seed}", opts, echo, (f"train.seed={seed}",))
            for seed in range(opts.seeds)]
    return runs[0][0], runs[0][1], [m for _, m in runs]


def _ensemble(row: PaperRow, run_dir: Path, opts: ReproduceOptions, echo) -> tuple[RunConfig, Measured]:
    """Train every member, then the protocol over the members' final checkpoints together."""
    members = [_one_run(row, recipe, overrides, run_dir / f"member-{i}-{recipe}", opts, echo, test=False)
               for i, (recipe, overrides) in enumerate(row.members)]
    finals = [run_checkpoints(Path(m.run_dir))["final"] for _, m in members]
    echo(f"  testing the ensemble of {len(finals)} final checkpoints with {row.protocol.name}")
    config, first = members[0]
    result = evaluate_protocol(finals, row.protocol, protocol_overrides(config, opts), which="ensemble")
    (run_dir / RESULTS_NAME).write_text(json.dumps([result.as_dict()], indent=1) + "\n")
    first.protocol_results = [result]
    first.params = sum(m.params for _, m in members)
    first.multiply_adds = sum(m.multiply_adds for _, m in members)
    first.run_dir = str(run_dir)
    return config, first


def check_options(row: PaperRow, opts: ReproduceOptions) -> None:
    """Refuse options that a row cannot honour, before anything is trained."""
    if row.members and opts.seeds > 1:
        raise DtrainError(f"--seeds {opts.seeds} does not apply to {row.key}: an ensemble row already combines "
                          f"{len(row.members)} fixed members (each recipe with its own seed) into the one result "
                          f"{row.source} reports; drop --seeds")


def reproduce(row: PaperRow, opts: ReproduceOptions, echo=print) -> tuple[Path, str]:
    check_options(row, opts)
    run_dir = opts.run_dir or default_run_dir(row)
    run_dir.mkdir(parents=True, exist_ok=True)
    repeats: list[Measured] = []
    if row.members:
        config, measured = _ensemble(row, run_dir, opts, echo)
    else:
        config, measured, repeats = _seed_runs(row, run_dir, opts, echo)
    report = render_report(row, measured, repeats)
    path = run_dir / REPORT_NAME
    path.write_text(report)
    if log_report(config, Path(measured.run_dir), measured.run_id, report, row):
        echo(f"logged {ARTIFACT_PATH} to MLflow run {measured.run_id}")
    return path, report
