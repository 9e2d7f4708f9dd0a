"""Bad arguments, weights files and outputs at every entry point: each ends in one line naming the
option or file (exit status 2), a counted skip, or a run marked incomplete -- never a traceback.
The dataset side (malformed annotation files) is in test_bad_inputs.py."""

import argparse
import csv
import json
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import ultralytics  # noqa: F401 -- imported here, its logger writes to the session's stream, not to the first test's capsys

from wbc.cli import run
from wbc.paths import DEFAULT_WEIGHTS, weights_root


def cli(main, argv, capsys):
    """(exit status, the last line of stderr) of an entry point run as the command line runs it;
    argparse's '<prog>: error: ' reads 'error: ' as ours does (prog is pytest's name here)."""
    with pytest.raises(SystemExit) as e:
        run(lambda: main([str(a) for a in argv]))
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return e.value.code, re.sub(r"^\S+: error: ", "error: ", err[-1]) if err else ""


@pytest.fixture(autouse=True)
def runs(tmp_path, monkeypatch):
    """Runs go to a temporary folder."""
    monkeypatch.setenv("WBC_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A small smear-like field: pale background, red-cell discs of PBC's size, one dark nucleus."""
    root = tmp_path_factory.mktemp("field")
    image = np.full((240, 240, 3), (215, 205, 225), np.uint8)
    for x, y in [(40, 40), (110, 50), (180, 45), (50, 120), (190, 130), (60, 200), (130, 190), (200, 200)]:
        cv2.circle(image, (x, y), 22, (150, 120, 200), -1)
    cv2.circle(image, (120, 120), 30, (150, 60, 110), -1)
    path = root / "good.jpg"
    cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def files(tmp_path):
    """Bad weights and model files."""
    (tmp_path / "text.pt").write_text("hello\n")
    (tmp_path / "truncated.pt").write_bytes(DEFAULT_WEIGHTS.read_bytes()[:100_000])
    (tmp_path / "not_utf8.txt").write_bytes(b"good.jpg\n\xff\xfe\n")
    return tmp_path


def predict_main(argv):
    from wbc.predict import main

    return main(argv)


# ---- predict.py: argument ranges, rejected before any model is loaded -------------------------

RANGE_CASES = [
    (["--conf", "2.0"], "argument --conf: 2.0 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--conf", "-1"], "argument --conf: -1 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--conf", "abc"], "argument --conf: 'abc' is not a number ≥ 0 and ≤ 1"),
    (["--conf", "nan"], "argument --conf: 'nan' is not a number ≥ 0 and ≤ 1"),
    (["--iou", "1.5"], "argument --iou: 1.5 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--review-conf", "3"], "argument --review-conf: 3 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--review-rate", "1"], "argument --review-rate: 1 is out of range: must be a number ≥ 0 and < 1; the share of known cells to flag"),
    (["--review-rate", "-0.1"], "argument --review-rate: -0.1 is out of range"),
    (["--imgsz", "-32"], "argument --imgsz: -32 is out of range: must be an integer ≥ 64 and ≤ 8192; below 64 px the network's "
                         "coarsest map is under 2 x 2 cells"),
    (["--imgsz", "0"], "argument --imgsz: 0 is out of range: must be an integer ≥ 64 and ≤ 8192"),
    (["--imgsz", "9000"], "argument --imgsz: 9000 is out of range: must be an integer ≥ 64 and ≤ 8192"),
    (["--imgsz", "3.5"], "argument --imgsz: '3.5' is not an integer ≥ 64 and ≤ 8192"),
    (["--batch", "0"], "argument --batch: 0 is out of range: must be an integer ≥ 1"),
    (["--batch", "-4"], "argument --batch: -4 is out of range: must be an integer ≥ 1"),
    (["--tile", "8"], "argument --tile: 8 is out of range: must be an integer ≥ 128; a tile must hold whole WBCs"),
    (["--tile", "0"], "argument --tile: 0 is out of range: must be an integer ≥ 128"),
    (["--overlap", "-1"], "argument --overlap: -1 is out of range: must be an integer ≥ 0"),
    (["--pixel-size", "0"], "argument --pixel-size: 0 is out of range: must be a number ≥ 0.01 and ≤ 20"),
    (["--pixel-size", "-1"], "argument --pixel-size: -1 is out of range"),
    (["--pixel-size", "50"], "argument --pixel-size: 50 is out of range: must be a number ≥ 0.01 and ≤ 20; µm per pixel"),
]


