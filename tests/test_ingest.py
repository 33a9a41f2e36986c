"""facegate ingest: splits, determinism, labels, bad files and error cases."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from components import features as F
from pipeline.cli import cli
from pipeline.ingest import IngestError, SplitSpec, ingest, ingest_if_changed

FORMATS = [
    ("jpg", "RGB"),
    ("png", "L"),
    ("pgm", "L"),
    ("gif", "P"),
    ("bmp", "RGB"),
    ("png", "RGBA"),
]


def _write_image(path: Path, mode: str, seed: int, size: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if mode == "P":
        img = img.convert("P")
    img.save(path)
    return pixels


def make_tree(root: Path, people: int = 6, per_person: int = 7) -> Path:
    """people x per_person images cycling through formats, modes and sizes."""
    for p in range(people):
        person = root / f"person{p}"
        person.mkdir(parents=True)
        for i in range(per_person):
            ext, mode = FORMATS[(p + i) % len(FORMATS)]
            _write_image(person / f"{i}.{ext}", mode, seed=p * 100 + i, size=(20 + i, 24 + p))
    return root


def read_split(path: Path) -> list[dict]:
    files = sorted((path).glob("*.tfrecord"))
    out = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]).as_numpy_iterator():
        ex = tf.train.Example.FromString(raw).features.feature
        out.append(
            {
                "image": ex[F.IMAGE_KEY].bytes_list.value[0],
                "format": ex[F.FORMAT_KEY].bytes_list.value[0].decode(),
                "identity": ex[F.IDENTITY_KEY].bytes_list.value[0].decode(),
                "label": ex[F.LABEL_KEY].int64_list.value[0],
                "is_known": ex[F.IS_KNOWN_KEY].int64_list.value[0],
                "role": ex[F.ROLE_KEY].bytes_list.value[0].decode(),
            }
        )
    return out


SPEC = SplitSpec(num_known=3, num_known_unknown=2, calib_per_person=2, test_per_person=2, seed=7)


def test_generated_tree_split_sizes_labels_and_features(tmp_path):
    images = make_tree(tmp_path / "faces")
    result = ingest(images, tmp_path / "out", SPEC, progress=False)

    assert len(result.roles[F.ROLE_KNOWN]) == 3
    assert len(result.roles[F.ROLE_KNOWN_UNKNOWN]) == 2
    assert len(result.roles[F.ROLE_UNKNOWN_UNKNOWN]) == 1
    # known: 2 test, 2 calib, 3 train each; known-unknown: 2 calib, 5 train; unknown: 7 test.
    assert result.split_counts["train"] == {"known": 9, "known_unknown": 10, "unknown_unknown": 0}
    assert result.split_counts["calib"] == {"known": 6, "known_unknown": 4, "unknown_unknown": 0}
    assert result.split_counts["test"] == {"known": 6, "known_unknown": 0, "unknown_unknown": 7}

    labels = (tmp_path / "out" / F.LABELS_FILE).read_text().split()
    assert labels == sorted(result.roles[F.ROLE_KNOWN])
    records = [r for s in F.SPLITS for r in read_split(tmp_path / "out" / s)]
    assert len(records) == 42
    for r in records:
        if r["role"] == F.ROLE_KNOWN:
            assert labels[r["label"]] == r["identity"] and r["is_known"] == 1
        else:
            assert r["label"] == -1 and r["is_known"] == 0
        assert r["format"] in ("jpeg", "png")
        decoded = tf.io.decode_image(r["image"], channels=3).numpy()
        assert decoded.ndim == 3 and decoded.shape[2] == 3

    with open(tmp_path / "out" / F.MANIFEST_FILE) as fh:
        manifest = list(csv.DictReader(fh))
    assert len(manifest) == 42
    assert {m["split"] for m in manifest if m["role"] == F.ROLE_UNKNOWN_UNKNOWN} == {"test"}


def test_lossless_conversion_keeps_pixels(tmp_path):
    """PGM / BMP / GIF become PNG with the same pixel values."""
    person_dirs = make_tree(tmp_path / "faces")
    ingest(person_dirs, tmp_path / "out", SPEC, progress=False)
    with open(tmp_path / "out" / F.MANIFEST_FILE) as fh:
        manifest = {m["source"]: m for m in csv.DictReader(fh)}
    pgm = next(s for s in manifest if s.endswith(".pgm"))
    records = read_split(tmp_path / "out" / manifest[pgm]["split"])
    original = np.asarray(Image.open(tmp_path / "faces" / pgm).convert("L"))
    matches = [
        r
        for r in records
        if r["identity"] == manifest[pgm]["identity"]
        and r["format"] == "png"
        and np.array_equal(np.asarray(Image.open(io.BytesIO(r["image"]))), original)
    ]
    assert manifest[pgm]["converted_to_png"] == "true"
    assert len(matches) == 1


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    images = make_tree(tmp_path / "faces", people=8)
    a = ingest(images, tmp_path / "a", SPEC, progress=False)
    b = ingest(images, tmp_path / "b", SPEC, progress=False)
    assert a.roles == b.roles
    for split in F.SPLITS:
        fa = (tmp_path / "a" / split / f"faces-{split}.tfrecord").read_bytes()
        fb = (tmp_path / "b" / split / f"faces-{split}.tfrecord").read_bytes()
        assert fa == fb
    other = ingest(images, tmp_path / "c", SplitSpec(num_known=3, num_known_unknown=2, seed=8),
                   progress=False)  # fmt: skip
    assert other.roles != a.roles


def test_bad_files_are_skipped_and_counted(tmp_path):
    images = make_tree(tmp_path / "faces")
    (images / "person0" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (images / "person1" / "notes.txt").write_text("hello")
    (images / "person2" / "truncated.png").write_bytes(_png_bytes()[:60])
    result = ingest(images, tmp_path / "out", SPEC, progress=False)
    skipped = {Path(s["path"]).name: s["reason"] for s in result.skipped}
    assert set(skipped) == {"broken.jpg", "notes.txt", "truncated.png"}
    assert "not a readable image" in skipped["broken.jpg"]
    assert sum(sum(c.values()) for c in result.split_counts.values()) == 42


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_explicit_known_list(tmp_path):
    images = make_tree(tmp_path / "faces")
    spec = SplitSpec(known=("person4", "person1"), num_known_unknown=1)
    result = ingest(images, tmp_path / "out", spec, progress=False)
    assert result.labels == ["person1", "person4"]
    with pytest.raises(IngestError, match="person9"):
        ingest(images, tmp_path / "out2", SplitSpec(known=("person1", "person9")), progress=False)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "no image files found"),
        ("too_few", "needs at least 5"),
        ("one_known", "at least 2 known identities"),
    ],
)
def test_errors_leave_nothing_written(tmp_path, setup, message):
    images = tmp_path / "faces"
    images.mkdir()
    spec = SPEC
    if setup == "too_few":
        make_tree(images, people=6, per_person=7)
        for extra in sorted((images / "person0").iterdir())[:3]:
            extra.unlink()
        spec = SplitSpec(known=("person0", "person1"), num_known_unknown=2)
    elif setup == "one_known":
        make_tree(images, people=3)
        spec = SplitSpec(num_known=1)
    out = tmp_path / "out"
    with pytest.raises(IngestError, match=message):
        ingest(images, out, spec, progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]  # no temporary leftovers


def test_failed_overwrite_keeps_previous_output(tmp_path):
    images = make_tree(tmp_path / "faces")
    ingest(images, tmp_path / "out", SPEC, progress=False)
    before = (tmp_path / "out" / F.LABELS_FILE).read_text()
    with pytest.raises(IngestError):
        ingest(images, tmp_path / "out", SplitSpec(num_known=1), overwrite=True, progress=False)
    assert (tmp_path / "out" / F.LABELS_FILE).read_text() == before
    with pytest.raises(IngestError, match="already exists"):
        ingest(images, tmp_path / "out", SPEC, progress=False)


def test_cli_exit_codes(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(cli, ["ingest", "--images", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0
    assert "no image files found" in res.output
    images = make_tree(tmp_path / "faces")
    (images / "person0" / "broken.jpg").write_bytes(b"garbage")
    res = runner.invoke(
        cli,
        ["ingest", "--images", str(images), "--out", str(tmp_path / "o"), "--num-known", "3",
         "--num-known-unknown", "2"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "skipped files: 1" in res.output
    assert "broken.jpg" in res.output


def test_ingest_if_changed_reuses_identical_request(tmp_path):
    images = make_tree(tmp_path / "faces")
    first, reused = ingest_if_changed(images, tmp_path / "out", SPEC)
    assert not reused
    mtime = (tmp_path / "out" / "train" / "faces-train.tfrecord").stat().st_mtime_ns
    second, reused = ingest_if_changed(images, tmp_path / "out", SPEC)
    assert reused and second.roles == first.roles
    assert (tmp_path / "out" / "train" / "faces-train.tfrecord").stat().st_mtime_ns == mtime
    _, reused = ingest_if_changed(images, tmp_path / "out", SplitSpec(num_known=4, seed=7))
    assert not reused


def test_orl_default_protocol(orl_dir, tmp_path):
    spec = SplitSpec(num_known=24, num_known_unknown=8, seed=0)
    result = ingest(orl_dir, tmp_path / "orl", spec, progress=False)
    assert [len(result.roles[r]) for r in F.ROLES] == [24, 8, 8]
    assert result.split_counts["train"] == {"known": 144, "known_unknown": 64, "unknown_unknown": 0}
    assert result.split_counts["calib"] == {"known": 48, "known_unknown": 16, "unknown_unknown": 0}
    assert result.split_counts["test"] == {"known": 48, "known_unknown": 0, "unknown_unknown": 80}
    assert result.skipped == []
    # Default fractions give the same protocol on 40 people.
    default = ingest(orl_dir, tmp_path / "orl2", SplitSpec(seed=0), progress=False)
    assert [len(default.roles[r]) for r in F.ROLES] == [24, 8, 8]
    test = read_split(tmp_path / "orl" / "test")
    assert {r["role"] for r in test} == {F.ROLE_KNOWN, F.ROLE_UNKNOWN_UNKNOWN}
    assert all(r["format"] == "png" for r in test)  # PGM converted
