"""Test setup: no network, caches in temporary folders, real data used only where present."""

import os
import tempfile
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="wbc-tests-"))
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "False"
os.environ.setdefault("YOLO_CONFIG_DIR", str(_TMP / "ultralytics"))
os.environ["WBC_CACHE"] = str(_TMP / "cache")

import pytest

from wbc.paths import data_root, weights_root
from wbc.synth import generate

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """synthetic(fmt) -> dataset yaml of a small generated raw dataset in that format (made once per format)."""
    made = {}

    def make(fmt: str) -> Path:
        if fmt not in made:
            made[fmt] = generate(tmp_path_factory.mktemp(f"synthetic-{fmt}"), fmt)
        return made[fmt]

    return make


def shared_dataset(name: str) -> Path:
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


def shared_weights(name: str) -> Path:
    path = weights_root() / name
    if not path.is_file():
        pytest.skip(f"weights {path} not present")
    return path
