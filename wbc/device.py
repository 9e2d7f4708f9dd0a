"""One reading of a user's device string for the steps that run on a single device.

ultralytics (train.py's detector phases) takes ``cpu``, ``0``, ``0,1`` or ``cuda:0``; ``torch.device``
takes ``cpu`` and ``cuda:0`` but not ``0``. The attribute head, the crop classifier and inference
read the string here, so ``--device 0`` means the same everywhere.
"""

from __future__ import annotations

import torch

from wbc.errors import UsageError


def torch_device(spec: str | torch.device) -> torch.device:
    """``'cpu'``, ``'0'``, ``'cuda:0'``, ``'mps'`` or a torch.device -> torch.device (one device)."""
    if isinstance(spec, torch.device):
        return spec
    text = str(spec).strip().lower()
    if "," in text:
        raise UsageError(f"device {spec!r}: this step runs on one device; give one, e.g. '0'")
    if text.isdigit():
        text = f"cuda:{text}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"device {spec!r} is not a device: use cpu, 0, cuda:0 or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r}: CUDA is not available on this machine; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {spec!r}: MPS is not available on this machine; use --device cpu")
    return device
