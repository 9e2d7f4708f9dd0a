"""Detector training: weights transfer, hyps, phase 1 -> phase 2 hand-over, resume after interruption.
Tiny models on tiny generated images; a few seconds per phase."""

import copy
import sys
import types

import pytest
import torch
from conftest import shared_weights
from torch import nn
from ultralytics.nn.tasks import torch_safe_load  # torch.load(weights_only=True) with ultralytics' allow-list

from wbc import weights as wts
from wbc.errors import UsageError
from wbc.hyp import HypError, load_hyp
from wbc.training import train

TINY = dict(imgsz=64, batch=4, device="cpu", workers=0)
FAST = {"plots": False, "warmup_epochs": 0, "val": True}


def fake_yolov5_checkpoint(path, scale="n"):
    """Write a checkpoint shaped like the yolov5 repository's: classes pickled from ``models.*``,
    an anchor-based Detect head, and the backbone + neck of a v5u model of the same scale."""
    from ultralytics.nn.tasks import DetectionModel

    common, yolo = types.ModuleType("models.common"), types.ModuleType("models.yolo")
    package = types.ModuleType("models")
    saved = {k: sys.modules.get(k) for k in ("models", "models.common", "models.yolo")}
    sys.modules.update({"models": package, "models.common": common, "models.yolo": yolo})
    classes = {}

    def fake_class(name, module):
        if name not in classes:
            classes[name] = type(name, (nn.Module,), {"__module__": module.__name__})
            setattr(module, name, classes[name])
        return classes[name]

    def mirror(m):
        if type(m).__module__.startswith("torch.nn"):  # torch's own layers and containers stay, their children are mirrored
            for name, child in list(m.named_children()):
                setattr(m, name, mirror(child))
            return m
        new = fake_class(type(m).__name__, common)()
        for name, child in m.named_children():
            new.add_module(name, mirror(child))
        return new

    try:
        source = DetectionModel(str(wts.model_config(f"yolov5{scale}")), nc=80, verbose=False)
        reference = {k: v.clone() for k, v in source.state_dict().items()}
        model = fake_class("Model", yolo)()
        layers = nn.Sequential(*[mirror(copy.deepcopy(m)) for m in source.model[:-1]])
        detect = fake_class("Detect", yolo)()
        detect.m = nn.ModuleList(nn.Conv2d(c, 255, 1) for c in (64, 128, 256))
        detect.register_buffer("anchors", torch.ones(3, 3, 2))
        layers.add_module("24", detect)
        model.model = layers
        torch.save({"epoch": -1, "model": model.half(), "ema": None, "optimizer": None}, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return reference


def test_original_yolov5_checkpoint_transfers_backbone_and_neck(tmp_path):
    path = tmp_path / "yolov5n.pt"
    reference = fake_yolov5_checkpoint(path)
    assert wts.resolve(str(path)) == ("yolov5", str(path.resolve()))
    loaded = wts.load_yolov5_original(path)
    from ultralytics.nn.tasks import DetectionModel

    target = DetectionModel(wts.model_config("yolov5n"), nc=3, verbose=False)
    moved, total = wts.transfer(target, loaded)
    head = sum(1 for k in loaded.state_dict() if k.startswith("model.24."))
    assert (moved, total) == (total - head, len(reference) - len([k for k in reference if k.startswith("model.24.")]) + head)
    assert torch.equal(target.state_dict()["model.0.conv.weight"], reference["model.0.conv.weight"].half().float())


def test_real_yolov5n_checkpoint_transfers_342_of_349():
    path = shared_weights("yolov5n.pt")
    from ultralytics.nn.tasks import DetectionModel

    target = DetectionModel(wts.model_config("yolov5n"), nc=12, verbose=False)
    assert wts.transfer(target, wts.load_yolov5_original(path)) == (342, 349)


def test_missing_weights_fail_at_once_naming_alternatives():
    with pytest.raises(wts.WeightsNotFound) as e:
        wts.resolve("yolov5xu.pt")
    assert "nothing is downloaded here" in str(e.value) and "yolov5n" in str(e.value)


def test_hyps_translate_and_reject_unknown_keys(tmp_path):
    args, _ = load_hyp("scratch-high")
    assert args["box"] == pytest.approx(7.5) and args["mixup"] == 0.1 and "obj" not in args
    bad = tmp_path / "hyp.bad.yaml"
    bad.write_text("lr0: 0.01\nlearning_rate: 0.1\n")
    with pytest.raises(HypError, match="unknown hyperparameter 'learning_rate'"):
        load_hyp(bad)


def test_phase2_starts_from_phase1_last_weights(synthetic, tmp_path):
    first_weights = {}

    def capture(trainer):
        first_weights[trainer.save_dir.name] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    results = train(str(synthetic("coco")), "yolov5n", [1, 2], [1, 1], ["no-augmentation", "no-augmentation"], "phases",
                    project=tmp_path, extra=FAST, callbacks={"on_pretrain_routine_end": capture}, **TINY)
    assert [r.phase for r in results] == [1, 2]
    assert (tmp_path / "phases" / "phase1" / "weights" / "last.pt").is_file()
    assert (tmp_path / "phases" / "phase2" / "results.csv").is_file()
    ckpt = torch_safe_load(results[0].last, safe_only=True)[0]
    last = (ckpt.get("ema") or ckpt["model"]).float().state_dict()
    phase2 = first_weights["phase2"]
    assert phase2.keys() == last.keys()
    assert all(torch.equal(phase2[k].float(), last[k].float()) for k in last)
    assert not all(torch.equal(first_weights["phase1"][k].float(), last[k].float()) for k in last)  # phase 1 did train


def test_phase2_alone_continues_phase1_of_the_same_name(synthetic, tmp_path):
    train(str(synthetic("coco")), "yolov5n", [1], [1], ["no-augmentation"], "split", project=tmp_path, extra=FAST, **TINY)
    starts = []
    results = train(str(synthetic("coco")), None, [2], [1], ["no-augmentation"], "split", project=tmp_path, extra=FAST,
                    callbacks={"on_pretrain_routine_end": lambda t: starts.append(t.args.model)}, **TINY)
    assert results[0].save_dir == tmp_path / "split" / "phase2"
    assert starts == [str(tmp_path / "split" / "phase1" / "weights" / "last.pt")]
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(str(synthetic("coco")), None, [2], [1], [None], "split", project=tmp_path, **TINY)
    again = train(str(synthetic("coco")), "yolov5n", [1], [1], ["no-augmentation"], "split", project=tmp_path, extra=FAST, **TINY)
    assert again[0].save_dir == tmp_path / "split2" / "phase1"  # an earlier run is never overwritten


class Interrupted(Exception):
    pass


def test_interrupted_phase_resumes_from_its_last_checkpoint(synthetic, tmp_path):
    def stop_mid_second_epoch(trainer):
        if trainer.epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(str(synthetic("coco")), "yolov5n", [1], [2], ["no-augmentation"], "resumable", project=tmp_path,
              extra=FAST, callbacks={"on_train_batch_end": stop_mid_second_epoch}, **TINY)
    last = tmp_path / "resumable" / "phase1" / "weights" / "last.pt"
    assert torch_safe_load(last, safe_only=True)[0]["epoch"] == 0  # epoch 1 of 2 saved

    started = []
    results = train(str(synthetic("coco")), None, [1], [2], [None], "resumable", project=tmp_path, resume=True,
                    callbacks={"on_train_epoch_start": lambda t: started.append(t.epoch)}, **TINY)
    assert started == [1] and results[0].save_dir == tmp_path / "resumable" / "phase1"
    assert torch_safe_load(last, safe_only=True)[0]["epoch"] == -1  # finished
    assert len((results[0].save_dir / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_transferred_model_trains(synthetic, tmp_path):
    path = tmp_path / "yolov5n.pt"
    fake_yolov5_checkpoint(path)
    trained = []
    results = train(str(synthetic("voc")), str(path), [1], [1], ["no-augmentation"], "transfer", project=tmp_path,
                    extra=FAST, callbacks={"on_train_epoch_end": lambda t: trained.append(sum(float(v) for v in t.tloss.values()))}, **TINY)
    assert results[0].transferred is not None and results[0].transferred[0] > 300
    from wbc.model_card import checkpoint_summary, initial_weights

    summary = checkpoint_summary(results[0].best)  # the card of this run names the checkpoint its weights came from
    assert initial_weights(summary["args"], summary["run"]).startswith(f"yolov5n.pt (original YOLOv5 checkpoint; {results[0].transferred[0]} of")
    assert trained and all(torch.isfinite(torch.tensor(trained)))


def test_field_type_accuracy_counts_each_field_once(synthetic, tmp_path):
    from wbc.canonical import prepare
    from wbc.evaluation.detection import validate
    from wbc.field_accuracy import NO_WBC, field_accuracy_of_predictions

    results = train(str(synthetic("yolo_csv")), "yolov5n", [1], [1], ["no-augmentation"], "fields", project=tmp_path, extra=FAST, **TINY)
    canonical = prepare(synthetic("yolo_csv"))
    _, predictions = validate(results[0].best, canonical, "val", 64, 4, 0.7, "cpu", tmp_path / "val", plots=False)
    result = field_accuracy_of_predictions(canonical, "val", predictions)
    assert result["fields"] == 6 and sum(sum(c.values()) for c in result["confusion"].values()) == 6
    assert set(result["confusion"]) == {"LY", "MO", "NE"}
    assert 0 <= result["accuracy"] <= 1 and result["no_wbc_detected"] == sum(c.get(NO_WBC, 0) for c in result["confusion"].values())
    # the field's best WBC-type guess wins; a field without any WBC-type detection is counted, not dropped
    image = canonical.fields().query("split == 'val'")["image"].iloc[0]
    records = [{"file_name": image, "category_id": canonical.spec.names.index(c) + 1, "score": s} for c, s in (("MO", 0.3), ("LY", 0.6))]
    hand = field_accuracy_of_predictions(canonical, "val", records)
    assert hand["no_wbc_detected"] == 5 and sum(c.get("LY", 0) for c in hand["confusion"].values()) == 1


def test_train_py_gives_each_phase_its_own_epochs_and_hyp():
    from train import per_phase

    assert per_phase([100, 200], [1, 2], "--epochs") == [100, 200]
    assert per_phase([100, 200], [2], "--epochs") == [200]
    assert per_phase([5], [1, 2], "--epochs") == [5, 5]
    assert per_phase(None, [1, 2], "--hyp") == [None, None]
    with pytest.raises(UsageError, match="--epochs"):
        per_phase([1, 2, 3], [1, 2], "--epochs")


def test_train_py_end_to_end_with_attribute_head(synthetic, tmp_path, monkeypatch, capsys):
    import train as train_py
    from wbc.attributes.head import AttributeHead

    monkeypatch.setenv("WBC_RUNS", str(tmp_path / "runs"))
    train_py.main(["--data", str(synthetic("coco")), "--cfg", "yolov5n", "--imgsz", "64", "--batch", "4", "--epochs", "1",
                   "--hyp", "no-augmentation", "--workers", "0", "--name", "cli", "--attribute-epochs", "1"])
    out = capsys.readouterr().out
    best = tmp_path / "runs" / "train" / "cli" / "phase1" / "weights" / "best.pt"
    assert "phase  epochs" in out and str(best) in out and "attribute head" in out
    head = AttributeHead.load(best.with_name("best.attributes.pt"))
    assert [a["name"] for a in head.config.attributes] == ["cell_size", "nucleus_lobes", "cytoplasm_colour", "vacuoles"]


class Payload:
    """Stands for any class a malicious checkpoint could ask the unpickler to build."""


def test_yolov5_reader_refuses_foreign_classes(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save({"model": Payload(), "epoch": -1}, path)
    with pytest.raises(ValueError, match="refusing to load it"):
        wts.load_yolov5_original(path)


def test_cli_reports_user_errors_in_one_line(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    bad = tmp_path / "bad.yaml"
    bad.write_text("path: x\nformat: voc\ntrain: a\nval: b\nnames: [A]\nnoise: 1\n")
    for args in (["--data", str(bad)], ["--weights", "yolov8x.pt"], ["--cfg", "yolov5n", "--hyp", "nonexistent"], []):
        proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr


def test_model_card_names_what_a_run_started_from():
    from wbc.model_card import initial_weights
    from wbc.paths import REPO_ROOT

    assert initial_weights({"model": str(REPO_ROOT / "weights" / "previous.pt"), "pretrained": True}) == "weights/previous.pt"  # a fine-tune
    assert initial_weights({"model": "models/yolov5n.yaml", "pretrained": "/w/yolov5nu.pt"}) == "/w/yolov5nu.pt"
    assert initial_weights({"model": "models/yolov5n.yaml", "pretrained": False}, None) == "none recorded: built from yolov5n.yaml"


def test_trainer_state_survives_the_multi_gpu_launch_pickle():
    """ultralytics' DDP launch pickles type(trainer) with cloudpickle and rebuilds the trainer from its args:
    the joint head's config and the weights to transfer must travel with the class."""
    import pickle

    import cloudpickle

    from wbc.attributes.head import HeadConfig
    from wbc.attributes.joint import AttributeTrainer
    from wbc.training import carrying

    config = HeadConfig.from_yaml()
    rebuilt = pickle.loads(cloudpickle.dumps(carrying(AttributeTrainer, head_config=config, attribute_weight=10.0, yolov5_source="v5.pt")))
    assert issubclass(rebuilt, AttributeTrainer) and rebuilt.attribute_weight == 10.0 and rebuilt.yolov5_source == "v5.pt"
    assert rebuilt.head_config == config
