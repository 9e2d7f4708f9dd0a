"""Malformed inputs: each one either stops with the file (and line) named, or is skipped or
repaired and counted with its reason -- never dropped silently."""

import json
import shutil

import pytest
import yaml

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


def bccd_table_error(tmp_path, table: str) -> tuple:
    """(root, the DatasetError) of a BCCD-layout dataset whose labels.csv holds ``table``."""
    root = tmp_path / "bccd"
    (root / "Annotations").mkdir(parents=True)
    (root / "labels.csv").write_text(table)
    with pytest.raises(DatasetError) as e:
        prepare("data/bccd.yaml", root=root, cache=tmp_path / "cache")
    return root, e.value


def test_duplicate_rows_in_the_image_attribute_table(tmp_path):
    root, e = bccd_table_error(tmp_path, ",Image,Category\n,0,NEUTROPHIL\n,0,EOSINOPHIL\n")
    assert f"{root / 'labels.csv'}:3" in str(e) and "second row for image 'BloodImage_00000'" in str(e)


# ---- recoverable: skipped or repaired, counted with the reason ------------------------------

@pytest.mark.parametrize("content, detail", [
    (b"", "empty file"),
    (b"this is not an image", "not an image (no image decoder recognises it)"),
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


# ---- COCO: the file's shape, and ids that pycocotools would silently merge -------------------------

COCO_SHAPE = "a COCO file is an object with 'images', 'annotations', 'categories'"


def edit_coco(root, fn):
    """Apply ``fn`` to the train annotation file's document (it may return a replacement); returns the path."""
    path = root / "annotations" / "instances_train.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(fn(doc) or doc))
    return path


def test_coco_duplicate_image_id_is_fatal(raw, tmp_path):
    """Before: pycocotools kept the later entry, and the first image's boxes went onto it."""
    root, y = raw("coco")
    path = edit_coco(root, lambda d: d["images"][3].update(id=d["images"][0]["id"]))
    fatal(y, tmp_path, str(path), "images[0] and images[3] both have id 1; ids in 'images' must be unique")


def test_coco_duplicate_annotation_id_is_fatal(raw, tmp_path):
    root, y = raw("coco")
    edit_coco(root, lambda d: d["annotations"][5].update(id=d["annotations"][2]["id"]))
    fatal(y, tmp_path, "annotations[2] and annotations[5] both have id 3; ids in 'annotations' must be unique")


def test_coco_duplicate_category_id_is_fatal(raw, tmp_path):
    root, y = raw("coco")
    edit_coco(root, lambda d: d["categories"][1].update(id=d["categories"][0]["id"]))
    fatal(y, tmp_path, "categories[0] and categories[1] both have id 1; ids in 'categories' must be unique")


def test_coco_two_images_naming_one_file_is_fatal(raw, tmp_path):
    root, y = raw("coco")
    edit_coco(root, lambda d: d["images"][2].update(file_name=d["images"][1]["file_name"]))
    fatal(y, tmp_path, "images[1] and images[2] both name the file 'MO_train0001.png'")


@pytest.mark.parametrize("top, kind", [([], "a list"), ("images", "a string"), (None, "null"), (3, "a number")])
def test_coco_top_level_not_an_object(raw, tmp_path, top, kind):
    """Before: AttributeError: 'list' object has no attribute 'get'."""
    root, y = raw("coco")
    path = edit_coco(root, lambda d: None)
    path.write_text(json.dumps(top))
    fatal(y, tmp_path, f"{path}: top level is {kind}; {COCO_SHAPE}")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_coco_missing_key(raw, tmp_path, key):
    root, y = raw("coco")
    edit_coco(root, lambda d: d.pop(key) and None)
    fatal(y, tmp_path, f"no {key!r}; {COCO_SHAPE}")


@pytest.mark.parametrize("key, value, kind", [("images", {}, "an object"), ("annotations", "none", "a string"), ("categories", 5, "a number")])
def test_coco_key_of_the_wrong_type(raw, tmp_path, key, value, kind):
    root, y = raw("coco")
    edit_coco(root, lambda d: d.update({key: value}))
    fatal(y, tmp_path, f"{key!r} is {kind}; expected a list")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"].__setitem__(1, "MO_train0001.png"), "images[1] is a string; expected an object with ['id', 'file_name']"),
    (lambda d: d["images"][0].pop("file_name"), "images[0] lacks 'file_name'"),
    (lambda d: d["categories"][0].pop("name"), "categories[0] lacks 'name'"),
    (lambda d: d["images"][0].update(id="1"), "images[0]: id must be an integer, got '1'"),
    (lambda d: d["images"][0].update(file_name=None), "images[0] (id 1): file_name must be a file name, got None"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "annotations[0] (id 1) refers to image_id [1] that is not in 'images'"),
    (lambda d: d["annotations"][0].update(category_id=42), "annotations[0] (id 1) refers to category_id 42 that is not in 'categories'"),
    (lambda d: d["annotations"][0].update(attributes=["big"]), "annotations[0] (id 1): 'attributes' must be an object {name: value}, got ['big']"),
])
def test_coco_malformed_entries(raw, tmp_path, edit, message):
    root, y = raw("coco")
    edit_coco(root, lambda d: edit(d) and None)
    fatal(y, tmp_path, message)


