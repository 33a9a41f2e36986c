"""Turn a folder-per-person image tree into the TFRecord splits of DESIGN.md.

Identities are split (seeded) into known / known-unknown / unknown-unknown people, then images into
train / calib / test. Output is written to a temporary folder next to the target and renamed into
place only when complete, so a failed ingest never leaves a half-written dataset behind.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from components import features as F

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".gif", ".bmp"}
# Formats whose bytes tf.io.decode_image reads as they are; anything else is converted to PNG.
_KEEP_AS_IS = {("JPEG", "L"), ("JPEG", "RGB"), ("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA")}


class IngestError(ValueError):
    """The input cannot be turned into a valid dataset; the message names the problem."""


@dataclass(frozen=True)
class SplitSpec:
    """How people and images are divided. Counts left as None follow the default fractions."""

    num_known: int | None = None
    """Number of known identities (default: 60% of the people)."""
    known: tuple[str, ...] | None = None
    """Explicit list of known identities (overrides num_known)."""
    num_known_unknown: int | None = None
    """People whose faces train the certainty neuron as negatives (default: 20%)."""
    calib_per_person: int = 2
    """Images per known / known-unknown person held out for calibration."""
    test_per_person: int = 2
    """Images per known person held out for the test split."""
    seed: int = 0


@dataclass
class FaceImage:
    source: str  # path relative to the input folder
    identity: str
    encoded: bytes
    image_format: str  # "jpeg" or "png"
    converted: bool


@dataclass
class IngestResult:
    out_dir: str
    labels: list[str]
    roles: dict[str, list[str]]
    split_counts: dict[str, dict[str, int]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    seed: int = 0
    request: dict = field(default_factory=dict)
    """What was asked for (source folder, its file listing digest, split settings)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def read_image(path: Path) -> tuple[bytes, str, bool]:
    """Return (bytes, format, converted) for one image file; raises IngestError if unreadable."""
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as img:
            img.load()  # force a full decode: truncated files fail here, not at training time
            if (img.format, img.mode) in _KEEP_AS_IS:
                return raw, "jpeg" if img.format == "JPEG" else "png", False
            gray = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            converted = img.convert("L" if gray else "RGB")
            buf = io.BytesIO()
            converted.save(buf, format="PNG")
            return buf.getvalue(), "png", True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise IngestError(f"{path}: not a readable image ({err})") from err


def scan_images(images_dir: Path) -> tuple[dict[str, list[Path]], list[dict[str, str]]]:
    """Map identity -> sorted image paths; files with other suffixes are reported as skipped."""
    if not images_dir.is_dir():
        raise IngestError(f"{images_dir}: no such folder (expected one sub-folder per person)")
    people: dict[str, list[Path]] = {}
    skipped: list[dict[str, str]] = []
    for person_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        if person_dir.name.startswith("."):
            continue
        files = []
        for f in sorted(person_dir.iterdir()):
            if f.name.startswith(".") or not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
            else:
                skipped.append({"path": str(f), "reason": f"unsupported suffix {f.suffix!r}"})
        if files:
            people[person_dir.name] = files
    return people, skipped


def assign_roles(identities: Sequence[str], spec: SplitSpec) -> dict[str, list[str]]:
    """Seeded split of identities into the three roles."""
    ids = sorted(identities)
    n = len(ids)
    rng = random.Random(spec.seed)
    if spec.known is not None:
        missing = sorted(set(spec.known) - set(ids))
        if missing:
            raise IngestError(f"known identities not found in the image folder: {missing}")
        known = sorted(set(spec.known))
        rest = [i for i in ids if i not in set(known)]
        rng.shuffle(rest)
    else:
        shuffled = ids[:]
        rng.shuffle(shuffled)
        n_known = spec.num_known if spec.num_known is not None else round(0.6 * n)
        if n_known > n:
            raise IngestError(f"--num-known {n_known} is more than the {n} people found")
        known = sorted(shuffled[:n_known])
        rest = shuffled[n_known:]
    if len(known) < 2:
        raise IngestError(
            f"need at least 2 known identities to train a classifier, got {len(known)} "
            f"(people found: {n})"
        )
    n_ku = spec.num_known_unknown if spec.num_known_unknown is not None else round(0.2 * n)
    n_ku = min(n_ku, len(rest))
    return {
        F.ROLE_KNOWN: known,
        F.ROLE_KNOWN_UNKNOWN: sorted(rest[:n_ku]),
        F.ROLE_UNKNOWN_UNKNOWN: sorted(rest[n_ku:]),
    }


