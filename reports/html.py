"""One self-contained HTML report: tables, PNG figures and per-cell provenance, written atomically.

A report is a list of sections (:class:`Table`, :class:`Figure`); :func:`write_report` renders them into
``DIR/index.html`` with the images copied beside it under ``img/`` (relative paths, no network, no scripts).
Each table cell can carry provenance (model, weights, n images, device, store key): it appears as the cell's
``title`` attribute and in a ``<details>`` block under the table, so it is reachable from the table itself.
The whole directory is built in a temporary sibling and renamed into place, so a killed run leaves either
the previous report or none, never half of one. :func:`gather` reads a directory of experiment outputs in the
``manifest.json`` format (``{"title": ..., "items": [{"file": ..., "title": ...}]}``).
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

CSS = """body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #999;padding:.2em .5em;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;image-rendering:pixelated}details{margin:.3em 0 1em}code{font-size:90%}"""


@dataclass
class Table:
    """A table: ``columns`` and ``rows`` (lists of cell values), optional provenance per row (a dict)."""
    title: str
    columns: list[str]
    rows: list[list]
    provenance: list[dict] | None = None
    note: str = ""

    @classmethod
    def from_dataframe(cls, title, df, provenance=None, note="") -> "Table":
        df = df.reset_index() if df.index.name else df
        return cls(title, [str(c) for c in df.columns], df.values.tolist(), provenance, note)

    @classmethod
    def from_markdown(cls, title, text: str, provenance=None, note="") -> "Table":
        """Parse a pipe table (``| a | b |`` lines, the ``|---|`` separator skipped)."""
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
        body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
        if not cells:
            raise UserError(f"table {title!r}: no markdown pipe table found (expected '| a | b |' lines)")
        return cls(title, cells[0], body, provenance, note)


@dataclass
class Figure:
    """A PNG figure already on disk; it is copied next to the report."""
    title: str
    path: Path
    caption: str = ""


@dataclass
class Report:
    title: str
    sections: list = field(default_factory=list)
    intro: str = ""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    return "" if value is None else str(value)


def _provenance_text(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def _table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        prov = t.provenance[i] if t.provenance and i < len(t.provenance) else None
        title = f' title="{e(_provenance_text(prov))}"' if prov else ""
        body.append("<tr>" + "".join(f"<td{title}>{e(_cell(v))}</td>" for v in row) + "</tr>")
    out = [f"<h2>{e(t.title)}</h2>", f"<table><tr>{head}</tr>", *body, "</table>"]
    if t.note:
        out.append(f"<p>{e(t.note)}</p>")
    if t.provenance:
        items = "".join(f"<li><b>{e(_cell(row[0]))}</b>: <code>{e(_provenance_text(p))}</code></li>"
                        for row, p in zip(t.rows, t.provenance))
        out.append(f"<details><summary>provenance</summary><ul>{items}</ul></details>")
    return "\n".join(out)


def render_html(report: Report, image_names: dict[int, str]) -> str:
    """The page text; ``image_names`` maps a section's index to its image path relative to the page."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(report.title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{e(report.title)}</h1>"]
    if report.intro:
        parts.append(f"<p>{e(report.intro)}</p>")
    for i, s in enumerate(report.sections):
        if isinstance(s, Table):
            parts.append(_table_html(s))
        else:
            parts.append(f"<h2>{e(s.title)}</h2><figure><img src=\"{e(image_names[i])}\" alt=\"{e(s.title)}\">"
                         f"<figcaption>{e(s.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: Report, out_dir) -> Path:
    """Write ``out_dir/index.html`` (+ ``img/``) atomically; returns the page's path."""
    out_dir = Path(out_dir)
    figures = {i: s for i, s in enumerate(report.sections) if isinstance(s, Figure)}
    for s in figures.values():
        if not Path(s.path).is_file():
            raise UserError(f"figure {s.title!r}: {s.path} does not exist (render the figure before the report)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        (tmp / "img").mkdir()
        names = {}
        for i, s in figures.items():
            names[i] = f"img/{i:02d}-{Path(s.path).name}"
            shutil.copyfile(s.path, tmp / names[i])
        (tmp / "index.html").write_text(render_html(report, names), encoding="utf-8")
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)  # rename, never write into, the previous report
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"


def gather(root, title: str = "flexiffusion-bench report") -> Report:
    """Sections from every ``root/NAME/manifest.json``: ``.md`` tables (with ``provenance.json`` when present,
    a list with one dict per row) and ``.png`` figures, in the manifest's order."""
    root = Path(root)
    manifests = sorted(root.glob("*/manifest.json"))
    if not manifests:
        raise UserError(f"{root}: no */manifest.json found (run `flexbench experiment NAME` first)")
    report = Report(title)
    for m in manifests:
        try:
            data = json.loads(m.read_text())
            items = data["items"]
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{m}: not a manifest ({exc}); expected {{'title':..., 'items':[{{'file','title'}}]}}")
        prov_path = m.parent / "provenance.json"
        prov = json.loads(prov_path.read_text()) if prov_path.is_file() else None
        for item in items:
            path, name = m.parent / item["file"], item.get("title") or f"{m.parent.name}: {item['file']}"
            if path.suffix == ".md":
                report.sections.append(Table.from_markdown(name, path.read_text(),
                                                           prov if isinstance(prov, list) else None))
            elif path.suffix == ".png":
                report.sections.append(Figure(name, path))
    return report
