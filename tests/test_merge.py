"""Datasets of several sources: origins told by image size, a merged class list with label sets,
copies of held-out fields kept out of train, and every origin at one training scale."""

import shutil

import numpy as np
import pytest
import yaml

from wbc.canonical import prepare
from wbc.errors import DatasetError
from wbc.formats import write_dataset
from wbc.schema import Box, Dataset, DatasetSpec, load_spec
from wbc.synth import make_dataset


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A typed source (96 px fields, classes LY / MO / NE / RBC / PLT) and an untyped one (128 px
    fields, WBC / RBC / Platelet) whose train split holds a copy of one of the typed source's val fields."""
    root = tmp_path_factory.mktemp("sources")
    typed = make_dataset(root / "typed", n_train=6, n_val=3, imgsz=96, seed=0, numeric=True)
    typed_yaml = write_dataset(typed, root / "typed", "yolo", copy_images=True)
    drawn = make_dataset(root / "untyped", n_train=6, n_val=3, imgsz=128, seed=1)
    spec = DatasetSpec("untyped", root / "untyped" / "dataset.yaml", root / "untyped", "yolo", ["WBC", "RBC", "Platelet"],
                       {"train": "train", "val": "val"}, [], {}, ["WBC"])
    to_untyped = {"LY": 0, "MO": 0, "NE": 0, "RBC": 1, "PLT": 2}
    for fields in drawn.splits.values():
        for f in fields:
            f.boxes = [Box(to_untyped[drawn.spec.names[b.cls]], b.xyxy, ()) for b in f.boxes]
            f.field_class = None
    copied = typed.splits["val"][0]
    shutil.copy(root / "typed" / "images" / "val" / copied.name, root / "copy.png")
    drawn.splits["train"].append(type(copied)(root / "copy.png", copied.width, copied.height,
                                             [Box(0, b.xyxy, ()) for b in copied.boxes if typed.spec.names[b.cls] in to_untyped]))
    untyped_yaml = write_dataset(Dataset(spec, drawn.splits), root / "untyped", "yolo", copy_images=True)
    for path, origins in ((typed_yaml, "Typed-lab"), (untyped_yaml, {"Big-lab": ["128x128"]})):
        doc = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({**doc, "origins": origins}))
    merged = root / "merged.yaml"
    merged.write_text(yaml.safe_dump({
        "name": "merged", "format": "merge", "names": ["LY", "MO", "NE", "RBC", "PLT"], "wbc_classes": ["LY", "MO", "NE"],
        "label_sets": {"WBC": ["LY", "MO", "NE"]},
        "parts": [{"data": str(typed_yaml)}, {"data": str(untyped_yaml), "classes": {"WBC": "WBC", "RBC": "RBC", "Platelet": "PLT"}}]}))
    return merged


def test_origins_come_from_the_image_size(sources):
    part = load_spec(sources.parent / "untyped" / "dataset.yaml")
    assert part.origin_of(128, 128) == "Big-lab" and part.origin_of(100, 100) == "unknown"
    assert load_spec(sources.parent / "typed" / "dataset.yaml").origin_of(7, 7) == "Typed-lab"


