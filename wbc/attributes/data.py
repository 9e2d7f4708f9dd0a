"""Fields with their attribute-carrying boxes, letterboxed the way ultralytics feeds its models."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from wbc.canonical import CanonicalDataset

CELL_TYPE = "cell_type"  # the one attribute of a type head: the WBC type of the box


def letterbox(image: np.ndarray, imgsz: int, stride: int | None = None, gain: float | None = None) -> tuple[np.ndarray, float, tuple[int, int]]:
    """BGR image -> ``imgsz`` letterbox (grey 114 padding, centred), its gain and (pad_x, pad_y): square,
    or with ``stride`` the smallest multiple of it around the resized image (ultralytics' ``auto``
    letterbox). ``gain`` (with ``stride``): resize by exactly this instead of fitting ``imgsz``, so
    that every field reaches the network at one scale whatever its size. The rounding matches
    ultralytics' LetterBox and scale_boxes, so boxes map exactly both ways."""
    h, w = image.shape[:2]
    if gain is not None and not stride:
        raise ValueError("a fixed letterbox gain needs a stride (the input is sized around the image)")
    gain = gain or min(imgsz / h, imgsz / w)
    new_w, new_h = round(w * gain), round(h * gain)
    out_w, out_h = (-(-new_w // stride) * stride, -(-new_h // stride) * stride) if stride else (imgsz, imgsz)
    pad_x, pad_y = round((out_w - w * gain) / 2 - 0.1), round((out_h - h * gain) / 2 - 0.1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.full((out_h, out_w, 3), 114, np.uint8)
    out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = image[: out_h - pad_y, : out_w - pad_x]
    return out, gain, (pad_x, pad_y)


def unletterbox(boxes: torch.Tensor, input_hw: tuple[int, int], image_hw: tuple[int, int], gain: float) -> torch.Tensor:
    """xyxy boxes in a fixed-gain :func:`letterbox` input of shape ``input_hw`` -> pixels of the image, clipped."""
    (out_h, out_w), (h, w) = input_hw, image_hw
    pad_x, pad_y = round((out_w - w * gain) / 2 - 0.1), round((out_h - h * gain) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / gain).clamp(0, w)
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / gain).clamp(0, h)
    return boxes


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 HWC images of one size -> RGB float (B, 3, H, W) in [0, 1], as ultralytics models expect."""
    return torch.from_numpy(np.ascontiguousarray(np.stack(images)[..., ::-1].transpose(0, 3, 1, 2))).float().div_(255)


class AttributeFields(Dataset):
    """One item per field that has at least one box with a known value of a used attribute.

    Returns (letterboxed BGR image, boxes (k, 4) xyxy in letterbox pixels, codes (k, A) int64).
    ``view``: one of the 8 rotations / reflections of the square field (:func:`dihedral`; 0 = as is),
    or None for a random one per item (augmentation). A turned field shows the same cells to the
    detector as new data: its features are not the turned features of the original.

    ``types``: instead of the dataset's attributes, one attribute :data:`CELL_TYPE` whose code is the
    box's class among ``types`` (a type head); a box of a label set whose classes are all among
    ``types`` (a BCCD neutrophil: BNE or SNE) has code ``len(types) + j``, set j of ``label_sets``
    (:func:`attribute_loss` learns "one of these" from it); boxes of other classes carry no code.

    ``stain``: the stain / camera / optics transforms of :mod:`wbc.stain` at this strength (as the
    detector's ``stain`` hyp), applied to the field before letterboxing. ``copies``: each field
    appears this many times, each copy with its own draw of those transforms. The draw of item ``i``
    is fixed (seeded by ``seed`` and ``i``), so a cache of the detector's features holds ``copies``
    fixed stainings per field; with a random ``view`` it is drawn afresh every time.

    ``factors`` (image file name -> resize factor to the network input): fields at the detector's
    training scale instead of each fitted to ``imgsz``, as data of several origins needs (a BCCD
    field at PBC's red-cell size is larger than the input). Every box with a known value is then an
    item of its own: an ``imgsz`` window of the resized field centred on it (clamped to the field,
    padded where the field is smaller), with that one box.

    ``colour`` (a :class:`wbc.colour.ColourReference`): each field's colours moved to the reference
    after the stain transforms and before any resize, as the analyzer moves a field's before the
    detector sees it (it does so after the resize to the training scale: for PBC fields a factor of
    about 1, and the statistics of a resized field differ from the field's by the interpolation only)."""

    def __init__(self, canonical: CanonicalDataset, split: str, imgsz: int, view: int | None = 0, types: list[str] | None = None,
                 stain: float = 0.0, copies: int = 1, seed: int = 0, factors: dict[str, float] | None = None, colour=None):
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        spec = canonical.spec
        table = canonical.attributes()
        table = table[(table["split"] == split)]
        self.label_sets: dict[str, list[str]] = {}
        if types:
            self.attributes = [CELL_TYPE]
            self.label_sets = {name: list(members) for name, members in spec.label_sets.items() if set(members) <= set(types)}
            codes = {c: i for i, c in enumerate(types)} | {name: len(types) + j for j, name in enumerate(self.label_sets)}
            table = table.assign(**{CELL_TYPE: table["class"].map(codes).fillna(-1).astype(np.int64)})
        else:
            self.attributes = [a.name for a in spec.used_attributes]
        table = table[(table[self.attributes] >= 0).any(axis=1)]
        if table.empty:
            raise ValueError(f"{spec.name} {split}: no box has a known {'type among ' + ', '.join(types) if types else 'attribute value'}")
        self.root, self.split, self.imgsz, self.view = canonical.root, split, imgsz, view
        self.copies, self.seed, self.factors, self.colour = copies, seed, factors, colour
        self.stain = stain_transform(stain)
        self.items = [(image, rows[["x1", "y1", "x2", "y2"]].to_numpy(np.float32), rows[self.attributes].to_numpy(np.int64))
                      for image, rows in table.groupby("image", sort=True)]
        if factors is not None:  # one window per box
            self.items = [(image, boxes[j:j + 1], codes[j:j + 1]) for image, boxes, codes in self.items
                          for j in range(len(boxes)) if (codes[j] >= 0).any()]

    def __len__(self) -> int:
        return len(self.items) * self.copies

    def __getitem__(self, i):
        name, boxes, codes = self.items[i % len(self.items)]
        path = self.root / "images" / self.split / name
        image = cv2.imread(str(path))
        if image is None:
            raise OSError(f"{path}: cannot be read")
        if self.stain:
            self.stain.set_random_seed(int(torch.randint(2**31, ())) if self.view is None else self.seed * 1_000_003 + i)
            image = self.stain(image=image)["image"]  # BGR, as ultralytics hands images to its albumentations
        if self.colour is not None:
            from wbc.colour import normalize

            image = normalize(image, self.colour)
        if self.factors is None:
            image, gain, (px, py) = letterbox(image, self.imgsz)
            boxes = boxes * gain + np.array([px, py, px, py], np.float32)
        else:
            image, boxes = window(image, boxes, self.factors.get(name, 1.0), self.imgsz)
        view = int(torch.randint(8, ())) if self.view is None else self.view  # torch's RNG: seeded per DataLoader worker and epoch
        return (*dihedral(image, boxes, view), codes) if view else (image, boxes, codes)


def window(image: np.ndarray, box: np.ndarray, factor: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` window of ``image`` resized by ``factor`` centred on ``box`` ((1, 4) xyxy
    in the image's pixels), clamped to the field and padded with grey 114 where the field is smaller;
    the box in window pixels."""
    from wbc.rescale import resize

    image, box = resize(image, factor), box * factor
    h, w = image.shape[:2]
    cx, cy = (box[0, 0] + box[0, 2]) / 2, (box[0, 1] + box[0, 3]) / 2
    x0 = int(np.clip(round(cx - size / 2), 0, max(0, w - size)))
    y0 = int(np.clip(round(cy - size / 2), 0, max(0, h - size)))
    out = np.full((size, size, 3), 114, np.uint8)
    crop = image[y0:y0 + size, x0:x0 + size]
    out[:crop.shape[0], :crop.shape[1]] = crop
    return out, box - np.array([x0, y0, x0, y0], np.float32)


def stain_transform(strength: float):
    """The :mod:`wbc.stain` transforms at ``strength`` as one albumentations Compose, or None at 0."""
    from wbc.stain import stain_augmentations

    transforms = stain_augmentations(strength)
    if not transforms:
        return None
    import albumentations as A

    return A.Compose(transforms)


def dihedral(image: np.ndarray, boxes: np.ndarray, view: int) -> tuple[np.ndarray, np.ndarray]:
    """A square image and its (k, 4) xyxy boxes mirrored left-right if ``view`` >= 4, then turned
    ``view % 4`` quarter turns counter-clockwise (``np.rot90``)."""
    size = image.shape[1]
    if image.shape[0] != size:
        raise ValueError(f"dihedral views need a square image, got {image.shape[1]}x{image.shape[0]}")
    boxes = boxes.astype(np.float32, copy=True)
    if view >= 4:
        image, boxes = image[:, ::-1], np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], 1)
    for _ in range(view % 4):  # a point (x, y) goes to (y, size - x)
        image, boxes = np.rot90(image), np.stack([boxes[:, 1], size - boxes[:, 2], boxes[:, 3], size - boxes[:, 0]], 1)
    return np.ascontiguousarray(image), boxes


def collate(batch):
    """-> images (B, 3, S, S) float, boxes (K, 5) [batch index, x1, y1, x2, y2], codes (K, A)."""
    images, boxes, codes = zip(*batch)
    indexed = [np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)]
    return to_tensor(list(images)), torch.from_numpy(np.concatenate(indexed)), torch.from_numpy(np.concatenate(codes))


def jitter_boxes(boxes: torch.Tensor, scale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each edge of (K, 5) boxes by up to ``scale`` x the box size: detections are never exact."""
    if scale <= 0:
        return boxes
    wh = (boxes[:, 3:5] - boxes[:, 1:3]).repeat(1, 2)
    # drawn on the CPU generator (the same stream on any device), then moved to the boxes' device
    noise = (torch.rand(boxes.shape[0], 4, generator=generator).to(boxes.device) * 2 - 1) * scale * wh
    out = boxes.clone()
    out[:, 1:] += noise
    return out
