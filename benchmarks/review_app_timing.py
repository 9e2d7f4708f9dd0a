"""Timing of the review app (review.py) as a reviewer uses it, in headless Chromium via selenium.

    .venv/bin/python benchmarks/review_app_timing.py --run runs/predict/samples --name samples

Starts the real server on a copy of the run, then: page load (navigation start to load event) of the
overview, the largest gallery and a smear view; 100 cells reviewed by keyboard in a gallery (one key
each), with the server time of every action (the ``X-Server-Time`` header: request in to response
out) and the wall time per key as the browser sees it; and a screenshot of every page. With
``--cells N`` the run is first enlarged to at least N cells by repeating its fields under new names
(the same images; for load timing only). Writes ``runs/benchmarks/review_app/<name>/``
(``timing.json``, ``*.png``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wbc.paths import REPO_ROOT, new_run_dir  # noqa: E402


def enlarged(run: Path, out: Path, cells: int) -> Path:
    """A copy of ``run`` whose cells.json repeats its fields (renamed) until it holds ``cells`` cells."""
    out.mkdir(parents=True, exist_ok=True)
    fields = json.loads((run / "cells.json").read_text())
    total, copies, k = sum(len(f["cells"]) for f in fields), list(fields), 1
    while sum(len(f["cells"]) for f in copies) < cells and total:
        copies += [{**f, "image": f"copy{k}_{f['image']}"} for f in fields]
        k += 1
    (out / "cells.json").write_text(json.dumps(copies))
    shutil.copy(run / "summary.json", out / "summary.json")
    return out


def load_ms(driver, url: str) -> float:
    driver.get(url)
    return driver.execute_script("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a predict.py run folder")
    p.add_argument("--cells", type=int, default=0, help="enlarge the run to at least this many cells first")
    p.add_argument("--actions", type=int, default=100)
    p.add_argument("--port", type=int, default=8790)
    p.add_argument("--name", default="exp")
    args = p.parse_args(argv)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    out = new_run_dir(args.name, REPO_ROOT / "runs" / "benchmarks" / "review_app")
    out.mkdir(parents=True)
    run = enlarged(Path(args.run), out / "run", args.cells) if args.cells else Path(args.run).resolve()
    server = subprocess.Popen([sys.executable, str(REPO_ROOT / "review.py"), str(run), "--db", str(out / "review.sqlite"),
                               "--export-dir", str(out / "exports"), "--port", str(args.port)], cwd=REPO_ROOT)
    options = Options()
    options.binary_location = shutil.which("chromium") or "chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(a)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    base = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                driver.get(base + "/reference")
                break
            except Exception:
                time.sleep(0.3)
        import urllib.request

        diff = json.loads(urllib.request.urlopen(base + "/api/runs/1/differential").read())
        counts = {**{k: v["count"] for k, v in diff["run"]["per_class"].items()}, **diff["run"]["other"]}
        largest = max(counts, key=counts.get)
        review_label = "unidentified" if counts.get("unidentified", 0) >= args.actions else largest
        timing = {"run": str(run), "cells": sum(counts.values()), "smears": len(diff["per_smear"]), "largest_gallery": [largest, counts[largest]]}
        pages = {"overview": "/runs/1", "gallery": f"/runs/1/gallery/{largest}", "smear": "/smears/1", "reference": "/reference"}
        timing["page_load_ms"] = {}
        for name, url in pages.items():
            loads = [load_ms(driver, base + url) for _ in range(3)]
            timing["page_load_ms"][name] = {"median": statistics.median(loads), "runs": loads}
            driver.save_screenshot(str(out / f"{name}.png"))
        driver.get(f"{base}/runs/1/gallery/{review_label}")
        keys = json.loads(driver.find_element(By.TAG_NAME, "body").get_attribute("data-keys"))
        sequence = [keys[k] for k in keys if keys[k] and k != review_label][:4]
        body = driver.find_element(By.TAG_NAME, "body")
        n = min(args.actions, counts[review_label])
        start = time.perf_counter()
        for i in range(n):
            body.send_keys(sequence[i % len(sequence)])
            WebDriverWait(driver, 10).until(lambda d, i=i: len(d.execute_script("return window.serverTimes || []")) >= i + 1)
        wall = time.perf_counter() - start
        server_ms = driver.execute_script("return window.serverTimes")
        q = statistics.quantiles(server_ms, n=20)
        timing["keyboard_review"] = {"cells": n, "gallery": review_label, "wall_s": wall, "wall_ms_per_cell": 1000 * wall / n,
                                     "server_ms_median": statistics.median(server_ms), "server_ms_p95": q[18]}
        driver.save_screenshot(str(out / "gallery_after_review.png"))
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=20)
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
