"""Make every download ultralytics might attempt fail at once, with a message naming local files.

ultralytics fetches missing weights, fonts and datasets on demand. Here nothing may be fetched:
``guard_downloads()`` replaces its download functions so that a missing file raises
``DownloadBlocked`` (a ConnectionError, which ultralytics' own optional checks, such as the AMP
check, already treat as "offline") instead of hanging on retries.
"""

from __future__ import annotations

import sys
from pathlib import Path

from wbc.paths import weights_root


class DownloadBlocked(ConnectionError):
    pass


def _message(what) -> str:
    local = sorted(str(p) for p in weights_root().glob("*.pt")) if weights_root().is_dir() else []
    return (f"{what}: not on disk, and nothing is downloaded here. Pass a local file instead "
            f"(local weights: {', '.join(local) or 'none in ' + str(weights_root())}; or a config such as 'yolov5n' to start from scratch).")


def guard_downloads() -> None:
    """Idempotent. Patches ultralytics.utils.downloads and every already-imported module holding its functions."""
    import ultralytics.utils.downloads as downloads

    if getattr(downloads, "_wbc_guarded", False):
        return
    originals = {name: getattr(downloads, name) for name in ("attempt_download_asset", "safe_download", "download")}

    def attempt_download_asset(file, *args, **kwargs):
        if Path(str(file)).exists():
            return originals["attempt_download_asset"](file, *args, **kwargs)  # local: nothing to fetch
        raise DownloadBlocked(_message(file))

    def safe_download(url="", file=None, *args, **kwargs):
        raise DownloadBlocked(_message(file or url))

    def download(url, *args, **kwargs):
        raise DownloadBlocked(_message(url))

    replacements = {"attempt_download_asset": attempt_download_asset, "safe_download": safe_download, "download": download}
    for module in [m for name, m in list(sys.modules.items()) if name.startswith("ultralytics") and m is not None]:
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                setattr(module, name, replacements[name])
    downloads._wbc_guarded = True
