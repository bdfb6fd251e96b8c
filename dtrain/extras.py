"""Optional parts of dtrain and the extra that installs each, for one-line errors when missing.

    pip install 'dtrain[plot]'    matplotlib: dtrain plot
    pip install 'dtrain[demo]'    scikit-learn: dtrain demo, dtrain prepare digits
    pip install 'dtrain[k8s]'     kubernetes-validate, jsonschema: dtrain k8s validate
    pip install 'dtrain[cuda12]'  (or cuda13) DALI: data.loader=dali
    pip install 'dtrain[ffcv]'    FFCV: data.loader=ffcv, prepare --formats ffcv
    pip install 'dtrain[deepspeed]'
"""

from __future__ import annotations

# top-level module name -> the extra(s) that install it
EXTRA_OF_MODULE: dict[str, str | tuple[str, ...]] = {
    "matplotlib": "plot",
    "sklearn": "demo",
    "kubernetes_validate": "k8s",
    "jsonschema": "k8s",
    "nvidia": ("cuda13", "cuda12"),  # DALI, built per CUDA major: the one of torch's CUDA
    "ffcv": "ffcv",
    "numba": "ffcv",
    "cv2": "ffcv",
    "deepspeed": "deepspeed",
}


def missing_module_message(module: str | None) -> str | None:
    """'needs X, which is not installed: pip install 'dtrain[EXTRA]'' or None if X is no extra's."""
    top = (module or "").split(".")[0]
    extras = EXTRA_OF_MODULE.get(top)
    if extras is None:
        return None
    first, *others = (extras,) if isinstance(extras, str) else extras
    alternatives = "".join(f" (or 'dtrain[{other}]')" for other in others)
    return f"needs {top}, which is not installed: pip install 'dtrain[{first}]'{alternatives}"
