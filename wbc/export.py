"""ONNX export of the detector (with the feature maps its heads and the review model pool, so that one
network pass still serves all) and of the heads, and an onnxruntime analyzer that gives the same cells as
:class:`wbc.inference.WBCAnalyzer`.

    python export.py --weights weights/wbc_multisource_yolov5n_352.pt

writes ``<stem>.onnx`` (input ``images`` (B, 3, S, S) RGB in [0, 1]; outputs ``output0`` (B, 4 + nc,
anchors) and ``feature<i>`` per layer a head pools), ``<stem>.attributes.onnx`` (inputs its layers'
feature maps and ``boxes`` (K, 5) = batch index, x1 y1 x2 y2 in input pixels; one logit output per
attribute), ``<stem>.types.onnx`` (the type head beside the weights, the same way; output
``cell_type``), ``<stem>.review.pt`` (a copy of the review model beside the weights; it scores the
detector graph's extra outputs ``branch<i>``, the classification branch's last hidden maps, and the
pooled maps) and ``<stem>.onnx.json`` (classes, input size, attributes, the type head's types and
share, the review model's file).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wbc.attributes.head import FeatureTap
from wbc.colour import ColourReference
from wbc.errors import UsageError
from wbc.inference import WBCAnalyzer
from wbc.review.features import Evidence, embed

OPSET = 17  # RoIAlign with aligned=True needs opset >= 16


class _DetectorWithFeatures(nn.Module):
    """The detector's output, then the maps of ``layers``, then (``branch``) the classification
    branch's last hidden maps at every level, which the review model's evidence reads."""

    def __init__(self, detector: nn.Module, layers: list[int], branch: bool = False):
        super().__init__()
        self.detector = detector
        self.tap = FeatureTap(detector, layers) if layers else None
        self.evidence = Evidence(detector, [], head=True) if branch else None

    @property
    def branch(self) -> list:
        return self.evidence.branch if self.evidence else []

    def forward(self, x):
        out = self.detector(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return (out, *(self.tap.features if self.tap else []), *self.branch)


class _MapEvidence:
    """:class:`wbc.review.features.Evidence` read from the exported graph's outputs of the last pass
    (``maps``: {layer: map}, ``branch``: the classification branch's maps), set by the analyzer."""

    def __init__(self, layers: list[int], roi_size: int, head: bool):
        self.layers, self.roi_size, self.head = list(layers), roi_size, head
        self.maps: dict[int, torch.Tensor] = {}
        self.branch: list[torch.Tensor] = []

    def embed(self, boxes: torch.Tensor, input_size: tuple[int, int], anchors: torch.Tensor | None = None) -> torch.Tensor:
        return embed([self.maps[i] for i in self.layers], self.branch if self.head else None, boxes, input_size, anchors, self.roi_size)


class _Head(nn.Module):
    def __init__(self, head: nn.Module, input_size: tuple[int, int], levels: int):
        super().__init__()
        self.head, self.input_size, self.levels = head, input_size, levels

    def forward(self, *inputs):
        return tuple(self.head(list(inputs[: self.levels]), inputs[self.levels], self.input_size))


def export_onnx(weights: str | Path, out: str | Path | None = None, imgsz: int | None = None, head: str | Path | bool | None = None,
                types: str | Path | bool | None = None, type_share: float | None = None, review: str | Path | bool | None = None) -> dict:
    """Export; returns the paths written. ``out``: path stem (default: next to the weights). ``head``,
    ``types``, ``type_share``, ``review``: as :class:`WBCAnalyzer`'s (None: the heads and review model
    beside the weights, the share the model card records). The review model is copied beside the
    export (``<stem>.review.pt``): it scores the evidence the graph outputs."""
    from ultralytics.nn.modules import Detect
    from ultralytics.utils.export.engine import torch2onnx

    analyzer = WBCAnalyzer(weights, head, imgsz, review=review, types=types, type_share=type_share)
    out = Path(out) if out else Path(weights).with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    s = analyzer.imgsz
    detector = copy.deepcopy(analyzer.detector).eval()
    for m in detector.modules():
        if isinstance(m, Detect):
            m.export, m.format, m.dynamic, m.shape = True, "onnx", True, None
    reviewed = analyzer.review
    # every layer a head or the review evidence pools
    layers = sorted({*(analyzer.tap.layers if analyzer.tap else []), *(reviewed.layers if reviewed else [])})
    branch = bool(reviewed and reviewed.head_features)
    wrapper = _DetectorWithFeatures(detector, layers, branch).eval()
    image = torch.zeros(1, 3, s, s)
    with torch.no_grad():
        maps = dict(zip(layers, wrapper(image)[1:1 + len(layers)]))
    axes = {f"feature{i}": {0: "batch", 2: f"feature{i}_height", 3: f"feature{i}_width"} for i in layers}
    feature_axes = dict(axes)
    axes.update({f"branch{i}": {0: "batch", 2: f"branch{i}_height", 3: f"branch{i}_width"} for i in range(len(wrapper.branch))})
    written = {"detector": str(out.with_suffix(".onnx"))}
    torch2onnx(wrapper, image, written["detector"], OPSET, ["images"], ["output0", *axes],
               {"images": {0: "batch", 2: "height", 3: "width"}, "output0": {0: "batch", 2: "anchors"}, **axes})
    boxes = torch.tensor([[0, 10.0, 10.0, s / 2, s / 2]])
    for kind, suffix, pooled in (("head", ".attributes.onnx", analyzer.head), ("types", ".types.onnx", analyzer.type_head)):
        if pooled is None:
            continue
        written[kind] = str(out.with_suffix(suffix))
        own = [f"feature{i}" for i in pooled.config.layers]
        outputs = [spec["name"] for spec in pooled.config.attributes]
        torch2onnx(_Head(copy.deepcopy(pooled).eval(), (s, s), len(own)), (*(maps[i] for i in pooled.config.layers), boxes),
                   written[kind], OPSET, [*own, "boxes"], outputs,
                   {**{n: feature_axes[n] for n in own}, "boxes": {0: "boxes"}, **{n: {0: "boxes"} for n in outputs}})
    meta = {"names": analyzer.names, "imgsz": s, "stride": analyzer.stride, "layers": layers, "attributes": analyzer.attribute_specs,
            "attribute_classes": analyzer.attribute_classes, "weights": str(weights),
            "head_file": Path(written["head"]).name if "head" in written else None,
            "head_layers": analyzer.head.config.layers if analyzer.head else [],
            "train_rbc_diameter_px": analyzer.reference_rbc_px, "train_field_size": analyzer.field_size,  # fields at the training scale
            "nested": analyzer.nested, "nested_classes": analyzer.nested_classes,  # one box per cell, as WBCAnalyzer
            "colour_reference": analyzer.colour_reference.to_card() if analyzer.colour_reference else None,  # the training colours
            # the type head's distribution, fused with the detector's classes as WBCAnalyzer does (wbc.type_fusion)
            "types_file": Path(written["types"]).name if "types" in written else None,
            "type_layers": analyzer.type_head.config.layers if analyzer.type_head else [],
            "type_classes": analyzer.type_head.config.attributes[0]["values"] if analyzer.type_head else [],
            "type_share": analyzer.type_share,
            # the review model, scoring the maps of its layers and the branch outputs (the "unidentified" decision)
            "review_file": out.with_suffix(".review.pt").name if reviewed else None, "branch_outputs": len(wrapper.branch)}
    if reviewed:
        written["review"] = str(out.with_suffix(".review.pt"))
        if Path(analyzer.review_path).resolve() != Path(written["review"]).resolve():
            shutil.copyfile(analyzer.review_path, written["review"])
    written["meta"] = str(out.with_suffix(".onnx.json"))
    Path(written["meta"]).write_text(json.dumps(meta, indent=2))
    return written


class OnnxAnalyzer(WBCAnalyzer):
    """:class:`WBCAnalyzer` on onnxruntime: same preprocessing, NMS and output, from ``<stem>.onnx``."""

    def __init__(self, onnx_file: str | Path, conf: float = 0.25, iou: float = 0.7, max_det: int = 300, threads: int | None = None,
                 attributes: bool = True, rescale: bool = True, pixel_size: float | None = None, types: bool = True,
                 review: bool = True, review_rate: float | None = None, keep_evidence: bool = False, some_type: bool = True):
        import onnxruntime as ort

        onnx_file = Path(onnx_file)
        meta_file = onnx_file.with_suffix(".onnx.json")
        if not meta_file.is_file():
            raise UsageError(f"{meta_file} not found: export with python export.py, which writes it beside the .onnx")
        meta = json.loads(meta_file.read_text())
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        def session(key: str, wanted: bool):
            return ort.InferenceSession(str(onnx_file.parent / meta[key]), options, providers=["CPUExecutionProvider"]) \
                if meta.get(key) and wanted else None

        self.head_session, self.types_session = session("head_file", attributes), session("types_file", types)
        self.names = {int(k): v for k, v in meta["names"].items()}
        self.model_names = dict(self.names)
        self.described = meta.get("attribute_classes")
        self.imgsz, self.layers, self.stride = meta["imgsz"], meta["layers"], meta["stride"]
        self.head_layers, self.type_layers = meta.get("head_layers", self.layers), meta.get("type_layers", [])  # older exports: one head
        self.specs = meta["attributes"] if self.head_session else []
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.class_map, self.cell_classifier, self.head, self.head_path, self.device = None, None, None, None, torch.device("cpu")
        self.reference_rbc_px = meta.get("train_rbc_diameter_px") if rescale else None  # fields at the training scale, as WBCAnalyzer
        self.field_size, self.pixel_size = meta.get("train_field_size"), pixel_size
        self.nested, self.nested_classes = meta.get("nested", 1.0), meta.get("nested_classes", [])  # older exports: NMS alone
        self.some_type = some_type
        self.colour_reference = ColourReference.from_card(meta)  # older exports: fields in their own colours
        # the type head fused with the detector's classes as WBCAnalyzer does; without one (older exports, types=False) the detector's
        self.type_head, self.type_head_path, self.type_share, self.type_index = None, None, 0.0, []
        if self.types_session:
            index = {n: i for i, n in self.model_names.items()}
            self.type_head, self.type_head_path = self.types_session, onnx_file.parent / meta["types_file"]
            self.type_share, self.type_index = float(meta["type_share"]), [index[c] for c in meta["type_classes"]]
        # the review model beside the export, on the graph's evidence outputs; older exports have none: --review-conf decides
        self._load_review(onnx_file.parent / meta["review_file"] if meta.get("review_file") and review else None, review_rate)
        self.evidence = _MapEvidence(self.review.layers, self.review.roi_size, self.review.head_features) if self.review else None
        self.keep_evidence = keep_evidence and self.evidence is not None
        self.review_classes = set(self.review.type_classes) if self.review else set()

    @property
    def attribute_specs(self) -> list[dict]:
        return self.specs

    @property
    def attribute_classes(self) -> list[str] | None:
        return self.described

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, np.ndarray]]:
        outputs = self.session.run(None, {"images": x.numpy()})
        maps = dict(zip(self.layers, outputs[1:1 + len(self.layers)]))
        if self.evidence:
            self.evidence.maps = {i: torch.from_numpy(m) for i, m in maps.items()}
            self.evidence.branch = [torch.from_numpy(b) for b in outputs[1 + len(self.layers):]]
        return torch.from_numpy(outputs[0]), maps

    @staticmethod
    def _run(session, layers: list[int], maps: dict[int, np.ndarray], boxes: torch.Tensor) -> list[torch.Tensor]:
        feed = {f"feature{i}": maps[i] for i in layers}
        feed["boxes"] = boxes.cpu().numpy().astype(np.float32)
        return [torch.from_numpy(logits).softmax(1) for logits in session.run(None, feed)]

    def _head_probabilities(self, maps, boxes, input_size):
        return self._run(self.head_session, self.head_layers, maps, boxes)

    def _type_probabilities(self, maps, boxes, input_size):
        return self._run(self.types_session, self.type_layers, maps, boxes)[0]


def main(argv=None):
    from wbc.arguments import IMGSZ

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="detector (default: the shipped model); its attribute head beside it is exported too")
    p.add_argument("--head", help="attribute head file, if not beside the weights")
    p.add_argument("--no-head", action="store_true")
    p.add_argument("--imgsz", type=IMGSZ, help="input size (default: the head's, else the detector's training size)")
    p.add_argument("--types", help="type head file, if not beside the weights (<stem>.types.pt)")
    p.add_argument("--no-type-head", action="store_true", help="type WBCs by the detector's classes alone")
    p.add_argument("--type-share", type=float, help="the type head's weight in [0, 1] (default: the model card's)")
    p.add_argument("--no-review", action="store_true", help="leave the review model out (cells are then never 'unidentified' by it)")
    p.add_argument("--out", help="output path stem (default: beside the weights)")
    args = p.parse_args(argv)
    from wbc.paths import DEFAULT_WEIGHTS

    written = export_onnx(args.weights or DEFAULT_WEIGHTS, args.out, args.imgsz, False if args.no_head else args.head,
                          False if args.no_type_head else args.types, args.type_share, False if args.no_review else None)
    for kind, path in written.items():
        print(f"{kind}: {path}")
