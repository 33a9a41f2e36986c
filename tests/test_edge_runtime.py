"""The edge runtime on every converted variant: outputs by name, parity with the SavedModel,
no TensorFlow import, the CLI, and every kind of bad model file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import edge_testlib as L
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import features as F
from export.runtime import EdgeModelError, EdgeOptions, load, predict
from export.sidecar import SidecarError, read_sidecar, sidecar_path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("float32", "float16", "dynamic_range", "int8")
# |P(known) edge - SavedModel| allowed per variant on the fixture's faces.
KNOWN_PROB_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "dynamic_range": 2e-2, "int8": 0.1}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return L.edge_root(tmp_path_factory)


@pytest.fixture(scope="module")
def saved_model(root):
    return tf.saved_model.load(str(root / "saved_model"))


@pytest.fixture(scope="module")
def face_files(root) -> list[tuple[Path, str, bool]]:
    """(PNG path, identity, is known) for unseen images of each known person and stranger."""
    folder = root / "faces"
    folder.mkdir(exist_ok=True)
    out = []
    for identity, label, _role, seed in L.people():
        path = folder / f"{identity}.png"
        path.write_bytes(L.png_bytes(L.face_image(seed, 777 + seed)))
        out.append((path, identity, label >= 0))
    return out


def tflite(root: Path, variant: str) -> Path:
    return root / "edge" / f"facegate-{variant}.tflite"


def test_every_variant_was_converted_and_passed_the_loose_gate(root):
    report = json.loads((root / "edge" / "parity_report.json").read_text())
    assert report["errors"] == {}
    assert [v["variant"] for v in report["variants"]] == list(VARIANTS)
    for variant in VARIANTS:
        assert tflite(root, variant).is_file() and sidecar_path(tflite(root, variant)).is_file()
    assert report["representative"] == {"known": 9, "known_unknown": 6}  # all of them


@pytest.mark.parametrize("variant", VARIANTS)
def test_outputs_by_name_and_input_type(root, variant):
    model = load(tflite(root, variant))
    assert model.labels == L.LABELS and model.input_size == L.SIZE
    assert model.input_dtype == (np.uint8 if variant == "int8" else np.float32)
    out = model.run(np.full((2, L.SIZE, L.SIZE, 3), 128.0, np.float32))
    assert {F.OUTPUT_LOGITS, F.OUTPUT_KNOWN_PROB, F.OUTPUT_IDENTITY_PROBS} <= set(out)
    assert out[F.OUTPUT_LOGITS].shape == (2, len(L.LABELS))
    assert out[F.OUTPUT_KNOWN_PROB].shape == (2,)
    assert out[F.OUTPUT_KNOWN_PROB].dtype == np.float32
    np.testing.assert_allclose(out[F.OUTPUT_IDENTITY_PROBS].sum(-1), 1.0, atol=0.02)
    info = read_sidecar(tflite(root, variant))
    assert info.variant == variant and info.threshold == L.THRESHOLD
    assert info.parity["num_images"] == 12


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_image_same_answer_as_saved_model(root, saved_model, face_files, variant):
    serve = saved_model.signatures[F.SIGNATURE_IMAGE_BYTES]
    model = load(tflite(root, variant))
    paths = [p for p, _, _ in face_files]
    expected = serve(**{F.INPUT_IMAGE_BYTES: tf.constant([p.read_bytes() for p in paths])})
    got = model.predict(paths)
    tol = KNOWN_PROB_TOLERANCE[variant]
    for i, (p, identity, known) in enumerate(face_files):
        assert got[i].source == str(p)
        assert abs(got[i].known_prob - float(expected[F.OUTPUT_KNOWN_PROB][i])) <= tol, identity
        if known:  # strangers have no clear best identity; known faces must agree
            assert got[i].best_label == identity
            assert got[i].best_index == int(expected[F.OUTPUT_IDENTITY][i])
        if variant == "float32":
            assert got[i].is_known == bool(expected[F.OUTPUT_IS_KNOWN][i])
        assert got[i].is_known == (got[i].known_prob >= L.THRESHOLD)
        assert got[i].name == (got[i].best_label if got[i].is_known else "unknown")


def test_threshold_override_and_batching(root, face_files):
    paths = [p for p, _, _ in face_files]
    always = predict(tflite(root, "float32"), paths, EdgeOptions(threshold=0.0, batch_size=3))
    assert len(always) == len(paths) and all(p.is_known for p in always)
    never = load(tflite(root, "float32"), EdgeOptions(threshold=1.0)).predict(paths)
    assert not any(p.is_known for p in never)


def test_parity_numbers_match_an_independent_computation(root):
    """Recompute agreement / AUROC of the int8 variant with a raw interpreter and brute force."""
    from ai_edge_litert.interpreter import Interpreter

    from export import samples

    report = json.loads((root / "edge" / "parity_report.json").read_text())
    row = next(v for v in report["variants"] if v["variant"] == "int8")
    test = samples.load_images(str(root / "data" / "test" / "*"), L.SIZE)
    ref = tf.saved_model.load(str(root / "saved_model")).signatures[F.SIGNATURE_IMAGE]
    expected = ref(**{F.INPUT_IMAGE: tf.constant(test.images)})
    runner = Interpreter(model_path=str(tflite(root, "int8"))).get_signature_runner()
    detail = runner.get_input_details()[F.INPUT_IMAGE]
    scale, zero = detail["quantization"]
    got_p, got_top = [], []
    for image in test.images:
        q = np.clip(np.round(image / scale + zero), 0, 255).astype(np.uint8)[None]
        out = runner(image=q)
        got_p.append(float(out[F.OUTPUT_KNOWN_PROB][0]))
        got_top.append(int(np.argmax(out[F.OUTPUT_LOGITS][0])))
    ref_top = expected[F.OUTPUT_LOGITS].numpy().argmax(-1)
    agreement = sum(int(a == b) for a, b in zip(ref_top, got_top, strict=True)) / len(got_top)
    pos = [p for p, k in zip(got_p, test.is_known, strict=True) if k]
    neg = [p for p, k in zip(got_p, test.is_known, strict=True) if not k]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    diffs = np.abs(np.array(got_p) - expected[F.OUTPUT_KNOWN_PROB].numpy())
    assert row["agreement"] == pytest.approx(agreement)
    assert row["auroc"] == pytest.approx(wins / (len(pos) * len(neg)))
    assert row["known_prob_max_diff"] == pytest.approx(float(diffs.max()), abs=1e-6)
    assert row["size_bytes"] == tflite(root, "int8").stat().st_size


def test_runtime_never_imports_tensorflow(root, face_files):
    """In a fresh interpreter: load, predict, and check sys.modules."""
    code = (
        "import sys\n"
        "from export.runtime import load\n"
        f"model = load({str(tflite(root, 'int8'))!r})\n"
        f"(p,) = model.predict([{str(face_files[0][0])!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'tf_keras', 'keras', 'tfx'))\n"
        "print(p.best_label, heavy)\n"
        "assert not heavy, heavy\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"{L.LABELS[0]} []"


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("facegate-edge")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "export.edge_cli"]
    return subprocess.run([*cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_cli_names_the_person_or_unknown(root, face_files, tmp_path):
    known = next(p for p, _, k in face_files if k)
    stranger = next(p for p, _, k in face_files if not k)
    done = _cli(
        "predict", "--model", str(tflite(root, "int8")), "--json", str(known), str(stranger)
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows[0]["image"] == str(known) and rows[0]["name"] == L.LABELS[0]
    assert rows[1]["name"] == "unknown" and rows[1]["is_known"] is False
    plain = _cli("predict", "--model", str(tflite(root, "float32")), str(known))
    assert plain.returncode == 0 and plain.stdout.split("\t")[1] == L.LABELS[0]

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n nope")
    bad = _cli("predict", "--model", str(tflite(root, "float32")), str(broken), str(known))
    assert bad.returncode == 1
    assert "broken.png" in bad.stderr and L.LABELS[0] in bad.stdout  # the good image still ran


# --- bad model files -------------------------------------------------------------------------


@pytest.fixture
def copy_of(root, tmp_path):
    def make(variant: str = "float16") -> Path:
        src = tflite(root, variant)
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        shutil.copy(sidecar_path(src), sidecar_path(dst))
        return dst

    return make


def test_missing_model_file(tmp_path):
    with pytest.raises(EdgeModelError, match="gone.tflite: no such"):
        load(tmp_path / "gone.tflite")


def test_not_a_tflite_file(copy_of):
    path = copy_of()
    path.write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(EdgeModelError, match=f"{path.name}.*not a TFLite"):
        load(path)


def test_truncated_model_is_refused_by_its_sidecar(copy_of):
    path = copy_of()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SidecarError, match=f"{path.name}.*truncated"):
        load(path)
    # Even without the checksum, the flatbuffer verifier refuses it with a clear error.
    with pytest.raises(EdgeModelError, match=f"{path.name}.*cannot load"):
        load(path, EdgeOptions(verify_checksum=False))


def test_corrupted_model_is_refused(copy_of):
    path = copy_of()
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 100] = bytes(b ^ 0xFF for b in data[mid : mid + 100])
    path.write_bytes(bytes(data))
    with pytest.raises(SidecarError, match="SHA-256"):
        load(path)


def test_missing_sidecar(copy_of):
    path = copy_of()
    sidecar_path(path).unlink()
    with pytest.raises(SidecarError, match=f"{sidecar_path(path).name}: sidecar missing"):
        load(path)


def test_sidecar_of_another_variant(root, copy_of):
    path = copy_of("float16")
    shutil.copy(sidecar_path(tflite(root, "int8")), sidecar_path(path))
    with pytest.raises(SidecarError, match=f"{path.name}.*(bytes|SHA-256)"):
        load(path)


def test_sidecar_that_disagrees_with_the_model(copy_of):
    path = copy_of()
    side = sidecar_path(path)
    data = json.loads(side.read_text())
    data["labels"] = data["labels"] + ["extra"]
    side.write_text(json.dumps(data))
    with pytest.raises(EdgeModelError, match="3 identities, sidecar lists 4"):
        load(path)
    data["labels"] = data["labels"][:3]
    data["input_size"] = 64
    side.write_text(json.dumps(data))
    with pytest.raises(EdgeModelError, match="sidecar says 64x64"):
        load(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable JSON"),
        ('{"format": "other"}', "not a facegate edge sidecar"),
        ('{"format": "facegate-edge/1", "labels": ["a", "b"]}', "missing fields"),
    ],
)
def test_malformed_sidecar(copy_of, content, message):
    path = copy_of()
    sidecar_path(path).write_text(content)
    with pytest.raises(SidecarError, match=message):
        load(path)


def test_cli_reports_bad_model_cleanly(copy_of):
    path = copy_of()
    sidecar_path(path).unlink()
    face = path.with_name("x.png")
    Image.new("RGB", (8, 8)).save(face)
    done = _cli("predict", "--model", str(path), str(face))
    assert done.returncode != 0
    assert "sidecar missing" in done.stderr and "Traceback" not in done.stderr


def test_int8_image_input_is_quantized_by_the_runtime(root, tmp_path, face_files):
    """int8 (not uint8) image input: zero point -128, handled inside the wrapper."""
    from components.exporter import read_model_info
    from export import samples
    from export.builder import _sidecar_info
    from export.convert import convert
    from export.sidecar import write_sidecar

    rep = samples.representative_images(str(root / "data" / "train" / "*"), L.SIZE, 16)
    path = tmp_path / "facegate-int8in.tflite"
    path.write_bytes(convert(root / "saved_model", "int8", rep.images, int8_input_type="int8"))
    info = read_model_info(root / "saved_model")
    write_sidecar(path, _sidecar_info(info, "int8", path, "facegate", "1"))
    signed = load(path)
    assert signed.input_dtype == np.int8
    paths = [p for p, _, _ in face_files]
    a = signed.predict(paths)
    b = load(tflite(root, "int8")).predict(paths)
    for x, y in zip(a, b, strict=True):
        assert abs(x.known_prob - y.known_prob) <= 0.05
        assert x.best_label == y.best_label or x.source.endswith(
            ("ku1.png", "ku2.png", "uu1.png", "uu2.png")
        )


def test_int8_keeps_the_bgr_swap_scale(root):
    """Regression: TF 2.16's MLIR quantizer gave REVERSE_V2 (RGB -> BGR, the first op of the
    VGG16 normalisation) an output scale different from its input's, and the int8 kernel does
    not rescale: the demo model's int8 agreement fell to 0.11. The reverse must keep its scale."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite(root, "int8")))
    details = interpreter.get_tensor_details()
    image = interpreter.get_input_details()[0]
    reverse = [d for d in details if "ReverseV2" in d["name"]]
    assert reverse, [d["name"] for d in details][:10]
    scale = image["quantization"][0]  # the uint8 input is requantized to int8: only zp moves
    for d in reverse:
        assert d["quantization"][0] == pytest.approx(scale), d["name"]
