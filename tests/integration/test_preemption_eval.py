"""SIGTERM during an evaluation: the evaluation stops, the current training state is checkpointed,
the run exits 0, and a resume ends bitwise equal to the uninterrupted run. The last step is
checkpointed before the final evaluation starts, so a signal there loses no training."""

from __future__ import annotations

from pathlib import Path

# The exact-resume harness; its reference runs are fixtures of conftest.py.
from resume_runs import (
    TOTAL_STEPS,
    SignalledEvalLoader,
    assert_bitwise_equal,
    checkpoint_steps,
    final_checkpoint,
    train_in_process,
)


def test_sigterm_during_an_evaluation_checkpoints_and_resumes_exactly(tmp_path: Path,
                                                                      reference_run_random_op: dict) -> None:
    first = train_in_process(tmp_path, sigterm_at_eval=1)  # the evaluation at the end of epoch 1 (step 8)
    assert first.exit_code == 0 and first.result.stopped == "preempted"
    assert first.result.step == 8 and 8 in checkpoint_steps(tmp_path)
    second = train_in_process(tmp_path)
    assert second.exit_code == 0 and second.result.stopped == "finished"
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run_random_op)


def test_the_final_checkpoint_is_written_before_the_final_evaluation(tmp_path: Path,
                                                                     reference_run_random_op: dict) -> None:
    first = train_in_process(tmp_path, sigterm_at_eval=3)  # evaluations at steps 8, 16, then the final one
    assert first.exit_code == 0 and first.result.stopped == "preempted"
    assert first.result.step == TOTAL_STEPS
    assert TOTAL_STEPS in SignalledEvalLoader.seen_at_signal  # on disk when the final evaluation began
    assert_bitwise_equal(final_checkpoint(tmp_path), reference_run_random_op)
    second = train_in_process(tmp_path)  # resumes at the end: only the final evaluation runs
    assert second.exit_code == 0 and second.result.stopped == "finished" and second.result.final is not None
