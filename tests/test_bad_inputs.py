"""Malformed inputs: each one either stops with the file (and line) named, or is skipped or
repaired and counted with its reason -- never dropped silently."""

import json
import shutil

import pytest

from wbc.canonical import prepare
from wbc.errors import DatasetError
from wbc.synth import generate


@pytest.fixture
def raw(tmp_path):
    """raw(fmt) -> (dataset root, yaml) of a fresh generated dataset that the test may break."""

    def make(fmt):
        yaml_path = generate(tmp_path / fmt, fmt, n_train=4, n_val=3)
        return yaml_path.parent, yaml_path

    return make


def first_label(root):
    return sorted((root / "labels" / "train").glob("*.txt"))[0]


def edit_line(path, index, fn):
    lines = path.read_text().splitlines()
    lines[index] = fn(lines[index])
    path.write_text("\n".join(lines) + "\n")


def problems(canonical, action=None):
    return {(p.action, p.reason) for p in canonical.problems.problems if action is None or p.action == action}


def fatal(yaml_path, tmp_path, *fragments):
    with pytest.raises(DatasetError) as e:
        prepare(yaml_path, cache=tmp_path / "cache")
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)
    return e.value


# ---- fatal: the file and line are named ---------------------------------------------------

def test_wrong_column_count(raw, tmp_path):
    root, y = raw("attridet")
    label = first_label(root)
    edit_line(label, 1, lambda row: row + " 0")
    err = fatal(y, tmp_path, "expected 9 columns, found 10")
    assert (err.path, err.line) == (str(label), 2)


def test_attridet_rows_in_a_plain_yolo_dataset_are_not_read_as_polygons(raw, tmp_path):
    root, y = raw("yolo_csv")
    edit_line(first_label(root), 0, lambda row: row + " 0 1 0 1 2 2 0")  # AttriDet's attribute columns
    fatal(y, tmp_path, "expected 5 columns, found 12", ":1:")


def test_non_numeric_coordinate(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join([row.split()[0], "abc", *row.split()[2:]]))
    fatal(y, tmp_path, "x_center is not a number: 'abc'", ":1:")


def test_non_finite_coordinate(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join([row.split()[0], "nan", *row.split()[2:]]))
    fatal(y, tmp_path, "x_center is not finite: 'nan'")


def test_class_id_out_of_range(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 2, lambda row: " ".join(["7", *row.split()[1:]]))
    fatal(y, tmp_path, "class id 7 out of range: the dataset yaml declares 5 classes (0..4)", ":3:")


def test_class_id_not_an_integer(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join(["1.5", *row.split()[1:]]))
    fatal(y, tmp_path, "class id is not an integer: '1.5'")


def test_attribute_value_outside_the_declared_set_in_rows(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), -1, lambda row: " ".join([*row.split()[:-1], "5"]))
    fatal(y, tmp_path, "attribute 'vacuoles' value '5' is not in the declared set ['0', '1']")


def test_attribute_value_outside_the_declared_set_in_csv(raw, tmp_path):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    edit_line(csv, 2, lambda row: ",".join([*row.split(",")[:-1], "maybe"]))
    fatal(y, tmp_path, f"{csv}:3", "attribute 'vacuoles' value 'maybe' is not in the declared set ['no', 'yes']")


def test_attribute_csv_missing_a_column(raw, tmp_path):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    csv.write_text("\n".join(",".join(row.split(",")[:-1]) for row in csv.read_text().splitlines()) + "\n")
    fatal(y, tmp_path, f"{csv}:1", "missing column(s) ['vacuoles']")


def test_malformed_xml(raw, tmp_path):
    root, y = raw("voc")
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("</annotation>", ""))
    err = fatal(y, tmp_path, "malformed XML", str(xml))
    assert err.line is not None


def test_voc_coordinate_not_a_number(raw, tmp_path):
    root, y = raw("voc")
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    xml.write_text(text[:start] + "left" + text[text.index("</xmin>"):])
    fatal(y, tmp_path, str(xml), "object 0 (RBC) xmin is not a number: 'left'")


def test_invalid_coco_json(raw, tmp_path):
    root, y = raw("coco")
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=1)[:-3])
    err = fatal(y, tmp_path, "invalid JSON", str(path))
    assert err.line is not None


def test_coco_annotation_for_missing_image_id(raw, tmp_path):
    root, y = raw("coco")
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["image_id"] = 999
    path.write_text(json.dumps(doc))
    fatal(y, tmp_path, "annotations[0] (id 1) refers to image_id 999 that is not in 'images'")


def test_empty_split(raw, tmp_path):
    root, y = raw("attridet")
    for p in (root / "images" / "val").iterdir():
        p.unlink()
    fatal(y, tmp_path, "split 'val' has no usable images")


def test_duplicate_rows_in_the_image_attribute_table(tmp_path):
    root = tmp_path / "bccd"
    (root / "Annotations").mkdir(parents=True)
    (root / "labels.csv").write_text(",Image,Category\n,0,NEUTROPHIL\n,0,EOSINOPHIL\n")
    with pytest.raises(DatasetError) as e:
        prepare("data/bccd.yaml", root=root, cache=tmp_path / "cache")
    assert f"{root / 'labels.csv'}:3" in str(e.value) and "second row for image 'BloodImage_00000'" in str(e.value)


