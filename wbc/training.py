"""Two-phase detector training on ultralytics (AttriDet's recipe, without forking the loop).

Phase 1 starts from the given weights (COCO backbone, a checkpoint or a model config); phase 2
starts from phase 1's ``last.pt`` with its own hyperparameters. Each phase is an ordinary
ultralytics run under ``runs/train/<name>/phase1|phase2/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.nn.tasks import torch_safe_load
from ultralytics.utils import LOGGER

from wbc import weights as wts
from wbc.attributes.head import HeadConfig
from wbc.canonical import prepare
from wbc.errors import UsageError
from wbc.hyp import load_hyp
from wbc.offline import guard_downloads
from wbc.paths import new_run_dir, run_dir_of, runs_root

guard_downloads()

DEFAULT_HYPS = {1: "scratch-low", 2: "scratch-high"}
TRANSFER_RECORD = "transfer.json"  # in a phase directory: the original YOLOv5 checkpoint its weights came from


class WBCDetectionTrainer(DetectionTrainer):
    """DetectionTrainer that can start from an original YOLOv5-repository checkpoint."""

    yolov5_source: str | None = None  # path of an original YOLOv5 checkpoint to transfer from
    transferred: tuple[int, int] | None = None

    def get_model(self, cfg=None, weights=None, verbose=True):
        model = super().get_model(cfg, weights, verbose)
        if weights is None and self.yolov5_source:
            self.transferred = wts.transfer(model, wts.load_yolov5_original(self.yolov5_source))
            LOGGER.info(f"Transferred {self.transferred[0]}/{self.transferred[1]} tensors from {self.yolov5_source} "
                        f"(the anchor-based YOLOv5 head does not transfer)")
            record = {"source": str(self.yolov5_source), "tensors": list(self.transferred)}
            (Path(self.save_dir) / TRANSFER_RECORD).write_text(json.dumps(record))  # the model card reads it
        return model


class MultiSourceTrainer(WBCDetectionTrainer):
    """Training on a merged dataset (wbc/formats/merge.py): boxes of a label set ("some WBC type")
    teach through the partial-label loss (wbc/partial_labels.py), and every field reaches the network
    at one scale (wbc/rescale.py): each origin's fields are resized by the reference origin's median
    red-cell diameter over their own (:func:`training_scale`). The scale record goes to
    ``<phase dir>/scale.json`` for the model card. Validation during training
    scores typed boxes only (a set-labelled box has no class to score)."""

    SCALE_RECORD = "scale.json"
    colour_norm: bool = False  # hyp key colour_norm: train (and validate) on fields in the reference colours (wbc/colour.py)

    def get_dataset(self):
        data = super().get_dataset()
        self.label_names = [data["names"][i] for i in range(len(data["names"]))]
        self.label_sets = data.get("label_sets") or {}
        nc = len(self.label_names) - len(self.label_sets)
        data["names"], data["nc"] = {i: n for i, n in enumerate(self.label_names[:nc])}, nc
        self.scale = training_scale(Path(data["path"]), data.get("training_scale"))
        return data

    def build_dataset(self, img_path, mode="train", batch=None):
        from ultralytics.utils.torch_utils import unwrap_model

        from wbc.rescale import fit_factor, scaled_dataset

        from wbc.colour import ColourReference

        gs = max(int(unwrap_model(self.model).stride.max()), 32) if self.model else 32
        colour = ColourReference.from_card(self.scale) if self.colour_norm else None
        return scaled_dataset(self.args, img_path, batch, self.data, mode, gs, self.scale["factors"],
                              fit_factor(self.args.imgsz, self.scale["field_size"]), self.label_names,
                              None if mode == "train" else list(range(self.data["nc"])), colour=colour)

    def _setup_train(self):
        from ultralytics.utils.torch_utils import unwrap_model

        from wbc.partial_labels import PartialLabelDetectionLoss, set_matrix

        super()._setup_train()
        record = {**{k: v for k, v in self.scale.items() if k != "factors"}, "trained_in_reference_colours": self.colour_norm}
        (Path(self.save_dir) / self.SCALE_RECORD).write_text(json.dumps(record, indent=1))
        if self.label_sets:  # after the EMA copy, as the joint trainer does: checkpoints hold no criterion
            model = unwrap_model(self.model)
            model.criterion = PartialLabelDetectionLoss(model, set_matrix(self.label_sets, list(self.data["names"].values())))

    def plot_training_labels(self):
        """Skipped: ultralytics' label plot indexes class names by label id, and label-set ids have none."""


