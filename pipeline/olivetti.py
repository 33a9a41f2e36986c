"""The Olivetti faces (scikit-learn's fetcher) as a folder-per-person tree, for a demo without
FACES on a machine with a network."""

from __future__ import annotations

import socket
from pathlib import Path


class OlivettiUnavailable(RuntimeError):
    """The data set is not cached and cannot be downloaded."""


def fetch_olivetti_folder(out_dir: Path, timeout_s: float = 20.0) -> Path:
    """Write the 400 Olivetti faces as out_dir/person_XX/N.png; returns out_dir."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import fetch_olivetti_faces

    out_dir = Path(out_dir)
    if out_dir.is_dir() and len(list(out_dir.glob("*/*.png"))) == 400:
        return out_dir
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # fail fast offline instead of hanging on a socket
    try:
        faces = fetch_olivetti_faces(
            data_home=str(out_dir.parent / "sklearn_data"), n_retries=1, delay=0.1
        )
    except OSError as err:  # URLError, timeouts, DNS failures: all mean "unavailable"
        raise OlivettiUnavailable(f"{type(err).__name__}: {err}") from err
    finally:
        socket.setdefaulttimeout(previous)
    for i, (image, target) in enumerate(zip(faces.images, faces.target, strict=True)):
        person = out_dir / f"person_{int(target):02d}"
        person.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(image, 0, 1) * 255).astype("uint8"), mode="L").save(
            person / f"{i % 10 + 1}.png"
        )
    return out_dir
