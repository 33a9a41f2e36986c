"""`facegate serve` as its own process and `facegate query` against it, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from components import features as F
from pipeline.cli import cli
from serving.client import PredictionClient
from serving.testing import face_image, free_port, link_version, tiny_models

REPO = Path(__file__).resolve().parents[1]
MODEL = "facegate"


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def base_path(models, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serving") / MODEL
    base.mkdir()
    link_version(models.v1, base, 1)
    return base


@pytest.fixture(scope="module")
def served(base_path):
    """`python -m pipeline.cli serve ...` in a subprocess on free ports."""
    grpc_port, rest_port = free_port(), free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--model-base-path", str(base_path),
               "--grpc-port", str(grpc_port), "--rest-port", str(rest_port)]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        with PredictionClient(f"127.0.0.1:{grpc_port}") as client:
            client.wait_until_available(MODEL, timeout=180)
        yield proc, grpc_port, rest_port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("faces")
    paths = [folder / "ada.png", folder / "linus.jpg"]
    paths[0].write_bytes(face_image(21, (45, 40), "png"))
    paths[1].write_bytes(face_image(22, (40, 52), "jpeg"))
    return paths


def test_query_prints_identity_p_known_and_decision(served, image_files, models):
    _, grpc_port, _ = served
    fn = tf.saved_model.load(str(models.v1)).signatures[F.SIGNATURE_IMAGE_BYTES]
    want = fn(image_bytes=tf.constant([p.read_bytes() for p in image_files]))
    args = ["query", "--server", f"127.0.0.1:{grpc_port}", *map(str, image_files)]

    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    for column in ("identity", "P(known)", "decision", "ada.png", "linus.jpg"):
        assert column in table.output

    as_json = CliRunner().invoke(cli, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    records = [json.loads(line) for line in as_json.output.splitlines()]
    assert [r["image"] for r in records] == [str(p) for p in image_files]
    for i, record in enumerate(records):
        identity = int(want[F.OUTPUT_IDENTITY][i])
        assert record["identity"] == identity
        assert record["label"] == models.labels[identity]
        assert record["known_prob"] == pytest.approx(float(want[F.OUTPUT_KNOWN_PROB][i]), 1e-5)
        assert record["is_known"] == bool(want[F.OUTPUT_IS_KNOWN][i])
        assert record["decision"] == (
            "known: " + record["label"] if record["is_known"] else "unknown"
        )
        assert record["model_version"] == 1


def test_query_reports_server_errors(served, image_files):
    _, grpc_port, _ = served
    args = ["query", "--server", f"127.0.0.1:{grpc_port}", "--model-name", "nobody"]
    result = CliRunner().invoke(cli, [*args, str(image_files[0])])
    assert result.exit_code == 1
    assert "NOT_FOUND" in result.output and "'nobody'" in result.output
    not_an_image = image_files[0].parent / "notes.txt"
    not_an_image.write_text("hello")
    args = ["query", "--server", f"127.0.0.1:{grpc_port}", str(not_an_image)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "notes.txt: not a readable image" in result.output


def test_query_converts_other_formats_as_ingest_does(served, tmp_path, models):
    """ORL faces are PGM files: the client converts them to PNG, the model never sees PGM."""
    from PIL import Image

    from pipeline.ingest import read_image

    _, grpc_port, _ = served
    pgm = tmp_path / "face.pgm"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (56, 46), np.uint8)).save(pgm)
    png_bytes, fmt, converted = read_image(pgm)
    assert (fmt, converted) == ("png", True)
    fn = tf.saved_model.load(str(models.v1)).signatures[F.SIGNATURE_IMAGE_BYTES]
    want = float(fn(image_bytes=tf.constant([png_bytes]))[F.OUTPUT_KNOWN_PROB][0])
    args = ["query", "--server", f"127.0.0.1:{grpc_port}", "--json", str(pgm)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["known_prob"] == pytest.approx(want, rel=1e-5)


def test_rest_answers_the_readme_curl_request(served, image_files):
    _, _, rest_port = served
    import base64

    body = {
        "signature_name": F.SIGNATURE_IMAGE_BYTES,
        "instances": [{"b64": base64.b64encode(image_files[0].read_bytes()).decode()}],
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{rest_port}/v1/models/{MODEL}:predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    (prediction,) = answer["predictions"]
    assert 0.0 <= prediction[F.OUTPUT_KNOWN_PROB] <= 1.0
    assert np.asarray(prediction[F.OUTPUT_IDENTITY_PROBS]).sum() == pytest.approx(1.0, abs=1e-5)


def test_serve_stops_cleanly_on_sigterm(served):
    proc, _, _ = served
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "serving facegate (versions: 1)" in output
    assert "facegate version 1 unloaded" in output


def test_serve_explains_a_wrong_base_path(base_path, tmp_path):
    missing = CliRunner().invoke(cli, ["serve", "--model-base-path", str(tmp_path / "nothing")])
    assert missing.exit_code == 1
    assert "does not exist" in missing.output
    one_level_up = CliRunner().invoke(cli, ["serve", "--model-base-path", str(base_path.parent)])
    assert one_level_up.exit_code == 1
    assert f"use --model-base-path {base_path}" in one_level_up.output
