"""The canonical on-disk form every trainer and evaluator reads, built once per source state.

    <cache>/datasets/<name>-<fingerprint>/
        images/<split>/<file>     links to the source images
        labels/<split>/<stem>.txt 5-column YOLO rows (class cx cy w h, normalised) -- ultralytics reads them unchanged
        attributes.csv            one row per box: split, image, box (row in the label file), class,
                                  x1 y1 x2 y2 (pixels, rounded to 0.01),
                                  one integer code per attribute (value index; -1 unknown; -2 not applicable),
                                  then any extra numeric columns of the source format
        fields.csv                one row per image: split, image, width, height, field_class, source path,
                                  origin (the dataset yaml's ``origins``: which scanner / lab the field is from)
        data.yaml                 ultralytics data yaml (+ attributes, wbc_classes)
        report.json               every skipped / repaired / noted item

The fingerprint covers the dataset yaml, the code version and every source file's name, size and
modification time, so editing either rebuilds the cache; an unchanged source reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import yaml

from wbc.errors import DatasetError, Problem, ProblemLog
from wbc.formats import read_dataset
from wbc.formats.base import SPLIT_ABSENT, link_image, unique_image_names
from wbc.formats.yolo import format_row
from wbc.paths import cache_root
from wbc.schema import Dataset, DatasetSpec, load_spec

CANONICAL_VERSION = 3


def fingerprint(spec: DatasetSpec) -> str:
    digest = hashlib.sha1()
    digest.update(json.dumps([CANONICAL_VERSION, str(spec.root), spec.raw], sort_keys=True, default=str).encode())
    for dirpath, dirnames, filenames in os.walk(spec.root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.endswith(".cache"):
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            digest.update(f"{os.path.relpath(path, spec.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class CanonicalDataset:
    """A built canonical dataset: where it lies and what the import reported."""

    spec: DatasetSpec
    root: Path
    problems: ProblemLog
    rebuilt: bool

    @property
    def data_yaml(self) -> Path:
        return self.root / "data.yaml"

    def attributes(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "attributes.csv", keep_default_na=False)

    def fields(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "fields.csv", keep_default_na=False)

    def content(self) -> dict:
        """Everything the canonical form says, as text: for comparing two builds (e.g. after a round trip)."""
        labels = {str(p.relative_to(self.root)): p.read_text() for p in sorted((self.root / "labels").glob("*/*.txt"))}
        return {"labels": labels, "attributes": (self.root / "attributes.csv").read_text(), "fields": (self.root / "fields.csv").read_text(),
                "names": self.spec.names, "attributes_declared": [a.name for a in self.spec.attributes]}

    @property
    def splits(self) -> list[str]:
        return [s for s in self.spec.splits if (self.root / "labels" / s).is_dir()]

    @property
    def left_out(self) -> dict[str, str]:
        """Declared splits whose source is absent: split -> the path that was not found."""
        return {p.split: p.path for p in self.problems.problems if p.reason == SPLIT_ABSENT and p.split not in self.splits}

    def validation_yaml(self, split: str) -> Path:
        """An ultralytics data yaml for validating ``split`` alone: ultralytics requires 'train' and 'val'
        in every data yaml, so both name ``split`` here, and a test-only dataset can be scored. Never
        for training (data.yaml is that)."""
        data = yaml.safe_load(self.data_yaml.read_text())
        data.update(train=data[split], val=data[split])
        path = self.root / f"validate_{split}.yaml"
        tmp = path.with_name(f"{path.name}.{os.getpid()}")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        os.replace(tmp, path)  # other processes may validate the same cache at once
        return path


def write_canonical(dataset: Dataset, out: Path, replace: bool = True) -> None:
    """Write ``dataset`` in the canonical form to ``out``, built aside and moved into place in one
    rename, so that processes importing the same dataset at once never see or break a half-written
    cache. ``replace=False``: if another process has put ``out`` in place meanwhile, keep that one."""
    spec = dataset.spec
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    box_rows, field_rows = [], []
    for split, fields in dataset.splits.items():
        unique_image_names(fields, spec.yaml_path)
        (tmp / "labels" / split).mkdir(parents=True, exist_ok=True)
        for f in fields:
            link_image(f.image, tmp / "images" / split / f.name)
            (tmp / "labels" / split / f"{Path(f.name).stem}.txt").write_text("".join(format_row(b, f.width, f.height, []) + "\n" for b in f.boxes))
            field_rows.append({"split": split, "image": f.name, "width": f.width, "height": f.height,
                               "field_class": "" if f.field_class is None else spec.names[f.field_class], "source": str(f.image.resolve()),
                               "origin": f.origin or spec.origin_of(f.width, f.height)})
            for i, b in enumerate(f.boxes):
                row = {"split": split, "image": f.name, "box": i, "class": spec.names[b.cls],
                       **{k: round(v, 2) for k, v in zip(("x1", "y1", "x2", "y2"), b.xyxy)}}
                row.update({a.name: c for a, c in zip(spec.attributes, b.attributes)})
                row.update({f"extra:{k}": v for k, v in zip(dataset.extra_columns, b.extra)})
                box_rows.append(row)
    columns = ["split", "image", "box", "class", "x1", "y1", "x2", "y2", *(a.name for a in spec.attributes), *(f"extra:{k}" for k in dataset.extra_columns)]
    pd.DataFrame(box_rows, columns=columns).to_csv(tmp / "attributes.csv", index=False)
    pd.DataFrame(field_rows, columns=["split", "image", "width", "height", "field_class", "source", "origin"]).to_csv(tmp / "fields.csv", index=False)
    data = {"path": str(out.resolve()), **{s: f"images/{s}" for s in dataset.splits}, "nc": len(spec.names),
            "names": dict(enumerate(spec.names)), "wbc_classes": spec.wbc_classes,
            "attributes": [{"name": a.name, "values": list(a.values), "use": a.use} for a in spec.attributes],
            "source_yaml": str(spec.yaml_path)}
    if spec.label_sets:  # class ids from len(names) - len(label_sets) on are "one of these classes" (wbc.partial_labels)
        data["label_sets"] = spec.label_sets
    if spec.training_scale:
        data["training_scale"] = spec.training_scale
    (tmp / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    (tmp / "report.json").write_text(json.dumps([asdict(p) for p in dataset.problems.problems], indent=0))
    if replace:
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # out exists again: another process finished the same build first
        shutil.rmtree(tmp)
        if replace or not (out / "report.json").is_file():
            raise


def prepare(yaml_path: str | Path, root: str | Path | None = None, rebuild: bool = False, cache: Path | None = None,
            need: tuple[str, ...] = ("train", "val")) -> CanonicalDataset:
    """Import a dataset yaml's raw data into the canonical cache (or reuse an up-to-date build).
    ``need``: the splits the caller reads (default: training's); each must be declared and found."""
    spec = load_spec(yaml_path, root, need)
    out = (cache or cache_root()) / "datasets" / f"{spec.name}-{fingerprint(spec)[:12]}"
    if not rebuild and (out / "report.json").is_file():
        problems = ProblemLog([Problem(**p) for p in json.loads((out / "report.json").read_text())])
        canonical = CanonicalDataset(spec, out, problems, rebuilt=False)
    else:
        dataset = read_dataset(spec)
        write_canonical(dataset, out, replace=rebuild)
        canonical = CanonicalDataset(spec, out, dataset.problems, rebuilt=True)
    for split, path in canonical.left_out.items():
        if split in need:
            raise DatasetError(spec.yaml_path, f"{split}: {path} not found; this command reads the {split} split")
    return canonical
