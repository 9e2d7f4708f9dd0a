"""``python review.py``: review predict runs in the browser.

    python review.py runs/predict/samples                     # review a predict run
    python review.py --source ../shared/data/leukemiaattri_samples --name samples   # run predict.py first, then review

Serves http://127.0.0.1:8765/ (``--port``); state in ``runs/review/review.sqlite`` (``--db``), where
every correction is kept with its old and new value, who and when; exports (signed-out differentials,
the corrections as a COCO dataset) go to ``runs/review/exports/``. Binding to any other address than
localhost needs ``--token``.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from wbc.errors import UsageError
from wbc.arguments import Range
from wbc.paths import runs_root

LOCAL = {"127.0.0.1", "localhost", "::1"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="predict.py run folders (runs/predict/<name>)")
    p.add_argument("--source", help="images to run predict.py on first (an image, a folder, a glob or a list file)")
    p.add_argument("--name", default="review", help="with --source: the predict run's name")
    p.add_argument("--db", default=str(runs_root() / "review" / "review.sqlite"))
    p.add_argument("--export-dir", default=str(runs_root() / "review" / "exports"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=Range(int, 1, 65535), default=8765)
    p.add_argument("--token", help="required of every request; needed to bind anything but localhost ('auto': make one)")
    p.add_argument("--user", default="reviewer", help="the reviewer's name until one is typed into the page")
    args = p.parse_args(argv)
    token = secrets.token_urlsafe(16) if args.token == "auto" else args.token
    if args.host not in LOCAL and not token:
        raise UsageError(f"--host {args.host} would open the review app beyond this machine: give --token (or --token auto)")
    from wbc.app.store import Store

    runs = [Path(r) for r in args.runs]
    if args.source:
        from wbc.paths import new_run_dir
        from wbc.predict import predict

        out = new_run_dir(args.name, runs_root() / "predict")
        predict(args.source, out)
        runs.append(out)
    store = Store(args.db)
    for r in runs:
        store.import_run(r)
    if not store.runs():
        raise UsageError("nothing to review: give a predict run folder or --source")
    import uvicorn

    from wbc.app.server import create_app

    app = create_app(store, Path(args.export_dir), args.user, token)
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/" + (f"?token={token}" if token else "")
    print(f"review app: {url}  (database {args.db}; Ctrl+C stops it, nothing is lost)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", h11_max_incomplete_event_size=16 * 1024)
