"""``python cluster.py``: group the cells of a crop dataset (crop.py output) without labels.

    python cluster.py --crops runs/crops/pbc_val_11 --split val --encoder detector --k 8 \\
        --groups NE=BNE,SNE IG=MMY,MY,PMY --max-per-class 200 --name pbc_val_detector

Embeddings (``--encoder``: ``detector``, ``efficientnet_lite0``, or any timm model with ``--checkpoint``),
then k-means and DEC (``--autoencoder`` to cluster an autoencoder's code, ``--pca N`` its first N principal
components, instead of the embedding) with
``--k`` clusters, or the k in ``--k-range`` with the best silhouette of k-means (all reported). Where the
crops have class folders, clusters are scored against them (``--groups``: classes merged first):
Hungarian accuracy with its mapping, NMI, ARI. Writes ``runs/cluster/<name>/``: ``embeddings.npz``
(reused when the run is resumed with ``--exist-ok``), ``assignments.csv`` (crop, label, k-means cluster,
DEC cluster, DEC confidence), ``metrics.json``, ``tsne.png`` (by DEC cluster and by label) and
``gallery.html`` (each cluster's most and least typical crops). Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
from pathlib import Path

import numpy as np

from wbc.cluster.dec import dec
from wbc.cluster.metrics import cluster_scores
from wbc.cluster.embed import crop_options, detector_embeddings, timm_embeddings
from wbc.errors import UsageError
from wbc.arguments import POSITIVE_INT, Range
from wbc.paths import DEFAULT_WEIGHTS, new_run_dir, runs_root

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def crop_files(root: Path, split: str | None, max_per_class: int | None, seed: int) -> tuple[list[Path], list[str]]:
    """(crop paths, class folder names or '' for unlabelled crops) under ``root/split``."""
    base = root / split if split else root
    if not base.is_dir():
        raise UsageError(f"{base} is not a folder of crops (crop.py writes <out>/<split>/<class>/)")
    rng = np.random.default_rng(seed)
    paths, labels = [], []
    loose = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    paths += loose
    labels += [""] * len(loose)
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class and len(files) > max_per_class:
            files = [files[i] for i in sorted(rng.choice(len(files), max_per_class, replace=False))]
        paths += files
        labels += [folder.name] * len(files)
    if not paths:
        raise UsageError(f"no crops under {base}")
    return paths, labels


def choose_k(features: np.ndarray, ks: list[int], seed: int) -> tuple[int, dict]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    scores = {k: float(silhouette_score(x, KMeans(k, n_init=10, random_state=seed).fit_predict(x), random_state=seed,
                                        sample_size=min(len(x), 3000))) for k in ks}
    return max(scores, key=scores.get), scores


def tsne_plot(path: Path, features: np.ndarray, clusters: np.ndarray, labels: list[str], seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    xy = TSNE(2, random_state=seed, init="pca", perplexity=min(30, len(x) - 1)).fit_transform(x)
    panels = [("DEC cluster", [str(c) for c in clusters])] + ([("label", labels)] if any(labels) else [])
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


def gallery(path: Path, paths: list[Path], labels: list[str], clusters: np.ndarray, confidence: np.ndarray, n: int = 10) -> None:
    def img(p: Path) -> str:
        return f'<img src="data:image/jpeg;base64,{base64.b64encode(p.read_bytes()).decode()}" width="72" title="{html.escape(p.name)}">'

    sections = []
    for c in sorted(set(clusters.tolist())):
        members = np.flatnonzero(clusters == c)
        order = members[np.argsort(-confidence[members])]
        counts = {}
        for i in members:
            counts[labels[i] or "(unlabelled)"] = counts.get(labels[i] or "(unlabelled)", 0) + 1
        top = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        sections.append(f"<h2>cluster {c} ({len(members)} crops: {html.escape(top)})</h2><p>most typical</p>"
                        + "".join(img(paths[i]) for i in order[:n]) + "<p>least typical</p>" + "".join(img(paths[i]) for i in order[-n:]))
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>clusters</title></head><body>{''.join(sections)}</body></html>")


def main(argv=None):
    from ultralytics.utils import TQDM

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True, help="a crop dataset folder (crop.py output) or any folder of crops")
    p.add_argument("--split", default="val", help="the split folder under --crops ('' for none)")
    p.add_argument("--encoder", default="detector", help="detector, efficientnet_lite0, or a timm model name (with --checkpoint)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="with --encoder detector: the detector")
    p.add_argument("--checkpoint", help="with a timm encoder other than efficientnet_lite0: its weights file")
    p.add_argument("--imgsz", type=Range(int, 32), default=224, help="with a timm encoder: input size")
    k = p.add_mutually_exclusive_group()
    k.add_argument("--k", type=Range(int, 2), help="number of clusters")
    k.add_argument("--k-range", nargs=2, type=Range(int, 2), default=[4, 12], help="choose k in this range by k-means silhouette")
    p.add_argument("--groups", nargs="*", default=[], help="GROUP=A,B: score with these classes merged")
    p.add_argument("--max-per-class", type=POSITIVE_INT, help="at most this many crops per class folder (a fixed random subset)")
    p.add_argument("--autoencoder", action="store_true", help="cluster an autoencoder's 10-d code (pretrained on the embeddings)")
    p.add_argument("--pca", type=POSITIVE_INT, help="cluster the first N principal components of the standardised embedding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="exp")
    p.add_argument("--exist-ok", action="store_true", help="write into (and resume) runs/cluster/<name>")
    args = p.parse_args(argv)
    if args.k_range[0] > args.k_range[1]:
        p.error(f"--k-range {args.k_range[0]} {args.k_range[1]}: the first must not exceed the second")
    for spec in args.groups:
        if "=" not in spec or not spec.split("=", 1)[1]:
            p.error(f"--groups {spec!r}: expected GROUP=A,B")
    root = Path(args.crops)
    paths, labels = crop_files(root, args.split or None, args.max_per_class, args.seed)
    if (args.k or args.k_range[1]) >= len(paths):
        raise UsageError(f"{'--k ' + str(args.k) if args.k else '--k-range up to ' + str(args.k_range[1])}: needs more crops than "
                         f"clusters; {root} has {len(paths)}")
    out = new_run_dir(args.name, runs_root() / "cluster", args.exist_ok)
    out.mkdir(parents=True, exist_ok=True)
    group = {c: g for spec in args.groups for g, members in [spec.split("=", 1)] for c in members.split(",")}
    labels = [group.get(label, label) for label in labels]
    cache = out / "embeddings.npz"
    if cache.is_file() and list(np.load(cache)["paths"]) == [str(p) for p in paths]:
        features = np.load(cache)["features"]
    else:
        progress = lambda it: TQDM(it, desc=f"embeddings ({args.encoder})")  # noqa: E731
        if args.encoder == "detector":
            options = crop_options(root)
            features = detector_embeddings(paths, args.weights, float(options.get("margin", 0.1)), progress=progress)
        else:
            features = timm_embeddings(paths, args.encoder, args.checkpoint, args.imgsz, progress=progress)
        np.savez_compressed(cache, features=features, paths=np.array([str(p) for p in paths]))
    most = min(len(paths), int(features.shape[1]))
    if args.pca and args.pca > most:
        raise UsageError(f"--pca {args.pca}: at most {most} components for {len(paths)} crops of {features.shape[1]} features")
    if args.pca:
        from sklearn.decomposition import PCA

        features = PCA(args.pca, random_state=args.seed).fit_transform((features - features.mean(0)) / (features.std(0) + 1e-6))
    chosen, silhouettes = (args.k, {}) if args.k else choose_k(features, list(range(args.k_range[0], args.k_range[1] + 1)), args.seed)
    result = dec(features, chosen, args.autoencoder, args.seed, progress=lambda it: TQDM(it, desc="DEC"))
    metrics = {"settings": vars(args), "crops": len(paths), "dim": int(features.shape[1]), "k": chosen, "silhouette": silhouettes,
               "dec_steps": result.steps}
    if all(labels):
        metrics["kmeans"] = cluster_scores(labels, result.kmeans)
        metrics["dec"] = cluster_scores(labels, result.clusters)
        metrics["labels"] = {label: labels.count(label) for label in sorted(set(labels))}
    with (out / "assignments.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["crop", "label", "kmeans", "dec", "dec_confidence"])
        writer.writerows([str(pth), lab, int(a), int(b), round(float(c), 4)]
                         for pth, lab, a, b, c in zip(paths, labels, result.kmeans, result.clusters, result.confidence))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    tsne_plot(out / "tsne.png", features, result.clusters, labels, args.seed)
    gallery(out / "gallery.html", paths, labels, result.clusters, result.confidence)
    for method in ("kmeans", "dec"):
        if method in metrics:
            m = metrics[method]
            print(f"{method}: Hungarian accuracy {m['hungarian_accuracy']:.3f}, NMI {m['nmi']:.3f}, ARI {m['ari']:.3f}")
    print(f"k = {chosen}; {len(paths)} crops; written to {out}")
