"""Ctrl-C asks for a checkpoint like SIGTERM and a second one aborts; a missing optional part is
one line naming the extra that installs it."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from dtrain.checkpoint import PreemptionHandler
from dtrain.cli import main


def test_first_ctrl_c_requests_a_checkpoint_and_the_second_aborts() -> None:
    # A shell starts a background job (`make test &`) with SIGINT ignored, and the handler rightly
    # leaves that alone (next test): give this test a foreground process's default.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGINT)
    with PreemptionHandler() as handler:
        os.kill(os.getpid(), signal.SIGINT)
        assert handler.requested and handler.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before
    signal.signal(signal.SIGINT, ignored)


def test_an_ignored_sigint_stays_ignored() -> None:
    # A background job started by a shell ignores SIGINT: Ctrl-C of the terminal is not for it.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with PreemptionHandler() as handler:
            os.kill(os.getpid(), signal.SIGINT)
            assert not handler.requested
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("missing", "argv", "extra"),
    [("kubernetes_validate", ["k8s", "render", "--set", "image=x", "--out", "{tmp}", "--no-check-recipe"], "k8s"),
     ("matplotlib", ["plot", "{tmp}/runs", "--out", "{tmp}/fig.png"], "plot"),
     ("sklearn", ["prepare", "digits", "--out", "{tmp}/digits"], "demo")],
)
def test_a_missing_extra_is_one_line_naming_it(missing, argv, extra, tmp_path, monkeypatch, capsys) -> None:
    # Imports fail as if it were not installed, also where an earlier test imported it already.
    for name in [m for m in sys.modules if m.startswith((f"{missing}.", "dtrain.analysis.figures",
                                                          "dtrain.commands.plot"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit) as exited:
        main([arg.format(tmp=tmp_path) for arg in argv])
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and f"pip install 'dtrain[{extra}]'" in err and missing in err
