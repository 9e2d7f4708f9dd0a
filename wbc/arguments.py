"""The ranges of the options that entry points share (``--conf``, ``--iou``, ``--imgsz``, ``--batch``,
``--tile``, ``--overlap``, ``--epochs`` ...), defined once. Each rule is an argparse ``type`` (the
command line then ends with one line naming the option) and is checked by :func:`check` for the
Python API (a :class:`~wbc.errors.UsageError` naming the option).
"""

from __future__ import annotations

import argparse
import math

from wbc.errors import UsageError

# A tile must hold whole cells with room around them: a WBC at the training scale is 60-90 px across.
MIN_TILE = 128
# Below two strides of the deepest level (P5, stride 32) the network sees a 2 x 2 map: nothing can be found.
MIN_IMGSZ = 64
MAX_IMGSZ = 8192


class Range:
    """A number of ``kind`` (int or float) within [lo, hi] (``lo_open`` / ``hi_open``: excluded).
    Called with a string (argparse) or a number (Python); returns the number or raises
    ``argparse.ArgumentTypeError`` with the reason."""

    def __init__(self, kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                 hi_open: bool = False, why: str = ""):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open, self.why = kind, lo, hi, lo_open, hi_open, why
        self.__name__ = kind.__name__  # argparse names the type in its own messages

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{what} {'>' if self.lo_open else '≥'} {self.lo} and {'<' if self.hi_open else '≤'} {self.hi}"
        if self.lo is not None:
            return f"{what} {'>' if self.lo_open else '≥'} {self.lo}"
        return f"{what} {'<' if self.hi_open else '≤'} {self.hi}"

    def __call__(self, value) -> int | float:
        try:
            number = self.kind(value)
            if isinstance(value, float) and self.kind is int and not value.is_integer():
                raise ValueError
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{value!r} is not {self.describe()}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"{value!r} is not {self.describe()}")
        low = self.lo is not None and (number <= self.lo if self.lo_open else number < self.lo)
        high = self.hi is not None and (number >= self.hi if self.hi_open else number > self.hi)
        if low or high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {self.describe()}{'; ' + self.why if self.why else ''}")
        return number


FRACTION = Range(float, 0, 1)  # confidences, IoU thresholds
RATE = Range(float, 0, 1, hi_open=True, why="the share of known cells to flag")
POSITIVE_INT = Range(int, 1)
NON_NEGATIVE_INT = Range(int, 0)
POSITIVE = Range(float, 0, lo_open=True)
IMGSZ = Range(int, MIN_IMGSZ, MAX_IMGSZ, why=f"below {MIN_IMGSZ} px the network's coarsest map is under 2 x 2 cells")
TILE = Range(int, MIN_TILE, why="a tile must hold whole WBCs (60-90 px at the training scale) with room around them")
PIXEL_SIZE = Range(float, 0.01, 20, why="µm per pixel: about 0.1 at 100x oil, 2 at 4x")


def check(option: str, value, rule: Range):
    """``value`` if ``rule`` allows it (None passes: the option's default applies), else UsageError naming ``option``."""
    if value is None:
        return None
    try:
        return rule(value)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"{option}: {e}") from None


def check_overlap(tile: int, overlap: int) -> None:
    """Tiles step by ``tile - overlap``: the overlap must be non-negative and at most half the tile (a smaller
    step multiplies the tiles without finding more cells)."""
    if not 0 <= overlap <= tile // 2:
        raise UsageError(f"--overlap {overlap}: must be ≥ 0 and ≤ half of --tile {tile} ({tile // 2}); a cell needs an "
                         "overlap only a little larger than itself")
