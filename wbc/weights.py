"""Finding and reading detector weights without ever downloading.

Accepted:
    * a model yaml or a scale name (``yolov5n`` .. ``yolov5x``, ``models/yolov5s.yaml``): built from scratch;
    * an ultralytics checkpoint (``last.pt`` / ``best.pt`` of a run, ``yolov5xu.pt`` brought by the user);
    * an original YOLOv5-repository checkpoint (``yolov5n.pt`` from ../shared/weights, AttriDet's
      ``yolov5x.pt``): read with stand-in classes, and every tensor whose name and shape match is
      copied into the v5u model (backbone and neck; the anchor-based head does not transfer).
"""

from __future__ import annotations

import importlib
import re
import zipfile
from pathlib import Path

import torch
from torch import nn

from wbc.paths import REPO_ROOT, weights_root

SCALE_NAME = re.compile(r"^yolov5[nsmlx]u?$")


class WeightsNotFound(FileNotFoundError):
    pass


def _missing(path: str) -> WeightsNotFound:
    local = sorted(p.name for p in weights_root().glob("*.pt")) if weights_root().is_dir() else []
    return WeightsNotFound(
        f"weights {path!r} not found, and nothing is downloaded here. Pass a local file: an ultralytics "
        f"checkpoint, an original YOLOv5 checkpoint (local: {', '.join(str(weights_root() / n) for n in local) or 'none in ' + str(weights_root())}), "
        f"or a model config such as 'yolov5n' / models/yolov5n.yaml to start from scratch."
    )


def model_config(name: str) -> str:
    """'yolov5n', 'yolov5nu', 'yolov5n.yaml' or a yaml path -> a yaml path ultralytics can build."""
    stem = Path(name).stem
    if SCALE_NAME.match(stem) and not Path(name).is_file():
        return str(REPO_ROOT / "models" / f"{stem.rstrip('u')}.yaml")  # resolved to models/yolov5.yaml, scale from the name
    if not Path(name).is_file():
        raise _missing(name)
    return str(Path(name).resolve())


def _stand_in(module: str, name: str) -> type:
    """An nn.Module subclass named like the yolov5 class, so that its pickled state loads as a module tree."""
    return type(name, (nn.Module,), {"__module__": module, "forward": lambda self, *a: None})


def is_yolov5_original(path: str | Path) -> bool:
    """True for checkpoints pickled by the yolov5 repository (their model class lives in ``models.yolo``)."""
    try:
        with zipfile.ZipFile(path) as z:
            data = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
            return data is not None and b"models.yolo" in z.read(data)
    except zipfile.BadZipFile:
        return False


def load_yolov5_original(path: str | Path) -> nn.Module:
    """The model of an original YOLOv5 checkpoint as a module tree of stand-ins (state_dict works).

    Loads with ``torch.load(weights_only=True)``: the yolov5 repository's ``models.*`` / ``utils.*``
    classes are allowed as stand-ins, torch's own layers as themselves, and anything else the file
    refers to is refused, so no code from the checkpoint runs.
    """
    allowed = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        module, _, cls = name.rpartition(".")
        if module.split(".")[0] in ("models", "utils"):
            allowed.append((_stand_in(module, cls), name))
        elif module.startswith("torch.nn.modules"):
            allowed.append(getattr(importlib.import_module(module), cls))
        else:
            raise ValueError(f"{path}: refers to {name!r}, which an original YOLOv5 checkpoint does not; refusing to load it")
    with torch.serialization.safe_globals(allowed):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = ckpt.get("ema") or ckpt["model"]
    return model.float()


def transfer(model: nn.Module, source: nn.Module | dict) -> tuple[int, int]:
    """Copy every tensor of ``source`` whose name and shape match into ``model``.

    Returns (tensors transferred, tensors in the source).
    """
    source_sd = source if isinstance(source, dict) else source.state_dict()
    target_sd = model.state_dict()
    matched = {k: v for k, v in source_sd.items() if k in target_sd and target_sd[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    return len(matched), len(source_sd)


def resolve(weights: str) -> tuple[str, str]:
    """Classify a --weights / --cfg argument. Returns (kind, path) with kind one of
    'config' (build from scratch), 'ultralytics' (checkpoint), 'yolov5' (original repository checkpoint)."""
    path = Path(weights)
    if path.suffix in (".yaml", ".yml") or (SCALE_NAME.match(path.stem) and not path.is_file() and path.suffix == ""):
        return "config", model_config(weights)
    if not path.is_file():
        raise _missing(weights)
    if not zipfile.is_zipfile(path):  # every torch checkpoint since torch 1.6 is a zip archive
        from wbc.errors import UsageError

        raise UsageError(f"--weights {weights}: not a torch checkpoint ({path.stat().st_size} bytes that are not a .pt archive: "
                         f"truncated, or another kind of file)")
    return ("yolov5" if is_yolov5_original(path) else "ultralytics"), str(path.resolve())


def load_yolo(weights: str | Path):
    """An ultralytics YOLO of a trained detector checkpoint, for predict / test / export. Anything
    else ends in one line naming the file: missing, a model config (nothing trained), an original
    YOLOv5-repository checkpoint (no WBC classes; train.py starts from it), or a file torch cannot read."""
    from ultralytics import YOLO

    from wbc.errors import UsageError
    from wbc.paths import DEFAULT_WEIGHTS

    kind, path = resolve(str(weights))
    if kind == "config":
        raise UsageError(f"--weights {weights}: a model config, not a trained detector; pass a checkpoint such as {DEFAULT_WEIGHTS}")
    if kind == "yolov5":
        raise UsageError(f"--weights {weights}: an original YOLOv5-repository checkpoint (COCO classes, not WBC types); "
                         f"train.py --weights starts from it, predict and test need a trained detector such as {DEFAULT_WEIGHTS}")
    try:
        yolo = YOLO(path, task="detect")
    except Exception as e:  # noqa: BLE001 -- torch and ultralytics raise many kinds for a file that is not a checkpoint
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--weights {weights}: not a readable detector checkpoint ({type(e).__name__}: {reason[:160]}); "
                         f"expected an ultralytics .pt such as {DEFAULT_WEIGHTS}") from None
    if getattr(yolo, "task", "detect") != "detect" or not getattr(yolo, "names", None):
        raise UsageError(f"--weights {weights}: a {yolo.task} model without detection classes; expected a detector such as {DEFAULT_WEIGHTS}")
    return yolo


def read_checkpoint(path: str | Path, what: str, keys: tuple[str, ...] = ()) -> dict:
    """``torch.load(path, weights_only=True)`` of one of the project's own files (``what``: 'attribute head',
    'review model', 'cell classifier' ...), or one line naming the file: missing, not a checkpoint, holding
    objects a weights-only load refuses, or without the ``keys`` that kind of file has."""
    from wbc.errors import UsageError

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such {what} file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises RuntimeError, UnpicklingError, EOFError ... for a bad file
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UsageError(f"{path}: not a readable {what} file ({type(e).__name__}: {reason[:160]})") from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UsageError(f"{path}: not a {what} file (no {', '.join(repr(k) for k in missing)} in it)")
    return ckpt
