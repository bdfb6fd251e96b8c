"""Optional parts of dtrain and the extra that installs each, for one-line errors when missing.

    pip install 'dtrain[plot]'    matplotlib: dtrain plot
    pip install 'dtrain[demo]'    scikit-learn: dtrain demo, dtrain prepare digits
    pip install 'dtrain[k8s]'     kubernetes-validate, jsonschema: dtrain k8s validate
    pip install 'dtrain[cuda12]'  (cuda13; dali with a CPU torch) DALI: data.loader=dali
    pip install 'dtrain[ffcv]'    FFCV: data.loader=ffcv, prepare --formats ffcv
    pip install 'dtrain[deepspeed]'
    pip install 'dtrain[auth]'    Flask-WTF: dtrain mlflow-server --auth (MLflow's basic-auth app)
"""

from __future__ import annotations

from collections.abc import Callable

# DALI is built per CUDA major: the extra whose build matches torch's CUDA.
DALI_EXTRA_OF_CUDA = {"12": "cuda12", "13": "cuda13"}
# With a CPU torch: README's `pip install 'dtrain[dali]'`, whose DALI runs the pipelines on the CPU.
DALI_CPU_EXTRA = "dali"


def dali_extra() -> tuple[str, str]:
    """(extra, why) for this install's torch: cuda12 / cuda13 after torch.version.cuda, or the CPU one."""
    import torch  # only on the error path: extras is imported by `dtrain --help`

    cuda = torch.version.cuda
    if not cuda:
        return DALI_CPU_EXTRA, " (this torch is a CPU build: DALI then runs on the CPU)"
    major = cuda.split(".")[0]
    extra = DALI_EXTRA_OF_CUDA.get(major)
    if extra is None:  # no DALI for this CUDA: the nearest one, and a torch for it is needed too
        nearest = min(DALI_EXTRA_OF_CUDA, key=lambda m: abs(int(m) - int(major)))
        builds = " and ".join(DALI_EXTRA_OF_CUDA.values())
        return DALI_EXTRA_OF_CUDA[nearest], (f" (torch is built for CUDA {cuda}, and DALI's extras are {builds}: "
                                            f"install a torch for CUDA {nearest} as well)")
    return extra, f" (DALI for torch's CUDA {cuda})"


def _fixed(extra: str) -> Callable[[], tuple[str, str]]:
    return lambda: (extra, "")


# top-level module name -> (what the user would call it, the extra that installs it and a note)
EXTRA_OF_MODULE: dict[str, tuple[str, Callable[[], tuple[str, str]]]] = {
    "matplotlib": ("matplotlib", _fixed("plot")),
    "sklearn": ("sklearn (scikit-learn)", _fixed("demo")),
    "kubernetes_validate": ("kubernetes_validate", _fixed("k8s")),
    "jsonschema": ("jsonschema", _fixed("k8s")),
    "nvidia": ("NVIDIA DALI (nvidia.dali)", dali_extra),
    "ffcv": ("FFCV", _fixed("ffcv")),
    "numba": ("numba (for FFCV)", _fixed("ffcv")),
    "cv2": ("cv2 (opencv-python-headless, for FFCV)", _fixed("ffcv")),
    "deepspeed": ("deepspeed", _fixed("deepspeed")),
    "flask_wtf": ("Flask-WTF (MLflow's basic-auth app)", _fixed("auth")),
}


def missing_module_message(module: str | None) -> str | None:
    """"needs X, which is not installed: pip install 'dtrain[EXTRA]'", or None if X is no extra's."""
    top = (module or "").split(".")[0]
    entry = EXTRA_OF_MODULE.get(top)
    if entry is None:
        return None
    what, choose = entry
    extra, note = choose()
    return f"needs {what}, which is not installed: pip install 'dtrain[{extra}]'{note}"
