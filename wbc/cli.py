"""Command-line entry points end with one readable line for problems the user can fix, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from wbc.errors import DatasetError, UsageError
from wbc.hyp import HypError
from wbc.offline import DownloadBlocked

USER_ERRORS = (DatasetError, UsageError, HypError, DownloadBlocked, FileNotFoundError, FileExistsError)


def run(main: Callable[[], int | None]) -> None:
    """Call ``main``; a user-fixable error prints ``error: <message>`` and exits with status 2."""
    try:
        sys.exit(main() or 0)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
