"""Nothing is downloaded: a missing weights file fails at once, naming local alternatives."""

import time

import pytest

from wbc.offline import DownloadBlocked, guard_downloads


def test_ultralytics_download_fails_fast_with_a_message():
    guard_downloads()
    from ultralytics import YOLO

    start = time.perf_counter()
    with pytest.raises(DownloadBlocked, match="nothing is downloaded here"):
        YOLO("yolov8n.pt")
    assert time.perf_counter() - start < 5


def test_guard_is_idempotent_and_leaves_local_files_alone(tmp_path):
    guard_downloads()
    guard_downloads()
    from ultralytics.utils import downloads

    local = tmp_path / "w.pt"
    local.write_bytes(b"x")
    assert downloads.attempt_download_asset(str(local)) == str(local)
    with pytest.raises(DownloadBlocked):
        downloads.safe_download("https://example.com/a.zip")
