"""Push edge models to `<edge_dir>/<model_name>/<version>/`, atomically.

Written to a hidden temporary folder beside the destination and renamed into place when
complete, so a device syncing the folder never sees half a version (as TF Serving's own
version folders are expected to appear).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path


def push_files(files: Iterable[str | Path], edge_model_dir: str | Path, version: str) -> Path:
    """Copy files into edge_model_dir/version; error if that version already exists."""
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"bad version folder name {version!r}")
    files = [Path(f) for f in files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot push missing files: {missing}")
    edge_model_dir = Path(edge_model_dir)
    edge_model_dir.mkdir(parents=True, exist_ok=True)
    destination = edge_model_dir / version
    if destination.exists():
        raise FileExistsError(f"{destination}: version already pushed")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=edge_model_dir))
    try:
        for f in files:
            shutil.copy2(f, tmp / f.name)
        tmp.chmod(0o755)
        tmp.rename(destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return destination
