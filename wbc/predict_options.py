"""The options of a whole-smear run, in one place: each field is the Python default, the command-line
flag (with its help and range) and the check, as ultralytics keeps its cfg. ``predict.py`` builds
the parser from these fields and :func:`wbc.predict.predict` takes the object; adding an option is
adding a field here.

    from wbc.predict import predict
    from wbc.predict_options import PredictOptions
    predict("smears/", Path("runs/predict/mine"), PredictOptions(conf=0.3, pixel_size=0.1))
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from wbc.arguments import FRACTION, IMGSZ, NON_NEGATIVE_INT, PIXEL_SIZE, POSITIVE_INT, RATE, TILE, Range, check
from wbc.errors import UsageError
from wbc.paths import DEFAULT_WEIGHTS


def option(default, help: str, flag: str | None = None, rule: Range | None = None, kind: type | None = None, nargs=None,
           negate: str | None = None):
    """A field of :class:`PredictOptions`. ``flag``: the command-line name (default ``--<name>``); ``rule``:
    the range it must lie in; ``negate``: for a default-True switch, the flag that turns it off."""
    return field(default=default, metadata={"help": help, "flag": flag, "rule": rule, "kind": kind, "nargs": nargs, "negate": negate})


@dataclass(frozen=True)
class PredictOptions:
    weights: str | Path = option(str(DEFAULT_WEIGHTS), "detector (default: the shipped model); its attribute head beside it is used")
    head: str | Path | bool | None = option(None, "attribute head file, if not beside the weights (Python: False for none)",
                                            negate="--no-head")
    types: str | Path | bool | None = option(None, "type head file, if not beside the weights (<stem>.types.pt): each WBC's type "
                                             "from the detector's classes and the head together, as the model card weighs them "
                                             "(Python: False for the detector's classes alone)", negate="--no-type-head")
    imgsz: int | None = option(None, "network input size in pixels (default: the head's, else the detector's training size)", rule=IMGSZ)
    conf: float = option(0.25, "minimum confidence of a cell", rule=FRACTION)
    iou: float = option(0.7, "NMS IoU", rule=FRACTION)
    review_rate: float | None = option(None, "share of cells of known types sent to 'unidentified' for review, as measured on val "
                                       "(default: the model's stored operating point, 5%%); cells unlike the training cells or with "
                                       "a low calibrated type probability are the ones sent", rule=RATE)
    review: str | Path | bool | None = option(None, "the review model file, if not beside the weights (Python: False for "
                                              "none; then --review-conf decides)", negate="--no-review-model")
    review_conf: float = option(0.5, "without a review model: WBC-type cells below this confidence go to 'unidentified'", rule=FRACTION)
    wbc_classes: list[str] | None = option(None, "which classes are WBC types (default: from the model card beside the weights, "
                                           "else all)", nargs="+")
    nrbc_classes: list[str] | None = option(None, "which of them are nucleated red cells, reported per 100 WBC outside the "
                                            "differential (default: from the model card; none when given without names)", nargs="*")
    pixel_size: float | None = option(None, "µm per pixel of the fields (default: estimated per field from the median red-cell "
                                      "diameter, 7.5 µm); each field is resized to the scale the model was trained on (its model "
                                      "card records it)", rule=PIXEL_SIZE)
    rescale: bool = option(True, "run every field at the size it comes (no resizing to the training scale)", negate="--no-rescale")
    some_type: bool = option(True, "score a WBC-type box by its best type alone (not by the probability that it is some WBC type, "
                             "which an unfamiliar cell split between two types keeps above --conf)", negate="--max-type-score")
    colour: bool = option(True, "run every field in its own colours (no normalisation of its CIELAB mean and spread to the training "
                          "fields', which the model card records)", negate="--no-colour-norm")
    tile: int | None = option(None, "fields (after resizing to the training scale) with a side above 1.5 x this many pixels are "
                              "tiled (default: 3 x the training fields' size from the model card, else 1.5 x the input size)", rule=TILE)
    overlap: int | None = option(None, "tile overlap in pixels, larger than a cell, at most half the tile (default: a third of "
                                 "--tile)", rule=NON_NEGATIVE_INT)
    slide_wbc: int = option(200, "whole slides (pyramidal TIFF, SVS, NDPI): stop after this many WBCs are counted in the "
                            "monolayer, as a manual differential does (0: every monolayer field)", rule=NON_NEGATIVE_INT)
    cell_classifier: str | Path | None = option(None, "yaml naming detector classes and a crop classifier to call on them")
    batch: int = option(8, "fields per network call", rule=POSITIVE_INT)
    device: str = option("cpu", "cpu, 0 or cuda:0")
    annotated: bool = option(True, "do not write annotated images", negate="--no-annotated")
    report: bool = option(True, "do not write report.html", negate="--no-report")

    def __post_init__(self):
        for f in fields(self):
            rule = f.metadata["rule"]
            if rule is not None:
                object.__setattr__(self, f.name, check(flag_of(f), getattr(self, f.name), rule))
        for path_option in ("head", "review", "cell_classifier"):
            value = getattr(self, path_option)
            if value not in (None, False, True) and not Path(value).is_file():
                raise UsageError(f"{flag_of(next(f for f in fields(self) if f.name == path_option))} {value}: no such file")

    def replace(self, **changes) -> "PredictOptions":
        """A copy with ``changes`` (checked again)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown predict option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            meta = f.metadata
            if meta["negate"]:
                parser.add_argument(meta["negate"], dest=f.name, action="store_const", const=False, default=f.default,
                                    help=meta["help"] if f.default is True else f"no {f.name.replace('_', ' ')}")
                if f.default is not True:  # a file that can also be named: --head <file>
                    parser.add_argument(flag_of(f), dest=f.name, help=meta["help"].split(" (Python")[0])
                continue
            kind = meta["rule"] or meta["kind"] or (str if f.default is None or isinstance(f.default, str) else type(f.default))
            parser.add_argument(flag_of(f), dest=f.name, type=kind, nargs=meta["nargs"], default=f.default, help=meta["help"])

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "PredictOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def flag_of(f) -> str:
    return f.metadata["flag"] or f"--{f.name.replace('_', '-')}"

