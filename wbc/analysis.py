"""The analysis of a run's files in chunks: the unit of work that ``predict.py`` runs in its own process
or on a worker (:mod:`wbc.distributed`), and that it keeps on disk as it finishes, so an interrupted
run resumes where it stopped.

A chunk is ``SCALE_GROUP`` consecutive fields (they pool their scale estimate, so a chunk's result does
not depend on any other chunk), or one whole slide. Its result is plain data (:class:`ChunkResult`):
per image the cells, the ``cells.json`` note, the report's crops and the annotated image as JPEG
bytes, and the files skipped with their reasons.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from wbc.arguments import check_overlap
from wbc.differential import review_reason
from wbc.inference import Cell, FieldScale, WBCAnalyzer, model_card
from wbc.predict_options import PredictOptions
from wbc.report_html import gallery_crops
from wbc.rescale import SCALE_GROUP, resize, tile_needed
from wbc.slide import is_slide
from wbc.sources import load_image
from wbc.tiling import analyze_tiled


def model_cell_types(weights: str | Path, names: list[str]) -> tuple[list[str], list[str]]:
    """(WBC types, nucleated red cell types) among a model's classes: from the model card's JSON
    (keys ``wbc_classes`` and ``nrbc_classes``), else (every class, none)."""
    listed = model_card(weights)
    wbc = [c for c in names if c in (listed.get("wbc_classes") or names)]
    return wbc, [c for c in wbc if c in (listed.get("nrbc_classes") or [])]


TILE_FIELDS = 3  # a tile's side in training fields: its overlap (a third) then exceeds the largest WBC of a field


def default_tile(weights: str | Path, imgsz: int) -> int:
    """Tile side for large images, at the training scale: three times the side of the fields the model
    was trained on (model card key ``train_field_size``); else 1.5 × ``imgsz``. A cell cut by a tile's
    edge is kept only from a tile that holds it whole, so the overlap, a third of the tile, must be
    larger than a WBC: on PBC's fields (363 px) WBCs are 142 px across (median; 219 px at the 99th
    percentile, 308 the largest), and the overlap of a 363-px tile, 121 px, lost most WBCs that a tile
    edge crossed (benchmarks/tiled_fields.py)."""
    field = model_card(weights).get("train_field_size")
    return int(TILE_FIELDS * field) if field else round(1.5 * imgsz)


def image_names(files: list[Path]) -> dict[Path, str]:
    """The name each file goes by in the run's outputs: its file name, or ``<folder>_<file name>`` where
    two files of the run share a name."""
    counts = Counter(p.name for p in files)
    return {p: p.name if counts[p.name] == 1 else f"{p.parent.name}_{p.name}" for p in files}


def annotated_name(name: str, names: list[str]) -> str:
    """``annotated/`` file of an image: ``<stem>.jpg``, or ``<stem>_<suffix>.jpg`` where images of the run
    share a stem (``good.jpg`` and ``good.png``), so that no annotated image overwrites another."""
    stem, suffix = Path(name).stem, Path(name).suffix
    shared = sum(1 for n in names if Path(n).stem == stem) > 1
    return f"{stem}_{suffix.lstrip('.')}.jpg" if shared else f"{stem}.jpg"


def chunks_of(files: list[Path]) -> list[list[Path]]:
    """Whole slides one by one, then the fields ``SCALE_GROUP`` at a time, in the run's order."""
    slides = [p for p in files if is_slide(p)]
    fields = [p for p in files if p not in set(slides)]
    return [[p] for p in slides] + [fields[i:i + SCALE_GROUP] for i in range(0, len(fields), SCALE_GROUP)]


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def annotate(image: np.ndarray, cells: list[Cell], wbc: set[str], review_conf: float) -> np.ndarray:
    from ultralytics.utils.plotting import Annotator, colors

    annotator = Annotator(image.copy(), line_width=max(1, round(max(image.shape[:2]) / 400)))
    for c in cells:
        unsure = bool(review_reason(c, wbc, review_conf))
        annotator.box_label(c.box, f"{c.class_name}{'?' if unsure else ''} {c.confidence:.2f}", (128, 128, 128) if unsure else colors(c.class_id, True))
    return annotator.result()


