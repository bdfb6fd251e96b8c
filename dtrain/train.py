"""`python -m dtrain.train RECIPE [key=value ...]`: train a recipe on 1 process, N processes or N nodes.

    python -m dtrain.train digits_resnet20 data.root=runs/data/digits
    torchrun --nproc-per-node 2 -m dtrain.train cifar10_resnet110 data.root=/data/cifar10
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m dtrain.train resnet200_preact data.root=/data/imagenet

The same command line on every node; torchrun's environment says who this process is (one plain
process when it is absent). Exit codes: 0 done (or preempted after a checkpoint), 1 a failure
(traceback printed once, by the rank that failed), 2 a user error (one line). The training itself
is dtrain.training's; this module is only the `-m` entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dtrain.commands.train import help_text
from dtrain.distributed.failure import EXIT_USER_ERROR
from dtrain.distributed.lifetime import exit_within
from dtrain.training import run_recipe

USAGE = "usage: python -m dtrain.train [--check-config] RECIPE [key=value ...]   (e.g. digits_resnet20 optim.lr=0.05)"
# `--check-config`: load and validate the config, train nothing. The launchers run it before torchrun,
# which would turn a typo into a worker traceback and retry it --max-restarts times.
CHECK_CONFIG = "--check-config"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check_only = bool(args) and args[0] == CHECK_CONFIG
    args = args[1:] if check_only else args
    if not args:
        print(USAGE, file=sys.stderr)
        return EXIT_USER_ERROR
    if args[0] in ("-h", "--help"):
        print(help_text())
        return 0
    # `--set K=V` is an alias of `K=V` (the same syntax as `dtrain train`).
    overrides = [arg for arg in args[1:] if arg != "--set"]
    return run_recipe(args[0], overrides, check_only=check_only)


if __name__ == "__main__":
    sys.exit(exit_within(main()))