@pytest.mark.parametrize("argv, message", RANGE_CASES, ids=[" ".join(a) for a, _ in RANGE_CASES])
def test_predict_argument_ranges(field, capsys, argv, message):
    code, line = cli(predict_main, ["--source", field, *argv], capsys)
    assert code == 2 and line.startswith("error: argument ") and message in line, line


# ---- predict.py: checks that need the model or the source -------------------------------------

def test_overlap_larger_than_half_the_default_tile(field, capsys):
    code, line = cli(predict_main, ["--source", field, "--overlap", 600, "--name", "x"], capsys)
    assert (code, line) == (2, "error: --overlap 600: must be ≥ 0 and ≤ half of --tile 1089 (544); a cell needs an overlap only "
                               "a little larger than itself")


def test_overlap_equal_to_the_tile(field, capsys):
    code, line = cli(predict_main, ["--source", field, "--tile", 300, "--overlap", 300], capsys)
    assert code == 2 and line.startswith("error: --overlap 300: must be ≥ 0 and ≤ half of --tile 300 (150)")


def test_input_size_under_half_the_training_size(field, capsys):
    code, line = cli(predict_main, ["--source", field, "--imgsz", 100], capsys)
    assert (code, line) == (2, "error: --imgsz 100: under half the size the model was trained at (352 px): cells would reach the "
                               "network at under half the size it learnt, and it finds almost none; use ≥ 192")


def test_input_size_is_rounded_to_the_stride_and_said(field, tmp_path, capsys):
    from wbc.predict import predict

    lines = []
    summary = predict(field, tmp_path / "out", imgsz=330, annotated=False, report=False, log=lines.append)
    assert summary["imgsz"] == 352
    assert lines[0] == "input size 352 px (the model was trained at 352 px, 330 rounded up to a multiple of the stride 32)"


@pytest.mark.parametrize("option, value, message", [
    ("conf", 2.0, "conf: 2.0 is out of range"),
    ("batch", 0, "batch: 0 is out of range: must be an integer ≥ 1"),
    ("tile", 8, "tile: 8 is out of range"),
    ("imgsz", 3.5, "imgsz: 3.5 is not an integer"),
])
def test_python_api_checks_the_same_ranges(field, tmp_path, option, value, message):
    from wbc.errors import UsageError
    from wbc.predict import predict

    with pytest.raises(UsageError, match="^--" + message.replace("(", r"\(")):
        predict(field, tmp_path / "out", **{option: value})
    assert not (tmp_path / "out").exists()


def test_unknown_python_option(field, tmp_path):
    from wbc.predict import predict

    with pytest.raises(TypeError, match="unknown predict option"):
        predict(field, tmp_path / "out", confidence=0.3)


WEIGHTS_CASES = [
    ("missing.pt", "error: weights '{d}/missing.pt' not found, and nothing is downloaded here"),
    ("text.pt", "error: --weights {d}/text.pt: not a torch checkpoint (6 bytes that are not a .pt archive: truncated, or another "
                "kind of file)"),
    ("truncated.pt", "error: --weights {d}/truncated.pt: not a torch checkpoint (100000 bytes that are not a .pt archive"),
    ("models/yolov5n.yaml", "error: --weights models/yolov5n.yaml: a model config, not a trained detector; pass a checkpoint such as"),
]


@pytest.mark.parametrize("weights, message", WEIGHTS_CASES, ids=[w for w, _ in WEIGHTS_CASES])
def test_predict_weights_that_cannot_be_used(field, files, capsys, weights, message):
    path = weights if weights.startswith("models/") else files / weights
    code, line = cli(predict_main, ["--source", field, "--weights", path], capsys)
    assert code == 2 and line.startswith(message.format(d=files)), line


