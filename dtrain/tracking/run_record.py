"""What rank 0 records at the start and end of a run, in one place so every entry point agrees.

    tracker = build_tracker(cfg.tracking, run_dir=..., rank=rank, run_name=..., resume_run_id=...)
    record_run_start(tracker, cfg, world_size=world, device_names=names)
    ... tracker.log_metrics(...) ...
    record_run_end(tracker, {"val/top1_err": 0.236, ...}, status="FINISHED")
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from dtrain.config import dump_yaml, flatten, to_dict
from dtrain.tracking.base import Tracker
from dtrain.tracking.system_tags import system_tags

CONFIG_ARTIFACT = "config/resolved_config.yaml"
FINAL_METRICS_ARTIFACT = "final_metrics.json"


def record_run_start(tracker: Tracker, config: Any, *, world_size: int,
                     device_names: Sequence[str] | None = None) -> None:
    """Every resolved config value as a param, the system tags, and the resolved config as a file."""
    tracker.log_params(flatten(to_dict(config)))
    tracker.set_tags({**system_tags(world_size, device_names), "recipe": getattr(config, "recipe", "")})
    tracker.log_text(dump_yaml(config), CONFIG_ARTIFACT)


def record_run_end(tracker: Tracker, final_metrics: Mapping[str, Any], *, status: str = "FINISHED",
                   step: int | None = None) -> None:
    """The final metrics as an artifact (and as metrics when a step is given), then close the run."""
    if step is not None:
        numbers = {k: float(v) for k, v in final_metrics.items() if isinstance(v, (int, float))}
        if numbers:
            tracker.log_metrics(numbers, step=step)
    tracker.log_text(json.dumps(dict(final_metrics), indent=2, default=str) + "\n", FINAL_METRICS_ARTIFACT)
    tracker.close(status)
