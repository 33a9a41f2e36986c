"""Version swaps under load: no failed request, the new version served afterwards, and
half-copied or broken versions never served."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from components import features as F
from serving.client import PredictionClient, RestClient
from serving.server import ModelServer, ServerOptions
from serving.testing import face_image, free_port, link_version, push_version, tiny_models

MODEL = "facegate"
IMAGES = [face_image(11, (36, 36), "png"), face_image(12, (48, 40), "jpeg")]


@pytest.fixture(scope="module")
def models():
    return tiny_models()


@pytest.fixture(scope="module")
def known_probs(models) -> dict[int, np.ndarray]:
    """P(known) of IMAGES under each version, computed in-process: tells versions apart."""
    out = {}
    for version, path in ((1, models.v1), (2, models.v2)):
        fn = tf.saved_model.load(str(path)).signatures[F.SIGNATURE_IMAGE_BYTES]
        out[version] = fn(image_bytes=tf.constant(IMAGES))[F.OUTPUT_KNOWN_PROB].numpy()
    assert not np.allclose(out[1], out[2], atol=1e-4)
    return out


def wait_until(predicate, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def version_states(server: ModelServer) -> dict[int, str]:
    return {s.version: s.state.name for s in server.registry.statuses()}


def which_version(prob: float, image: int, known_probs) -> int | None:
    """The version whose in-process answer this is (None: matches neither)."""
    matches = [v for v, probs in known_probs.items() if abs(probs[image] - prob) < 1e-5]
    return matches[0] if len(matches) == 1 else None


def test_hot_swap_under_load_fails_no_request(tmp_path: Path, models, known_probs):
    base = tmp_path / MODEL
    base.mkdir()
    link_version(models.v1, base, 1)
    options = ServerOptions(
        base, model_name=MODEL, grpc_port=free_port(), rest_port=free_port(), poll_seconds=0.2
    )
    stop = threading.Event()
    answers: dict[str, list[int]] = {"grpc-0": [], "grpc-1": [], "rest": []}
    failures: list[str] = []

    def grpc_loop(name: str, image: int, target: str) -> None:
        with PredictionClient(target, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.predict_images([IMAGES[image]])[0]
                except grpc.RpcError as err:
                    failures.append(f"{name}: {err.code().name}: {err.details()}")
                    continue
                if which_version(r.known_prob, image, known_probs) != r.version:
                    failures.append(f"{name}: P(known) {r.known_prob} is not version {r.version}'s")
                answers[name].append(r.version)

    def rest_loop(url: str) -> None:
        with RestClient(url, timeout=30) as rest:
            while not stop.is_set():
                try:
                    status, body = rest.predict_images(MODEL, [IMAGES[1]])
                except OSError as err:
                    failures.append(f"rest: {err!r}")
                    continue
                if status != 200:
                    failures.append(f"rest: {status} {body}")
                    continue
                prob = body["predictions"][0][F.OUTPUT_KNOWN_PROB]
                version = which_version(prob, 1, known_probs)
                if version is None:
                    failures.append(f"rest: P(known) {prob} matches no version")
                    continue
                answers["rest"].append(version)

    with ModelServer(options) as server:
        workers = [
            threading.Thread(target=grpc_loop, args=("grpc-0", 0, server.grpc_address)),
            threading.Thread(target=grpc_loop, args=("grpc-1", 1, server.grpc_address)),
            threading.Thread(target=rest_loop, args=(server.rest_url,)),
        ]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: all(len(a) >= 3 for a in answers.values()), what="version 1 load")
            push_version(models.v2, base, 2, atomic=False)  # copied in place, file by file
            wait_until(
                lambda: version_states(server) == {2: "AVAILABLE", 1: "END"}, what="the swap"
            )
            seen = {name: len(a) for name, a in answers.items()}
            wait_until(
                lambda: all(len(answers[n]) >= seen[n] + 3 for n in answers),
                what="answers after the swap",
            )
        finally:
            stop.set()
            for worker in workers:
                worker.join(60)

    assert failures == []
    for name, versions in answers.items():
        assert versions[0] == 1 and versions[-1] == 2, name
        assert versions == sorted(versions), f"{name} went back to an old version"


def test_partial_and_broken_versions_are_never_served(tmp_path: Path, models, known_probs):
    base = tmp_path / MODEL
    base.mkdir()
    link_version(models.v1, base, 1)
    options = ServerOptions(
        base, model_name=MODEL, grpc_port=free_port(), rest_port=0, poll_seconds=0.2
    )
    with ModelServer(options) as server, PredictionClient(server.grpc_address) as client:
        partial = base / "3"  # a copy in progress: variables arrived, saved_model.pb not yet
        shutil.copytree(models.v2 / "variables", partial / "variables")
        garbage = base / "4"
        garbage.mkdir()
        (garbage / "saved_model.pb").write_bytes(b"not a protobuf")
        truncated = push_version(models.v2, base, 5)  # complete graph, cut-off weights
        data = next((truncated / "variables").glob("variables.data-*"))
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])

        wait_until(
            lambda: {4, 5} <= {s.version for s in client.status(MODEL) if s.state == "END"},
            what="the broken versions to be tried",
        )
        status = {s.version: s for s in client.status(MODEL)}
        assert set(status) == {1, 4, 5}  # 3 has no saved_model.pb: not even attempted
        assert status[1].state == "AVAILABLE"
        assert "saved_model.pb is not a SavedModel proto" in status[4].error_message
        assert status[5].error_message
        r = client.predict_images(IMAGES[:1])[0]
        assert r.version == 1
        assert r.known_prob == pytest.approx(float(known_probs[1][0]), abs=1e-5)

        shutil.copytree(models.v2, partial, dirs_exist_ok=True)  # the copy completes
        wait_until(lambda: version_states(server).get(1) == "END", what="version 3 to take over")
        r = client.predict_images(IMAGES[:1])[0]
        assert r.version == 3
        assert r.known_prob == pytest.approx(float(known_probs[2][0]), abs=1e-5)
        assert version_states(server) == {5: "END", 4: "END", 3: "AVAILABLE", 1: "END"}