def split_images(
    role: str, files: Sequence[Path], spec: SplitSpec, rng: random.Random
) -> dict[str, list[Path]]:
    """Seeded split of one person's images into train / calib / test by role."""
    files = list(files)
    rng.shuffle(files)
    if role == F.ROLE_UNKNOWN_UNKNOWN:
        return {F.SPLIT_TRAIN: [], F.SPLIT_CALIB: [], F.SPLIT_TEST: files}
    n_test = spec.test_per_person if role == F.ROLE_KNOWN else 0
    n_calib = spec.calib_per_person
    return {
        F.SPLIT_TEST: files[:n_test],
        F.SPLIT_CALIB: files[n_test : n_test + n_calib],
        F.SPLIT_TRAIN: files[n_test + n_calib :],
    }


def _min_images(role: str, spec: SplitSpec) -> int:
    if role == F.ROLE_KNOWN:
        return spec.test_per_person + spec.calib_per_person + 1
    if role == F.ROLE_KNOWN_UNKNOWN:
        return spec.calib_per_person + 1
    return 1


def make_example(face: FaceImage, label: int, role: str):
    """One tf.train.Example with the DESIGN.md features."""
    import tensorflow as tf

    def _bytes(v: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def _int(v: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                F.IMAGE_KEY: _bytes(face.encoded),
                F.FORMAT_KEY: _bytes(face.image_format.encode()),
                F.IDENTITY_KEY: _bytes(face.identity.encode()),
                F.LABEL_KEY: _int(label),
                F.IS_KNOWN_KEY: _int(1 if role == F.ROLE_KNOWN else 0),
                F.ROLE_KEY: _bytes(role.encode()),
            }
        )
    )


