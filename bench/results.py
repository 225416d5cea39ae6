"""The suite's result vocabulary: one key syntax, one metric registry, one typed result.

* **Keys** (:func:`result_key`): ``kind/part/part/...`` -- the kind of result first (``row``, ``cost``, ``search-eval``,
  ``search``, ``ablation``, ...), then what identifies it, usually ending in a hash of everything that produced it.
  Every writer builds its key with this one function; a part may not contain ``/``.
* **Metrics** (:data:`METRICS`): every metric a store row may hold, with its header, unit, format, which direction
  is better and which ``flexbench`` command writes it.  Experiment specs and renderers name only registered
  metrics (checked when a spec is parsed, bench/experiments/spec.py); a few entries are *fields*: columns of the
  store row itself (model, device) that a table may show.
* **Result** (:class:`Result`): a key and its rows, as the store returns them; ``values()`` maps metric -> value.

Modelled on optimum-benchmark's report dataclass: a result is a typed value, not a loose dict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from flexiffusion.errors import UserError

# the flexbench sub-commands that write rows (a metric's ``writers`` name them)
ROWS = ("run", "experiment", "demo")          # the common row harness (bench.rows) and what drives it
COSTS = ("experiment", "macs")                # architecture cost rows
SEARCH = ("search", "demo")
ABLATION = ("ablation",)


@dataclass(frozen=True)
class Metric:
    name: str
    header: str
    fmt: str = "{:.4g}"
    unit: str = ""
    better: str | None = None          # "lower" | "higher" | None (no direction)
    writers: tuple[str, ...] = ROWS
    field: bool = False                # a column of the store row (model, device), not a metric value
    floor: float | None = None         # the smallest value it can take (FID is a distance: 0); a bootstrap
                                       # interval is shown clipped there (reports.cells.interval says so)
    ceiling: float | None = None       # the largest (SSIM: 1), likewise

    def format(self, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, str):
            return value
        text = self.fmt.format(value)
        # a value that rounds to zero prints without a sign (FID(A, A) is 0 up to float noise of either sign)
        return text[1:] if text[:1] in "+-" and not any(c in "123456789" for c in text) else text


METRICS: dict[str, Metric] = {}


def register(*metrics: Metric) -> None:
    for m in metrics:
        if m.better not in (None, "lower", "higher"):
            raise ValueError(f"metric {m.name}: better must be 'lower', 'higher' or None")
        if not m.writers:
            raise ValueError(f"metric {m.name}: no writer produces it")
        METRICS[m.name] = m


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise UserError(f"unknown metric {name!r}: choose one of {', '.join(sorted(METRICS))}") from None


register(
    # the common row harness (bench.rows): cost as run, latency, quality
    Metric("nfe", "NFE", "{:.0f}", "evaluations", "lower"),
    Metric("grid", "grid", "{:.0f}", "steps"),
    Metric("macs_paper_g", "MACs (G)", "{:.4g}", "G", "lower"),
    Metric("macs_complete_g", "MACs complete (G)", "{:.4g}", "G", "lower"),
    Metric("avg_macs_paper_g", "avg MACs (G)", "{:.4g}", "G", "lower", ROWS + COSTS),
    Metric("avg_macs_complete_g", "avg MACs complete (G)", "{:.4g}", "G", "lower", ROWS + COSTS),
    Metric("speedup_paper", "speed-up (MACs)", "{:.2f}x", "x", "higher", ROWS + COSTS),
    Metric("speedup_complete", "speed-up complete (MACs)", "{:.2f}x", "x", "higher", ROWS + COSTS),
    # controlled latency: bench.rows.LATENCY_IMAGES seeds as one batch (tests/test_provenance.py holds them equal)
    Metric("latency_s_per_image", "s/image (batch 8)", "{:.4f}", "s", "lower"),
    Metric("latency_iqr_s_per_image", "s/image IQR (batch 8)", "{:.4f}", "s"),
    Metric("generation_s_per_image", "generation s/image", "{:.4f}", "s", "lower"),
    Metric("fid", "FID", "{:.2f}", "", "lower", floor=0.0),
    Metric("rfid", "rFID", "{:.2f}", "", "lower", floor=0.0),
    Metric("isc", "IS", "{:.2f}", "", "higher"),
    Metric("precision", "precision", "{:.3f}", "", "higher"),
    Metric("recall", "recall", "{:.3f}", "", "higher"),
    Metric("clip_score", "CLIP score", "{:.2f}", "", "higher"),
    # per-image similarity to the teacher's image of the same seed, mean over images (bench.quality.similarity);
    # PSNR is inf for images equal to the teacher's, LPIPS the text "needs <file>" without its backbone's weights
    Metric("psnr_db", "PSNR vs teacher (dB)", "{:.2f}", "dB", "higher", floor=0.0),
    Metric("ssim", "SSIM vs teacher", "{:.4f}", "", "higher", ceiling=1.0),
    Metric("lpips", "LPIPS vs teacher", "{:.4f}", "", "lower", floor=0.0),
    # memory of the row's generation pass (bench.cost.memory): CUDA max_memory_allocated, on the CPU the process's
    # peak resident set; the most bytes the step engine's feature cache held, per image of a batch
    Metric("peak_memory_mib", "peak memory (MiB)", "{:.1f}", "MiB", "lower"),
    Metric("cache_kib_per_image", "cache KiB/image", "{:.1f}", "KiB", "lower"),
    # architecture cost rows (bench.experiments.costs) and Fig. B.1
    Metric("fraction_of_full", "fraction of a full step", "{:.3f}", "", "lower", COSTS),
    Metric("fraction_paper", "fraction of a full step (paper)", "{:.3f}", "", "lower", COSTS),
    Metric("fraction_complete", "fraction of a full step (complete)", "{:.3f}", "", "lower", COSTS),
    # Fig. 4: feature similarity between steps
    Metric("steps_above_0.9", "steps > 0.9 similar (mean)", "{:.1f}", "steps", None, ("experiment",)),
    # what an experiment filled, kept for the report (bench.experiments.record)
    Metric("cells", "table rows", "{:.0f}", "rows", None, ("experiment", "demo")),
    # paired comparisons (bench.experiments.compare)
    Metric("fid_diff", "ΔFID", "{:+.2f}", "", "lower", ("experiment", "demo")),
    # the rFID image-count ablation (Tables 4 and 9)
    Metric("k_images", "images", "{:.0f}", "images", None, ABLATION),
    Metric("s_per_candidate", "s/candidate", "{:.2f}", "s", "lower", ABLATION),
    Metric("kendall_tau", "Kendall's tau", "{:.3f}", "", "higher", ABLATION),
    Metric("kendall_p", "p-value", "{:.2g}", "", "lower", ABLATION),
    Metric("reference_tau", "reference halves' tau", "{:.3f}", "", "higher", ABLATION),
    Metric("n_candidates", "candidates", "{:.0f}", "", None, ABLATION),
    # search cost (Table 5)
    Metric("resolution", "resolution", "{:.0f}", "px", None, SEARCH),
    Metric("budget_g", "budget (G)", "{:.4g}", "G", None, SEARCH),
    Metric("evaluations", "evaluations", "{:.0f}", "", "lower", SEARCH),
    Metric("distinct_evaluations", "distinct evaluations", "{:.0f}", "", "lower", SEARCH),
    Metric("search_s", "wall time (s)", "{:.0f}", "s", "lower", SEARCH),
    Metric("device_hours", "device hours", "{:.3g}", "h", "lower", SEARCH),
    Metric("best_fitness", "best fitness", "{:.3f}", "", "lower", SEARCH),
    Metric("best_avg_macs", "best avg MACs", "{:.4g}", "MACs", "lower", SEARCH),
    Metric("best_nfe", "best NFE", "{:.0f}", "", "lower", SEARCH),
    # fields of the store row a table may show
    Metric("model", "model", writers=ROWS + SEARCH + ABLATION, field=True),
    Metric("device", "device", writers=ROWS + SEARCH + ABLATION, field=True),
    Metric("threads", "threads", "{:.0f}", writers=ROWS + SEARCH + ABLATION, field=True),
)

# the paper's printed numbers against ours, and its claims (bench.experiments.conformance: one result per run)
CONFORMANCE = ("conformance",)
register(
    Metric("paper_value", "paper", "{:.4g}", "", None, CONFORMANCE),
    Metric("ours_value", "ours", "{:.4g}", "", None, CONFORMANCE),
    Metric("diff_abs", "difference", "{:+.4g}", "", None, CONFORMANCE),
    Metric("diff_pct", "difference (%)", "{:+.2f}", "%", None, CONFORMANCE),
    Metric("claim_evidence", "evidence results", "{:.0f}", "", None, CONFORMANCE),
)

# spread columns a row may carry next to a metric (bootstrap over images)
SPREAD_SUFFIXES = ("_low", "_high", "_sd")


def header(name: str) -> str:
    m = METRICS.get(name)
    return m.header if m else name


def fmt(name: str, value) -> str:
    m = METRICS.get(name)
    return m.format(value) if m else ("" if value is None else Metric(name, name).format(value))


# ---- keys ---------------------------------------------------------------------------------------------------------
def result_key(kind: str, *parts) -> str:
    """The one key syntax of the results store: ``kind/part/...`` (no part may contain ``/`` or be empty)."""
    out = [str(kind)] + [str(p) for p in parts]
    for p in out:
        if not p or "/" in p:
            raise ValueError(f"key part {p!r} of {out!r}: parts are non-empty and contain no '/'")
    return "/".join(out)


def key_kind(key: str) -> str:
    return key.split("/", 1)[0]


# ---- typed result -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    """A stored result: its key and its rows (one metric value each), as written in one transaction."""

    key: str
    rows: tuple = field(default_factory=tuple)

    def values(self) -> dict:
        """metric -> value (the first row of each metric)."""
        out: dict = {}
        for r in self.rows:
            out.setdefault(r["metric"], r["value"])
        return out

    def first(self) -> dict:
        return self.rows[0] if self.rows else {}

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)
