"""Read back a rendered table (OUT/NAME/table.md + provenance.json) and check that every cell is a number or names
the command that fills it: what the smoke matrix (``flexbench smoke``) and the specs-from-writers tests hold every
table to."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.results import METRICS, header

from .cells import CLIPPED, REFERENCE

# a finite number, or inf (PSNR of images equal to the teacher's: bench.quality.similarity)
NUMBER = r"([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|inf)"
# a value, its interval (the lower end may be clipped at the metric's floor: reports.cells.CLIPPED), or rFID's own
# teacher saying it is the reference (reports.cells.REFERENCE)
CELL_NUMBER = re.compile(rf"^({NUMBER}x?( \[{NUMBER}x?{CLIPPED}?, {NUMBER}x?{CLIPPED}?\])?|{re.escape(REFERENCE)})$")
CELL_MISSING = re.compile(r"^(search|needs weights|not yet filled: flexbench [a-z-]+|not stored|[a-z][\w /-]*) "
                          r"\[(\d+)\]$")
FOOTNOTE = re.compile(r"^\[(\d+)\] fills it: `(.+)`\s*$")


@dataclass
class RenderedTable:
    """A rendered table as text cells: headers, rows (header -> cell; the label under the first header), footnotes
    (number -> command) and the provenance the renderer wrote beside it."""

    headers: list[str]
    rows: list[dict[str, str]]
    notes: dict[int, str]
    provenance: dict = field(default_factory=dict)

    @property
    def label_header(self) -> str:
        return self.headers[0]


def read_table(folder: str | Path) -> RenderedTable:
    folder = Path(folder)
    md = (folder / "table.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    split = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    heads = split[0] if split else []
    rows = [dict(zip(heads, cells)) for cells in split[2:]]
    notes = {int(m.group(1)): m.group(2) for m in map(FOOTNOTE.match, md.splitlines()) if m}
    prov = folder / "provenance.json"
    return RenderedTable(heads, rows, notes, json.loads(prov.read_text()) if prov.exists() else {})


def unfilled(table: RenderedTable, columns=(), model: str = "") -> tuple[list[str], dict[int, str]]:
    """``(problems, footnotes used)``: a problem per cell that is neither a number (a field column such as model or
    device: its stored value) nor ``<why> [n]`` with footnote n present; the footnotes the missing cells name."""
    problems, used = [], {}
    if not table.rows:
        return ["no rows"], used
    fields = {header(c) for c in columns if c in METRICS and METRICS[c].field}
    for row in table.rows:
        label = row.get(table.label_header, "")
        for head in table.headers[1:]:
            cell = row.get(head, "")
            if head == "src" or CELL_NUMBER.match(cell):
                continue
            if head in fields and cell and not CELL_MISSING.match(cell):
                if head == header("model") and model and cell != model:
                    problems.append(f"row {label!r}, {head!r}: {cell!r} is not the model {model!r}")
                continue
            missing = CELL_MISSING.match(cell)
            if not missing:
                problems.append(f"row {label!r}, column {head!r}: {cell!r} is neither a number nor names the "
                                "command that fills it")
                continue
            n = int(missing.group(2))
            if n not in table.notes:
                problems.append(f"row {label!r}, column {head!r}: {cell!r} has no footnote [{n}]")
                continue
            used[n] = table.notes[n]
    return problems, used