def ingest(
    images_dir: str | Path,
    out_dir: str | Path,
    spec: SplitSpec = SplitSpec(),
    overwrite: bool = False,
    progress: bool = True,
) -> IngestResult:
    """Read images_dir (one sub-folder per person) and write TFRecord splits to out_dir."""
    import tensorflow as tf
    from tqdm import tqdm

    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise IngestError(f"{out_dir}: already exists and is not empty (pass --overwrite)")

    people, skipped = scan_images(images_dir)
    total = sum(len(v) for v in people.values())
    if total == 0:
        raise IngestError(f"{images_dir}: no image files found in any person sub-folder")

    # Decode everything first: unreadable files are skipped and counted, and a person whose
    # remaining images are too few for the split is an error before anything is written.
    faces: dict[str, list[FaceImage]] = {}
    bar = tqdm(total=total, desc="reading images", unit="img", disable=not progress)
    for identity, paths in people.items():
        for p in paths:
            bar.update(1)
            try:
                data, fmt, converted = read_image(p)
            except IngestError as err:
                skipped.append({"path": str(p), "reason": str(err)})
                continue
            rel = str(p.relative_to(images_dir))
            faces.setdefault(identity, []).append(FaceImage(rel, identity, data, fmt, converted))
    bar.close()
    if not faces:
        raise IngestError(f"{images_dir}: none of the {total} image files could be read")

    roles = assign_roles(list(faces), spec)
    for role, ids in roles.items():
        need = _min_images(role, spec)
        for identity in ids:
            have = len(faces[identity])
            if have < need:
                raise IngestError(
                    f"person {identity!r} ({images_dir / identity}) has {have} readable images; "
                    f"the {role} role needs at least {need} "
                    f"(calib {spec.calib_per_person}, test {spec.test_per_person}, train >= 1)"
                )

    labels = roles[F.ROLE_KNOWN]
    label_of = {name: i for i, name in enumerate(labels)}
    by_name = {face.source: face for fs in faces.values() for face in fs}
    rng = random.Random(spec.seed + 1)
    rows: list[dict[str, str]] = []
    split_records: dict[str, list[tuple[FaceImage, int, str]]] = {s: [] for s in F.SPLITS}
    for role in F.ROLES:
        for identity in roles[role]:
            paths = [Path(f.source) for f in faces[identity]]
            for split, chosen in split_images(role, paths, spec, rng).items():
                for rel in sorted(chosen, key=str):
                    face = by_name[str(rel)]
                    label = label_of.get(identity, F.UNKNOWN_LABEL)
                    split_records[split].append((face, label, role))
                    rows.append(
                        {
                            "source": face.source,
                            "identity": identity,
                            "role": role,
                            "split": split,
                            "label": str(label),
                            "converted_to_png": str(face.converted).lower(),
                        }
                    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the renamed dataset should not be
    try:
        counts: dict[str, dict[str, int]] = {}
        for split, records in split_records.items():
            (tmp / split).mkdir()
            path = tmp / split / f"faces-{split}.tfrecord"
            with tf.io.TFRecordWriter(str(path)) as writer:
                for face, label, role in records:
                    writer.write(make_example(face, label, role).SerializeToString())
            counts[split] = {r: sum(1 for _, _, rr in records if rr == r) for r in F.ROLES}
        (tmp / F.LABELS_FILE).write_text("".join(f"{name}\n" for name in labels))
        with open(tmp / F.MANIFEST_FILE, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        result = IngestResult(
            out_dir=str(out_dir),
            labels=labels,
            roles=roles,
            split_counts=counts,
            skipped=skipped,
            seed=spec.seed,
            request=ingest_request(images_dir, spec),
        )
        (tmp / F.INGEST_INFO_FILE).write_text(result.to_json())
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Swap a completed folder into place; an old one is removed only after the rename."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{tmp.name.rsplit('-', 1)[-1]}")
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_labels(data_dir: str | Path) -> list[str]:
    path = Path(data_dir) / F.LABELS_FILE
    if not path.is_file():
        raise IngestError(f"{path}: missing; run `facegate ingest` first")
    return [line for line in path.read_text().splitlines() if line]


def ingest_request(images_dir: Path, spec: SplitSpec) -> dict:
    """A fingerprint of an ingest: the source listing (names, sizes, mtimes) and the spec."""
    digest = hashlib.sha256()
    for path in sorted(Path(images_dir).rglob("*")):
        if path.is_file():
            st = path.stat()
            digest.update(
                f"{path.relative_to(images_dir)}|{st.st_size}|{st.st_mtime_ns}\n".encode()
            )
    return {
        "images": str(Path(images_dir).resolve()),
        "listing_sha256": digest.hexdigest(),
        "spec": asdict(spec),
    }


def load_result(out_dir: str | Path) -> IngestResult:
    info = json.loads((Path(out_dir) / F.INGEST_INFO_FILE).read_text())
    return IngestResult(**info)


def ingest_if_changed(
    images_dir: str | Path, out_dir: str | Path, spec: SplitSpec = SplitSpec()
) -> tuple[IngestResult, bool]:
    """Re-use out_dir when it was ingested from the same files with the same spec.

    Returns (result, reused). Re-using keeps file timestamps, so the pipeline's cached
    ImportExampleGen output (and everything after it) stays valid on a second run.
    """
    out_dir = Path(out_dir)
    info = out_dir / F.INGEST_INFO_FILE
    if info.is_file():
        try:
            previous = load_result(out_dir)
        except (ValueError, TypeError):
            previous = None
        if previous is not None and previous.request == json.loads(
            json.dumps(ingest_request(Path(images_dir), spec))
        ):
            return previous, True
    return ingest(images_dir, out_dir, spec, overwrite=True), False
