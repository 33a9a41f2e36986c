"""`facegate demo` without FACES: the Olivetti faces when a network is reachable, a clear stop
naming FACES when it is not. The fetcher is replaced so the test never touches the network."""

from __future__ import annotations

import urllib.error
from types import SimpleNamespace

import numpy as np
import pytest
import sklearn.datasets
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import cli
from pipeline.olivetti import OlivettiUnavailable, fetch_olivetti_folder


def _offline(**kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_offline_demo_stops_naming_faces(monkeypatch, tmp_path):
    monkeypatch.setattr(sklearn.datasets, "fetch_olivetti_faces", _offline)
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 1
    assert "FACES" in result.output and "could not be downloaded" in result.output
    assert not (tmp_path / "demo" / "data").exists()


def test_offline_fetch_raises_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(sklearn.datasets, "fetch_olivetti_faces", _offline)
    with pytest.raises(OlivettiUnavailable, match="Name or service not known"):
        fetch_olivetti_folder(tmp_path / "olivetti")


def test_fetched_faces_become_a_folder_per_person(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (400, 64, 64)).astype("float32")
    target = np.repeat(np.arange(40), 10)
    fake = SimpleNamespace(images=images, target=target)
    monkeypatch.setattr(sklearn.datasets, "fetch_olivetti_faces", lambda **kw: fake)
    out = fetch_olivetti_folder(tmp_path / "olivetti")
    people = sorted(p.name for p in out.iterdir())
    assert len(people) == 40 and people[0] == "person_00"
    assert sorted(f.name for f in (out / "person_07").iterdir()) == sorted(
        f"{i}.png" for i in range(1, 11)
    )
    first = np.asarray(Image.open(out / "person_00" / "1.png"))
    np.testing.assert_array_equal(first, (images[0] * 255).astype("uint8"))
