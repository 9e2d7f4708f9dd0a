"""Where images to run on come from: an image, a folder, a glob, or a text file of paths."""

from __future__ import annotations

from glob import glob
from pathlib import Path

from wbc.errors import UsageError

IMAGE_SUFFIXES = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic"}


def image_sources(source: str | Path) -> list[Path]:
    """An image, a folder (its images, sorted), a glob, or a text file listing one path per line."""
    source = str(source)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.suffix == ".txt" and path.is_file():
        files = [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    elif path.is_file():
        files = [path]
    elif any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob(source, recursive=True))
    else:
        raise UsageError(f"{source}: no such image, folder, glob or list file")
    if not files:
        raise UsageError(f"{source}: no images found")
    return files