def test_coco_extra_column_not_a_number(raw, tmp_path):
    root, y = raw("coco")
    set_yaml(y, source={**yaml.safe_load(y.read_text())["source"], "extra_columns": ["px1"]})
    edit_coco(root, lambda d: d["annotations"][0].update(extra={"px1": "left"}))
    fatal(y, tmp_path, "annotation id 1 extra px1 is not a number: 'left'")


# ---- text that is not UTF-8: one reader for every importer -----------------------------------------

LATIN1 = "Zelle é".encode("latin-1")  # 0xe9 at offset 6


def test_binary_file_as_a_label_file(raw, tmp_path):
    root, y = raw("attridet")
    label = first_label(root)
    label.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    err = fatal(y, tmp_path, "not UTF-8 text (byte 0x89 at offset 0): a binary file, or text in another encoding; save it as UTF-8")
    assert (err.path, err.line) == (str(label), 1)


@pytest.mark.parametrize("fmt, target", [
    ("yolo_csv", lambda root: first_label(root)),
    ("yolo_csv", lambda root: root / "attributes_train.csv"),
    ("voc", lambda root: min((root / "Annotations").glob("*.xml"))),
    ("voc", lambda root: root / "ImageSets" / "Main" / "train.txt"),
    ("coco", lambda root: root / "annotations" / "instances_train.json"),
    ("coco", lambda root: root / "dataset.yaml"),
])
def test_text_in_another_encoding_names_the_file_line_and_byte(raw, tmp_path, fmt, target):
    root, y = raw(fmt)
    path = target(root)
    if path.suffix == ".json":  # one line as written: spread it over several
        path.write_text(json.dumps(json.loads(path.read_text()), indent=1))
    lines = path.read_bytes().split(b"\n")
    offset = len(lines[0]) + 1 + len(LATIN1) - 1
    path.write_bytes(b"\n".join([lines[0], LATIN1 + lines[1], *lines[2:]]))
    err = fatal(y, tmp_path, f"not UTF-8 text (byte 0xe9 at offset {offset})")
    assert (err.path, err.line) == (str(path), 2)


def test_byte_order_mark_is_read_as_utf8(raw, tmp_path):
    root, y = raw("attridet")
    label = first_label(root)
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())
    assert not prepare(y, cache=tmp_path / "cache").problems.problems


def test_a_folder_where_a_label_file_should_be(raw, tmp_path):
    root, y = raw("attridet")
    label = first_label(root)
    label.unlink()
    label.mkdir()
    fatal(y, tmp_path, f"{label}: cannot read: Is a directory")