def training_scale(canonical_root: Path, given: dict | None = None) -> dict:
    """The reference scale of a canonical dataset's train fields: {reference origin (the one with
    most train fields), its red-cell diameter (px) and field size (px), the diameter per origin, and
    the resize factor per image file name}. Diameters are what inference resizes fields by
    (:func:`wbc.rescale.origin_rbc_diameters`), so that training and inference agree; an origin
    without any estimate keeps its size (factor 1, logged). ``given`` ({rbc_diameter_px, field_size},
    the dataset yaml's ``training_scale``): that scale instead of the reference origin's, e.g. the
    base model's when fine-tuning on a lab's own fields."""
    import pandas as pd

    from wbc.colour import reference_of
    from wbc.rescale import origin_rbc_diameters, reference_origin

    fields = pd.read_csv(canonical_root / "fields.csv", keep_default_na=False)
    diameters = origin_rbc_diameters(canonical_root)
    train = fields[fields["split"] == "train"]
    reference = origin = reference_origin(fields)
    ref = train[train["origin"] == reference]
    d_ref = diameters.get(reference)
    if given:
        reference, d_ref = "given", given["rbc_diameter_px"]
    factors = {img: d_ref / diameters[o] if d_ref and o in diameters else 1.0 for img, o in zip(fields["image"], fields["origin"])}
    missing = sorted(set(fields["origin"]) - set(diameters))
    LOGGER.info(f"scale: reference {reference} (red cells {d_ref or float('nan'):.1f} px); resize " +
                ", ".join(f"{o} x{d_ref / d:.2f}" for o, d in sorted(diameters.items()) if d_ref) +
                (f"; no estimate, kept as they are: {missing}" if missing else ""))
    field_size = given["field_size"] if given else int(np.median(np.maximum(ref["width"], ref["height"])))
    colours = reference_of(canonical_root, origin).to_card()  # the reference origin's own colours (wbc.colour), even with a given scale
    return {"reference_origin": reference, "train_rbc_diameter_px": d_ref, "field_size": field_size,
            "origin_rbc_diameter_px": diameters, "factors": factors, "colour_reference": colours}


@dataclass
class PhaseResult:
    phase: int
    save_dir: Path
    epochs: int
    wall_s: float
    metrics: dict = field(default_factory=dict)
    transferred: tuple[int, int] | None = None

    @property
    def last(self) -> Path:
        return self.save_dir / "weights" / "last.pt"

    @property
    def best(self) -> Path:
        return self.save_dir / "weights" / "best.pt"


def checkpoint_finished(path: Path) -> bool:
    """True when an ultralytics checkpoint is final (its epoch is -1 after the last epoch)."""
    ckpt, _ = torch_safe_load(path, safe_only=True)  # torch.load(weights_only=True) with ultralytics' allow-list
    return ckpt.get("epoch", -1) == -1


def run_phase(phase: int, data_yaml: Path, init: str, run_dir: Path, epochs: int, hyp: str | None = None,
              imgsz: int = 640, batch: int = 8, device: str = "cpu", resume: bool = False, workers: int = 2,
              cfg: str | None = None, extra: dict | None = None, callbacks: dict | None = None,
              joint_head: HeadConfig | Path | None = None) -> PhaseResult:
    """Train one phase from ``init`` (weights or a model config); ``cfg`` optionally names the
    architecture the weights are transferred into. ``resume`` continues the phase's own last.pt.
    ``joint_head``: train this attribute head (a config, or a saved head to start from) together with
    the detector (wbc.attributes.joint); the hyp key ``attribute`` weighs its loss."""
    save_dir = run_dir / f"phase{phase}"
    hyp_args, own = load_hyp(hyp or DEFAULT_HYPS[phase])
    if resume:
        overrides = {"model": str(save_dir / "weights" / "last.pt"), "resume": str(save_dir / "weights" / "last.pt"),
                     "data": str(data_yaml), "device": device, "workers": workers}
        source = None
    else:
        kind, path = wts.resolve(init)
        source = path if kind == "yolov5" else None
        if kind == "yolov5":
            model = wts.model_config(cfg or infer_config_for(path))
        elif kind == "ultralytics" and cfg:
            model = wts.model_config(cfg)
        else:
            model = path
        overrides = {"model": model, "data": str(data_yaml), "epochs": epochs, "imgsz": imgsz, "batch": batch,
                     "device": device, "workers": workers, "project": str(run_dir), "name": save_dir.name,
                     "exist_ok": True, "pretrained": path if kind == "ultralytics" and cfg else kind == "ultralytics",
                     "optimizer": "SGD", **hyp_args, **(extra or {})}  # SGD as in YOLOv5 (ultralytics' 'auto' would override lr0)
    declared = yaml.safe_load(Path(data_yaml).read_text())
    multisource = "label_sets" in declared or "training_scale" in declared  # MultiSourceTrainer: label sets, one scale
    if joint_head is not None:
        if multisource:
            raise UsageError("joint attribute training on a merged dataset is not supported: train the head frozen afterwards")
        from wbc.attributes.joint import AttributeTrainer

        trainer = carrying(AttributeTrainer, head_config=joint_head, attribute_weight=float(own.get("attribute", 1.0)),
                           yolov5_source=source)(overrides=overrides)
    else:
        if own.get("colour_norm") and not multisource:
            raise UsageError(f"hyp colour_norm: training in the reference colours needs a merged dataset yaml (label_sets or "
                             f"training_scale), not {data_yaml}")
        state = {"colour_norm": bool(own.get("colour_norm"))} if multisource else {}
        trainer = carrying(MultiSourceTrainer if multisource else WBCDetectionTrainer, yolov5_source=source, **state)(overrides=overrides)
    for event, fn in (callbacks or {}).items():
        trainer.add_callback(event, fn)
    start = time.time()
    trainer.train()
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items()}
    return PhaseResult(phase, Path(trainer.save_dir), trainer.epochs, time.time() - start, metrics, trainer.transferred)


