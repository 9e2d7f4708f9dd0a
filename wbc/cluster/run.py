"""``python cluster.py``: group cells without labels, from a crop dataset (crop.py output) or a predict run.

    python cluster.py --crops runs/crops/pbc_val_11 --split val --encoder detector --k 8 \\
        --groups NE=BNE,SNE IG=MMY,MY,PMY --max-per-class 200 --name pbc_val_detector
    python cluster.py --predict runs/predict/exp --k-range 4 12 --name my_smears

Cells (wbc/cluster/cells.py): the crops of a crop folder, or a predict run's WBC in their fields.
Embeddings (``--encoder``: ``detector``, ``efficientnet_lite0``, or any timm model with ``--checkpoint``;
the detector sees each cell in its field where the field is known, ``--view crop`` alone in its crop),
then k-means and DEC (``--autoencoder`` to cluster an autoencoder's code, ``--pca N`` its first N principal
components, instead of the embedding) with
``--k`` clusters, or the k in ``--k-range`` with the best silhouette of k-means (all reported). Where the
crops have class folders, clusters are scored against them (``--groups``: classes merged first):
Hungarian accuracy with its mapping, NMI, ARI; the cells of a predict run are unlabelled, and each
cluster is reported with the types predict.py gave its cells. Writes ``runs/cluster/<name>/``: ``embeddings.npz``
(reused when the run is resumed with ``--exist-ok``), ``assignments.csv`` (cell, label, predicted bin, k-means
cluster and confidence, DEC cluster and confidence), ``metrics.json``, ``tsne.png`` (by cluster and by
label) and ``gallery.html`` (each cluster's most and least typical cells), the last two of the k-means
partition (``--show dec``: DEC's). Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
from pathlib import Path

import numpy as np

from wbc.cluster.dec import clustering_space, dec
from wbc.cluster.metrics import cluster_scores
from wbc.cluster.cells import CellRef, cell_crops, crop_folder_cells, in_fields, predict_run_cells
from wbc.cluster.embed import crop_options, detector_embeddings, timm_embeddings
from wbc.errors import UsageError
from wbc.arguments import POSITIVE_INT, Range
from wbc.paths import DEFAULT_WEIGHTS, new_run_dir, runs_root


def choose_k(features: np.ndarray, ks: list[int], seed: int, restarts: int = 10) -> tuple[int, dict]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = clustering_space(features)
    scores = {k: float(silhouette_score(x, KMeans(k, n_init=restarts, random_state=seed).fit_predict(x), random_state=seed,
                                        sample_size=min(len(x), 3000))) for k in ks}
    return max(scores, key=scores.get), scores


def tsne_plot(path: Path, features: np.ndarray, clusters: np.ndarray, labels: list[str], seed: int, method: str = "DEC") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    x = clustering_space(features)
    xy = TSNE(2, random_state=seed, init="pca", perplexity=min(30, len(x) - 1)).fit_transform(x)
    panels = [(f"{method} cluster", [str(c) for c in clusters])] + ([("label", labels)] if any(labels) else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.5), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        for v in sorted(set(values)):
            keep = np.array([u == v for u in values])
            ax.scatter(xy[keep, 0], xy[keep, 1], s=4, label=v)
        ax.set_title(f"t-SNE, by {title}")
        ax.legend(markerscale=3, fontsize=7, loc="best")
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gallery(path: Path, cells: list[CellRef], labels: list[str], clusters: np.ndarray, confidence: np.ndarray, margin: float,
            n: int = 10) -> None:
    """Each cluster's ``n`` most and least typical cells (by the partition's confidence), with its make-up by label or predicted bin."""
    import cv2

    def images(indices) -> str:
        crops = cell_crops([cells[i] for i in indices], margin, 96)
        return "".join(f'<img src="data:image/jpeg;base64,{base64.b64encode(cv2.imencode(".jpg", c)[1].tobytes()).decode()}" '
                       f'width="72" title="{html.escape(Path(cells[i].name).name)}">' for i, c in zip(indices, crops))

    sections = []
    for c in sorted(set(clusters.tolist())):
        members = np.flatnonzero(clusters == c)
        order = members[np.argsort(-confidence[members])]
        counts: dict[str, int] = {}
        for i in members:
            key = labels[i] or (f"predicted {cells[i].predicted}" if cells[i].predicted else "(unlabelled)")
            counts[key] = counts.get(key, 0) + 1
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        sections.append(f"<h2>cluster {c} ({len(members)} cells: {html.escape(top)})</h2><p>most typical</p>" + images(order[:n])
                        + "<p>least typical</p>" + images(order[-n:]))
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clusters</title></head><body>{''.join(sections)}</body></html>")


def by_predicted(cells: list[CellRef], clusters: np.ndarray) -> dict:
    """{cluster: {predicted bin: cells}}: what predict.py called the cells of each cluster."""
    table: dict[str, dict[str, int]] = {}
    for c, cluster in zip(cells, clusters):
        row = table.setdefault(str(int(cluster)), {})
        row[c.predicted] = row.get(c.predicted, 0) + 1
    return {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in sorted(table.items(), key=lambda kv: int(kv[0]))}


def main(argv=None):
    from ultralytics.utils import TQDM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--crops", help="a crop dataset folder (crop.py output) or any folder of crops")
    src.add_argument("--predict", help="a predict run folder (runs/predict/<name>): cluster its WBC")
    p.add_argument("--split", default="val", help="with --crops: the split folder under it ('' for none)")
    p.add_argument("--classes", nargs="+", help="with --predict: the predicted types to cluster (default: the run's WBC and NRBC classes)")
    p.add_argument("--margin", type=Range(float, 0, 2), default=0.1,
                   help="with --predict: margin of the crops cut for a timm encoder and the gallery (crop.py's default)")
    p.add_argument("--encoder", default="detector", help="detector, efficientnet_lite0, or a timm model name (with --checkpoint)")
    p.add_argument("--view", choices=["auto", "field", "crop"], default="auto",
                   help="with --encoder detector: each cell in its field (where known: auto), or its crop alone")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="with --encoder detector: the detector")
    p.add_argument("--checkpoint", help="with a timm encoder other than efficientnet_lite0: its weights file")
    p.add_argument("--imgsz", type=Range(int, 32), default=224, help="with a timm encoder: input size")
    k = p.add_mutually_exclusive_group()
    k.add_argument("--k", type=Range(int, 2), help="number of clusters")
    k.add_argument("--k-range", nargs=2, type=Range(int, 2), default=[4, 12], help="choose k in this range by k-means silhouette")
    p.add_argument("--groups", nargs="*", default=[], help="GROUP=A,B: score with these classes merged")
    p.add_argument("--max-per-class", type=POSITIVE_INT, help="with --crops: at most this many crops per class folder (a fixed random subset)")
    p.add_argument("--autoencoder", action="store_true", help="cluster an autoencoder's 10-d code (pretrained on the embeddings)")
    p.add_argument("--pca", type=POSITIVE_INT, help="cluster the first N principal components of the standardised embedding")
    p.add_argument("--show", choices=["kmeans", "dec"], default="kmeans",
                   help="the partition the plot and gallery show (both are in assignments.csv and scored): k-means, "
                   "measured better than DEC's refinement of it on PBC (docs/clustering.md)")
    p.add_argument("--restarts", type=POSITIVE_INT, default=100, help="k-means starts (the one of least inertia is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="write into (and resume) runs/cluster/<name>")
    args = p.parse_args(argv)
    if args.k_range[0] > args.k_range[1]:
        p.error(f"--k-range {args.k_range[0]} {args.k_range[1]}: the first must not exceed the second")
    for spec in args.groups:
        if "=" not in spec or not spec.split("=", 1)[1]:
            p.error(f"--groups {spec!r}: expected GROUP=A,B")
    if args.crops:
        root = Path(args.crops)
        cells = crop_folder_cells(root, args.split or None, args.max_per_class, args.seed)
        margin = float(crop_options(root).get("margin", 0.1))
    else:
        root = Path(args.predict)
        cells = predict_run_cells(root, args.classes)
        margin = args.margin
    if (args.k or args.k_range[1]) >= len(cells):
        raise UsageError(f"{'--k ' + str(args.k) if args.k else '--k-range up to ' + str(args.k_range[1])}: needs more cells than "
                         f"clusters; {root} has {len(cells)}")
    view = None
    if args.encoder == "detector":
        view = args.view if args.view != "auto" else "field" if in_fields(cells) else "crop"
        if view == "field" and not in_fields(cells):
            missing = sum(1 for c in cells if c.field is None)
            raise UsageError(f"--view field: {missing} of {len(cells)} crops under {root} have no source field "
                             "(crop.py's manifest.csv names it, and the field must still be there); use --view crop")
    out = new_run_dir(args.name, runs_root() / "cluster", args.exist_ok)
    out.mkdir(parents=True, exist_ok=True)
    group = {c: g for spec in args.groups for g, members in [spec.split("=", 1)] for c in members.split(",")}
    labels = [group.get(c.label, c.label) for c in cells]
    cache, key = out / "embeddings.npz", f"{args.encoder}:{view}"
    cached = dict(np.load(cache)) if cache.is_file() else {}
    if list(cached.get("paths", [])) == [c.name for c in cells] and str(cached.get("key", "")) == key:
        features = cached["features"]
    else:
        progress = lambda it: TQDM(it, desc=f"embeddings ({key})")  # noqa: E731
        if args.encoder == "detector":
            features = detector_embeddings(cells, args.weights, view, margin, progress=progress)
        else:
            features = timm_embeddings(cells, args.encoder, args.checkpoint, args.imgsz, margin, progress=progress)
        np.savez_compressed(cache, features=features, paths=np.array([c.name for c in cells]), key=np.array(key))
    most = min(len(cells), int(features.shape[1]))
    if args.pca and args.pca > most:
        raise UsageError(f"--pca {args.pca}: at most {most} components for {len(cells)} cells of {features.shape[1]} features")
    if args.pca:
        features = clustering_space(features, args.pca, args.seed)
    chosen, silhouettes = (args.k, {}) if args.k else choose_k(features, list(range(args.k_range[0], args.k_range[1] + 1)), args.seed, args.restarts)
    result = dec(features, chosen, args.autoencoder, args.seed, restarts=args.restarts, progress=lambda it: TQDM(it, desc="DEC"))
    metrics = {"settings": vars(args), "cells": len(cells), "view": view, "dim": int(features.shape[1]), "k": chosen,
               "silhouette": silhouettes, "dec_steps": result.steps}
    if all(labels):
        metrics["kmeans"] = cluster_scores(labels, result.kmeans)
        metrics["dec"] = cluster_scores(labels, result.clusters)
        metrics["labels"] = {label: labels.count(label) for label in sorted(set(labels))}
    if all(c.predicted for c in cells):
        metrics["predicted_by_cluster"] = {"kmeans": by_predicted(cells, result.kmeans), "dec": by_predicted(cells, result.clusters)}
    with (out / "assignments.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "label", "predicted", "kmeans", "kmeans_confidence", "dec", "dec_confidence"])
        writer.writerows([c.name, lab, c.predicted, int(a), round(float(ca), 4), int(b), round(float(cb), 4)]
                         for c, lab, a, ca, b, cb in zip(cells, labels, result.kmeans, result.kmeans_confidence, result.clusters, result.confidence))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shown, confidence = (result.kmeans, result.kmeans_confidence) if args.show == "kmeans" else (result.clusters, result.confidence)
    tsne_plot(out / "tsne.png", features, shown, labels, args.seed, "k-means" if args.show == "kmeans" else "DEC")
    gallery(out / "gallery.html", cells, labels, shown, confidence, margin)
    for method in ("kmeans", "dec"):
        if method in metrics:
            m = metrics[method]
            print(f"{method}: Hungarian accuracy {m['hungarian_accuracy']:.3f}, NMI {m['nmi']:.3f}, ARI {m['ari']:.3f}")
    print(f"k = {chosen}; {len(cells)} cells" + (f", the detector seeing each in its {view}" if view else "") + f"; written to {out}")
