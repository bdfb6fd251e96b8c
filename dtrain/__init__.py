"""dtrain: distributed training of the residual networks of He et al. (CVPR 2016, ECCV 2016)."""

__version__ = "0.1.0"