def test_predict_refuses_an_original_yolov5_checkpoint_by_name(field, capsys):
    original = weights_root() / "yolov5n.pt"
    if not original.is_file():
        pytest.skip(f"{original} not present")
    code, line = cli(predict_main, ["--source", field, "--weights", original], capsys)
    assert (code, line) == (2, f"error: --weights {original}: an original YOLOv5-repository checkpoint (COCO classes, not WBC types); "
                               f"train.py --weights starts from it, predict and test need a trained detector such as {DEFAULT_WEIGHTS}")


@pytest.mark.parametrize("flag, what", [("--head", "attribute head"), ("--review", "review model")])
def test_model_files_beside_the_detector(field, files, capsys, flag, what):
    code, line = cli(predict_main, ["--source", field, flag, files / "missing.pt"], capsys)
    assert (code, line) == (2, f"error: {flag} {files / 'missing.pt'}: no such file")
    code, line = cli(predict_main, ["--source", field, flag, files / "truncated.pt", "--name", "t"], capsys)
    assert code == 2 and line.startswith(f"error: {files / 'truncated.pt'}: not a readable {what} file ("), line


def test_cell_classifier_yaml_missing(field, files, capsys):
    code, line = cli(predict_main, ["--source", field, "--cell-classifier", files / "none.yaml"], capsys)
    assert (code, line) == (2, f"error: --cell-classifier {files / 'none.yaml'}: no such file")


@pytest.mark.parametrize("name", ["../../somewhere", "/tmp/elsewhere", "a/../../b", " "])
def test_run_names_may_not_leave_the_runs_folder(field, capsys, name):
    code, line = cli(predict_main, ["--source", field, "--name", name], capsys)
    assert code == 2 and line.startswith(f"error: --name {name!r}: must be a plain run name; runs are written under "), line


@pytest.mark.parametrize("source, message", [
    ("nowhere/*.jpg", "error: nowhere/*.jpg: no files found"),
    ("nowhere", "error: nowhere: no such image, folder, glob or list file"),
])
def test_sources_that_name_nothing(capsys, source, message):
    assert cli(predict_main, ["--source", source], capsys) == (2, message)


def test_empty_source_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli(predict_main, ["--source", tmp_path / "empty"], capsys) == (2, f"error: {tmp_path / 'empty'}: no files found")


def test_list_file_not_utf8(files, capsys):
    code, line = cli(predict_main, ["--source", files / "not_utf8.txt"], capsys)
    assert (code, line) == (2, f"error: {files / 'not_utf8.txt'}: not UTF-8 text (byte 0xff at offset 9); a list file holds one "
                               "image path per line")


def test_text_named_jpg_is_not_an_image(tmp_path, capsys):
    (tmp_path / "text.jpg").write_text("hello")
    code, line = cli(predict_main, ["--source", tmp_path / "text.jpg"], capsys)
    assert (code, line) == (2, f"error: none of the 1 files under {tmp_path / 'text.jpg'} could be read: {tmp_path / 'text.jpg'}: "
                               "not an image (no image decoder recognises it)")


