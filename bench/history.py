"""Benchmark history: one JSON line per tracking run (``bench-compare`` or ``bench-track``), rendered as a trend page
and a short markdown summary for a pull-request comment (``flexbench bench-history``).

A line is ``{"commit", "time", "host", "source", "figures": {name: {"value", "band", "status", ...}}}``.  ``band`` is
the region the gate allows, drawn around the baseline: for a ``bench-compare`` ratio the baseline value up to its
threshold, for a quality figure the baseline up to its tolerance; for a ``bench-track`` figure the value is the
current-vs-reference change in percent (worse is positive) and the band runs up to the threshold.  Lines are only
ever appended; a corrupted line is skipped with a warning naming it, nothing else is lost.
"""
from __future__ import annotations

import json
import platform
import time
import warnings
from pathlib import Path

from flexiffusion.errors import UserError


def entry(source: str, figures: dict, commit: str | None = None) -> dict:
    return {"commit": commit or "unknown", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": f"{platform.node()} ({platform.processor() or platform.machine()})", "source": source,
            "figures": figures}


def from_compare(baseline: dict, current: dict, problems: list[str]) -> dict:
    """History figures of a ``bench-compare`` run (numeric figures only; exact figures as changed / unchanged)."""
    failed = {p.split(": ", 1)[0] for p in problems}  # every problem line starts with "KEY: "
    out = {}
    for key, base in baseline.items():
        kind = key.split("::", 1)[1].split(":", 1)[0]
        if key not in current:
            continue
        b, c = base["value"], current[key]["value"]
        status = "regression" if key in failed else "ok"
        if kind == "exact":
            out[key] = {"value": None, "exact": b == c, "status": status}
        elif kind == "ratio":
            t = base["threshold"]
            band = [b, b * (1 + t)] if base.get("better", "lower") == "lower" else [b * (1 - t), b]
            out[key] = {"value": float(c), "baseline": float(b), "band": band, "unit": "ratio", "status": status}
        else:
            out[key] = {"value": float(c), "baseline": float(b), "band": [b, b + base["tolerance"]], "unit": "rFID",
                        "status": status}
    return out


def from_track(result: dict) -> dict:
    """History figures of a ``bench-track`` run: current vs reference, % worse, band up to the threshold."""
    regressions = set(result["regressions"])
    return {f"A/B {r['figure']}": {"value": 100 * r["worse_by"], "baseline": 0.0,
                                   "band": [-100 * r["threshold"], 100 * r["threshold"]], "unit": "% worse than reference",
                                   "status": "regression" if r["figure"] in regressions else
                                   ("not confirmed" if r["suspect"] else "ok")}
            for r in result["rows"]}


def append(path, line: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


def read(path) -> list[dict]:
    """Every valid line of the history; a corrupted one is skipped with a warning that names it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no benchmark history at {path}: bench-compare / bench-track --history {path} create it")
    out = []
    for i, text in enumerate(path.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            if not isinstance(line, dict) or not isinstance(line.get("figures"), dict):
                raise ValueError("not a history entry (needs a 'figures' object)")
        except ValueError as exc:
            warnings.warn(f"{path} line {i} skipped: {exc}", stacklevel=2)
            continue
        out.append(line)
    return out


def series(lines: list[dict]) -> dict:
    """``{figure: [(index, commit, figure entry)]}`` of the numeric figures, in history order."""
    out: dict = {}
    for i, line in enumerate(lines):
        for name, f in line["figures"].items():
            if isinstance(f, dict) and isinstance(f.get("value"), (int, float)):
                out.setdefault(name, []).append((i, str(line.get("commit", "?"))[:8], f))
    return out


def summary_markdown(lines: list[dict]) -> str:
    """A short pull-request comment: the latest run's figures against their bands, regressions first."""
    if not lines:
        return "**Benchmark tracking**: the history is empty.\n"
    last = lines[-1]
    figs = last["figures"]
    bad = [n for n, f in figs.items() if f.get("status") == "regression"]
    md = [f"**Benchmark tracking** ({last['source']}, commit `{str(last['commit'])[:8]}`, {last['time']}, "
          f"{last['host']}): {len(bad)} regression(s) of {len(figs)} figures; {len(lines)} runs in the history.", "",
          "| figure | value | allowed | previous | status |", "|---|---|---|---|---|"]
    prev = {}
    for line in lines[:-1]:
        for n, f in line["figures"].items():
            prev[n] = f
    for name in sorted(figs, key=lambda n: (figs[n].get("status") != "regression", n)):
        f = figs[name]
        if f.get("value") is None:
            value = "unchanged" if f.get("exact") else "**changed**"
            allowed, before = "identical", ""
        else:
            value = f"{f['value']:.4g}"
            allowed = f"{f['band'][0]:.4g} .. {f['band'][1]:.4g}" if f.get("band") else ""
            p = prev.get(name, {}).get("value")
            before = f"{p:.4g}" if isinstance(p, (int, float)) else ""
        status = "**REGRESSION**" if f.get("status") == "regression" else f.get("status", "")
        md.append(f"| {name} | {value} | {allowed} | {before} | {status} |")
    return "\n".join(md) + "\n"


def render(lines: list[dict], out) -> Path:
    """The trend page: one small plot per tracked figure across runs, the allowed band drawn; ``index.html``."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for k, (name, points) in enumerate(sorted(series(lines).items())):
        fig, ax = plt.subplots(figsize=(4.2, 2.4), dpi=90)
        xs = [p[0] for p in points]
        ys = [p[2]["value"] for p in points]
        for x, (_, _, f) in zip(xs, points):
            if f.get("band"):
                ax.fill_between([x - 0.4, x + 0.4], *f["band"], color="tab:green", alpha=0.18, lw=0)
            if f.get("baseline") is not None:
                ax.plot([x - 0.4, x + 0.4], [f["baseline"]] * 2, color="tab:green", lw=1)
        ax.plot(xs, ys, "-", color="0.5", lw=0.8)
        colors = ["tab:red" if p[2].get("status") == "regression" else "tab:blue" for p in points]
        ax.scatter(xs, ys, c=colors, s=14, zorder=3)
        ax.set_xticks(xs, [p[1] for p in points], rotation=45, fontsize=6, ha="right")
        ax.set_xlabel("run (commit)", fontsize=7)
        ax.set_ylabel(points[-1][2].get("unit", "value"), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_title(name.split("::")[-1], fontsize=8)
        fig.tight_layout()
        png = f"figure-{k}.png"
        fig.savefig(out / png)
        plt.close(fig)
        cards.append(f'<figure><img src="{png}" alt="{html.escape(name)}"><figcaption>{html.escape(name)}'
                     f"</figcaption></figure>")
    body = "".join(cards) or "<p>No numeric figures in the history.</p>"
    md = summary_markdown(lines)
    (out / "summary.md").write_text(md)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Benchmark history</title><style>"
            "body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:.4em}"
            "figcaption{font-size:.75em;color:#555;max-width:380px}pre{background:#f4f4f4;padding:.6em}</style>"
            f"</head><body><h1>Benchmark history</h1><p>{len(lines)} runs. Green band: what the gate allows "
            "(baseline to its threshold); red points: regressions.</p><pre>" + html.escape(md) + "</pre>"
            f"{body}</body></html>")
    (out / "index.html").write_text(page)
    return out / "index.html"
