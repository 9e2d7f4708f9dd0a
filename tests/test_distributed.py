"""Many smears on many processes (Dask): the same outputs as one process, a killed worker's chunks
rerun and delivered once, and an interrupted run resumed to the same outputs."""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from wbc.distributed import map_chunks
from wbc.synth_slide import smear_field

OUTPUTS = ("cells.csv", "cells.json", "differential.json", "skipped.csv")


@pytest.fixture(scope="module")
def smears(tmp_path_factory):
    """40 generated fields (two chunks of up to 32) and one file that is not an image."""
    root = tmp_path_factory.mktemp("smears")
    rng = np.random.default_rng(0)
    for i in range(40):
        cv2.imwrite(str(root / f"f{i:02d}.jpg"), smear_field(rng, 240, 30, tuple(int(v) for v in rng.integers(60, 180, 2))))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def single(smears, tmp_path_factory):
    """The one-process run, on one thread as each of two workers on two cores: torch's CPU kernels sum in
    another order on another thread count (confidences then differ in the fourth decimal)."""
    from wbc.predict import predict

    out = tmp_path_factory.mktemp("single") / "run"
    with worker_threads():
        predict(smears, out, report=False, log=lambda s: None)
    return out


@contextmanager
def worker_threads():
    """torch on as many threads as each of two local workers gets."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_text() == (b / name).read_text(), name
    assert sorted(p.name for p in (a / "annotated").iterdir()) == sorted(p.name for p in (b / "annotated").iterdir())


def test_two_workers_give_the_same_outputs_as_one_process(smears, single, tmp_path):
    from wbc.predict import predict

    summary = predict(smears, tmp_path / "run", report=False, log=lambda s: None, workers=2)
    assert (summary["workers"], summary["chunks"], summary["complete"]) == (2, 2, True)
    same_outputs(single, tmp_path / "run")


def _dies_once(index: int, marker_dir: str) -> int:
    """The first try of every chunk kills its worker process outright, as an OOM kill or a lost machine does."""
    marker = Path(marker_dir) / f"{index}.tried"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return index * 10


def test_a_killed_workers_chunks_are_rerun_and_delivered_once(tmp_path):
    delivered = []
    map_chunks(_dies_once, [(i, (i, str(tmp_path))) for i in range(4)], lambda i, r: delivered.append((i, r)), workers=2)
    assert sorted(delivered) == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert all((tmp_path / f"{i}.tried").is_file() for i in range(4))


def test_an_interrupted_run_resumes_to_the_same_outputs(smears, single, tmp_path, monkeypatch):
    from wbc.analysis import Analysis
    from wbc.errors import Interrupted
    from wbc.predict import predict

    real, calls = Analysis.chunk, []

    def cut_in_the_second_chunk(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Analysis, "chunk", cut_in_the_second_chunk)
    with pytest.raises(Interrupted, match="after 32 of 41 files"), worker_threads():
        predict(smears, tmp_path / "run", report=False, log=lambda s: None)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"] is False
    monkeypatch.setattr(Analysis, "chunk", real)
    lines = []
    with worker_threads():
        summary = predict(smears, tmp_path / "run", report=False, log=lines.append, resume=True)
    assert summary["complete"] and f"resuming {tmp_path / 'run'}: 1 of 2 chunks done before" in lines
    same_outputs(single, tmp_path / "run")


def test_resume_refuses_other_options(smears, single):
    from wbc.errors import UsageError
    from wbc.predict import predict

    with pytest.raises(UsageError, match="was started with other options or files; start a new --name instead"):
        predict(smears, single, conf=0.5, report=False, log=lambda s: None, resume=True)


def test_resume_of_a_folder_without_a_run(smears, tmp_path):
    from wbc.errors import UsageError
    from wbc.predict import predict

    with pytest.raises(UsageError, match="holds no interrupted predict run"):
        predict(smears, tmp_path, resume=True, log=lambda s: None)


def test_no_scheduler_at_the_address(smears, tmp_path):
    from wbc.errors import UsageError

    with pytest.raises(UsageError, match="--scheduler tcp://127.0.0.1:9: no Dask scheduler answers there"):
        map_chunks(_dies_once, [(0, (0, str(tmp_path)))], lambda i, r: None, scheduler="tcp://127.0.0.1:9")