def test_image_over_the_decoder_limit_says_how_to_allow_it(tmp_path, monkeypatch):
    from PIL import Image

    from wbc.sources import load_image

    cv2.imwrite(str(tmp_path / "big.png"), np.zeros((300, 300, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 90,000 pixels is then over twice the limit, as 192 Mpx is by default
    loaded = load_image(tmp_path / "big.png")
    assert loaded.image is None and loaded.note.startswith("too large to decode safely (Image size (90000 pixels) exceeds limit")
    assert loaded.note.endswith("set WBC_MAX_IMAGE_PIXELS to a larger pixel count to allow it (predict.py tiles large fields), "
                                "or cut it into fields")


def test_source_folder_entries_that_are_not_files_are_skipped_with_reasons(field, tmp_path):
    from wbc.predict import predict

    source = tmp_path / "in"
    source.mkdir()
    (source / "good.jpg").write_bytes(field.read_bytes())
    (source / "sub").mkdir()
    (source / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (source / "loop1").symlink_to(source / "loop2")
    (source / "loop2").symlink_to(source / "loop1")
    summary = predict(source, tmp_path / "out", annotated=False, report=False, log=lambda s: None)
    skipped = dict(list(csv.reader((tmp_path / "out" / "skipped.csv").open()))[1:])
    assert (summary["images"], summary["skipped"]) == (1, 4)
    assert {Path(k).name: v for k, v in skipped.items()} == {
        "dangling.jpg": "broken symbolic link", "loop1": "symbolic link loop", "loop2": "symbolic link loop",
        "sub": "a folder (folders are not searched: pass a glob such as 'folder/**/*.png')"}


def test_same_stem_images_get_their_own_annotated_files(field, tmp_path):
    from wbc.predict import predict

    source = tmp_path / "in"
    source.mkdir()
    (source / "good.jpg").write_bytes(field.read_bytes())
    cv2.imwrite(str(source / "good.png"), cv2.imread(str(field)))
    cv2.imwrite(str(source / "other.png"), cv2.imread(str(field)))
    predict(source, tmp_path / "out", report=False, log=lambda s: None)
    assert sorted(p.name for p in (tmp_path / "out" / "annotated").iterdir()) == ["good_jpg.jpg", "good_png.jpg", "other.jpg"]


def test_list_file_paths_are_relative_to_the_list(field, tmp_path, monkeypatch):
    from wbc.sources import image_sources

    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "fields.txt").write_text(f"../good.jpg\n{field}\n")
    monkeypatch.chdir(Path("/"))
    assert image_sources(tmp_path / "lists" / "fields.txt") == [tmp_path / "lists" / "../good.jpg", field]


def test_ctrl_c_keeps_the_fields_done_and_marks_the_run_incomplete(field, tmp_path, monkeypatch, capsys, runs):
    from wbc import predict as predict_module
    from wbc.inference import WBCAnalyzer

    source = tmp_path / "in"
    source.mkdir()
    for i in range(3):
        (source / f"f{i}.jpg").write_bytes(field.read_bytes())
    calls = []
    real = WBCAnalyzer.__call__

    def interrupt_on_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WBCAnalyzer, "__call__", interrupt_on_second_batch)
    monkeypatch.setattr("wbc.analysis.SCALE_GROUP", 1)  # a chunk per field: the first is done when the second is cut
    code, line = cli(predict_module.main, ["--source", source, "--batch", 1, "--name", "cut", "--no-report"], capsys)
    out = runs / "predict" / "cut"
    assert (code, line) == (130, f"interrupted: stopped by Ctrl-C after 1 of 3 files; what was done is written to {out}, marked "
                                 "incomplete (summary.json: \"complete\": false); --resume continues it")
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["complete"], summary["images"], summary["files"]) == (False, 1, 3)
    assert [c["image"] for c in json.loads((out / "cells.json").read_text())] == ["f0.jpg"]


def test_ctrl_c_elsewhere_is_one_line(capsys):
    def main():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run(main)
    assert (e.value.code, capsys.readouterr().err.strip()) == (130, "interrupted (Ctrl-C)")


def test_unwritable_output_is_one_line(capsys):
    def main():
        raise PermissionError(13, "Permission denied", "/work/runs/predict/x")

    with pytest.raises(SystemExit) as e:
        run(main)
    assert (e.value.code, capsys.readouterr().err.strip()) == (
        2, "error: cannot write /work/runs/predict/x: permission denied (make it writable, or set WBC_RUNS to a writable folder "
           "for the runs)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_runs_folder(field, runs, capsys):
    runs.mkdir(mode=0o555)
    code, line = cli(predict_main, ["--source", field], capsys)
    assert code == 2 and line.startswith("error: cannot write ") and "permission denied" in line


# ---- train.py ----------------------------------------------------------------------------------

def train_main(argv):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_script", Path(__file__).parent.parent / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


TRAIN_CASES = [
    (["--epochs", "0"], "error: argument --epochs: 0 is out of range: must be an integer ≥ 1"),
    (["--epochs", "-1"], "error: argument --epochs: -1 is out of range: must be an integer ≥ 1"),
    (["--epochs", "1", "2", "3"], "error: --epochs: give one value, or one per phase (phase 1, phase 2)"),
    (["--batch", "0"], "error: argument --batch: 0 is out of range: must be an integer ≥ 1"),
    (["--imgsz", "10"], "error: argument --imgsz: 10 is out of range: must be an integer ≥ 64 and ≤ 8192"),
    (["--time", "0"], "error: argument --time: 0 is out of range: must be a number > 0"),
    (["--patience", "0"], "error: argument --patience: 0 is out of range: must be an integer ≥ 1"),
    (["--workers", "-1"], "error: argument --workers: -1 is out of range: must be an integer ≥ 0"),
    (["--attribute-epochs", "-2"], "error: argument --attribute-epochs: -2 is out of range: must be an integer ≥ 0"),
    (["--attribute-init", "head.pt"], "error: --attribute-init: only with --attributes joint, and instead of --attribute-config"),
    (["--weights", "{d}/text.pt"], "error: --weights {d}/text.pt: not a torch checkpoint (6 bytes that are not a .pt archive"),
    (["--weights", "{d}/truncated.pt"], "error: --weights {d}/truncated.pt: not a torch checkpoint (100000 bytes"),
    (["--weights", "nothing.pt"], "error: weights 'nothing.pt' not found, and nothing is downloaded here"),
    (["--weights", "yolov5n", "--name", "../../elsewhere"], "error: --name '../../elsewhere': must be a plain run name"),
    ([], "error: pass --weights (a checkpoint or an original YOLOv5 .pt) or --cfg (e.g. yolov5n) to start phase 1"),
]


@pytest.mark.parametrize("argv, message", TRAIN_CASES, ids=[" ".join(a) or "no weights" for a, _ in TRAIN_CASES])
def test_train_arguments(files, capsys, argv, message):
    argv = ["--data", "data/bccd.yaml", "--phase", "1", *[a.format(d=files) for a in argv]]
    code, line = cli(train_main, argv, capsys)
    assert code == 2 and line.startswith(message.format(d=files)), line


# ---- the crop classifier -------------------------------------------------------------------------

def classify_main(argv):
    from wbc.classify.train import main

    return main(argv)


def crop_folder(root: Path, classes: list[str], extra: dict[str, bytes] | None = None) -> Path:
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                cv2.imwrite(str(root / split / c / f"{i}.png"), np.full((24, 24, 3), 40 * i + 60, np.uint8))
    for name, content in (extra or {}).items():
        (root / name).write_bytes(content)
    return root


@pytest.mark.parametrize("classes, message", [
    (["LY"], "train: 1 class folder (LY); a classifier needs at least two classes to tell apart"),
    ([], "train: 0 class folders (none); a classifier needs at least two classes to tell apart"),
])
def test_classifier_refuses_fewer_than_two_classes(tmp_path, capsys, classes, message):
    data = crop_folder(tmp_path / "crops", classes)
    (data / "train").mkdir(parents=True, exist_ok=True)
    code, line = cli(classify_main, ["--data", data, "--epochs", 1, "--no-pretrained"], capsys)
    assert (code, line) == (2, f"error: {data}/{message}")


def test_classifier_without_a_train_split(tmp_path, capsys):
    (tmp_path / "crops").mkdir()
    code, line = cli(classify_main, ["--data", tmp_path / "crops"], capsys)
    assert (code, line) == (2, f"error: {tmp_path / 'crops' / 'train'}: no such split folder (expected <data>/<split>/<class>/<images>)")


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: 0 is out of range: must be an integer ≥ 1"),
    (["--lr", "0"], "argument --lr: 0 is out of range: must be a number > 0"),
    (["--label-smoothing", "1"], "argument --label-smoothing: 1 is out of range: must be a number ≥ 0 and < 1"),
    (["--batch", "0"], "argument --batch: 0 is out of range: must be an integer ≥ 1"),
    (["--imgsz", "8"], "argument --imgsz: 8 is out of range: must be an integer ≥ 32"),
    (["--vat-eps", "-1"], "argument --vat-eps: -1 is out of range: must be a number > 0"),
])
def test_classifier_argument_ranges(tmp_path, capsys, argv, message):
    code, line = cli(classify_main, ["--data", tmp_path, *argv], capsys)
    assert code == 2 and line == "error: " + message, line


