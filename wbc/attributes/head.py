"""The attribute head: RoIAlign on detector feature maps -> small conv stack -> one categorical
distribution per attribute.

Boxes are ``(K, 5)`` tensors ``[batch_index, x1, y1, x2, y2]`` in pixels of the network input
(after letterboxing); each feature map's scale is read from its size, so any input size works.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from wbc.paths import REPO_ROOT
from wbc.weights import read_checkpoint


@dataclass
class HeadConfig:
    layers: list[int]
    roi_size: int = 7
    hidden: int = 128
    dropout: float = 0.1
    members: int | list[list[int]] = 1  # branches whose probabilities are averaged: a count (each pools every layer) or each one's layers
    box_size: bool = False  # also feed log(box width, height / input size) to the MLP (RoIAlign alone is blind to size)
    in_channels: list[int] = field(default_factory=list)  # filled from the detector
    attributes: list[dict] = field(default_factory=list)  # [{name, values}] of the attributes it predicts
    imgsz: int = 640  # input size it was trained at
    classes: list[str] | None = None  # detector classes the attributes describe (None: every class); others get none

    @classmethod
    def from_yaml(cls, path: str | Path | None = None) -> "HeadConfig":
        path = Path(path) if path else REPO_ROOT / "attribute_head" / "default.yaml"
        raw = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(raw) - {"layers", "roi_size", "hidden", "dropout", "members", "box_size"})
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}")
        return cls(**raw)

    @property
    def member_layers(self) -> list[list[int]]:
        """The layers each member pools (a subset of ``layers``)."""
        if isinstance(self.members, int):
            if self.members < 1:
                raise ValueError(f"head members must be >= 1, got {self.members}")
            return [list(self.layers)] * self.members
        if not self.members or any(not m or set(m) - set(self.layers) for m in self.members):
            raise ValueError(f"head members {self.members}: each must be a non-empty subset of layers {self.layers}")
        return [list(m) for m in self.members]

    @property
    def value_counts(self) -> list[int]:
        return [len(a["values"]) for a in self.attributes]


class _Branch(nn.Module):
    """One member of the head: a 1x1 + 3x3 conv stack on the pooled maps, average pooling, an MLP."""

    def __init__(self, config: HeadConfig, in_channels: int):
        super().__init__()
        c = config.hidden
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, c, 1, bias=False), nn.BatchNorm2d(c), nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.SiLU(),
        )
        extra = 2 if config.box_size else 0
        self.classify = nn.Sequential(nn.Flatten(), nn.Dropout(config.dropout), nn.Linear(c + extra, c), nn.SiLU(), nn.Linear(c, sum(config.value_counts)))

    def forward(self, pooled: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.reduce(pooled), 1).flatten(1)
        return self.classify(x if size is None else torch.cat([x, size], 1))


class AttributeHead(nn.Module):
    """RoIAlign once per tapped layer, then one branch per member on the layers it pools; with more
    than one member the head's output is the log of their mean probabilities (an ensemble in one
    module: the pooled features are shared, so a member costs only its small conv stack and MLP)."""

    def __init__(self, config: HeadConfig):
        super().__init__()
        if not config.in_channels or not config.attributes:
            raise ValueError("HeadConfig needs in_channels (from the detector) and attributes (from the dataset)")
        self.config = config
        channels = dict(zip(config.layers, config.in_channels))
        self.levels = [[config.layers.index(layer) for layer in member] for member in config.member_layers]
        self.branches = nn.ModuleList(_Branch(config, sum(channels[layer] for layer in member)) for member in config.member_layers)

    def member_logits(self, features: list[torch.Tensor], boxes: torch.Tensor, input_size: tuple[int, int]) -> list[list[torch.Tensor]]:
        """Per member, one (K, n_values) logit tensor per attribute (arguments as ``forward``)."""
        s = self.config.roi_size
        pooled = [roi_align(f, boxes.to(f.dtype), (s, s), spatial_scale=f.shape[-1] / input_size[1], sampling_ratio=2, aligned=True)
                  for f in features]  # each level once, whichever members use it
        size = None
        if self.config.box_size:
            wh = (boxes[:, 3:5] - boxes[:, 1:3]).clamp(min=1.0) / torch.tensor([input_size[1], input_size[0]], device=boxes.device)
            size = wh.log().to(pooled[0].dtype)
        return [list(branch(torch.cat([pooled[i] for i in levels], 1), size).split(self.config.value_counts, dim=1))
                for branch, levels in zip(self.branches, self.levels)]

    def forward(self, features: list[torch.Tensor], boxes: torch.Tensor, input_size: tuple[int, int]) -> list[torch.Tensor]:
        """features: the tapped maps (B, C_i, H_i, W_i); boxes (K, 5); input_size (H, W) of the network input.
        Returns one (K, n_values) logit tensor per attribute (softmax gives the members' mean probability)."""
        members = self.member_logits(features, boxes, input_size)
        if len(members) == 1:
            return members[0]
        log_n = math.log(len(members))
        return [torch.stack([m[a].log_softmax(1) for m in members]).logsumexp(0) - log_n for a in range(len(members[0]))]

    def loss(self, features: list[torch.Tensor], boxes: torch.Tensor, input_size: tuple[int, int], targets: torch.Tensor,
             class_weights: list[torch.Tensor] | None = None, sets: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """Training loss: every member's :func:`attribute_loss`, averaged (members learn independently)."""
        return torch.stack([attribute_loss(m, targets, class_weights, sets)
                            for m in self.member_logits(features, boxes, input_size)]).mean()

    def save(self, path: str | Path) -> None:
        """A self-describing file: plain tensors and plain data, loadable with weights_only=True."""
        torch.save({"config": asdict(self.config), "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> "AttributeHead":
        ckpt = read_checkpoint(path, "attribute head", ("config", "state_dict"))
        head = cls(HeadConfig(**ckpt["config"]))
        state = ckpt["state_dict"]
        if not any(k.startswith("branches.") for k in state):  # a single-branch head saved before members existed
            state = {f"branches.0.{k}": v for k, v in state.items()}
        head.load_state_dict(state)
        return head.eval()


def attribute_classes(spec) -> list[str] | None:
    """The classes any used attribute of a DatasetSpec applies to (None if one applies to every class)."""
    used = spec.used_attributes
    if not used or any(a.applies_to is None for a in used):
        return None
    return [c for c in spec.names if any(c in a.applies_to for a in used)]


def head_path_for(detector_weights: str | Path) -> Path:
    """Where the head of a detector checkpoint lives: ``best.pt`` -> ``best.attributes.pt``."""
    p = Path(detector_weights)
    return p.with_name(p.stem + ".attributes.pt")


def attribute_loss(logits: list[torch.Tensor], targets: torch.Tensor, class_weights: list[torch.Tensor] | None = None,
                   sets: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Mean over attributes of the cross-entropy on boxes whose value is known.

    targets: (K, A) codes; negative codes (unknown / not applicable) are masked out. An attribute
    with no known value in the batch adds nothing. class_weights: optional per-attribute value weights.
    sets: optional per attribute an (S, n_values) membership matrix of label sets: a code ``n_values + j``
    says "one of set j's values" and adds -log of their summed probability (the partial-label loss
    of wbc/partial_labels.py, for one box), weight 1 beside the weighted single values.
    """
    terms = []
    for a, out in enumerate(logits):
        n, t = out.shape[1], targets[:, a]
        known, grouped = (t >= 0) & (t < n), t >= n
        if not (known.any() or grouped.any()):
            continue
        n_sets = 0 if sets is None or sets[a] is None else len(sets[a])
        if grouped.any() and int(t.max()) >= n + n_sets:
            raise ValueError(f"attribute {a}: codes up to {int(t.max())} for {n} values and {n_sets} label sets")
        logp = out.float().log_softmax(1)
        # a single value is the set of that value alone: -log of the summed probability of the accepted values
        accepted = F.one_hot(t[known], n).bool()
        if grouped.any():
            accepted = torch.cat([accepted, sets[a].to(out.device)[t[grouped] - n] > 0])
        nll = -torch.where(accepted, torch.cat([logp[known], logp[grouped]]), -torch.inf).logsumexp(1)
        w = torch.ones_like(nll)
        if class_weights is not None:  # on single values, as cross_entropy's weight; a set box weighs 1
            w[:int(known.sum())] = class_weights[a].to(out.device)[t[known]]
        terms.append((nll * w).sum() / w.sum())
    return torch.stack(terms).mean() if terms else logits[0].sum() * 0.0


def probe_channels(detector: nn.Module, tap: "FeatureTap", imgsz: int) -> list[int]:
    """Channels of each tapped layer, from one forward pass of a blank ``imgsz`` image (eval mode,
    no gradients; the detector's train/eval mode is restored). ``tap.features`` then hold (1, C, H, W) maps."""
    was_training = detector.training
    device = next(detector.parameters()).device
    with torch.no_grad():
        detector.eval()(torch.zeros(1, 3, imgsz, imgsz, device=device))
    detector.train(was_training)
    return [f.shape[1] for f in tap.features]


def layer_channels(detector: nn.Module, layers: list[int], imgsz: int) -> list[int]:
    """Channels of the given layers' outputs (:func:`probe_channels` through a tap used only for it)."""
    tap = FeatureTap(detector, layers)
    try:
        return probe_channels(detector, tap, imgsz)
    finally:
        tap.remove()


class FeatureTap:
    """Keeps the outputs of chosen detector layers from the last forward pass (forward hooks)."""

    def __init__(self, detector: nn.Module, layers: list[int]):
        self.layers, self.outputs = layers, {}
        modules = detector.model
        self.handles = [modules[i].register_forward_hook(self._keep(i)) for i in layers]

    def _keep(self, index: int):
        def hook(module, inputs, output):
            self.outputs[index] = output
        return hook

    @property
    def features(self) -> list[torch.Tensor]:
        return [self.outputs[i] for i in self.layers]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
