"""Files dtrain reads at run time: the recipes (configs/) and the launchers, DeepSpeed configs and
Kubernetes templates (launch/).

In a checkout (or an editable install) they are the top-level folders; a wheel carries copies in
dtrain/_resources/ (setup.py), found with importlib.resources, so `pip install dtrain` works
outside the repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dtrain.errors import DtrainError

CHECKOUT = Path(__file__).resolve().parent.parent


def resource_dir(name: str) -> Path:
    """The folder `name` ("configs" or "launch") of this install."""
    packaged = resources.files("dtrain") / "_resources" / name
    if packaged.is_dir():
        return Path(str(packaged))
    if (CHECKOUT / name).is_dir():
        return CHECKOUT / name
    raise DtrainError(f"dtrain's {name}/ folder is missing from this install; reinstall dtrain "
                      "(pip install dtrain) or run from its repository")


def shown_path(path: Path) -> str:
    """A path as the user can type it here: relative to the working directory when under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":  # python -m dtrain.resources: where launchers and recipes are
    for folder in ("configs", "launch"):
        print(f"{folder}: {resource_dir(folder)}")