# ---- CSV tables ------------------------------------------------------------------------------------

ATTRIBUTE_COLUMNS = "['image', 'cell_size', 'nucleus_lobes', 'cytoplasm_colour', 'vacuoles']"


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_attribute_csv(raw, tmp_path, content):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    csv.write_text(content)
    fatal(y, tmp_path, f"{csv}: empty file; expected a header row naming the columns {ATTRIBUTE_COLUMNS}")


def test_attribute_csv_with_a_header_only_is_counted(raw, tmp_path):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    csv.write_text(csv.read_text().splitlines()[0] + "\n")
    canonical = prepare(y, cache=tmp_path / "cache")
    assert problems(canonical) == {("noted", "attribute CSV has a header only (attributes unknown)")}


@pytest.mark.parametrize("edit, message", [
    (lambda row: row + ",extra", "6 cells, the header (line 1) has 5; quote cells that hold a comma"),
    (lambda row: row.rsplit(",", 1)[0], "4 cells, the header (line 1) has 5; quote cells that hold a comma"),
])
def test_attribute_csv_row_with_the_wrong_number_of_cells(raw, tmp_path, edit, message):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    edit_line(csv, 2, edit)
    fatal(y, tmp_path, f"{csv}:3: {message}")


def test_attribute_csv_naming_a_column_twice(raw, tmp_path):
    root, y = raw("yolo_csv")
    csv = root / "attributes_train.csv"
    csv.write_text("\n".join(row + "," + row.split(",")[-1] for row in csv.read_text().splitlines()) + "\n")
    fatal(y, tmp_path, f"{csv}:1: column(s) ['vacuoles'] named more than once in the header")


def test_empty_image_attribute_table(tmp_path):
    root, e = bccd_table_error(tmp_path, "")
    assert str(e) == f"{root / 'labels.csv'}: empty file; expected a header row naming the columns ['Image', 'Category']"


# ---- the dataset yaml and its root -----------------------------------------------------------------

def set_yaml(y, **changes):
    """Rewrite a dataset yaml with keys changed (None: removed)."""
    doc = yaml.safe_load(y.read_text())
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    y.write_text(yaml.safe_dump(doc, sort_keys=False))
    return y


def test_dataset_root_not_found_under_the_data_root(raw, tmp_path, monkeypatch):
    """Before: an OSError while writing the cache."""
    monkeypatch.setenv("WBC_DATA_ROOT", str(tmp_path / "data"))
    _, y = raw("voc")
    set_yaml(y, path="nowhere")
    fatal(y, tmp_path, f"{y}: dataset root not found: {tmp_path / 'data' / 'nowhere'} (path: nowhere under the data root "
                       f"{tmp_path / 'data'}; set WBC_DATA_ROOT or --data-root)")


def test_dataset_root_not_found_absolute_and_by_argument(raw, tmp_path):
    _, y = raw("attridet")
    set_yaml(y, path=str(tmp_path / "gone"))
    fatal(y, tmp_path, f"dataset root not found: {tmp_path / 'gone'} (path: {tmp_path / 'gone'}; or pass --data-root)")
    with pytest.raises(DatasetError, match=r"dataset root not found: .*elsewhere \(--data-root\)"):
        prepare(y, root=tmp_path / "elsewhere", cache=tmp_path / "cache")


