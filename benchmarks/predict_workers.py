"""predict.py on one process and on N Dask worker processes: images per second, their ratio, and
whether the outputs are the same.

    .venv/bin/python benchmarks/predict_workers.py --fields 256 --workers 2 --name pbc_256

Runs ``predict.py`` as a user does (its own process each time) on the first ``--fields`` PBC val fields:
one process with torch's default threads, one process with as many threads as each worker gets (the
outputs of this one and of the workers must be byte-identical: torch's CPU kernels sum in another
order on another thread count), and ``--workers`` workers. Writes ``runs/benchmarks/predict_workers/<name>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wbc.paths import REPO_ROOT, data_root, new_run_dir  # noqa: E402

OUTPUTS = ("cells.csv", "cells.json", "differential.json")


def run(source: Path, runs: Path, name: str, extra: list[str], env: dict) -> float:
    start = time.time()
    subprocess.run([sys.executable, str(REPO_ROOT / "predict.py"), "--source", str(source), "--name", name, "--no-report",
                    "--no-annotated", *extra], env={**os.environ, "WBC_RUNS": str(runs), **env}, check=True, capture_output=True)
    return time.time() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "predict_workers")
    out.mkdir(parents=True)
    images = sorted((data_root() / "pbc" / "images" / "val").glob("*.jpg"))[: args.fields]
    listing = out / "fields.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    runs = out / "runs"
    seconds = {
        "one process": run(listing, runs, "one", [], {}),
        f"one process, {threads} thread(s)": run(listing, runs, "one_threads", [], {"OMP_NUM_THREADS": str(threads)}),
        f"{args.workers} workers": run(listing, runs, "workers", ["--workers", str(args.workers)], {}),
    }
    same = all((runs / "predict" / "one_threads" / f).read_text() == (runs / "predict" / "workers" / f).read_text() for f in OUTPUTS)
    same_default = all((runs / "predict" / "one" / f).read_text() == (runs / "predict" / "workers" / f).read_text() for f in OUTPUTS)
    metrics = {"fields": len(images), "cpus": os.cpu_count(), "seconds": {k: round(v, 1) for k, v in seconds.items()},
               "images_per_second": {k: round(len(images) / v, 2) for k, v in seconds.items()},
               "ratio_workers_to_one_process": round(seconds["one process"] / seconds[f"{args.workers} workers"], 3),
               "identical_to_one_process_at_worker_threads": same, "identical_to_one_process_default_threads": same_default}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
