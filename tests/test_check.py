"""The check command: counts per split, problems with reasons, exit codes; exact counts on the real data."""

import json
import re

from conftest import shared_dataset

from wbc.check import main


def test_check_prints_counts_and_problems(synthetic, tmp_path, capsys):
    assert main(["--data", str(synthetic("voc")), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "[train] 12 images (0 without boxes)" in out and "[val] 6 images" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    train = summary["splits"]["train"]
    assert train["boxes_per_class"]["RBC"] == 72 and train["boxes_per_class"]["LY"] == 4
    assert sum(train["attributes"]["cell_size"].values()) == train["boxes"]


def test_check_reports_fatal_errors_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: x\nformat: voc\ntrain: a\nval: b\nnames: []\n")
    assert main(["--data", str(bad)]) == 2
    assert f"error: {bad}: names: a non-empty list of class names is required" in capsys.readouterr().err


def test_strict_fails_on_skips(synthetic, tmp_path, capsys):
    from wbc.synth import generate

    y = generate(tmp_path / "raw", "attridet", n_train=3, n_val=2)
    label = sorted((y.parent / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + label.read_text().splitlines()[0] + "\n")
    assert main(["--data", str(y)]) == 0
    assert main(["--data", str(y), "--strict", "--verbose"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"skipped\s+1\s+duplicate row", out) and f"{label}:" in out


def test_bccd_counts_and_subtype_join(tmp_path):
    shared_dataset("bccd")
    assert main(["--data", "data/bccd.yaml", "--json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    train, val = s["splits"]["train"], s["splits"]["val"]
    assert (train["images"], val["images"]) == (205, 87)
    assert train["boxes_per_class"] == {"RBC": 2381, "WBC": 214, "Platelets": 209}
    assert val["boxes_per_class"] == {"RBC": 967, "WBC": 87, "Platelets": 83}
    subtype = {k: v for k, v in train["attributes"]["wbc_subtype"].items()}
    assert subtype == {"NEUTROPHIL": 115, "EOSINOPHIL": 48, "LYMPHOCYTE": 22, "MONOCYTE": 12, "BASOPHIL": 1,
                       "(unknown)": 16, "(not applicable)": 2590}
    assert val["attributes"]["wbc_subtype"]["(unknown)"] == 2
    assert {p["reason"]: p["count"] for p in train["problems"]} == {
        "wbc_subtype: blank in the table (unknown)": 1,
        "wbc_subtype: different values listed, boxes cannot be told apart (unknown)": 7,
        "wbc_subtype: image has no WBC box": 1,
        "wbc_subtype: number of values differs from the number of WBC boxes (unknown)": 1,
        "zero-size box": 1,
    }


def test_pbc_counts_and_attribute_attachment(tmp_path):
    shared_dataset("pbc")
    assert main(["--data", "data/pbc_wbcatt.yaml", "--json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    train, val = s["splits"]["train"], s["splits"]["val"]
    assert (train["images"], val["images"]) == (9117 - 140, 1457 - 23)
    assert (train["boxes_with_any_known_attribute"], val["boxes_with_any_known_attribute"]) == (6124 - 135, 1028 - 21)
    for split, excluded, relabelled in ((train, 140, 41), (val, 23, 3)):
        counts = {p["reason"]: p["count"] for p in split["problems"]}
        assert counts["field without a WBC box of its labelled class"] == excluded
        assert counts["WBC box class disagrees with the field label (relabelled)"] == relabelled
    assert train["boxes_per_class"]["RBC"] == 142471 and val["boxes_per_class"]["PLT"] == 1048
