"""Where images to run on come from (an image, a folder, a glob, or a text file of paths), and
reading them so that odd files are converted or reported instead of crashing a run.

Converted (and noted): 16-bit images (scaled to 8 bits), grayscale (to 3 channels), RGBA (alpha
dropped, composited on white). Skipped with a reason: missing or zero-byte files, sub-folders of a
source folder, broken symbolic links and link loops, files that are not images or cannot be decoded.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import cv2
import numpy as np

from wbc.errors import UsageError
from wbc.formats.base import image_size

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}


def image_sources(source: str | Path) -> list[Path]:
    """A file, a folder (every file in it, sorted: non-images are reported when read, not silently
    left out), a glob, or a text file listing one path per line."""
    source = str(source)
    path = Path(source)
    if path.is_dir():  # every entry, so that sub-folders and broken links are reported as skipped, not left out
        files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    elif path.suffix == ".txt" and path.is_file():
        files = [path.parent / line.strip() for line in read_list(path) if line.strip()]  # relative: to the list's folder
    elif path.is_file():
        files = [path]
    elif any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob(source, recursive=True) if Path(p).is_file())
    else:
        raise UsageError(f"{source}: no such image, folder, glob or list file")
    if not files:
        raise UsageError(f"{source}: no files found")
    return files


@dataclass
class Loaded:
    path: Path
    image: np.ndarray | None  # BGR uint8, or None when skipped
    note: str = ""  # what was converted, or why it was skipped


def to_bgr8(image: np.ndarray) -> tuple[np.ndarray, str]:
    """Any decoded image -> 3-channel uint8 BGR, and a note on what was converted ('' if nothing)."""
    notes = []
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
        else:
            lo, hi = float(image.min()), float(image.max())
            image = ((image.astype(np.float32) - lo) / max(hi - lo, 1e-12) * 255).round().astype(np.uint8)
        notes.append("scaled to 8 bits")
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
        notes.append("grayscale to 3 channels")
    elif image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255
        image = (image[..., :3].astype(np.float32) * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        notes.append("alpha dropped (composited on white)")
    return image, ", ".join(notes)


def read_list(path: Path) -> list[str]:
    """The lines of a list file, or a UsageError naming it if it is not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); a list file holds "
                         "one image path per line") from None


def unreadable(path: Path) -> str | None:
    """Why ``path`` is not a file to read (a folder, a broken or looping link), or None."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop"
        return "broken symbolic link" if path.is_symlink() else "missing"
    if path.is_dir():
        return "a folder (folders are not searched: pass a glob such as 'folder/**/*.png')"
    return None


def load_image(path: Path) -> Loaded:
    """Read ``path`` for inference; never raises for a bad file."""
    reason = unreadable(path)
    if reason:
        return Loaded(path, None, reason)
    size = image_size(path)  # a full decode: truncated files are caught here
    if isinstance(size, str):
        if size.startswith("corrupt") and path.suffix.lower() not in IMAGE_SUFFIXES:
            size = "not an image"
        return Loaded(path, None, "zero-byte file" if size == "empty file" else size)
    image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return Loaded(path, None, "corrupt image (OpenCV cannot decode it)")
    image, note = to_bgr8(image)
    return Loaded(path, image, note)