@pytest.mark.parametrize("text, message", [
    ("names: [a, b\npath: x\n", "invalid yaml: expected ',' or ']', but got ':'"),
    ("- path: x\n- format: voc\n", "a dataset yaml must be a mapping"),
    ("path: x\nformat: voc\ntrain: a\nval: b\n", "names: a non-empty list of class names is required"),
    ("path: x\nformat: voc\ntrain: a\nval: b\nnames: []\n", "names: a non-empty list of class names is required"),
    ("path: x\nformat: voc\ntrain: a\nval: b\nnames: {0: a, x: b}\n", "names: ids must be 0..n-1 without gaps"),
    ("path: x\nformat: voc\ntrain: a\nval: b\nnames: [a]\nattributes: 5\n", "attributes: a list of {name, values, ...} expected, got 5"),
    ("path: x\nformat: voc\ntrain: a\nval: b\nnames: [a]\nwbc_classes: a\n", "wbc_classes must be a list, got 'a'"),
    ("path: x\nformat: voc\ntrain: [a, b]\nval: b\nnames: [a]\n", "train: one image folder or image list file expected, got ['a', 'b']"),
])
def test_bad_dataset_yaml_is_one_line(tmp_path, text, message):
    y = tmp_path / "d.yaml"
    y.write_text(text)
    err = fatal(y, tmp_path, f"{y}", message)
    assert "\n" not in str(err)


def test_source_template_with_an_unknown_placeholder(raw, tmp_path):
    _, y = raw("attridet")
    set_yaml(y, source={"labels": "labels/{Split}"})
    fatal(y, tmp_path, "source.labels: 'labels/{Split}': '{split}' is the only placeholder")


def test_image_attributes_not_a_mapping(tmp_path):
    y = tmp_path / "bccd.yaml"
    shutil.copy("data/bccd.yaml", y)
    set_yaml(y, source={"annotations": "Annotations", "image_attributes": "labels.csv"})
    (tmp_path / "bccd").mkdir()
    with pytest.raises(DatasetError, match="source.image_attributes: a mapping with"):
        prepare(y, root=tmp_path / "bccd", cache=tmp_path / "cache")


@pytest.mark.parametrize("part, message", [
    ({"data": "part.yaml", "classes": ["LY"]}, "parts[0]: classes must be a mapping, got ['LY']"),
    ({"data": "part.yaml", "max_fields": {"train": "all"}}, "parts[0]: max_fields: split -> a number of fields, got {'train': 'all'}"),
])
def test_merge_part_options_of_the_wrong_type(raw, tmp_path, part, message):
    _, y = raw("attridet")
    shutil.copy(y, y.parent / "part.yaml")
    merged = y.parent / "merged.yaml"
    merged.write_text(yaml.safe_dump({"name": "m", "format": "merge", "names": ["LY", "MO", "NE", "RBC", "PLT"], "parts": [part]}))
    fatal(merged, tmp_path, message)


# ---- splits: left out with a word, fatal where nothing is left, test-only datasets -------------

def test_check_prints_a_split_left_out(raw, tmp_path, capsys):
    from wbc.check import main

    root, y = raw("voc")
    listing = root / "ImageSets" / "Main" / "val.txt"
    listing.unlink()
    assert main(["--data", str(y), "--json", str(tmp_path / "s.json")]) == 0
    assert f"[val] split left out: {listing} not found" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["splits_left_out"] == {"val": str(listing)} and list(summary["splits"]) == ["train"]


@pytest.mark.parametrize("missing", ["annotations/instances_val.json", "images/val"])
def test_coco_split_left_out_names_what_is_missing(raw, tmp_path, missing):
    root, y = raw("coco")
    shutil.rmtree(root / missing) if (root / missing).is_dir() else (root / missing).unlink()
    canonical = prepare(y, cache=tmp_path / "cache", need=("train",))
    assert canonical.left_out == {"val": str(root / missing)} and canonical.splits == ["train"]


def test_a_needed_split_that_is_absent_is_fatal(raw, tmp_path):
    """Training reads train and val: a val that is declared but not there stops the import."""
    root, y = raw("attridet")
    shutil.rmtree(root / "images" / "val")
    fatal(y, tmp_path, f"val: {root / 'images' / 'val'} not found; this command reads the val split")


