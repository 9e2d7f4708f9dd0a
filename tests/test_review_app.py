"""The review app (review.py): a real uvicorn server in a subprocess, driven by headless Chromium
through selenium and chromedriver (Debian: apt-get install chromium chromium-driver)."""

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM), reason="no chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """review.py in a subprocess on a free port, until stopped or killed."""

    def __init__(self, run_dir: Path, db: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(REPO / "review.py"), str(run_dir), "--db", str(db), "--port", str(self.port),
                                      "--export-dir", str(db.parent / "exports"), *extra],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/reference" + ("?token=" + extra[extra.index("--token") + 1] if "--token" in extra else ""),
                                       timeout=2)
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stdout.read())
                time.sleep(0.2)
        raise RuntimeError("review server did not start")

    def get(self, path: str, **headers) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers), timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, data: dict | bytes) -> tuple[int, dict]:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        request = urllib.request.Request(self.url + path, body, {"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=20)


@pytest.fixture(scope="module")
def predict_run(trained, tmp_path_factory):
    """A predict.py run on generated fields with the briefly trained detector."""
    from wbc.canonical import prepare
    from wbc.predict import predict

    data, weights, _ = trained
    out = tmp_path_factory.mktemp("review") / "run"
    images = sorted((prepare(data).root / "images" / "val").iterdir())[:6]
    listing = out.parent / "images.txt"
    listing.write_text("".join(f"{p}\n" for p in images))
    predict(listing, out, weights=weights, conf=0.001, annotated=False, report=False, log=lambda s: None)  # a weak detector: keep its faint cells
    return out


@pytest.fixture
def server(predict_run, tmp_path):
    s = Server(predict_run, tmp_path / "review.sqlite")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMEDRIVER and CHROMIUM):
        pytest.skip("no chromium + chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def counts(server: Server) -> dict[str, int]:
    diff = json.loads(server.get("/api/runs/1/differential")[1])["run"]
    return {**{k: v["count"] for k, v in diff["per_class"].items()}, **diff["other"]}


def busiest_label(server: Server) -> str:
    n = counts(server)
    return max(n, key=n.get)


@needs_browser
def test_reclassify_by_keyboard_persists_after_reload_undo_and_the_live_differential(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    label = busiest_label(server)
    before = counts(server)
    browser.get(f"{server.url}/runs/1/gallery/{label}")
    figures = browser.find_elements(By.CSS_SELECTOR, "figure[data-cell]")
    assert len(figures) == before[label] > 1
    first, second = figures[0].get_attribute("data-cell"), figures[1].get_attribute("data-cell")
    keys = json.loads(browser.find_element(By.TAG_NAME, "body").get_attribute("data-keys"))
    target = next(t for t in json.loads(server.get("/api/runs/1/differential")[1])["run"]["per_class"] if t != label)  # a WBC bin
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(keys[target])  # the first cell is focused: one key reclassifies it, focus moves on
    WebDriverWait(browser, 10).until(lambda d: figures[0].get_attribute("data-label") == target)
    body.send_keys("x")  # the second: not a cell
    WebDriverWait(browser, 10).until(lambda d: figures[1].get_attribute("data-label") == "not a cell")
    assert json.loads(server.get(f"/api/cells/{first}")[1])["label"] == target
    browser.refresh()  # persisted: the two cells have left this gallery
    shown = [f.get_attribute("data-cell") for f in browser.find_elements(By.CSS_SELECTOR, "figure[data-cell]")]
    assert first not in shown and second not in shown and len(shown) == before[label] - 2
    browser.find_element(By.TAG_NAME, "body").send_keys("z")  # undo the last: the second cell is back
    WebDriverWait(browser, 10).until(lambda d: json.loads(server.get(f"/api/cells/{second}")[1])["label"] == label)
    browser.get(f"{server.url}/runs/1")  # the overview's differential shows the correction
    count = browser.find_element(By.CSS_SELECTOR, f'[data-differential="run"] [data-bin="{target}"]')
    WebDriverWait(browser, 10).until(lambda d: int(count.get_attribute("data-count")) == before.get(target, 0) + 1)


@needs_browser
def test_approve_and_export_a_dataset_that_check_reads(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/runs/1")
    name = browser.find_element(By.ID, "reviewer")
    name.clear()
    name.send_keys("J. Smith\n")
    buttons = browser.find_elements(By.CSS_SELECTOR, "button.approve")
    for b in buttons[:3]:
        b.click()
        WebDriverWait(browser, 10).until(lambda d: "approved" in d.find_element(By.ID, "status").text)
    smears = [int(b) for b in json.loads(server.get("/api/runs/1/differential")[1])["per_smear"]]
    approved = [s for s in smears if json.loads(server.get("/api/runs/1/differential")[1])["per_smear"][str(s)]["approved"]]
    assert len(approved) == 3
    status, answer = server.post("/api/cells/label", {"cells": [cell_of(server, approved[0])], "label": "not a cell"})
    assert status == 409  # an approved smear is frozen
    browser.find_element(By.ID, "export").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "exported").text.strip())
    exported = json.loads(browser.find_element(By.ID, "exported").text)
    assert exported["smears"] == 3
    rows = Path(exported["differential_csv"]).read_text()
    assert "J. Smith" in rows and rows.count("\n") > 3
    import yaml

    outputs = {}
    for key in ("dataset_yaml", "train_yaml"):  # the COCO export as it is, and the merged dataset train.py fine-tunes on
        check = subprocess.run([sys.executable, str(REPO / "check.py"), "--data", exported[key]], cwd=REPO,
                               capture_output=True, text=True, env={**os.environ, "WBC_CACHE": str(tmp_path / "cache")}, timeout=300)
        assert check.returncode == 0, check.stdout + check.stderr
        outputs[key] = check.stdout
    assert "review" in outputs["dataset_yaml"]  # the attribute that marks accepted / corrected / added cells
    summary = json.loads((Path(server.proc.args[2]) / "summary.json").read_text())
    assert yaml.safe_load(Path(exported["dataset_yaml"]).read_text())["names"] == [*summary["classes"], "unidentified"]
    train = yaml.safe_load(Path(exported["train_yaml"]).read_text())
    assert train["names"] == summary["classes"]  # the model's class order: train.py fine-tunes the model as it is
    assert exported["unidentified"] > 0 and set(train["label_sets"]["unidentified"]) <= set(summary["wbc_classes"])
    assert "unidentified" in outputs["train_yaml"]  # still-unidentified cells stay in, as "some WBC type"


def cell_of(server: Server, smear_id: int) -> int:
    db = sqlite3.connect(server_db(server))
    try:
        return db.execute("SELECT id FROM cells WHERE smear_id = ? LIMIT 1", (smear_id,)).fetchone()[0]
    finally:
        db.close()


def server_db(server: Server) -> str:
    args = server.proc.args
    return args[args.index("--db") + 1]


def test_killing_the_server_mid_session_loses_no_acknowledged_correction(predict_run, tmp_path):
    db = tmp_path / "review.sqlite"
    s = Server(predict_run, db)
    try:
        cells = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM cells ORDER BY id LIMIT 40")]
        for i, cell in enumerate(cells):
            status, _ = s.post("/api/cells/label", {"cells": [cell], "label": "not a cell" if i % 2 else "unidentified"})
            assert status == 200
    finally:
        s.stop(kill=True)  # SIGKILL: no shutdown handler runs
    s = Server(predict_run, db)  # the same run again: imported once, corrections kept
    try:
        for i, cell in enumerate(cells):
            assert json.loads(s.get(f"/api/cells/{cell}")[1])["label"] == ("not a cell" if i % 2 else "unidentified")
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert con.execute("SELECT COUNT(*) FROM corrections").fetchone()[0] >= len(cells) // 2
    finally:
        s.stop()


def test_two_servers_on_one_database_do_not_corrupt_it(predict_run, tmp_path):
    db = tmp_path / "review.sqlite"
    a = Server(predict_run, db)
    b = Server(predict_run, db)
    try:
        cells = [r[0] for r in sqlite3.connect(db).execute("SELECT id FROM cells ORDER BY id LIMIT 30")]
        for i, cell in enumerate(cells):
            assert (a if i % 2 else b).post("/api/cells/label", {"cells": [cell], "label": "not a cell"})[0] == 200
        for cell in cells:
            assert json.loads(a.get(f"/api/cells/{cell}")[1])["label"] == "not a cell"
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        a.stop()
        b.stop()


def test_images_are_served_by_id_only_and_requests_are_bounded(server):
    assert server.get("/image/1")[0] == 200 and server.get("/crop/1")[0] == 200
    for path in ("/image/..%2F..%2F..%2Fetc%2Fpasswd", "/image/../../etc/passwd", "/crop/999999", "/image/999999",
                 "/static/..%2F..%2Fstore.py", "/static/../store.py"):
        status, content = server.get(path)
        assert status == 404 and b"root:" not in content and b"sqlite3" not in content, path
    assert server.post("/api/cells/label", b"{" + b" " * 100_000 + b"}")[0] == 413
    assert server.post("/api/cells/label", {"cells": [1], "label": "a label that does not exist"})[0] == 409


def test_binding_beyond_localhost_needs_a_token(predict_run, tmp_path):
    refused = subprocess.run([sys.executable, str(REPO / "review.py"), str(predict_run), "--db", str(tmp_path / "r.sqlite"), "--host", "0.0.0.0"],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--token" in refused.stderr
    s = Server(predict_run, tmp_path / "t.sqlite", "--token", "s3cret")
    try:
        assert s.get("/runs/1")[0] == 401
        assert s.get("/runs/1?token=wrong")[0] == 401
        assert s.get("/runs/1?token=s3cret")[0] == 200
        assert s.get("/api/runs/1/differential", **{"X-Review-Token": "s3cret"})[0] == 200
    finally:
        s.stop()


@needs_browser
def test_a_missed_cell_is_boxed_by_dragging_on_the_smear_view(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    before = sum(counts(server).values())
    browser.get(f"{server.url}/smears/2")
    Select(browser.find_element(By.ID, "new-label")).select_by_visible_text("unidentified")
    field = browser.find_element(By.ID, "boxes")
    side = min(field.size["width"], field.size["height"])  # offsets from the field's centre, inside it whatever the scroll
    ActionChains(browser).move_to_element_with_offset(field, -side // 6, -side // 6).click_and_hold() \
        .move_by_offset(side // 3, side // 3).release().perform()
    WebDriverWait(browser, 10).until(lambda d: sum(counts(server).values()) == before + 1)
    added = sqlite3.connect(server_db(server)).execute("SELECT x1, y1, x2, y2, label, added FROM cells WHERE added = 1").fetchall()
    assert len(added) == 1 and added[0][4] == "unidentified"
    x1, y1, x2, y2 = added[0][:4]
    assert x2 - x1 > 10 and y2 - y1 > 10  # a third of the field each way, in the field's own pixels
