"""What an experiment filled, kept in the results store so that a report renders it again from the store alone.

A *record* is one result ``experiment/<name>/<model>/<hash of its content>`` of experiment ``record`` (one row,
metric ``cells``: the number of table rows): the spec as data (``flexbench demo`` builds its own from its
arguments, so the TOML file alone cannot say what ran), the model, every cell (the store keys that fill it, its
status, its plan and the timestep of each step), the paired comparisons (their store keys) and, where the writer
sampled them, a few images per row for the sample grid (PNG, each image at most :data:`MAX_SIDE` px a side).
``flexbench experiment`` and ``flexbench demo`` write one after filling; the same content is the same key (a
rerun adds nothing), and the newest record of a name and model is the experiment as it stands
(:func:`latest_records`).  No measurement lives here: every number is read from the keys the cells name.
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
from dataclasses import dataclass

import numpy as np

from flexiffusion.errors import UserError

from .cells import Cell, Comparison
from .spec import ExperimentSpec, RowSpec

PREFIX = "experiment"
EXPERIMENT = "record"
VERSION = 1
MAX_SIDE = 128          # sample images larger than this are shrunk for the record (the grid shows ~90 px a side)


@dataclass(frozen=True)
class Samples:
    """The sample grid's images: the same ``seeds`` for every row, label -> uint8 images (N, H, W) or (N, H, W, C)."""

    seeds: list
    images: dict


@dataclass(frozen=True)
class Record:
    key: str
    spec: ExperimentSpec
    model: str
    cells: list
    comparisons: list
    samples: Samples | None
    created: str


def _hwc(images) -> np.ndarray:
    """uint8 NCHW / NHWC images (array or tensor) -> NHWC (C = 1 or 3)."""
    a = np.asarray(images.cpu() if hasattr(images, "cpu") else images, dtype=np.uint8)
    if a.ndim == 3:
        a = a[..., None]
    if a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 1, -1)
    return a


def _encode(images) -> dict:
    """Images as one PNG strip (side by side), shrunk to :data:`MAX_SIDE` px a side."""
    from PIL import Image

    a = _hwc(images)
    n, h, w, c = a.shape
    scale = min(1.0, MAX_SIDE / max(h, w))
    tiles = []
    for img in a:
        im = Image.fromarray(img[..., 0] if c == 1 else img)
        if scale < 1:
            im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
        tiles.append(np.asarray(im))
    strip = np.concatenate(tiles, axis=1)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG", optimize=True)
    return {"n": n, "png": base64.b64encode(buf.getvalue()).decode("ascii")}


def _decode(data: dict) -> np.ndarray:
    from PIL import Image

    strip = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["png"]))))
    return np.stack(np.split(strip, data["n"], axis=1))


def _spec_dict(spec: ExperimentSpec) -> dict:
    return dataclasses.asdict(spec)


def _spec(d: dict) -> ExperimentSpec:
    return ExperimentSpec(**{**d, "rows": [RowSpec(**r) for r in d.get("rows", [])]})


def store_record(store, spec: ExperimentSpec, model: str, cells: list[Cell], comparisons: list[Comparison],
                 samples: Samples | None = None) -> str:
    """Store what ``spec`` filled on ``model`` (the same content is the same key: reused); returns the key."""
    from bench.cache import stable_hash
    from bench.results import result_key

    content = {"version": VERSION, "spec": _spec_dict(spec), "model": model,
               # a reused cell is a measured one: whether this run measured it is no part of the experiment (a
               # rerun that only reuses adds no record)
               "cells": [{**dataclasses.asdict(c), "status": "measured" if c.status == "reused" else c.status}
                         for c in cells],
               "comparisons": [dataclasses.asdict(c) for c in comparisons],
               "samples": None if samples is None else {
                   "seeds": [int(s) for s in samples.seeds],   # rows as a list: the store sorts a dict's keys
                   "rows": [{"label": label, **_encode(imgs)} for label, imgs in samples.images.items()]}}
    content = json.loads(json.dumps(content, default=str))
    key = result_key(PREFIX, spec.name, model, stable_hash(content))
    store.get_or_put(key, lambda: [{"experiment": EXPERIMENT, "method": spec.name, "model": model,
                                    "metric": "cells", "value": float(len(cells)), "extra": content}])
    return key


def read_record(store, key: str) -> Record:
    rows = store.get(key)
    if not rows:
        raise UserError(f"no experiment record {key} in {store.path}")
    row = rows[0]
    d = row["extra"]
    if d.get("version") != VERSION:
        raise UserError(f"experiment record {key} has version {d.get('version')}, this suite reads {VERSION}: "
                        f"rerun `flexbench experiment {d.get('spec', {}).get('name', 'NAME')}` to record it again")
    samples = None
    if d.get("samples"):
        samples = Samples(d["samples"]["seeds"], {x["label"]: _decode(x) for x in d["samples"]["rows"]})
    return Record(key, _spec(d["spec"]), d["model"], [Cell(**c) for c in d["cells"]],
                  [Comparison(**c) for c in d["comparisons"]], samples, row["created"])


def latest_records(store) -> list[Record]:
    """The newest record of every experiment name and model in ``store`` (the last one written), by name then
    model."""
    newest: dict = {}
    frame = store.frame(experiment=EXPERIMENT, metric="cells")
    for key, name, model in zip(frame["key"], frame["method"], frame["model"]):   # in the order written
        if key.startswith(PREFIX + "/"):
            newest[(name, model)] = key
    return [read_record(store, newest[k]) for k in sorted(newest)]
