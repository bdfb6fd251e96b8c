"""Process-group setup, DDP wrapping and sync BN; see context.py, wrap.py, sync_bn.py, failure.py."""

from dtrain.distributed.context import DistContext, init_distributed, teardown
from dtrain.distributed.wrap import unwrap, wrap

__all__ = ["DistContext", "init_distributed", "teardown", "unwrap", "wrap"]
