"""``report.html``: one self-contained page (no network, crops inlined as base64 JPEG) with the
differential count and a gallery of cell crops per class, least confident first, each with its
attributes, so that a reviewer can approve or reclassify at a glance."""

from __future__ import annotations

import base64
import html

import cv2
import numpy as np

from wbc.classify.crops import crop_box
from wbc.differential import UNIDENTIFIED, review_bin, review_reason
from wbc.inference import Cell

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.gallery{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;width:132px;font-size:11px;border:1px solid #ddd;padding:4px;background:#fafafa}
figure img{width:128px;height:128px;display:block}
figcaption b{font-size:12px} .low{color:#b00} .note{color:#666;font-size:.9em}
"""


def _img(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else ""


def _table(counts: dict, label: str) -> str:
    rows = "".join(f'<tr><td>{html.escape(k)}</td><td data-bin="{html.escape(k)}" data-count="{v["count"]}">{v["count"]}</td>'
                   f'<td>{v["percent"]:.1f}</td></tr>' for k, v in counts["per_class"].items() if v["count"])
    nrbc = "".join(f'<tr><td>{html.escape(k)} (per 100 WBC)</td><td data-bin="{html.escape(k)}" data-count="{v["count"]}">{v["count"]}</td>'
                   f'<td>{v["per_100_wbc"]:.1f}</td></tr>' for k, v in counts["nrbc"].items() if v["count"])
    other = ", ".join(f"{html.escape(k)} {v}" for k, v in counts["other"].items())
    return (f'<table data-table="{html.escape(label)}"><tr><th>class</th><th>count</th><th>% of WBC</th></tr>{rows}'
            f'<tr><th>WBC</th><th data-bin="WBC" data-count="{counts["wbc"]}">{counts["wbc"]}</th><th>100</th></tr>{nrbc}</table>'
            + (f'<p class="note">other cells: {other}</p>' if other else ""))


def gallery_crops(image: np.ndarray, cells: list[Cell], wbc_classes: list[str], size: int = 128) -> dict[int, str]:
    """{cell index: inline JPEG} of the WBC-type cells of one image (cut while the image is in memory)."""
    return {i: _img(crop_box(image, c.box, 0.15, True, size)) for i, c in enumerate(cells) if c.class_name in wbc_classes}


def write_report(path, title: str, diff: dict, cells_by_image: dict[str, list[Cell]], crops: dict[str, dict[int, str]],
                 wbc_classes: list[str], skipped: dict[str, str], scale_note: str = "") -> None:
    """``crops``: {image: :func:`gallery_crops`}; ``scale_note``: how the fields were brought to the training scale."""
    wbc = set(wbc_classes)
    gallery: dict[str, list[tuple[Cell, str, int]]] = {}
    for name, cells in cells_by_image.items():
        for i, c in enumerate(cells):
            if c.class_name in wbc:
                gallery.setdefault(review_bin(c, wbc, diff["review_conf"]), []).append((c, name, i))
    sections = []
    for b in [UNIDENTIFIED, *wbc_classes]:
        members = sorted(gallery.get(b, []), key=lambda m: m[0].confidence)
        if not members:
            continue
        figures = []
        for c, name, i in members:
            attrs = "<br>".join(f"{html.escape(k)}: {html.escape(v)} ({p:.2f})" for k, (v, p) in c.attributes.items())
            call = f"<br><b>{html.escape(c.call[0])}</b> ({c.call[1]:.2f})" if c.call else ""
            reason = review_reason(c, wbc, diff["review_conf"])
            low = ' class="low"' if reason else ""
            scores = (f" · type p {c.type_probability:.2f} · OOD {c.ood:.2f}" if c.type_probability is not None else "")
            why = f'<br><span class="low">{html.escape(reason)}</span>' if reason else ""
            figures.append(f'<figure data-bin="{html.escape(b)}"><img src="{crops[name][i]}" alt="{html.escape(c.class_name)}">'
                           f'<figcaption><b>{html.escape(c.class_name)}</b> <span{low}>{c.confidence:.2f}</span>{scores} · '
                           f'{html.escape(name)}{why}{call}<br>{attrs}</figcaption></figure>')
        sections.append(f'<h2>{html.escape(b)} ({len(members)})</h2><div class="gallery">{"".join(figures)}</div>')
    per_image = "".join(f"<h3>{html.escape(name)}</h3>{_table(counts, name)}" for name, counts in diff["per_image"].items())
    skipped_html = ("<h2>Skipped files</h2><ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in skipped.items())
                    + "</ul>") if skipped else ""
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>'
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="note">{len(cells_by_image)} images; {html.escape(review_rule(diff))} Galleries are sorted least confident first.'

            f'{" " + html.escape(scale_note) if scale_note else ""}</p>'
            f"<h2>Differential count (all images)</h2>{_table(diff['run'], 'run')}{skipped_html}"
            f"<h2>Cells by class</h2>{''.join(sections) or '<p>No WBC found.</p>'}"
            f"<h2>Per image</h2>{per_image}</body></html>")
    path.write_text(page, encoding="utf-8")


def review_rule(diff: dict) -> str:
    """One sentence on what sent cells to 'unidentified' in this run."""
    review = diff.get("review") or {}
    if review.get("model"):
        return (f'WBC-type cells with a calibrated type probability below {review["min_type_probability"]:.2f} or an '
                f'out-of-distribution score above {review["max_ood"]:.2f} (the operating point that flags '
                f'{100 * review["review_rate"]:.0f}% of val cells of known types) are in "{UNIDENTIFIED}" for review.')
    return f'WBC-type cells below confidence {diff["review_conf"]} are in "{UNIDENTIFIED}" for review.'