def test_the_only_split_absent_is_fatal(raw, tmp_path):
    root, y = raw("attridet")
    set_yaml(y, train=None, val=None, test="images/test")
    with pytest.raises(DatasetError) as e:
        prepare(y, cache=tmp_path / "cache", need=())
    assert str(e.value) == f"{y}: no split found (test: {root / 'images' / 'test'} not found)"


def test_no_split_declared(raw, tmp_path):
    _, y = raw("attridet")
    set_yaml(y, train=None, val=None)
    with pytest.raises(DatasetError, match="no split declared: give at least one of train, val, test"):
        prepare(y, cache=tmp_path / "cache", need=())


def test_test_only_dataset_is_read_and_validated_but_not_trained_on(raw, tmp_path):
    _, y = raw("attridet")
    set_yaml(y, train=None, val=None, test="images/val")
    fatal(y, tmp_path, "train: split is required (declared: test)")  # what training asks for
    canonical = prepare(y, cache=tmp_path / "cache", need=())
    assert canonical.splits == ["test"] and len(canonical.fields()) == 3
    data = yaml.safe_load(canonical.validation_yaml("test").read_text())
    assert data["train"] == data["val"] == data["test"] == "images/test"
    assert "train" not in yaml.safe_load(canonical.data_yaml.read_text())


# ---- VOC, YOLO and id lists ----------------------------------------------------------------------

def test_voc_without_size_uses_the_image_file(raw, tmp_path):
    root, y = raw("voc")
    xml = min((root / "Annotations").glob("*.xml"))
    text = xml.read_text()
    xml.write_text(text[:text.index("<size>")] + text[text.index("</size>") + len("</size>"):])
    canonical = prepare(y, cache=tmp_path / "cache")
    assert not canonical.problems.problems
    assert set(canonical.fields()[["width", "height"]].itertuples(index=False, name=None)) == {(128, 128)}


def test_voc_size_differing_from_the_image_is_counted(raw, tmp_path):
    root, y = raw("voc")
    xml = min((root / "Annotations").glob("*.xml"))
    xml.write_text(xml.read_text().replace("<width>128</width>", "<width>640</width>"))
    canonical = prepare(y, cache=tmp_path / "cache")
    (problem,) = canonical.problems.problems
    assert (problem.action, problem.reason, problem.path, problem.detail) == (
        "repaired", "image size in annotations differs from the file (file size used)", str(xml), "640x128 vs 128x128")


def test_voc_size_not_a_number(raw, tmp_path):
    root, y = raw("voc")
    xml = min((root / "Annotations").glob("*.xml"))
    xml.write_text(xml.read_text().replace("<width>128</width>", "<width>wide</width>"))
    fatal(y, tmp_path, str(xml), "<size> width is not a number: 'wide'")


def test_voc_object_without_bndbox(raw, tmp_path):
    root, y = raw("voc")
    xml = min((root / "Annotations").glob("*.xml"))
    text = xml.read_text()
    xml.write_text(text[:text.index("<bndbox>")] + text[text.index("</bndbox>") + len("</bndbox>"):])
    fatal(y, tmp_path, str(xml), "object 0 (RBC): no <bndbox>")


def test_yolo_label_with_four_columns(raw, tmp_path):
    root, y = raw("yolo_csv")
    label = first_label(root)
    edit_line(label, 1, lambda row: " ".join(row.split()[:4]))
    err = fatal(y, tmp_path, "expected 5 columns, found 4")
    assert (err.path, err.line) == (str(label), 2)


def test_id_list_naming_missing_images(raw, tmp_path):
    root, y = raw("voc")
    listing = root / "ImageSets" / "Main" / "train.txt"
    listing.write_text(listing.read_text() + "BloodImage_99999\n")
    canonical = prepare(y, cache=tmp_path / "cache")
    (problem,) = canonical.problems.problems
    assert (problem.action, problem.reason, problem.path) == ("skipped", "listed image missing", str(root / "JPEGImages" / "BloodImage_99999.jpg"))