# ---- recoverable: skipped or repaired, counted with the reason ------------------------------

@pytest.mark.parametrize("content, detail", [
    (b"", "empty file"),
    (b"this is not an image", "corrupt image"),
    ("truncate", "corrupt image"),
])
def test_unusable_images_are_skipped(raw, tmp_path, content, detail):
    root, y = raw("attridet")
    image = sorted((root / "images" / "train").iterdir())[0]
    image.write_bytes(image.read_bytes()[:200] if content == "truncate" else content)
    canonical = prepare(y, cache=tmp_path / "cache")
    skipped = [p for p in canonical.problems.problems if p.reason == "corrupt image"]
    assert len(skipped) == 1 and skipped[0].path == str(image) and detail in skipped[0].detail
    assert len(canonical.fields().query("split == 'train'")) == 3


def test_box_partly_outside_is_clipped_and_counted(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join([row.split()[0], "0.02", "0.5", "0.2", "0.2", *row.split()[5:]]))
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("repaired", "box outside the image (clipped)")}
    label = (canonical.root / "labels" / "train" / first_label(root).name).read_text().splitlines()[0].split()
    assert float(label[1]) - float(label[3]) / 2 == pytest.approx(0, abs=1e-6)


def test_box_entirely_outside_is_skipped(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join([row.split()[0], "1.5", "0.5", "0.2", "0.2", *row.split()[5:]]))
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("skipped", "box outside the image")}


def test_zero_size_box_is_skipped(raw, tmp_path):
    root, y = raw("attridet")
    edit_line(first_label(root), 0, lambda row: " ".join([*row.split()[:3], "0", *row.split()[4:]]))
    canonical = prepare(y, cache=tmp_path / "cache")
    (problem,) = canonical.problems.problems
    assert (problem.action, problem.reason, problem.path, problem.line) == ("skipped", "zero-size box", str(first_label(root)), 1)


def test_duplicate_rows_are_skipped(raw, tmp_path):
    root, y = raw("attridet")
    label = first_label(root)
    label.write_text(label.read_text() + label.read_text().splitlines()[0] + "\n")
    n = len(label.read_text().splitlines())
    canonical = prepare(y, cache=tmp_path / "cache")
    (problem,) = canonical.problems.problems
    assert (problem.reason, problem.line) == ("duplicate row", n)


def test_image_without_labels_is_kept_as_background(raw, tmp_path):
    root, y = raw("attridet")
    first_label(root).unlink()
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("noted", "image without labels (kept as background)")}
    assert len(canonical.fields().query("split == 'train'")) == 4


def test_labels_without_image_are_skipped(raw, tmp_path):
    root, y = raw("attridet")
    shutil.copy(first_label(root), root / "labels" / "train" / "orphan.txt")
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("skipped", "labels without image")}


def test_unknown_class_name_is_skipped(raw, tmp_path):
    root, y = raw("voc")
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    xml.write_text(xml.read_text().replace("<name>RBC</name>", "<name>Smudge</name>", 1))
    canonical = prepare(y, cache=tmp_path / "cache")
    (problem,) = canonical.problems.problems
    assert (problem.action, problem.reason, problem.path) == ("skipped", "unknown class name", str(xml))
    assert "Smudge" in problem.detail


def test_unknown_coco_category_is_skipped(raw, tmp_path):
    root, y = raw("coco")
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    doc["categories"].append({"id": 99, "name": "Smudge"})
    doc["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(doc))
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("skipped", "unknown class name")}


def test_coco_image_missing_on_disk(raw, tmp_path):
    root, y = raw("coco")
    image = sorted((root / "images" / "train").iterdir())[0]
    image.unlink()
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("skipped", "labels without image")}


def test_duplicate_and_unattached_attribute_rows(raw, tmp_path):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    lines = csv.read_text().splitlines()
    stranger = lines[1].replace(lines[1].split(",")[0], "LY_nowhere.png")
    csv.write_text("\n".join([*lines, lines[1], stranger]) + "\n")
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("skipped", "duplicate attribute row"), ("skipped", "attribute row not attached: no such image in the split")}


def test_field_label_disagreeing_with_its_box(raw, tmp_path):
    """The file-name prefix (expert label) wins: one WBC box of another class is relabelled;
    a field with no WBC box is excluded, and its attribute row is counted as not attached."""
    root, y = raw("yolo_csv")
    labels = sorted((root / "labels" / "train").glob("LY_*.txt"))
    edit_line(labels[0], -1, lambda row: " ".join(["1", *row.split()[1:]]))  # LY field, its WBC box says MO
    labels[1].write_text("".join(row + "\n" for row in labels[1].read_text().splitlines()[:-1]))  # no WBC box at all
    had_row = any(row.startswith(labels[1].stem) for row in (root / "attributes_train.csv").read_text().splitlines())
    canonical = prepare(y, cache=tmp_path / "cache")
    expected = {("repaired", "WBC box class disagrees with the field label (relabelled)"),
                ("skipped", "field without a WBC box of its labelled class")}
    if had_row:
        expected.add(("skipped", "attribute row not attached: field excluded"))
    assert problems(canonical) == expected
    table = canonical.attributes()
    assert set(table[table["image"] == labels[0].stem + ".png"]["class"]) >= {"LY"}
    assert labels[1].stem + ".png" not in set(canonical.fields()["image"])