def test_classifier_counts_files_that_are_not_images(tmp_path, monkeypatch):
    from wbc.classify import train

    warnings = []
    monkeypatch.setattr(train.LOGGER, "warning", warnings.append)
    data = crop_folder(tmp_path / "crops", ["LY", "MO"], {"train/LY/notes.txt": b"x", "train/MO/list.csv": b"a,b"})
    samples, classes = train.folder_samples(data, "train")
    assert (len(samples), classes) == (4, ["LY", "MO"])
    assert warnings == [f"{data / 'train'}: 2 file(s) skipped, not images by their suffix: LY/notes.txt, MO/list.csv"]


def test_crop_classifier_file_that_is_not_one(files):
    from wbc.classify.train import load_classifier
    from wbc.errors import UsageError

    with pytest.raises(UsageError, match=r"text.pt: not a readable crop classifier file \("):
        load_classifier(files / "text.pt")


# ---- crop.py, export.py, calibrate.py, cluster.py, review.py --------------------------------------

def crop_main(argv):
    from wbc.classify.crop_dataset import main

    return main(argv)


@pytest.mark.parametrize("argv, message", [
    (["--conf", "2"], "error: argument --conf: 2 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--margin", "-1"], "error: argument --margin: -1 is out of range: must be a number ≥ 0 and ≤ 2"),
    (["--val-fraction", "1"], "error: argument --val-fraction: 1 is out of range: must be a number ≥ 0 and < 1"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "error: --val-fraction 0.6 + --test-fraction 0.5 leave nothing "
                                                          "for train; keep their sum under 1"),
    (["--size", "0"], "error: argument --size: 0 is out of range: must be an integer ≥ 8"),
    (["--imgsz", "0"], "error: argument --imgsz: 0 is out of range"),
])
def test_crop_arguments(field, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("sys.argv", ["crop.py"])
    code, line = cli(crop_main, ["--source", field, *argv], capsys)
    assert code == 2 and line.startswith(message), line


def export_main(argv):
    from wbc.export import main

    return main(argv)


def test_export_arguments(files, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["export.py"])
    code, line = cli(export_main, ["--imgsz", "0"], capsys)
    assert code == 2 and line.startswith("error: argument --imgsz: 0 is out of range")
    code, line = cli(export_main, ["--weights", files / "text.pt"], capsys)
    assert (code, line) == (2, f"error: --weights {files / 'text.pt'}: not a torch checkpoint (6 bytes that are not a .pt archive: "
                               "truncated, or another kind of file)")


@pytest.mark.parametrize("argv, message", [
    (["--review-rate", "1"], "argument --review-rate: 1 is out of range: must be a number ≥ 0 and < 1"),
    (["--k", "0"], "argument --k: 0 is out of range: must be an integer ≥ 1"),
    (["--shrinkage", "2"], "argument --shrinkage: 2 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--probability-share", "-1"], "argument --probability-share: -1 is out of range"),
    (["--batch", "0"], "argument --batch: 0 is out of range"),
])
def test_calibrate_arguments(capsys, monkeypatch, argv, message):
    from wbc.review.fit import main

    monkeypatch.setattr("sys.argv", ["calibrate.py"])
    code, line = cli(main, argv, capsys)
    assert code == 2 and line.startswith("error: " + message), line


