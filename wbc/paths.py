"""Where the project looks for data, weights and caches; every location can be overridden.

Environment variables:
    WBC_DATA_ROOT     root of raw datasets (default: ``<repo>/../shared/data``)
    WBC_WEIGHTS_ROOT  pretrained weights (default: ``<repo>/../shared/weights``)
    WBC_CACHE         canonical dataset caches (default: ``<repo>/.cache``)
    WBC_RUNS          outputs of every entry point, ``<task>/<name>/`` (default: ``<repo>/runs``)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shipped default model (see weights/wbc_multisource_yolov5n_352.md); its attribute head lies beside it. The previous
# PBC-only model, weights/wbc_pbc_yolov5n_352.pt, stays for comparison.
DEFAULT_WEIGHTS = REPO_ROOT / "weights" / "wbc_multisource_yolov5n_352.pt"


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default.resolve()


def data_root() -> Path:
    return _env_path("WBC_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")


def weights_root() -> Path:
    return _env_path("WBC_WEIGHTS_ROOT", REPO_ROOT.parent / "shared" / "weights")


def cache_root() -> Path:
    return _env_path("WBC_CACHE", REPO_ROOT / ".cache")


def runs_root() -> Path:
    return _env_path("WBC_RUNS", REPO_ROOT / "runs")


def run_dir_of(name: str, project: Path) -> Path:
    """<project>/<name>; a name that would leave ``project`` (absolute, or through '..') is refused."""
    from wbc.errors import UsageError

    name = str(name)
    if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
        raise UsageError(f"--name {name!r}: must be a plain run name; runs are written under {project}, and a name may not "
                         f"leave it (set WBC_RUNS to write them elsewhere)")
    return project / name


def new_run_dir(name: str, project: Path, exist_ok: bool = False) -> Path:
    """<project>/<name>, or <name>2, <name>3 ... so that an earlier run is never overwritten. A name
    that would leave ``project`` (absolute, or through '..') is refused."""
    path, n = run_dir_of(name, project), 2
    while path.exists() and not exist_ok:
        path, n = project / f"{name}{n}", n + 1
    return path
