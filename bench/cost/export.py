"""Outputs of MACs tables: one tidy CSV and Flexiffusion's Fig. B.1 (MACs of a partial step against its branch)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from flexiffusion.io import atomic_path, atomic_write_text

from .counting import COMPLETE, PAPER, G
from .table import MacsTable

CSV_COLUMNS = ("preset", "step", "branch", "convention", "macs_g", "fraction_of_full")


def write_csv(tables: Iterable[MacsTable], path: str | os.PathLike) -> Path:
    """One tidy CSV of every row of ``tables`` (columns: CSV_COLUMNS), written atomically."""
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    for table in tables:
        for row in table.rows():
            w.writerow(row.as_dict())
    return atomic_write_text(path, buf.getvalue())


def plot_branches(tables: Sequence[MacsTable], path: str | os.PathLike) -> Path:
    """Flexiffusion Fig. B.1: U-Net MACs of a partial step against its branch, one panel per preset, both
    conventions (complete without the guidance doubling, so the two curves differ by attention only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(tables)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, table in zip(axes.flat, tables):
        branches = list(range(1, table.num_branches + 1))
        div = 2 if table.guidance else 1
        for conv, style in ((PAPER, "o-"), (COMPLETE, "s--")):
            ys = [table.unet_macs("partial", b, conv) / div / G if conv == COMPLETE
                  else table.unet_macs("partial", b, conv) / G for b in branches]
            full = table.unet_macs("full", None, conv) / (div if conv == COMPLETE else 1) / G
            ax.plot(branches, ys, style, ms=3, label=f"{conv} (full {full:.4g} G)")
            ax.axhline(full, color=ax.lines[-1].get_color(), lw=0.6, ls=":")
        ax.set_title(table.preset, fontsize=10)
        ax.set_xlabel("branch")
        ax.set_ylabel("MACs per step (G)")
        ax.set_xticks(branches)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("U-Net MACs of a partial step against its skip branch (batch 1)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
