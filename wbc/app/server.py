"""The review app's web server: FastAPI pages rendered with Jinja2, a small JSON API the pages'
script calls, and the images of the run. Served by uvicorn, on 127.0.0.1 unless told otherwise;
any other address needs a token (``--token``), which every request must then carry (``?token=``
once, kept in a cookie, or the ``X-Review-Token`` header). Images are served by the id the store
gave them, never by a path from the request, so nothing outside the run can be reached."""

from __future__ import annotations

import functools
import json
import secrets
import time
from pathlib import Path

import cv2
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from wbc.app.export import corrections_dataset, signed_out
from wbc.app.store import NOT_A_CELL, UNIDENTIFIED, Store, StoreError

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024  # bytes: every request of the app is a few hundred
KEYS = "1234567890asdfghjklqwertyiop"  # one key per label, after u (unidentified) and x (not a cell)


class Relabel(BaseModel):
    cells: list[int] = Field(min_length=1, max_length=5000)
    label: str


class NewCell(BaseModel):
    box: tuple[float, float, float, float]
    label: str


class Approval(BaseModel):
    user: str = Field(min_length=1, max_length=100)


def label_keys(labels: list[str]) -> dict[str, str]:
    """{label: key}: u for unidentified, x for not a cell, then digits and letters in label order."""
    keys, free = {}, iter(KEYS)
    for label in labels:
        keys[label] = "u" if label == UNIDENTIFIED else "x" if label == NOT_A_CELL else next(free, "")
    return keys


def create_app(store: Store, export_root: Path, user: str = "reviewer", token: str | None = None) -> FastAPI:
    app = FastAPI(title="WBC review", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    cards = yaml.safe_load((HERE / "reference.yaml").read_text())

    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        length = request.headers.get("content-length")
        if request.method in ("POST", "PUT", "PATCH") and (length is None or not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body must be given with a length of at most {MAX_BODY} bytes"}, status_code=413)
        if token is not None:
            given = request.query_params.get("token") or request.headers.get("x-review-token") or request.cookies.get("review_token")
            if not (given and secrets.compare_digest(given, token)):
                return JSONResponse({"detail": "this server needs its token (?token=...)"}, status_code=401)
        response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie("review_token", token, httponly=True, samesite="strict")
        response.headers["X-Server-Time"] = f"{1000 * (time.perf_counter() - start):.2f}"
        return response

    @app.exception_handler(StoreError)
    async def refused(request: Request, e: StoreError):
        return JSONResponse({"detail": str(e)}, status_code=404 if str(e).startswith("no ") else 409)

    def reviewer(request: Request) -> str:
        return request.cookies.get("reviewer") or user

    def page(request: Request, name: str, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"reviewer": reviewer(request), **context})

    def run_context(run_id: int) -> dict:
        run = store.run(run_id)
        labels = store.labels(run_id)
        return {"run": run, "labels": labels, "keys": label_keys(labels), "smears": store.smears(run_id)}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        runs = store.runs()
        if len(runs) == 1:
            return RedirectResponse(f"/runs/{runs[0]['id']}")
        return page(request, "index.html", runs=runs)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def overview(request: Request, run_id: int):
        context = run_context(run_id)
        per_smear = {s["id"]: store.differential(run_id, s["id"]) for s in context["smears"]}
        return page(request, "overview.html", **context, pooled=store.differential(run_id), per_smear=per_smear)

    @app.get("/runs/{run_id}/gallery/{label}", response_class=HTMLResponse)
    def gallery(request: Request, run_id: int, label: str):
        context = run_context(run_id)
        if label not in context["labels"]:
            raise HTTPException(404, f"no label {label!r} in this run")
        smears = {s["id"]: s for s in context["smears"]}
        cells = [dict(c, attributes=json.loads(c["attributes"]), image=smears[c["smear_id"]]["image"],
                      approved=smears[c["smear_id"]]["approved_at"] is not None) for c in store.cells(run_id, label)]
        return page(request, "gallery.html", **context, label=label, cells=cells, card=cards["cards"].get(label))

    @app.get("/smears/{smear_id}", response_class=HTMLResponse)
    def smear_view(request: Request, smear_id: int):
        smear = store.smear(smear_id)
        context = run_context(smear["run_id"])
        cells = [dict(c, attributes=json.loads(c["attributes"])) for c in store.cells(smear["run_id"], smear_id=smear_id)]
        return page(request, "smear.html", **context, smear=smear, cells=cells, differential=store.differential(smear["run_id"], smear_id))

    @app.get("/reference", response_class=HTMLResponse)
    def reference(request: Request):
        return page(request, "reference.html", cards=cards["cards"], sources=cards["sources"])

    @app.get("/image/{smear_id}")
    def image(smear_id: int):
        path = Path(store.smear(smear_id)["path"])
        if not path.is_file():
            raise HTTPException(404, "the field's image is no longer on disk")
        return FileResponse(path)

    @functools.lru_cache(maxsize=16)
    def field_image(path: str):
        """A gallery asks for many crops of one field in a row: decode each field once, not once per crop."""
        return cv2.imread(path)

    @app.get("/crop/{cell_id}")
    def crop(cell_id: int, size: int = 128):
        cell = store.cell(cell_id)
        field = field_image(store.smear(cell["smear_id"])["path"])
        if field is None:
            field_image.cache_clear()  # do not remember a missing file
            raise HTTPException(404, "the field's image is no longer on disk")
        from wbc.classify.crops import crop_box

        patch = crop_box(field, (cell["x1"], cell["y1"], cell["x2"], cell["y2"]), 0.15, True, max(32, min(size, 512)))
        return Response(cv2.imencode(".jpg", patch, [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes(), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/runs/{run_id}/differential")
    def differential(run_id: int):
        return {"run": store.differential(run_id),
                "per_smear": {s["id"]: {"image": s["image"], "approved": s["approved_at"] is not None, **store.differential(run_id, s["id"])}
                              for s in store.smears(run_id)}}

    @app.get("/api/cells/{cell_id}")
    def cell(cell_id: int):
        return dict(store.cell(cell_id))

    @app.post("/api/cells/label")
    def relabel(request: Request, body: Relabel):
        return {"changed": store.relabel(body.cells, body.label, reviewer(request))}

    @app.post("/api/runs/{run_id}/undo")
    def undo(request: Request, run_id: int):
        return {"undone": store.undo(run_id, reviewer(request))}

    @app.post("/api/smears/{smear_id}/cells")
    def add(request: Request, smear_id: int, body: NewCell):
        return {"cell": store.add_cell(smear_id, body.box, body.label, reviewer(request))}

    @app.post("/api/smears/{smear_id}/approve")
    def approve(smear_id: int, body: Approval):
        return {"differential": store.approve(smear_id, body.user)}

    @app.post("/api/runs/{run_id}/export")
    def export(run_id: int):
        run = store.run(run_id)
        out = export_root / f"{run['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
        written = signed_out(store, run_id, out)
        try:
            dataset = corrections_dataset(store, run_id, out / "dataset")
        except ValueError as e:
            raise HTTPException(409, str(e)) from None
        return {"folder": str(out), "differential_csv": str(written["csv"]), "differential_html": str(written["html"]),
                "dataset_yaml": str(dataset["yaml"]), "train_yaml": str(dataset["train_yaml"]), "boxes": dataset["boxes"],
                "smears": dataset["smears"], "unidentified": dataset["unidentified"], "skipped": dataset["skipped"]}

    return app
