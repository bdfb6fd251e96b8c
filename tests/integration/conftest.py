"""Fixtures of the integration tier: tests that start processes (training runs, torchrun, servers,
mp.spawn workers, benchmark scripts). Beside this file, the harnesses the fixtures and tests share:
fault_runs.py (run `python -m dtrain.train` as an operator does, check what is left behind),
resume_runs.py (exact resume), prepare_trees.py (source trees for `dtrain prepare`); ports and
process trees are tests/processes.py."""

from __future__ import annotations

import pytest
from resume_runs import explain, final_checkpoint, run_torchrun, uninterrupted


# The uninterrupted runs the exact-resume tests compare with, once per session (each is a training
# run): test_resume, test_preemption and test_preemption_eval share them.
@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted single-process run as `python -m dtrain.train` does it (run here)."""
    return uninterrupted(tmp_path_factory.mktemp("reference"), random_op=False)


@pytest.fixture(scope="session")
def reference_run_random_op(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same with a random op drawing from Python's, NumPy's and torch's global generators."""
    return uninterrupted(tmp_path_factory.mktemp("reference_random_op"), random_op=True)


@pytest.fixture(scope="session")
def reference_run_2proc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two processes under torchrun --standalone."""
    run_dir = tmp_path_factory.mktemp("reference2")
    result = run_torchrun(run_dir)
    assert result.returncode == 0, explain(result)
    return final_checkpoint(run_dir)