def test_bad_origins_are_refused_with_the_key(tmp_path, sources):
    doc = yaml.safe_load((sources.parent / "untyped" / "dataset.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**doc, "origins": {"A": ["128 by 128"]}}))
    with pytest.raises(DatasetError, match="not an image size"):
        load_spec(bad)


def test_merged_dataset_keeps_types_marks_untyped_wbc_as_a_label_set_and_drops_copies(sources):
    canonical = prepare(sources)
    assert canonical.spec.names == ["LY", "MO", "NE", "RBC", "PLT", "WBC"]
    data = yaml.safe_load(canonical.data_yaml.read_text())
    assert data["label_sets"] == {"WBC": ["LY", "MO", "NE"]}
    boxes, fields = canonical.attributes(), canonical.fields()
    by_origin = fields.groupby("origin")["image"].apply(set)
    typed_boxes = boxes[boxes["image"].isin(by_origin["Typed-lab"])]
    untyped_boxes = boxes[boxes["image"].isin(by_origin["Big-lab"])]
    assert set(typed_boxes["class"]) == {"LY", "MO", "NE", "RBC", "PLT"}
    assert set(untyped_boxes["class"]) == {"WBC", "RBC", "PLT"}
    # the untyped source's copy of a typed val field is out of train, and counted
    assert "copy.png" not in set(fields.loc[fields["split"] == "train", "image"])
    dropped = [p for p in canonical.problems.problems if p.reason.startswith("copy of a held-out field")]
    assert len(dropped) == 1 and dropped[0].path.endswith("copy.png")
    assert len(fields[fields["split"] == "train"]) == 12


def test_training_scale_brings_every_origin_to_the_reference_red_cell_size(sources):
    from wbc.training import training_scale

    canonical = prepare(sources)
    scale = training_scale(canonical.root)
    d = scale["origin_rbc_diameter_px"]
    assert scale["reference_origin"] in d and scale["field_size"] in (96, 128)
    fields = canonical.fields()
    for image, origin in zip(fields["image"], fields["origin"]):
        assert scale["factors"][image] * d[origin] == pytest.approx(scale["train_rbc_diameter_px"])
    # generated red cells are 7-9 % of the field side: the 128 px source's are a third larger
    assert d["Big-lab"] / d["Typed-lab"] == pytest.approx(128 / 96, rel=0.15)


def test_multisource_training_runs_with_label_sets_and_saves_a_typed_detector(sources, tmp_path):
    from ultralytics import YOLO

    from wbc.training import train

    from wbc.paths import REPO_ROOT

    hyp = tmp_path / "hyp.colour.yaml"  # no augmentation, fields in the reference origin's colours (wbc/colour.py)
    hyp.write_text((REPO_ROOT / "hyps" / "hyp.no-augmentation.yaml").read_text() + "\ncolour_norm: 1\n")
    result = train(str(sources), "yolov5n", [1], [1], [str(hyp)], "ms", imgsz=64, batch=4, device="cpu", workers=0,
                   project=tmp_path, extra={"plots": False, "warmup_epochs": 0})
    phase = result[0].save_dir
    assert YOLO(str(phase / "weights" / "last.pt")).names == {0: "LY", 1: "MO", 2: "NE", 3: "RBC", 4: "PLT"}
    record = yaml.safe_load((phase / "scale.json").read_text())
    assert record["reference_origin"] in ("Typed-lab", "Big-lab") and record["train_rbc_diameter_px"] > 0
    assert record["trained_in_reference_colours"] and len(record["colour_reference"]["lab_mean"]) == 3
    from wbc.inference import model_card

    assert model_card(phase / "weights" / "best.pt")["colour_reference"] == record["colour_reference"]  # inference sees them too

    # a type head on its features: every origin at its training scale, stained copies, untyped WBCs as a set
    from wbc.attributes.train import train_head

    config = tmp_path / "head.yaml"
    config.write_text("layers: [2, 4]\n")
    head = train_head(str(phase / "weights" / "best.pt"), str(sources), epochs=1, batch=4, imgsz=64, name="types", config=str(config),
                      project=tmp_path, workers=0, types=True, stain=1.0, copies=2)
    from wbc.attributes.data import CELL_TYPE
    from wbc.attributes.head import AttributeHead

    saved = AttributeHead.load(head["save_dir"] / "head.pt")
    assert saved.config.attributes == [{"name": CELL_TYPE, "values": ["LY", "MO", "NE"]}] and saved.config.imgsz == 64
    assert np.isfinite(head["history"][0]["train_loss"]) and 0 <= head["best_mean_accuracy"] <= 1


def test_a_source_can_be_left_out(sources, tmp_path):
    doc = yaml.safe_load(sources.read_text())
    doc["parts"][1]["exclude_origins"] = ["Big-lab"]
    left_out = tmp_path / "no_big_lab.yaml"
    left_out.write_text(yaml.safe_dump({**doc, "name": "no_big_lab"}))
    canonical = prepare(left_out)
    assert set(canonical.fields()["origin"]) == {"Typed-lab"}
    assert any("left out (exclude_origins)" in p.reason for p in canonical.problems.problems)


def test_a_type_head_sees_every_origin_at_the_training_scale_and_an_untyped_wbc_as_one_of_the_types(sources, tmp_path):
    """Merged data for a type head: each typed or set-labelled box in a window of its field resized
    to the detector's training scale (the card's red-cell size over its origin's), and a WBC of
    unknown type coded as the label set "one of the types"; red cells and platelets carry no code."""
    import json

    import numpy as np

    from wbc.attributes.data import AttributeFields
    from wbc.attributes.train import scale_factors
    from wbc.training import training_scale

    canonical = prepare(sources)
    weights = tmp_path / "det.pt"  # only its model card is read
    with pytest.raises(ValueError, match="no training scale"):
        scale_factors(str(weights), canonical, 64)
    weights.with_suffix(".json").write_text(json.dumps({"train_rbc_diameter_px": 10.0, "train_field_size": 96}))
    factors = scale_factors(str(weights), canonical, 64)
    d = training_scale(canonical.root)["origin_rbc_diameter_px"]
    fields = canonical.fields()
    for image, origin in zip(fields["image"], fields["origin"]):
        assert factors[image] == pytest.approx(10.0 / d[origin] * 64 / 96)

    types = ["LY", "MO", "NE"]
    windows = AttributeFields(canonical, "train", 64, types=types, factors=factors)
    assert windows.label_sets == {"WBC": types}
    boxes = canonical.attributes()
    train = boxes[boxes["split"] == "train"]
    assert len(windows) == train["class"].isin(types + ["WBC"]).sum()  # one window per typed or set-labelled box
    codes = np.concatenate([c for _, _, c in windows.items])[:, 0]
    assert set(codes) <= {0, 1, 2, 3} and (codes == 3).sum() == (train["class"] == "WBC").sum()
    image, box, code = windows[0]
    assert image.shape == (64, 64, 3) and box.shape == (1, 4) and code.shape == (1, 1)
    assert 0 <= box[0, 0] < box[0, 2] <= 64 and 0 <= box[0, 1] < box[0, 3] <= 64