def cluster_main(argv):
    from wbc.cluster.run import main

    return main(argv)


@pytest.mark.parametrize("argv, message", [
    (["--k", "1"], "error: argument --k: 1 is out of range: must be an integer ≥ 2"),
    (["--k-range", "8", "4"], "error: --k-range 8 4: the first must not exceed the second"),
    (["--pca", "0"], "error: argument --pca: 0 is out of range: must be an integer ≥ 1"),
    (["--max-per-class", "0"], "error: argument --max-per-class: 0 is out of range"),
    (["--groups", "NEUTROPHIL"], "error: --groups 'NEUTROPHIL': expected GROUP=A,B"),
    (["--k", "9"], "error: --k 9: needs more cells than clusters; {d} has 4"),
    (["--k", "2", "--view", "field"], "error: --view field: 4 of 4 crops under {d} have no source field"),
])
def test_cluster_arguments(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("sys.argv", ["cluster.py"])
    data = crop_folder(tmp_path / "crops", ["LY", "MO"])
    code, line = cli(cluster_main, ["--crops", data, *argv], capsys)
    assert code == 2 and line.startswith(message.format(d=data)), line


def test_cluster_predict_run_must_be_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["cluster.py"])
    code, line = cli(cluster_main, ["--predict", str(tmp_path)], capsys)
    assert code == 2 and line.startswith(f"error: {tmp_path} is not a predict run (no cells.json"), line