def carrying(cls: type, **state) -> type:
    """A subclass of ``cls`` holding ``state`` as class attributes. ultralytics' multi-GPU launch
    (``utils/dist.py``) pickles the trainer's *class* with cloudpickle and rebuilds the trainer in each
    GPU process from its args alone: state set on the instance (the joint head's config, an original
    YOLOv5 checkpoint to transfer) would not reach them; a class made here is pickled by value, with it."""
    return type(f"{cls.__name__}With", (cls,), {**state, "__module__": __name__, "__qualname__": f"{cls.__name__}With"})


def infer_config_for(yolov5_checkpoint: str) -> str:
    """The v5u config matching an original YOLOv5 checkpoint's scale (``yolov5n.pt`` -> ``yolov5n``)."""
    stem = Path(yolov5_checkpoint).stem
    if wts.SCALE_NAME.match(stem):
        return stem
    model = wts.load_yolov5_original(yolov5_checkpoint)
    yaml_cfg = getattr(model, "yaml", {}) or {}
    depth, width = yaml_cfg.get("depth_multiple"), yaml_cfg.get("width_multiple")
    scales = {(0.33, 0.25): "n", (0.33, 0.5): "s", (0.67, 0.75): "m", (1.0, 1.0): "l", (1.33, 1.25): "x"}
    scale = scales.get((depth, width))
    if scale is None:
        raise ValueError(f"{yolov5_checkpoint}: cannot tell its YOLOv5 scale (depth {depth}, width {width}); pass --cfg")
    return f"yolov5{scale}"


def phase_to_resume(run_dir: Path, phases: list[int]) -> tuple[int, bool] | None:
    """(first phase to run, whether it resumes from its own last.pt) for ``--resume``; None if all finished."""
    for phase in phases:
        last = run_dir / f"phase{phase}" / "weights" / "last.pt"
        if not last.exists():
            return phase, False
        if not checkpoint_finished(last):
            return phase, True
    return None


def train(data: str, weights: str | None, phases: list[int], epochs: list[int], hyps: list[str | None], name: str,
          imgsz: int = 640, batch: int = 8, device: str = "cpu", resume: bool = False, data_root: str | None = None,
          project: Path | None = None, exist_ok: bool = False, workers: int = 2, cfg: str | None = None,
          extra: dict | None = None, callbacks: dict | None = None, joint_head: HeadConfig | Path | None = None) -> list[PhaseResult]:
    """Run the requested phases in order; phase 2 starts from phase 1's last.pt (or ``weights`` when only phase 2 runs).
    ``joint_head``: the last phase trains this attribute head together with the detector."""
    if not resume and weights is None and cfg is None and phases[0] == 1:
        raise UsageError("pass --weights (a checkpoint or an original YOLOv5 .pt) or --cfg (e.g. yolov5n) to start phase 1")
    run_dir_of(name, project or runs_root() / "train")  # fail on bad arguments before any data is read
    for phase, hyp in zip(phases, hyps):
        load_hyp(hyp or DEFAULT_HYPS[phase])
    if weights and not resume:
        wts.resolve(weights)
    if cfg:
        wts.model_config(cfg)
    canonical = prepare(data, data_root)
    project = project or runs_root() / "train"
    continues_phase1 = phases == [2] and weights is None and not resume  # phase 2 of an earlier phase-1 run
    run_dir = run_dir_of(name, project) if (resume or exist_ok or continues_phase1) else new_run_dir(name, project)
    if continues_phase1:
        if not (run_dir / "phase1" / "weights" / "last.pt").is_file():
            raise FileNotFoundError(f"{run_dir / 'phase1' / 'weights' / 'last.pt'} not found: phase 2 without --weights "
                                    f"continues phase 1 of the same --name")
        if (run_dir / "phase2").exists() and not exist_ok:
            raise FileExistsError(f"{run_dir / 'phase2'} exists; pass --resume to continue it or --exist-ok to overwrite it")
    start_phase, resume_first = phases[0], False
    if resume:
        todo = phase_to_resume(run_dir, phases)
        if todo is None:
            LOGGER.info(f"{run_dir}: every requested phase has finished; nothing to resume")
            return []
        start_phase, resume_first = todo
    results = []
    for phase, n_epochs, hyp in zip(phases, epochs, hyps):
        if phase < start_phase:
            continue
        resuming = resume_first and phase == start_phase
        if resuming:
            init = None
        elif phase == 2 and (1 in phases or weights is None):
            init = str(run_dir / "phase1" / "weights" / "last.pt")  # this run's (or the same run name's) phase 1
        else:
            init = weights or cfg
        results.append(run_phase(phase, canonical.data_yaml, init, run_dir, n_epochs, hyp, imgsz, batch, device,
                                 resume=resuming, workers=workers, cfg=cfg if phase == phases[0] else None,
                                 extra=extra, callbacks=callbacks, joint_head=joint_head if phase == phases[-1] else None))
    return results
