"""Render a table (a pandas DataFrame of display strings, index = row labels) as markdown, LaTeX and CSV.

Shared by every experiment and by the HTML report: cells are already formatted strings (a value with its spread,
"needs weights [3]"), footnotes are a list of lines appended under the markdown table."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def to_markdown(df: pd.DataFrame, title: str = "", footnotes=()) -> str:
    head = f"## {title}\n\n" if title else ""
    body = df.to_markdown(tablefmt="github")
    notes = "\n".join(f"{line}  " for line in footnotes)
    return head + body + "\n" + (f"\n{notes}\n" if notes else "")


def _escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("Δ", r"$\Delta$")):
        text = text.replace(a, b)
    return text


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    safe = df.copy()
    safe.index = [_escape(str(i)) for i in safe.index]
    safe.columns = [_escape(str(c)) for c in safe.columns]
    safe = safe.map(lambda v: _escape(str(v)))
    return safe.to_latex(escape=False, caption=_escape(caption) or None, label=label or None,
                         column_format="l" + "r" * len(safe.columns))


def write_tables(df: pd.DataFrame, out_dir: str | os.PathLike, title: str = "", footnotes=(), raw=None,
                 name: str = "table") -> dict[str, Path]:
    """``name.md``, ``name.tex``, ``name.csv`` in ``out_dir`` (the CSV holds ``raw`` numbers when given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex", "csv": out / f"{name}.csv"}
    paths["md"].write_text(to_markdown(df, title, footnotes))
    paths["tex"].write_text(to_latex(df, title, f"tab:{name}"))
    (raw if raw is not None else df).to_csv(paths["csv"])
    return paths
