"""Self-contained HTML: tables, PNG figures and per-cell provenance, one page or a site of pages, written atomically.

A report is a list of sections (:class:`Table`, :class:`Figure`, :class:`Figures`: figures side by side,
:class:`Text`); :func:`write_report` renders one into ``DIR/index.html``, :func:`write_site` several pages (file name
-> report) into ``DIR``, with the images copied beside them under ``img/`` (relative paths, no network, no scripts).
Each table cell can carry provenance (model, weights, n images, device, store key): it appears as the cell's
``title`` attribute and in a ``<details>`` block under the table, so it is reachable from the table itself.  Notes,
captions and intros may use markdown's ``**bold**`` and `` `code` `` (the renderers' footnotes do): they are shown
as such, never as literal asterisks.  The whole directory is built in a temporary sibling and renamed into place,
so a killed run leaves either the previous report or none, never half of one. :func:`gather` reads a directory of
experiment outputs in the ``manifest.json`` format (``{"title": ..., "items": [{"file": ..., "title": ...}]}``).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

CSS = """body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #999;padding:.2em .5em;text-align:left}th{background:#eee}td.n{text-align:right}
div.wide{overflow-x:auto}
img{max-width:100%;image-rendering:pixelated}details{margin:.3em 0 1em}code{font-size:90%}
nav{margin-bottom:1em;font-size:90%}.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.row figure{flex:1 1 30em;margin:0}figcaption{font-size:85%;color:#333}ul.notes{font-size:90%}"""


def inline(text: str) -> str:
    """``text`` as HTML: escaped, markdown's ``**bold**`` as <b>, `` `code` `` as <code>."""
    out = html.escape(str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


@dataclass
class Table:
    """A table: ``columns`` and ``rows`` (lists of cell values), optional provenance per row (a dict)."""
    title: str
    columns: list[str]
    rows: list[list]
    provenance: list[dict] | None = None
    note: str | list = ""      # a line, or lines shown as a list

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
class Figures:
    """Figures side by side (e.g. the unpaired Pareto plot beside the forest plot of paired differences)."""
    title: str
    figures: list
    caption: str = ""


@dataclass
class Text:
    """A heading (optional) and paragraphs, or a bulleted list when ``bullets``; ``links``: (href, text) pairs
    shown as a list of links (an index)."""
    title: str = ""
    lines: list = field(default_factory=list)
    bullets: bool = False
    links: list = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list = field(default_factory=list)
    intro: str = ""
    nav: list = field(default_factory=list)     # (href, text) links shown above the title


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"
    return "" if value is None else str(value)


def _numeric(value) -> str:
    """The class of a cell that starts with a number (right-aligned, e.g. ``22.08 [8.62, 35.55]``, ``2.00x``)."""
    return ' class="n"' if re.match(r"^[-+]?(\d|\.\d)", _cell(value)) else ""


def _provenance_text(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def _table_html(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    for i, row in enumerate(t.rows):
        prov = t.provenance[i] if t.provenance and i < len(t.provenance) else None
        title = f' title="{e(_provenance_text(prov))}"' if prov else ""
        body.append("<tr>" + "".join(f"<td{title}{_numeric(v)}>{e(_cell(v))}</td>" for v in row) + "</tr>")
    out = [f"<h2>{e(t.title)}</h2>", f'<div class="wide"><table><tr>{head}</tr>', *body, "</table></div>"]
    if t.note:
        notes = t.note if isinstance(t.note, list) else [t.note]
        out.append('<ul class="notes">' + "".join(f"<li>{inline(n)}</li>" for n in notes) + "</ul>"
                   if len(notes) > 1 else f"<p>{inline(notes[0])}</p>")
    if t.provenance:
        items = "".join(f"<li><b>{e(_cell(row[0]))}</b>: <code>{e(_provenance_text(p))}</code></li>"
                        for row, p in zip(t.rows, t.provenance))
        out.append(f"<details><summary>provenance</summary><ul>{items}</ul></details>")
    return "\n".join(out)


def _figure_html(f: Figure, src: str) -> str:
    e = html.escape
    return (f'<figure><img src="{e(src)}" alt="{e(f.title)}"><figcaption>{inline(f.caption or f.title)}'
            "</figcaption></figure>")


def _text_html(t: Text) -> str:
    e = html.escape
    out = [f"<h2>{e(t.title)}</h2>"] if t.title else []
    if t.bullets:
        out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in t.lines) + "</ul>")
    else:
        out += [f"<p>{inline(x)}</p>" for x in t.lines]
    if t.links:
        out.append("<ul>" + "".join(f'<li><a href="{e(h)}">{inline(x)}</a></li>' for h, x in t.links) + "</ul>")
    return "\n".join(out)


def _figures(report: Report) -> list[tuple[str, Figure]]:
    """``(section.figure position, figure)`` of every figure of ``report``, in order: ``"3"`` or ``"3.1"``."""
    out = []
    for i, s in enumerate(report.sections):
        if isinstance(s, Figure):
            out.append((str(i), s))
        elif isinstance(s, Figures):
            out += [(f"{i}.{j}", f) for j, f in enumerate(s.figures)]
    return out


def render_html(report: Report, image_names: dict) -> str:
    """The page text; ``image_names`` maps a figure's position (its section's index, ``"i.j"`` for the j-th of a
    :class:`Figures` row; an int for a plain figure also works) to its image path relative to the page."""
    e = html.escape
    names = {str(k): v for k, v in image_names.items()}
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(report.title)}</title>",
             f"<style>{CSS}</style></head><body>"]
    if report.nav:
        parts.append("<nav>" + " | ".join(f'<a href="{e(h)}">{e(x)}</a>' for h, x in report.nav) + "</nav>")
    parts.append(f"<h1>{e(report.title)}</h1>")
    if report.intro:
        parts.append(f"<p>{inline(report.intro)}</p>")
    for i, s in enumerate(report.sections):
        if isinstance(s, Table):
            parts.append(_table_html(s))
        elif isinstance(s, Text):
            parts.append(_text_html(s))
        elif isinstance(s, Figures):
            parts.append(f"<h2>{e(s.title)}</h2>" + (f"<p>{inline(s.caption)}</p>" if s.caption else ""))
            parts.append('<div class="row">' + "".join(_figure_html(f, names[f"{i}.{j}"])
                                                       for j, f in enumerate(s.figures)) + "</div>")
        else:
            parts.append(f"<h2>{e(s.title)}</h2><figure><img src=\"{e(names[str(i)])}\" alt=\"{e(s.title)}\">"
                         f"<figcaption>{inline(s.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(report: Report, out_dir) -> Path:
    """Write ``out_dir/index.html`` (+ ``img/``) atomically; returns the page's path."""
    return write_site({"index.html": report}, out_dir)


def write_site(pages: dict, out_dir) -> Path:
    """Write every page (file name -> :class:`Report`) into ``out_dir`` with their images under ``img/``, atomically
    (built in a temporary sibling, then renamed into place); returns the path of the first page."""
    out_dir = Path(out_dir)
    if not pages:
        raise ValueError("a site needs at least one page")
    for name in pages:
        if "/" in name or not name.endswith(".html"):
            raise ValueError(f"page {name!r}: a file name ending in .html, no folder")
    for report in pages.values():
        for _, f in _figures(report):
            if not Path(f.path).is_file():
                raise UserError(f"figure {f.title!r}: {f.path} does not exist (render the figure before the report)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)   # mkdtemp's 0700 would keep a served site from its readers
        (tmp / "img").mkdir()
        for page, report in pages.items():
            names = {}
            prefix = "" if len(pages) == 1 else f"{Path(page).stem}-"
            for pos, f in _figures(report):
                at = "-".join(f"{int(x):02d}" for x in pos.split("."))
                names[pos] = f"img/{prefix}{at}-{Path(f.path).name}"
                shutil.copyfile(f.path, tmp / names[pos])
            (tmp / page).write_text(render_html(report, names), encoding="utf-8")
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)  # rename, never write into, the previous report
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / next(iter(pages))


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