@dataclass
class ImageResult:
    """One image of a chunk: its cells (boxes in the image's pixels; a slide's in level-0 pixels), its
    ``cells.json`` note, the report's crops {cell index: inline JPEG}, the annotated image (JPEG bytes)."""

    cells: list[Cell]
    note: dict
    crops: dict[int, str] = field(default_factory=dict)
    annotated: bytes | None = None
    annotated_suffix: str = ".jpg"
    tiled: bool = False


@dataclass
class ChunkResult:
    images: dict[str, ImageResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Everything but the annotated images (written when the chunk finishes), for ``parts/``."""
        return {"images": {n: {"cells": [{k: v for k, v in asdict(c).items() if k != "evidence"} for c in r.cells], "note": r.note,
                               "crops": {str(i): s for i, s in r.crops.items()}, "tiled": r.tiled} for n, r in self.images.items()},
                "skipped": self.skipped}

    @classmethod
    def from_json(cls, doc: dict) -> "ChunkResult":
        def cell(d: dict) -> Cell:
            d = {**d, "box": tuple(d["box"]), "attributes": {k: tuple(v) for k, v in d["attributes"].items()},
                 "call": tuple(d["call"]) if d["call"] else None}
            return Cell(**d)

        return cls({n: ImageResult([cell(c) for c in r["cells"]], r["note"], {int(i): s for i, s in r["crops"].items()}, None,
                                   tiled=r["tiled"]) for n, r in doc["images"].items()}, doc["skipped"])


class Analysis:
    """The model and the options of a run; :meth:`chunk` analyses one chunk of its files."""

    def __init__(self, o: PredictOptions):
        from wbc.classify.cell_classifier import CellClassifier

        self.o = o
        self.analyzer = WBCAnalyzer(o.weights, o.head, o.imgsz, o.conf, o.iou, o.device,
                                    cell_classifier=CellClassifier.from_yaml(o.cell_classifier, o.device) if o.cell_classifier else None,
                                    rescale=o.rescale, pixel_size=o.pixel_size, review=o.review, review_rate=o.review_rate,
                                    colour=o.colour, types=o.types, some_type=o.some_type)
        self.names = list(self.analyzer.names.values())
        card_wbc, card_nrbc = model_cell_types(o.weights, self.names)
        self.wbc_list = o.wbc_classes or card_wbc
        self.nrbc_list = [c for c in (card_nrbc if o.nrbc_classes is None else o.nrbc_classes) if c in self.wbc_list]
        self.tile = o.tile or default_tile(o.weights, self.analyzer.imgsz)
        self.overlap = o.overlap if o.overlap is not None else self.tile // 3
        check_overlap(self.tile, self.overlap)

    def chunk(self, paths: list[Path], names: dict[Path, str], done: Callable[[int], None] = lambda n: None) -> ChunkResult:
        """Analyse ``paths`` (a chunk of :func:`chunks_of`); ``names``: each file's name in the run;
        ``done(n)``: called as each n files are finished (a progress bar)."""
        if len(paths) == 1 and is_slide(paths[0]):
            result = ChunkResult({names[paths[0]]: self._slide(paths[0])})
            done(1)
            return result
        result, pending = ChunkResult(), []
        loaded = [(p, load_image(p)) for p in paths]
        readable = [im.image for _, im in loaded if im.image is not None]
        scales = iter(self.analyzer.field_scales(readable))
        for path, im in loaded:
            if im.image is None:
                result.skipped[str(path)] = im.note
                done(1)
                continue
            scale = next(scales)
            work = resize(im.image, scale.factor)  # tiles and the letterbox see the field at the training scale
            note = {"path": str(path), "width": im.image.shape[1], "height": im.image.shape[0], "note": im.note, "scale": scale.how,
                    "rbc_diameter_px": _round(scale.rbc_diameter_px, 1), "pixel_size_um": _round(scale.pixel_size_um, 4),
                    "scale_factor": round(scale.factor, 4)}
            if tile_needed(*work.shape[:2], self.tile):
                cells = analyze_tiled(self.analyzer, work, self.tile, self.overlap, self.o.batch)
                result.images[names[path]] = self._finish(im.image, to_field(cells, scale), note, tiled=True)
                done(1)
            else:
                pending.append((names[path], im.image, work, scale, note))
                if len(pending) == self.o.batch:
                    self._flush(pending, result, done)
        self._flush(pending, result, done)
        return result

    def _flush(self, pending: list, result: ChunkResult, done: Callable[[int], None]) -> None:
        if pending:
            for (name, image, _, scale, note), cells in zip(pending, self.analyzer([w for _, _, w, _, _ in pending], [1.0] * len(pending))):
                result.images[name] = self._finish(image, to_field(cells, scale), note)
            done(len(pending))
            pending.clear()

    def _finish(self, image: np.ndarray, cells: list[Cell], note: dict, tiled: bool = False) -> ImageResult:
        crops = gallery_crops(image, cells, self.wbc_list) if self.o.report else {}
        jpeg = (cv2.imencode(".jpg", annotate(image, cells, set(self.wbc_list), self.o.review_conf))[1].tobytes()
                if self.o.annotated else None)
        return ImageResult(cells, note, crops, jpeg, tiled=tiled)

    def _slide(self, path: Path) -> ImageResult:
        """A whole slide (:mod:`wbc.slide`): fields of its monolayer until ``slide_wbc`` WBCs (not counting
        nucleated red cells); cells in level-0 slide pixels; the annotated image is the field map."""
        from ultralytics.utils import TQDM

        from wbc.scale import RBC_DIAMETER_UM, estimate_scale
        from wbc.slide import field_map, open_slide, plan_slide, sweep, to_slide

        a, o = self.analyzer, self.o
        slide = open_slide(path)
        target = RBC_DIAMETER_UM / a.reference_rbc_px if a.reference_rbc_px else None
        plan = plan_slide(slide, path, target, a.field_size or round(1.5 * a.imgsz), o.pixel_size,
                          estimate=lambda rgb: estimate_scale(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)).diameter_px)
        counted = set(self.wbc_list) - set(self.nrbc_list)
        cells, crops, analysed, found = [], {}, [], 0
        progress = TQDM(sweep(slide, plan, lambda fields: a(fields, [plan.factor] * len(fields)), lambda c: c.class_name in counted,
                              o.slide_wbc or None, o.batch), total=len(plan.blocks), desc=f"{path.name}: monolayer fields")
        for f in progress:
            if o.report:
                crops.update({len(cells) + i: crop for i, crop in gallery_crops(f.image, f.cells, self.wbc_list).items()})
            for c in f.cells:
                c.box = to_slide(c.box, f, plan)
            cells += f.cells
            analysed.append((f.x, f.y))
            found += sum(1 for c in f.cells if c.class_name in counted)
            progress.set_postfix(WBC=found)
        slide.close()
        note = {"path": str(path), "width": plan.width, "height": plan.height,
                "note": f"whole slide: level {plan.level} read, {len(analysed)} of {len(plan.blocks)} monolayer fields analysed",
                "scale": plan.mpp_from, "rbc_diameter_px": _round(RBC_DIAMETER_UM / plan.mpp0, 1), "pixel_size_um": _round(plan.mpp0, 4),
                "scale_factor": round(plan.factor / plan.downsample, 4),
                "slide": {**plan.as_dict(), "fields_analysed": len(analysed), "wbc_counted": found, "target_wbc": o.slide_wbc,
                          "fields": [[x, y] for x, y in analysed]}}
        jpeg = cv2.imencode(".jpg", field_map(plan, analysed, [c for c in cells if c.class_name in counted]))[1].tobytes()
        return ImageResult(cells, note, crops, jpeg if o.annotated else None, "_fields.jpg")


def to_field(cells: list[Cell], scale: FieldScale) -> list[Cell]:
    """Cells found on the resized field, in the original field's pixels."""
    for c in cells:
        c.box = tuple(v / scale.factor for v in c.box)
    return cells


_WORKER_ANALYSIS: dict[str, Analysis] = {}


def analyze_chunk(options: dict, paths: list[str], names: dict[str, str], threads: int | None = None) -> ChunkResult:
    """:meth:`Analysis.chunk` in a worker process: the worker builds the model once per run's options
    (``options``: :meth:`PredictOptions.as_dict`) and keeps it for the run's other chunks."""
    key = json.dumps(options, sort_keys=True)
    if key not in _WORKER_ANALYSIS:
        if threads:
            import torch

            torch.set_num_threads(threads)
        _WORKER_ANALYSIS.clear()
        _WORKER_ANALYSIS[key] = Analysis(PredictOptions(**options))
    return _WORKER_ANALYSIS[key].chunk([Path(p) for p in paths], {Path(p): n for p, n in names.items()})
