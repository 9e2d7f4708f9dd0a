import textwrap

import pytest

from wbc.errors import DatasetError
from wbc.schema import NOT_APPLICABLE, UNKNOWN, load_spec

MINIMAL = """
path: {root}
format: yolo_csv
train: images/train
val: images/val
names: [LY, RBC]
"""


def write(tmp_path, text):
    path = tmp_path / "d.yaml"
    path.write_text(textwrap.dedent(text).replace("{root}", str(tmp_path)))
    return path


def test_shipped_yamls_load():
    for name, nc, na in (("WBC_v1", 14, 7), ("pbc_wbcatt", 12, 11), ("bccd", 3, 1)):
        spec = load_spec(f"data/{name}.yaml")
        assert (len(spec.names), len(spec.attributes)) == (nc, na)
    spec = load_spec("data/WBC_v1.yaml")
    assert spec.names[4] == "Atypical lymphocyte" and spec.names[13] == "Basophil"
    assert [a.name for a in spec.used_attributes] == ["nuclear_chromatin", "nuclear_shape", "nucleolus", "cytoplasm",
                                                      "cytoplasmic_basophilia", "cytoplasmic_vacuoles"]
    assert spec.attributes[1].encode("2") == NOT_APPLICABLE
    assert load_spec("data/pbc_wbcatt.yaml").nrbc_classes == ["ERB"]


def test_data_root_override_by_env_and_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("WBC_DATA_ROOT", str(tmp_path / "elsewhere"))
    assert load_spec("data/bccd.yaml").root == (tmp_path / "elsewhere" / "bccd").resolve()
    assert load_spec("data/bccd.yaml", root=tmp_path / "mine").root == (tmp_path / "mine").resolve()


def test_path_expands_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SMEARS", str(tmp_path))
    path = write(tmp_path, MINIMAL.replace("{root}", "${MY_SMEARS}/set1"))
    assert load_spec(path).root == (tmp_path / "set1").resolve()


def test_attribute_codes():
    spec = load_spec("data/pbc_wbcatt.yaml")
    size = spec.attributes[0]
    assert size.encode("big") == 0 and size.encode("small") == 1 and size.encode("") == UNKNOWN
    assert size.encode("huge") is None
    assert size.absent_code("LY") == UNKNOWN and size.absent_code("RBC") == NOT_APPLICABLE
    assert size.decode(1) == "small" and size.decode(UNKNOWN) == ""


@pytest.mark.parametrize("text, message", [
    (MINIMAL + "colour: blue\n", "unknown key(s) ['colour']"),
    (MINIMAL.replace("format: yolo_csv", "format: excel"), "format must be one of"),
    (MINIMAL.replace("names: [LY, RBC]", "names: [LY, LY]"), "duplicate class names ['LY']"),
    (MINIMAL.replace("val: images/val\n", ""), "val: split is required"),
    (MINIMAL + "attributes:\n  - {name: size}\n", "attributes[0]: needs 'name' and 'values'"),
    (MINIMAL + "attributes:\n  - {name: size, values: [a, b], unknown: [a]}\n", "values must be distinct"),
    (MINIMAL + "attributes:\n  - {name: size, values: [a, b], applies_to: [EO]}\n", "applies_to names unknown class 'EO'"),
    (MINIMAL + "nc: 3\n", "nc: 3 does not match the 2 names"),
    (MINIMAL + "wbc_classes: [LY]\nnrbc_classes: [RBC]\n", "nrbc_classes: 'RBC' is not one of wbc_classes"),
    (MINIMAL + "training_scale: {rbc_diameter_px: 72.5}\n", "training_scale: needs exactly rbc_diameter_px and field_size"),
    (MINIMAL + "training_scale: {rbc_diameter_px: -1, field_size: 363}\n", "training_scale: positive numbers expected"),
])
def test_bad_yaml_is_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DatasetError) as e:
        load_spec(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_training_scale_is_read(tmp_path):
    spec = load_spec(write(tmp_path, MINIMAL + "training_scale: {rbc_diameter_px: 72.5, field_size: 363}\n"))
    assert spec.training_scale == {"rbc_diameter_px": 72.5, "field_size": 363}
    assert load_spec(write(tmp_path, MINIMAL)).training_scale is None
