"""Which space should cells be clustered in? k-means and DEC on one set of embeddings, over a grid of spaces.

    .venv/bin/python cluster.py --crops runs/crops/pbc_train_11 --split train --k 8 --groups NE=BNE,SNE IG=MMY,MY,PMY \
        --max-per-class 200 --name pbc8_train_field
    .venv/bin/python benchmarks/cluster_spaces.py --run runs/cluster/pbc8_train_field --name pbc8_train_field

Reads a cluster.py run's ``embeddings.npz`` and its labels (``assignments.csv``, groups already merged),
and clusters the same embeddings in each space (standardised; its first 8, 16, 32, 64 principal
components, each standardised in turn) with that run's k, restarts and seed; with ``--idec GAMMA`` also
IDEC (an autoencoder code refined with its reconstruction loss kept, :func:`wbc.cluster.dec.dec`). Choose the space on cells you do not
report (PBC train), then report the chosen one on the others. Writes
``runs/benchmarks/cluster_spaces/<name>/`` (``results.json``, ``results.md``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from wbc.cluster.dec import clustering_space, dec  # noqa: E402
from wbc.cluster.metrics import cluster_scores  # noqa: E402
from wbc.errors import UsageError  # noqa: E402
from wbc.paths import REPO_ROOT, new_run_dir  # noqa: E402

SPACES = [None, 8, 16, 32, 64]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a cluster.py run folder with labels")
    p.add_argument("--idec", type=float, metavar="GAMMA", help="also IDEC with this clustering-loss weight (0.1 in the paper)")
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    run = Path(args.run)
    for f in ("embeddings.npz", "assignments.csv", "metrics.json"):
        if not (run / f).is_file():
            raise UsageError(f"{run} is not a finished cluster.py run (no {f})")
    features = np.load(run / "embeddings.npz")["features"]
    labels = [r["label"] for r in csv.DictReader((run / "assignments.csv").open())]
    if not all(labels):
        raise UsageError(f"{run}: its cells are not all labelled; spaces can only be compared on labelled cells")
    settings = json.loads((run / "metrics.json").read_text())
    k, seed, restarts = settings["k"], settings["settings"]["seed"], settings["settings"].get("restarts", 100)
    rows = []
    for pca in SPACES:
        if pca and pca > min(features.shape):
            continue
        result = dec(clustering_space(features, pca, seed), k, seed=seed, restarts=restarts)
        rows.append({"space": "standardised" if not pca else f"{pca} principal components",
                     "kmeans": cluster_scores(labels, result.kmeans), "dec": cluster_scores(labels, result.clusters)})
        if args.idec is not None:
            code = dec(clustering_space(features, pca, seed), k, autoencoder=True, seed=seed, restarts=restarts, idec=args.idec)
            rows[-1] |= {"kmeans_on_code": cluster_scores(labels, code.kmeans), "idec": cluster_scores(labels, code.clusters)}
        print(f"{rows[-1]['space']:40s} " + "  ".join(f"{key} {rows[-1][key]['hungarian_accuracy']:.3f}"
                                                      for key in ("kmeans", "dec", "kmeans_on_code", "idec") if key in rows[-1]), flush=True)
    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "cluster_spaces")
    out.mkdir(parents=True)
    results = {"run": str(run), "cells": len(labels), "k": k, "seed": seed, "restarts": restarts, "spaces": rows}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    fmt = lambda s: f"{s['hungarian_accuracy']:.3f} / {s['nmi']:.3f} / {s['ari']:.3f}"  # noqa: E731
    columns = [("kmeans", "k-means"), ("dec", "DEC")] + ([("kmeans_on_code", "k-means on the autoencoder's code"),
                                                           ("idec", f"IDEC (γ {args.idec})")] if args.idec is not None else [])
    md = [f"{run} ({len(labels)} cells, k {k}, {restarts} k-means starts, seed {seed})", "",
          "| space | " + " | ".join(f"{title}: Hungarian acc. / NMI / ARI" for _, title in columns) + " |",
          "|---|" + "---|" * len(columns)]
    md += ["| " + " | ".join([r["space"], *(fmt(r[key]) for key, _ in columns)]) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
