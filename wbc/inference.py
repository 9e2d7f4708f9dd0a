"""Whole-field inference in one pass of the detector: boxes, classes, and (where the checkpoint has an
attribute head) every attribute's value and probability, pooled from the same forward pass.

Where the model card records the training scale (``train_rbc_diameter_px``, ``train_field_size``),
each field is first resized so that its red cells are as large as in training (:mod:`wbc.rescale`:
from a given pixel size, else estimated from the field); where it records the training fields'
colours (``colour_reference``), the field's colours are moved to them (:mod:`wbc.colour`); then it is
letterboxed with the training fields' own gain (a smaller field is padded, a larger one gets a larger
input); cells are reported in the original field's pixels."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.ops import scale_boxes, xywh2xyxy

from wbc.arguments import IMGSZ, check
from wbc.attributes.data import CELL_TYPE, letterbox, to_tensor, unletterbox
from wbc.attributes.head import AttributeHead, FeatureTap, head_path_for
from wbc.class_map import ClassMap
from wbc.colour import ColourReference, normalize
from wbc.classify.cell_classifier import CellClassifier
from wbc.device import torch_device
from wbc.errors import UsageError
from wbc.offline import guard_downloads
from wbc.partial_labels import some_member_scores
from wbc.paths import DEFAULT_WEIGHTS
from wbc.review.decision import UNFAMILIAR
from wbc.review.features import Evidence, anchor_scores
from wbc.review.model import ReviewModel, review_path_for
from wbc.type_fusion import fused_log_probabilities, types_path_for
from wbc.weights import load_yolo


def inside_shares(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m): the share of each box of ``a`` (xyxy, (n, 4)) that lies inside each box of ``b`` ((m, 4))."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    return inter / (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1).clamp(min=1e-9)[:, None]


def nested_duplicates(boxes: torch.Tensor, scores: torch.Tensor, eligible: torch.Tensor, share: float) -> torch.Tensor:
    """Mask of the boxes (xyxy, (n, 4)) to drop as second boxes of one cell: an ``eligible`` box of which
    at least ``share`` of the area lies inside an eligible box of higher score. NMS at IoU 0.7 keeps such
    pairs when the second box is much larger (a lymphocyte boxed alone and again with the red cell beside
    it: IoU 0.55, but the small box lies wholly inside the large one). Only eligible boxes (the WBC types)
    take part: a platelet lying on a red cell is two cells."""
    n = len(boxes)
    if n < 2 or share >= 1:
        return torch.zeros(n, dtype=torch.bool, device=boxes.device)
    inside = inside_shares(boxes, boxes)
    order = scores.argsort(descending=True)
    drop = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    for rank, i in enumerate(order.tolist()):
        if not eligible[i]:
            continue
        higher = order[:rank]
        higher = higher[eligible[higher] & ~drop[higher]]
        # either box may be the inner one: the smaller box of the pair mostly inside the other
        if len(higher) and ((inside[i, higher] >= share) | (inside[higher, i] >= share)).any():
            drop[i] = True
    return drop



@dataclass
class Cell:
    """One detected cell. ``box``: xyxy in pixels of the original image."""

    box: tuple[float, float, float, float]
    class_id: int
    class_name: str
    confidence: float
    attributes: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (value, probability)
    call: tuple[str, float] | None = None  # the cell classifier's (label, probability), for the classes it is configured for
    # the review decision (:mod:`wbc.review`), for WBC-type cells where the model has a review model:
    type_probability: float | None = None  # calibrated probability of its type
    ood: float | None = None  # out-of-distribution score (higher: less like the training cells)
    review: str = ""  # why it goes to 'unidentified' ('' when it does not)
    # with keep_evidence: {'features': feature vector, 'scores': class scores, 'attributes': {name: value probabilities}}
    evidence: dict | None = field(default=None, repr=False)


def model_card(weights: str | Path) -> dict:
    """The model card's JSON beside the weights (``<stem>.json``, written by wbc.model_card). Without
    one, a checkpoint of a training run (``<phase dir>/weights/best.pt``) gets the training scale of
    its run's scale record (``<phase dir>/scale.json``), so that it sees fields at the scale (and in
    the colours) it was trained at before it is carded, and the WBC and nucleated red-cell types its training data yaml
    declares (``args.yaml``'s ``data``); otherwise {}."""
    weights = Path(weights)
    card = weights.with_suffix(".json")
    if card.is_file():
        return json.loads(card.read_text())
    run = weights.parent.parent
    if weights.parent.name != "weights" or not (run / "scale.json").is_file():
        return {}
    scale = json.loads((run / "scale.json").read_text())
    found = {"train_rbc_diameter_px": scale.get("train_rbc_diameter_px"), "train_field_size": scale.get("field_size"),
             **({"colour_reference": scale["colour_reference"]} if scale.get("colour_reference") else {})}
    args = yaml.safe_load((run / "args.yaml").read_text()) if (run / "args.yaml").is_file() else {}
    data = Path(str(args.get("data", "")))
    if data.suffix in (".yaml", ".yml") and data.is_file():
        declared = yaml.safe_load(data.read_text()) or {}
        found.update({k: declared[k] for k in ("wbc_classes", "nrbc_classes") if declared.get(k)})
    return found


@dataclass
class FieldScale:
    """How a field was brought to the training scale: resize ``factor``, the red-cell diameter it
    came from (pixels of the original field) and how that was found ('given', 'estimated',
    'no estimate', or 'off' where the model records no training scale)."""

    factor: float = 1.0
    rbc_diameter_px: float | None = None
    how: str = "off"

    @property
    def pixel_size_um(self) -> float | None:
        from wbc.scale import RBC_DIAMETER_UM

        return RBC_DIAMETER_UM / self.rbc_diameter_px if self.rbc_diameter_px else None


def input_size(imgsz: int | None, trained: int, stride: int) -> int:
    """The network input size in pixels: ``imgsz`` rounded up to a multiple of ``stride`` (None: the
    ``trained`` size). Fields are letterboxed at the training gain scaled by it, so under half the
    trained size cells reach the network at under half the size it learnt, and it finds almost none:
    refused."""
    if imgsz is None:
        return trained
    size = -(-check("--imgsz", imgsz, IMGSZ) // stride) * stride
    least = -(-trained // 2 // stride) * stride
    if size < least:
        raise UsageError(f"--imgsz {imgsz}: under half the size the model was trained at ({trained} px): cells would reach the "
                         f"network at under half the size it learnt, and it finds almost none; use ≥ {least}")
    return size


def load_detector(weights: str | Path) -> tuple[torch.nn.Module, dict[int, str], dict]:
    """(float eval-mode DetectionModel, Conv and BatchNorm fused as ultralytics predicts with, class names,
    training args) from an ultralytics checkpoint."""
    guard_downloads()
    yolo = load_yolo(weights)
    model = yolo.model.float().eval().fuse(verbose=False)
    if platform.machine() in {"AMD64", "x86_64"} and torch.backends.mkldnn.is_available():
        model.to(memory_format=torch.channels_last)  # as ultralytics' AutoBackend does on x86 CPUs: faster oneDNN convolutions
    return model, dict(yolo.names), dict(getattr(model, "args", {}) or {})


class WBCAnalyzer:
    """Detector + optional attribute head. ``head``: path, or None to look next to the weights
    (``<stem>.attributes.pt``), or False to run the detector alone. ``types``: a type head, the same
    way (``<stem>.types.pt``): each WBC-type cell's type is then the most likely of the fused
    distribution of the detector's classes and the head (:mod:`wbc.type_fusion`), the head weighing
    ``type_share`` (None: the model card's ``type_head.head_share``). ``class_map``: report cells in
    another dataset's classes (see :mod:`wbc.class_map`). ``cell_classifier``: a crop classifier for
    chosen classes (see :mod:`wbc.classify.cell_classifier`); its call lands in ``Cell.call``."""

    def __init__(self, weights: str | Path = DEFAULT_WEIGHTS, head: str | Path | bool | None = None, imgsz: int | None = None,
                 conf: float = 0.25, iou: float = 0.7, device: str = "cpu", max_det: int = 300, class_map: ClassMap | None = None,
                 cell_classifier: CellClassifier | None = None, rescale: bool = True, pixel_size: float | None = None,
                 review: str | Path | bool | None = None, review_rate: float | None = None, keep_evidence: bool = False,
                 nested: float = 0.8, colour: bool = True, types: str | Path | bool | None = None, type_share: float | None = None,
                 some_type: bool = True):
        self.detector, self.names, args = load_detector(weights)
        self.model_names = dict(self.names)  # the detector's own classes (self.names changes under a class map)
        card = model_card(weights)
        # the classes whose nested second boxes are dropped (nested_duplicates): the WBC types, where known
        self.nested, self.nested_classes = nested, [i for i, n in self.model_names.items() if n in card.get("wbc_classes", [])]
        self.some_type = some_type  # a WBC-type box scored as "some WBC type" (wbc.partial_labels.some_member_scores)
        self.class_map = None
        if class_map:
            self.map_classes(class_map)
        self.device = torch_device(device)
        self.detector.to(self.device)
        head_path = None if head is False else Path(head) if head else head_path_for(weights)
        self.head_path = head_path if head_path is not None and head_path.is_file() else None
        self.head = AttributeHead.load(head_path).to(self.device) if self.head_path else None
        self.type_head, self.type_head_path, self.type_share, self.type_index = None, None, 0.0, []
        types_file = None if types is False else Path(types) if types else types_path_for(weights)
        if types_file is not None and types_file.is_file():
            self._load_type_head(types_file, card, type_share)
        elif types:
            raise UsageError(f"type head {types_file}: not a file")
        layers = sorted({*(self.head.config.layers if self.head else []), *(self.type_head.config.layers if self.type_head else [])})
        self.tap = FeatureTap(self.detector, layers) if layers else None
        self.stride = int(max(self.detector.stride))
        self.train_imgsz = self.head.config.imgsz if self.head else int(args.get("imgsz", 640))
        self.imgsz = input_size(imgsz, self.train_imgsz, self.stride)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.cell_classifier = cell_classifier
        self.reference_rbc_px = card.get("train_rbc_diameter_px") if rescale else None
        # each field's colours moved to the training fields' before the detector (wbc.colour), where the card records them
        self.colour_reference = ColourReference.from_card(card) if colour else None
        self.field_size = card.get("train_field_size")
        self.pixel_size = pixel_size
        review_file = None if review is False else Path(review) if review else review_path_for(weights)
        self._load_review(review_file if review_file is not None and review_file.is_file() else None, review_rate)
        self.keep_evidence = keep_evidence
        evidence = (self.review.layers, self.review.roi_size, self.review.head_features) if self.review else ()
        self.evidence = Evidence(self.detector, *evidence) if self.review or keep_evidence else None
        self.review_classes = set(self.review.type_classes if self.review else self.model_names.values())

    def _load_review(self, path: Path | None, review_rate: float | None) -> None:
        """The review model (None: none) and its operating point, checked against the type head."""
        self.review = ReviewModel.load(path) if path else None
        self.review_path = path
        self.operating_point = self.review.operating_point(review_rate) if self.review else None
        if self.review and self.type_index and self.review.type_classes != [self.model_names[i] for i in self.type_index]:
            raise UsageError(f"{self.type_head_path} types {[self.model_names[i] for i in self.type_index]}, "
                             f"the review model {self.review_path} {self.review.type_classes}: fit the review model with this head")
        if self.review and abs(self.review.head_share - self.type_share) > 1e-9:
            from ultralytics.utils import LOGGER

            LOGGER.warning(f"the review model {self.review_path} was calibrated with the type head weighing {self.review.head_share:g}, "
                           f"this analyzer weighs it {self.type_share:g}: type probabilities are not calibrated (refit with calibrate.py)")

    def _load_type_head(self, path: Path, card: dict, share: float | None) -> None:
        head = AttributeHead.load(path)
        attributes = head.config.attributes
        if len(attributes) != 1 or attributes[0]["name"] != CELL_TYPE:
            raise UsageError(f"{path}: not a type head (wbc.attributes.train --types): it predicts "
                             f"{', '.join(a['name'] for a in attributes)}")
        index = {n: i for i, n in self.model_names.items()}
        missing = [c for c in attributes[0]["values"] if c not in index]
        if missing:
            raise UsageError(f"{path}: types {', '.join(missing)}, which the detector has no class for")
        share = share if share is not None else (card.get("type_head") or {}).get("head_share")
        if share is None:
            raise UsageError(f"{path}: no share of the type head given, and the model card records none (type_head.head_share)")
        if not 0 <= share <= 1:
            raise UsageError(f"type head share {share}: must be in [0, 1]")
        self.type_head, self.type_head_path, self.type_share = head.to(self.device), path, float(share)
        self.type_index = [index[c] for c in attributes[0]["values"]]

    def field_scales(self, images: list[np.ndarray]) -> list[FieldScale]:
        """The resize that brings each image to the training scale (factor 1 where the model records
        none). Fields of one call with the same image size are taken to come from one camera, and so
        to share a magnification where their estimates agree (:func:`wbc.rescale.consensus`): a
        lab's fields differ in content, not in magnification."""
        from wbc.rescale import consensus, diameter_of, factor_for

        if not self.reference_rbc_px:
            return [FieldScale() for _ in images]
        found = [diameter_of(im, self.pixel_size) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.shape[:2], []).append(i)
        for indices in by_size.values():
            for i, pooled in zip(indices, consensus([found[i] for i in indices])):
                found[i] = pooled
        return [FieldScale(factor_for(d, self.reference_rbc_px), d, how) for d, how in found]

    @property
    def gain(self) -> float | None:
        """The letterbox gain of a training field (input size / training field size), applied to every
        rescaled field whatever its size: a small field is padded, not enlarged, and a larger one gets a
        larger input. None (no training scale recorded): every field is fitted to the input size."""
        return self.imgsz / self.field_size if self.reference_rbc_px and self.field_size else None

    def map_classes(self, class_map: ClassMap) -> None:
        """From now on report cells in ``class_map``'s target classes."""
        self.class_map = class_map
        self.names = dict(enumerate(class_map.names))

    @property
    def attribute_specs(self) -> list[dict]:
        return self.head.config.attributes if self.head else []

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray], factors: list[float] | None = None) -> list[list[Cell]]:
        """BGR images (any sizes) -> cells per image. Each image is resized to the training scale
        (``factors``: given, e.g. 1 for images already resized; None: :meth:`field_scales`),
        letterboxed on its own to the smallest stride multiple around it (as ultralytics predicts),
        and images of one input shape share a forward pass, so an image's cells never depend on the
        other images of the call."""
        factors, work, boxed, groups = self._prepare(images, factors)
        cells: list[list[Cell]] = [[] for _ in images]
        for indices in groups.values():
            for i, row in zip(indices, self._cells(to_tensor([boxed[i][0] for i in indices]), [work[i] for i in indices])):
                cells[i] = row
        for row, f, image, w in zip(cells, factors, images, work):
            if w is not image:
                for c in row:
                    c.box = tuple(v / f for v in c.box)
        return cells

    def _prepare(self, images: list[np.ndarray], factors: list[float] | None):
        """(factors, resized images, their letterboxes (image, gain, pad), {input shape: image indices})."""
        from wbc.rescale import resize

        factors = factors or [f.factor for f in self.field_scales(images)]
        work = [resize(im, f) for im, f in zip(images, factors)]
        seen = [normalize(im, self.colour_reference) for im in work] if self.colour_reference else work  # a crop classifier gets `work`
        boxed = [letterbox(im, self.imgsz, self.stride, self.gain) for im in seen]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, b in enumerate(boxed):
            groups.setdefault(b[0].shape[:2], []).append(i)
        return factors, work, boxed, groups

    @torch.inference_mode()
    def evidence_at(self, images: list[np.ndarray], boxes: list[np.ndarray],
                    factors: list[float] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(feature vectors (k, D), class scores (k, nc)) of given xyxy boxes (k, 4) in each image's pixels:
        what the review decision would see if the detector had found a cell there (the class scores are
        those of the prediction that overlaps the box most). Needs ``keep_evidence`` or a review model."""
        factors, work, boxed, groups = self._prepare(images, factors)
        out: list = [None] * len(images)
        for indices in groups.values():
            x = to_tensor([boxed[i][0] for i in indices])
            predictions, _ = self._forward(x)
            rows = []
            for b, i in enumerate(indices):
                _, gain, (pad_x, pad_y) = boxed[i]
                xyxy = torch.as_tensor(np.asarray(boxes[i], np.float32).reshape(-1, 4)) * factors[i] * gain
                xyxy[:, [0, 2]] += pad_x
                xyxy[:, [1, 3]] += pad_y
                rows.append(torch.cat([torch.full((len(xyxy), 1), float(b)), xyxy], 1))
            rois = torch.cat(rows).to(self.device)
            scores, anchors = anchor_scores(predictions, rois)
            embeddings = self.evidence.embed(rois, tuple(x.shape[-2:]), anchors).cpu()
            scores = scores.cpu()
            k = 0
            for i, r in zip(indices, rows):
                out[i] = (embeddings[k:k + len(r)].numpy(), scores[k:k + len(r)].numpy())
                k += len(r)
        return out

    def _cells(self, x: torch.Tensor, images: list[np.ndarray]) -> list[list[Cell]]:
        predictions, maps = self._forward(x)
        nc = len(self.model_names)
        # a WBC-type box's confidence: the probability that it is some WBC type (the noisy-OR of its type scores), not
        # its best type's alone, which an unfamiliar cell splits between types (docs/cross_source.md); the type stays its best
        scores = predictions[:, 4:4 + nc]
        ranked = some_member_scores(scores, self.nested_classes) if self.some_type else scores
        cells, dropped = self._select_cells(x, images, predictions, maps, ranked)
        if any(len(d) for d in dropped):
            # a rescued box the familiarity test dropped may have suppressed (NMS, nested boxes) a box of the same cell
            # whose own type reaches --conf: its rescued neighbours leave with it and the selection runs again, so that
            # the cell is found as it is without the rescue
            ranked = self._without_rescues(ranked, scores, predictions[:, :4], dropped)
            cells, _ = self._select_cells(x, images, predictions, maps, ranked)
        if self.cell_classifier:
            for image, row in zip(images, cells):
                self._call(image, row)
        return cells

    def _select_cells(self, x: torch.Tensor, images: list[np.ndarray], predictions: torch.Tensor, maps: dict[int, torch.Tensor],
                      ranked: torch.Tensor) -> tuple[list[list[Cell]], list[torch.Tensor]]:
        """(cells per image, per image the boxes (xyxy, input pixels) dropped by the familiarity test) of
        the detections that ``ranked`` (class scores per anchor) selects."""
        nc = len(self.model_names)
        scores = predictions[:, 4:4 + nc]
        # one box per cell: class-agnostic NMS, so that a cell scored as two WBC types (BNE 0.72, SNE 0.57) is counted once;
        # every class score and the anchor index ride along as extra columns, for the review decision
        anchors = torch.arange(predictions.shape[2], device=predictions.device, dtype=predictions.dtype).expand(len(predictions), 1, -1)
        detections = non_max_suppression(torch.cat([predictions[:, :4], ranked, scores, anchors], 1), self.conf, self.iou,
                                         agnostic=True, max_det=self.max_det, nc=nc)
        # and a WBC-type box mostly inside a higher-scored one is the same cell boxed twice (nested_duplicates)
        typed = torch.tensor(self.nested_classes, device=predictions.device)
        detections = [d[~nested_duplicates(d[:, :4], d[:, 4], torch.isin(d[:, 5].long(), typed), self.nested)] for d in detections]
        # column 6: the model's own class, kept through a class map; 7 to 7 + nc: its class scores; then its anchor
        detections = [torch.cat([d[:, :6], d[:, 5:6], d[:, 6:]], 1) for d in detections]
        if self.type_head:
            detections = self._types(detections, maps, tuple(x.shape[-2:]))
        if self.class_map:
            detections = [self.class_map.apply(d, self.iou) for d in detections]
        rois = torch.cat([torch.cat([torch.full((len(d), 1), i, device=d.device), d[:, :4]], 1) for i, d in enumerate(detections)])
        own = torch.cat([d[:, 6] for d in detections]).long().tolist()  # every detection's own class, in order
        attributes, raw = self._attributes(maps, rois, own, tuple(x.shape[-2:])) if self.attribute_specs else (None, {})
        reviews = self._review(detections, rois, own, tuple(x.shape[-2:])) if self.evidence else None
        cells, dropped, k = [], [], 0
        for det, image in zip(detections, images):
            det = det.cpu()
            boxes = (unletterbox(det[:, :4].clone(), x.shape[-2:], image.shape[:2], self.gain) if self.gain
                     else scale_boxes(x.shape[-2:], det[:, :4].clone(), image.shape[:2])).tolist()
            row = [Cell(tuple(box), int(cls), self.names[int(cls)], score, attributes[k + j] if attributes else {})
                   for j, (box, score, cls) in enumerate(zip(boxes, det[:, 4].tolist(), det[:, 5].tolist()))]
            gone = torch.zeros(len(row), dtype=torch.bool)
            if reviews:
                for j, c in enumerate(row):
                    c.type_probability, c.ood, c.review, c.evidence = reviews[k + j]
                    if c.evidence is not None:
                        c.evidence["attributes"] = {name: p[k + j] for name, p in raw.items() if k + j in p}
                # a box kept only as "some WBC type" (no type of its own reaches --conf) must look like the training
                # cells: on a stain nobody trained on, red cells get many small type scores that add up
                if self.some_type and self.nested_classes:
                    rescued = det[:, 7:7 + nc][:, self.nested_classes].amax(1) < self.conf
                    gone = rescued & torch.tensor([UNFAMILIAR in c.review for c in row], dtype=torch.bool)
                    row = [c for c, g in zip(row, gone.tolist()) if not g]
            k += len(det)
            cells.append(row)
            dropped.append(det[gone, :4])
        return cells, dropped

    def _without_rescues(self, ranked: torch.Tensor, scores: torch.Tensor, boxes_xywh: torch.Tensor,
                         dropped: list[torch.Tensor]) -> torch.Tensor:
        """``ranked`` with the anchors that box the same cell as a dropped box (IoU above NMS's, or one mostly
        inside the other) and have no WBC type of their own reaching --conf scored as without "some WBC
        type" (their raw class scores): such a cell is then selected as by its best type alone."""
        from torchvision.ops import box_iou

        ranked = ranked.clone()
        rescued = scores[:, self.nested_classes].amax(1) < self.conf  # (B, anchors)
        for b, gone in enumerate(dropped):
            if not len(gone):
                continue
            gone = gone.to(ranked.device, ranked.dtype)
            candidates = xywh2xyxy(boxes_xywh[b].T)
            same = ((box_iou(candidates, gone) > self.iou) | (inside_shares(candidates, gone) >= self.nested)
                    | (inside_shares(gone, candidates).T >= self.nested)).any(1)
            back = same & rescued[b]
            ranked[b, :, back] = scores[b, :, back]
        return ranked

    def _types(self, detections: list[torch.Tensor], maps: dict[int, torch.Tensor], input_size: tuple[int, int]) -> list[torch.Tensor]:
        """Each WBC-type detection (by the detector's class) typed by the fused distribution of the
        detector and the type head: its class columns (5, and 6, the model's own class) set to the most
        likely type. The head's probabilities ride along as the last columns (NaN for other
        classes), through a class map, for the review decision."""
        typed = torch.tensor(self.type_index, device=detections[0].device)
        nc, n_types = len(self.model_names), len(self.type_index)
        mine = [torch.isin(d[:, 6].long(), typed) for d in detections]
        rois = torch.cat([torch.cat([torch.full((int(m.sum()), 1), float(b), device=d.device), d[m, :4]], 1)
                          for b, (d, m) in enumerate(zip(detections, mine))])
        head = self._type_probabilities(maps, rois, input_size) if len(rois) else None
        out, k = [], 0
        for d, m in zip(detections, mine):
            d = torch.cat([d, torch.full((len(d), n_types), float("nan"), device=d.device, dtype=d.dtype)], 1)
            n = int(m.sum())
            if n:
                p = head[k:k + n].to(d.dtype)
                best = fused_log_probabilities(d[m, 7:7 + nc][:, self.type_index], p, self.type_share).argmax(1)
                d[m, 5] = d[m, 6] = typed[best].to(d.dtype)
                d[m, -n_types:] = p
                k += n
            out.append(d)
        return out

    def _type_probabilities(self, maps: dict[int, torch.Tensor], boxes: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        """(K, T) the type head's distribution over its types for boxes (K, 5) in input pixels."""
        return self.type_head([maps[i] for i in self.type_head.config.layers], boxes, input_size)[0].softmax(1)

    def _review(self, detections: list[torch.Tensor], rois: torch.Tensor, own: list[int], input_size: tuple[int, int]) -> list[tuple]:
        """(type probability, OOD score, reason, evidence) per detection in order (``rois``: their boxes with
        batch index, ``own``: their model classes): Nones for cells of classes the review model does not
        type (RBC, platelets), and without a review model (evidence only). With a type head its
        probabilities (:meth:`_types`) are fused into the type probability."""
        nc = len(self.model_names)
        scores = torch.cat([d[:, 7:7 + nc] for d in detections]).float()
        anchors = torch.cat([d[:, 7 + nc] for d in detections]).long()
        wanted = [i for i, c in enumerate(own) if self.model_names[c] in self.review_classes]
        result = [(None, None, "", None) for _ in own]
        if not wanted:
            return result
        embeddings = self.evidence.embed(rois[wanted], input_size, anchors[wanted]).cpu()
        scores = scores[wanted].cpu()
        head = None
        if self.type_head:
            # NaN rows (a cell the head did not type): the detector's alone (wbc.type_fusion)
            head = torch.cat([d[:, -len(self.type_index):] for d in detections]).float()[wanted].cpu()
        if self.review:
            p, _, ood = self.review.score(embeddings, scores, head)
            for n, i in enumerate(wanted):
                result[i] = (float(p[n]), float(ood[n]), self.operating_point.reason(float(p[n]), float(ood[n])), None)
        if self.keep_evidence:
            for n, i in enumerate(wanted):
                result[i] = (*result[i][:3], {"features": embeddings[n].numpy(), "scores": scores[n].numpy(),
                                              **({"types": head[n].numpy()} if head is not None and not head[n].isnan().any() else {})})
        return result

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(raw detector output (B, 4 + nc, anchors), {layer: its map} of the layers the heads pool) for a uint8 batch."""
        out = self.detector(x.to(self.device))
        return out[0] if isinstance(out, (list, tuple)) else out, dict(self.tap.outputs) if self.tap else {}

    def _head_probabilities(self, maps: dict[int, torch.Tensor], boxes: torch.Tensor, input_size: tuple[int, int]) -> list[torch.Tensor]:
        """The head's own (uncalibrated) value probabilities per attribute."""
        return [logits.softmax(1) for logits in self.head([maps[i] for i in self.head.config.layers], boxes, input_size)]

    @property
    def attribute_classes(self) -> list[str] | None:
        """The model's classes the head describes (None: all)."""
        return self.head.config.classes if self.head else None

    def _attributes(self, maps: dict[int, torch.Tensor], rois: torch.Tensor, own: list[int],
                    input_size: tuple[int, int]) -> tuple[list[dict], dict[str, dict[int, np.ndarray]]]:
        """({attribute: (value, calibrated probability)} for every detection, in order, {} for a detection of a
        class the head does not describe (RBC, platelets: their attributes are not applicable, and pooling them
        costs time); with ``keep_evidence``, {attribute: {detection index: the head's own probabilities}},
        what a temperature is fitted on)."""
        wanted = [i for i, c in enumerate(own) if self.attribute_classes is None or self.model_names[c] in self.attribute_classes]
        result, raw = [{} for _ in own], {}
        if not wanted:
            return result, raw
        per_attribute = []
        temperatures = self.review.attribute_temperatures if self.review else {}
        for spec, p in zip(self.attribute_specs, self._head_probabilities(maps, rois[wanted], input_size)):
            if self.keep_evidence:
                raw[spec["name"]] = dict(zip(wanted, p.cpu().numpy()))
            t = temperatures.get(spec["name"], 1.0)
            best, index = (p.clamp_min(1e-12).log() / t).softmax(1).cpu().max(1) if t != 1.0 else p.cpu().max(1)
            per_attribute.append([(spec["values"][i], float(b)) for i, b in zip(index.tolist(), best.tolist())])
        names = [spec["name"] for spec in self.attribute_specs]
        for i, values in zip(wanted, zip(*per_attribute)):
            result[i] = dict(zip(names, values))
        return result, raw


    def _call(self, image: np.ndarray, cells: list[Cell]) -> None:
        chosen = [c for c in cells if c.class_name in self.cell_classifier.classes]
        for cell, call in zip(chosen, self.cell_classifier.classify(image, [c.box for c in chosen])):
            cell.call = call
