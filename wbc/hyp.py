"""YOLOv5 hyperparameter yamls (``hyps/``) -> ultralytics training arguments, in one place."""

from __future__ import annotations

from pathlib import Path

import yaml

from wbc.paths import REPO_ROOT

# Same name, same meaning in ultralytics.
SAME = {
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
}
# YOLOv5's loss gains, rescaled so that YOLOv5's defaults land on ultralytics' defaults
# (v5 box 0.05 -> v8 box 7.5; cls 0.5 -> 0.5): the anchor-free loss sums differently.
SCALED = {"box": 7.5 / 0.05, "cls": 0.5 / 0.5}
# Terms of the anchor-based YOLOv5 loss that the anchor-free v5u head has no counterpart for.
ANCHOR_ONLY = {"cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma", "anchors"}
# This project's own keys, passed through unchanged: attribute (the joint head's loss weight), colour_norm (1: train on
# fields in the reference origin's colours, wbc/colour.py, as inference sees them).
OWN = {"attribute", "colour_norm"}
# Keys this project turns into ultralytics arguments of its own: stain -> augmentations (wbc/stain.py).
AUGMENT = {"stain"}


class HypError(ValueError):
    pass


def resolve_hyp(name: str | Path) -> Path:
    """'scratch-low', 'hyp.scratch-low.yaml' or a path -> an existing hyp yaml."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (REPO_ROOT / "hyps" / path.name, REPO_ROOT / "hyps" / f"hyp.{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise HypError(f"hyp file {str(name)!r} not found; shipped: {sorted(p.name for p in (REPO_ROOT / 'hyps').glob('*.yaml'))}")


def load_hyp(name: str | Path) -> tuple[dict, dict]:
    """Read a YOLOv5-style hyp yaml. Returns (ultralytics train arguments, project-own keys).

    Unknown keys are an error naming the key; anchor-only keys are accepted and ignored.
    """
    path = resolve_hyp(name)
    hyp = yaml.safe_load(path.read_text()) or {}
    if not isinstance(hyp, dict):
        raise HypError(f"{path}: a hyp file must be a mapping")
    args, own = {}, {}
    for key, value in hyp.items():
        if key in SAME:
            args[key] = float(value)
        elif key in SCALED:
            args[key] = float(value) * SCALED[key]
        elif key in OWN:
            own[key] = value
        elif key == "stain":
            from wbc.stain import stain_augmentations

            args["augmentations"] = stain_augmentations(float(value))
        elif key not in ANCHOR_ONLY:
            raise HypError(f"{path}: unknown hyperparameter {key!r}; known: {sorted(SAME | set(SCALED) | ANCHOR_ONLY | OWN | AUGMENT)}")
    return args, own
