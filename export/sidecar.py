"""The JSON sidecar that travels beside each .tflite file: what a device needs to use it.

`facegate-int8.tflite` is described by `facegate-int8.json` in the same folder. The sidecar
carries the labels, input size, colour order and range, where normalisation happens, the
P(known) threshold, the signature and tensor names, and the SHA-256 and size of the .tflite it
describes, so a sidecar copied next to the wrong model (or a truncated model) is refused.
No TensorFlow here: the edge runtime reads this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "facegate-edge/1"
SIDECAR_SUFFIX = ".json"
TFLITE_SUFFIX = ".tflite"


class SidecarError(ValueError):
    """A sidecar is missing, unreadable or does not describe its .tflite file."""


@dataclass(frozen=True)
class EdgeModelInfo:
    labels: tuple[str, ...]
    input_size: int
    threshold: float
    """P(known) at or above this is a known person; the SavedModel's threshold."""
    variant: str
    tflite_sha256: str
    tflite_bytes: int
    temperature: float = 1.0
    """identity_probs = softmax(logits / temperature), already applied inside the graph."""
    signature: str = "serving_image"
    input_name: str = "image"
    outputs: dict[str, str] = field(default_factory=dict)
    """Role -> output tensor name in the signature: logits, identity_probs, known_prob."""
    color: str = "RGB"
    input_range: tuple[float, float] = (0.0, 255.0)
    resize: str = "bilinear, antialiased (Pillow BILINEAR on float channels)"
    normalization: str = "vgg16 (BGR minus ImageNet mean), inside the graph"
    model_name: str = "facegate"
    model_version: str = ""
    parity: dict = field(default_factory=dict)
    """This variant's parity figures against the SavedModel, from the export run."""
    format: str = FORMAT

    def to_json(self) -> str:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["input_range"] = list(self.input_range)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> EdgeModelInfo:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["labels"] = tuple(str(x) for x in kwargs.get("labels", ()))
        if "input_range" in kwargs:
            kwargs["input_range"] = tuple(float(x) for x in kwargs["input_range"])
        return cls(**kwargs)


def sidecar_path(tflite_path: str | Path) -> Path:
    """`x/facegate-int8.tflite` -> `x/facegate-int8.json`."""
    return Path(tflite_path).with_suffix(SIDECAR_SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(tflite_path: str | Path, info: EdgeModelInfo) -> Path:
    path = sidecar_path(tflite_path)
    path.write_text(info.to_json() + "\n")
    return path


_REQUIRED = ("labels", "input_size", "threshold", "variant", "tflite_sha256", "tflite_bytes")


def read_sidecar(tflite_path: str | Path) -> EdgeModelInfo:
    """Read and validate the sidecar of tflite_path (not yet checked against the file)."""
    path = sidecar_path(tflite_path)
    if not path.is_file():
        raise SidecarError(
            f"{path}: sidecar missing. Labels, input size and threshold travel beside "
            f"{Path(tflite_path).name}; copy both files together."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SidecarError(f"{path}: not a readable JSON sidecar ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise SidecarError(f"{path}: not a facegate edge sidecar (format {got!r}, want {FORMAT!r})")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise SidecarError(f"{path}: missing fields {missing}")
    try:
        info = EdgeModelInfo.from_dict(data)
        threshold = float(info.threshold)
        size = int(info.input_size)
    except (TypeError, ValueError) as err:
        raise SidecarError(f"{path}: malformed field ({err})") from err
    if len(info.labels) < 2:
        raise SidecarError(f"{path}: needs at least 2 labels, has {len(info.labels)}")
    if not 0.0 <= threshold <= 1.0:
        raise SidecarError(f"{path}: threshold {threshold} is not a probability")
    if size < 1:
        raise SidecarError(f"{path}: input_size {size} is not a positive size")
    return info


def verify_sidecar(tflite_path: str | Path, info: EdgeModelInfo) -> None:
    """Refuse a sidecar that describes another (or a truncated / modified) .tflite file."""
    tflite_path = Path(tflite_path)
    size = tflite_path.stat().st_size
    if size != info.tflite_bytes:
        raise SidecarError(
            f"{tflite_path}: {size} bytes, but its sidecar {sidecar_path(tflite_path).name} "
            f"describes a {info.tflite_bytes}-byte model (truncated, or the wrong pair?)"
        )
    digest = file_sha256(tflite_path)
    if digest != info.tflite_sha256:
        raise SidecarError(
            f"{tflite_path}: SHA-256 {digest[:12]}... does not match its sidecar "
            f"{sidecar_path(tflite_path).name} ({info.tflite_sha256[:12]}...): the files are "
            "not from the same export"
        )