def test_review_app_port(capsys, monkeypatch):
    from wbc.app.cli import main

    monkeypatch.setattr("sys.argv", ["review.py"])
    code, line = cli(main, ["--port", "70000"], capsys)
    assert code == 2 and line.startswith("error: argument --port: 70000 is out of range: must be an integer ≥ 1 and ≤ 65535")


def test_range_rule_accepts_numbers_and_strings():
    from wbc.arguments import FRACTION, POSITIVE_INT

    assert FRACTION("0.5") == 0.5 and FRACTION(1) == 1.0 and POSITIVE_INT("3") == 3 and POSITIVE_INT(3.0) == 3
    with pytest.raises(argparse.ArgumentTypeError):
        POSITIVE_INT(2.5)


# ---- test.py ---------------------------------------------------------------------------------------

def evaluate_main(argv):
    from wbc.evaluation.evaluate import main

    return main(argv)


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "error: argument --batch: 0 is out of range: must be an integer ≥ 1"),
    (["--conf", "2"], "error: argument --conf: 2 is out of range: must be a number ≥ 0 and ≤ 1"),
    (["--iou", "-0.5"], "error: argument --iou: -0.5 is out of range"),
    (["--match-iou", "0"], "error: argument --match-iou: 0 is out of range: must be a number > 0 and ≤ 1"),
    (["--imgsz", "0"], "error: argument --imgsz: 0 is out of range"),
    (["--pixel-size", "0"], "error: argument --pixel-size: 0 is out of range"),
    (["--name", "../x"], "error: --name '../x': must be a plain run name"),
])
def test_test_py_arguments(capsys, monkeypatch, argv, message):
    monkeypatch.setattr("sys.argv", ["test.py"])
    code, line = cli(evaluate_main, ["--data", "data/bccd.yaml", *argv], capsys)
    assert code == 2 and line.startswith(message), line


def test_test_py_weights_that_are_not_a_detector(synthetic, files, capsys):
    code, line = cli(evaluate_main, ["--data", synthetic("coco"), "--weights", files / "text.pt"], capsys)
    assert (code, line) == (2, f"error: --weights {files / 'text.pt'}: not a torch checkpoint (6 bytes that are not a .pt archive: "
                               "truncated, or another kind of file)")


def test_runs_folder_that_is_a_file(field, runs, capsys):
    runs.write_text("not a folder")
    code, line = cli(predict_main, ["--source", field], capsys)
    assert (code, line) == (2, f"error: {runs / 'predict' / 'exp'}: Not a directory (check the path, or set WBC_RUNS to a writable "
                               "folder for the runs)")
