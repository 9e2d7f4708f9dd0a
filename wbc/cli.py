"""Command-line entry points end with one readable line for problems the user can fix, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from wbc.errors import DatasetError, Interrupted, UsageError
from wbc.hyp import HypError
from wbc.offline import DownloadBlocked

USER_ERRORS = (DatasetError, UsageError, HypError, DownloadBlocked, FileNotFoundError, FileExistsError)


def run(main: Callable[[], int | None]) -> None:
    """Call ``main``; a user-fixable error prints ``error: <message>`` and exits with status 2; Ctrl-C
    prints what was kept and exits with status 130, as a shell does."""
    try:
        sys.exit(main() or 0)
    except PermissionError as e:
        print(f"error: cannot write {e.filename or e}: permission denied (make it writable, or set WBC_RUNS to a "
              f"writable folder for the runs)", file=sys.stderr)
        sys.exit(2)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if not e.filename:
            raise
        print(f"error: {e.filename}: {e.strerror or e} (check the path, or set WBC_RUNS to a writable folder for the runs)",
              file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(130)
