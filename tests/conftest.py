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


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A detector trained briefly on generated fields, and a head trained on its frozen features."""
    from wbc.attributes.train import train_head
    from wbc.synth import generate
    from wbc.training import train

    root = tmp_path_factory.mktemp("attr")
    data = str(generate(root / "raw", "coco", n_train=60, n_val=30, imgsz=96, unknown_rate=0.1))
    det = train(data, "yolov5n", [1], [2], ["no-augmentation"], "det", imgsz=96, batch=8, device="cpu", workers=0,
                project=root, extra={"plots": False, "warmup_epochs": 0})
    # generated cells are 15-20 px across at 96 px input: pool the stride-4/8 maps (the default 4 + 6 suits ~100 px cells)
    config = root / "head.yaml"
    config.write_text("layers: [2, 4]\nmembers: 2\n")
    result = train_head(str(det[0].best), data, epochs=12, batch=8, imgsz=96, name="head", config=str(config), project=root,
                        workers=0, lr=3e-3, jitter=0.03, flip=True)
    return data, det[0].best, result
