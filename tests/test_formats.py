"""Importers and exporters: generated data in every format, lossless round trips, shipped datasets."""

import pytest
import yaml
from conftest import shared_dataset

from wbc.canonical import prepare, write_canonical
from wbc.formats import read_dataset, write_dataset
from wbc.schema import UNKNOWN, load_spec
from wbc.synth import generate, make_dataset

FORMATS = ["coco", "voc", "yolo_csv", "attridet", "lld"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_data_imports_to_what_was_drawn(tmp_path, fmt):
    truth = make_dataset(tmp_path / "truth", numeric=fmt in ("attridet", "lld"))
    canonical = prepare(generate(tmp_path / fmt, fmt), cache=tmp_path / "cache")
    assert not canonical.problems.problems
    table = canonical.attributes()
    for split, fields in truth.splits.items():
        rows = table[table["split"] == split]
        assert len(rows) == sum(len(f.boxes) for f in fields)
        wbc = rows[rows["class"].isin(["LY", "MO", "NE"])].sort_values("image")
        expected = sorted((f.name, f.boxes[-1].attributes) for f in fields)
        assert [(r.image, tuple(int(getattr(r, a.name)) for a in truth.spec.attributes)) for r in wbc.itertuples()] == expected


# AttriDet rows hold numeric attribute codes only: exported to from numeric sources.
@pytest.mark.parametrize("source_fmt, target_fmt", [(f, "coco") for f in FORMATS] + [("attridet", "attridet"), ("lld", "attridet")])
def test_round_trip_is_lossless(tmp_path, synthetic, source_fmt, target_fmt):
    first = prepare(synthetic(source_fmt), cache=tmp_path / "cache")
    dataset = read_dataset(first.spec)
    fmt = "lld" if source_fmt == "lld" and target_fmt == "attridet" else target_fmt
    second = prepare(write_dataset(dataset, tmp_path / "export", fmt), cache=tmp_path / "cache")
    third = prepare(write_dataset(read_dataset(second.spec), tmp_path / "export2", source_fmt), cache=tmp_path / "cache")
    assert second.content() == first.content()
    assert third.content() == first.content()


def test_leukemiaattri_rows_round_trip(tmp_path):
    """WBC_v1.yaml as shipped, on generated 12-column rows: attridet -> COCO -> attridet is lossless."""
    spec = load_spec("data/WBC_v1.yaml", root=tmp_path / "LeukemiaAttri")
    raw = generate(tmp_path / "LeukemiaAttri", "attridet", spec=spec)
    rows = (tmp_path / "LeukemiaAttri" / "labels" / "train").glob("*.txt")
    assert {len(line.split()) for p in rows for line in p.read_text().splitlines()} == {12}
    first = prepare("data/WBC_v1.yaml", root=tmp_path / "LeukemiaAttri", cache=tmp_path / "cache")
    assert yaml.safe_load(raw.read_text())["names"] == spec.names
    coco = prepare(write_dataset(read_dataset(first.spec), tmp_path / "coco", "coco"), cache=tmp_path / "cache")
    back = prepare(write_dataset(read_dataset(coco.spec), tmp_path / "back", "attridet"), cache=tmp_path / "cache")
    assert coco.content() == first.content() == back.content()
    assert sorted((tmp_path / "back" / "labels" / "train").glob("*.txt"))[0].read_text() == \
        sorted((tmp_path / "LeukemiaAttri" / "labels" / "train").glob("*.txt"))[0].read_text()


def test_canonical_labels_are_plain_yolo_rows(synthetic):
    canonical = prepare(synthetic("attridet"))
    for label in (canonical.root / "labels" / "train").glob("*.txt"):
        assert {len(line.split()) for line in label.read_text().splitlines()} == {5}


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path):
    yaml_path = generate(tmp_path / "raw", "yolo_csv")
    first = prepare(yaml_path, cache=tmp_path / "cache")
    again = prepare(yaml_path, cache=tmp_path / "cache")
    assert first.rebuilt and not again.rebuilt and again.root == first.root
    csv = tmp_path / "raw" / "attributes_train.csv"
    lines = csv.read_text().splitlines()
    name, *values = lines[1].split(",")
    lines[1] = ",".join([name, *[""] * len(values)])  # the first row's attributes become unknown
    csv.write_text("\n".join(lines) + "\n")
    changed = prepare(yaml_path, cache=tmp_path / "cache")
    assert changed.rebuilt and changed.root != first.root
    table = changed.attributes()
    row = table[(table["image"] == name) & table["class"].isin(["LY", "MO", "NE"])]
    assert (row[[a.name for a in changed.spec.attributes]] == UNKNOWN).all(axis=None)


def test_an_import_finished_by_another_process_first_is_kept(tmp_path):
    """Two trainings started at once import the same dataset; the second to finish keeps the
    first's cache (which the first may already be reading) and leaves no partial folder behind."""
    yaml_path = generate(tmp_path / "raw", "yolo_csv")
    first = prepare(yaml_path, cache=tmp_path / "cache")
    marker = first.root / "labels" / "train" / "kept"
    marker.touch()
    write_canonical(read_dataset(first.spec), first.root, replace=False)  # the slower process finishing
    assert marker.exists()
    write_canonical(read_dataset(first.spec), first.root)  # an explicit rebuild replaces it
    assert not marker.exists() and (first.root / "report.json").is_file()
    assert [p.name for p in first.root.parent.iterdir()] == [first.root.name]


def test_ultralytics_reads_the_canonical_form(synthetic):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    canonical = prepare(synthetic("coco"))
    data = check_det_dataset(str(canonical.data_yaml))
    ds = YOLODataset(img_path=data["train"], data=data, imgsz=64, augment=False, task="detect")
    assert len(ds) == 12 and sum(len(lb["cls"]) for lb in ds.labels) == len(canonical.attributes().query("split == 'train'"))
    assert all(lb["segments"] == [] for lb in ds.labels)
    assert str(canonical.root) in ds.label_files[0]  # its cache lives beside the canonical labels, not the raw data


@pytest.mark.parametrize("name", ["bccd", "pbc_wbcatt"])
def test_shipped_dataset_coco_round_trip(tmp_path, name):
    shared_dataset("bccd" if name == "bccd" else "pbc")
    first = prepare(f"data/{name}.yaml")
    coco = prepare(write_dataset(read_dataset(first.spec), tmp_path / "coco", "coco"), cache=tmp_path / "cache")
    assert coco.content() == first.content()
