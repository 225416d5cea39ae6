"""Multiply-accumulates (MACs) of every step type, counted with fvcore in two labelled conventions.

fvcore's ``FlopCountAnalysis`` counts one fused multiply-add as one "flop", i.e. it reports MACs.  Two conventions:

* ``paper`` -- fvcore's default handles at batch 1, U-Net only.  fvcore has no handle for
  ``aten::scaled_dot_product_attention`` and counts it as zero, so the attention matmuls (QK^T, AV) are missing.
  This is the convention of Flexiffusion's tables (and DeepCache's): 6.10 / 248.7 / 99.82 / 338.76 G per full step.
* ``complete`` -- the same count plus attention (``B*Lq*Lk*d_qk + B*Lq*Lk*d_v``, equal to
  ``torch.utils.flop_counter.FlopCounterMode`` / 2) and ``cdist`` (vector quantisation), per image: doubled when
  the model is sampled with classifier-free guidance (the U-Net runs on the conditional and unconditional batch),
  with the text encoder (per prompt) and the decoder (per image) on separate lines.

Both conventions come from one trace per step type: the handles put attention and cdist under their own operator
names, and ``paper`` is the total without them -- exactly what fvcore's default reports.

A partial step at branch ``b`` is traced with :class:`flexiffusion.engine.StepEngine` after a full step has filled
its cache, so the count is what the engine really runs (deeper modules return cached tensors: no ops).
Tables are cached on disk (``$FLEXBENCH_CACHE/macs``, JSON, atomic writes) under a key of the preset's architecture
and the versions of everything that produced the count.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from flexiffusion.errors import UserError

PAPER, COMPLETE = "paper", "complete"
CONVENTIONS = (PAPER, COMPLETE)
# Operator names our handles add on top of fvcore's defaults; ``paper`` leaves them out.
EXTRA_OPS = ("attention", "cdist")
# Bump when the counting procedure changes (invalidates cached tables).
COUNTER_VERSION = 1
G = 1e9


# ---- fvcore handles ---------------------------------------------------------------------------------------------


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(QK^T)V: ``B*Lq*Lk*d_qk`` (scores) + ``B*Lq*Lk*d_v`` (weighted sum); B includes heads."""
    *batch, lq, d_qk = q_shape
    lk, d_v = k_shape[-2], v_shape[-1]
    b = 1
    for s in batch:
        b *= int(s)
    return b * lq * lk * (d_qk + d_v)


def _shape(value) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    return list(get_shape(value))


def sdpa_handle(inputs, outputs) -> Counter:
    """fvcore handle for ``aten::scaled_dot_product_attention``."""
    return Counter({"attention": attention_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))})


def cdist_handle(inputs, outputs) -> Counter:
    """fvcore handle for ``aten::cdist`` (vector quantisation): one MAC per coordinate of each pair."""
    *batch, p, m = _shape(inputs[0])
    r = _shape(inputs[1])[-2]
    b = 1
    for s in batch:
        b *= int(s)
    return Counter({"cdist": b * p * r * m})


class _Call(torch.nn.Module):
    """Positional-tensor front of a model call, as fvcore's tracer needs (kwargs by name, first output only)."""

    def __init__(self, module: torch.nn.Module, method: str, num_args: int, names: Sequence[str],
                 static: dict | None = None):
        super().__init__()
        self.module, self.method, self.num_args = module, method, num_args
        self.names, self.static = tuple(names), dict(static or {})

    def forward(self, *tensors):
        kwargs = dict(zip(self.names, tensors[self.num_args:]), **self.static)
        out = getattr(self.module, self.method)(*tensors[:self.num_args], **kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out


@dataclass(frozen=True)
class OpCount:
    """One traced call: total MACs with our handles, and the part from each extra operator."""

    total: int
    extra: dict = field(default_factory=dict)

    @property
    def paper(self) -> int:
        return self.total - sum(self.extra.values())

    @property
    def complete(self) -> int:
        return self.total


def count_call(module: torch.nn.Module, args: Sequence[torch.Tensor], kwargs: dict | None = None,
               method: str = "forward", static: dict | None = None) -> OpCount:
    """Trace ``module.method(*args, **kwargs, **static)`` with fvcore once and count MACs in both conventions."""
    with warnings.catch_warnings():  # importing fvcore.nn jit-scripts its focal loss: a torch FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    kwargs = dict(kwargs or {})
    wrapper = _Call(module, method, len(args), list(kwargs), static)
    with torch.no_grad():
        fa = FlopCountAnalysis(wrapper, tuple(args) + tuple(kwargs.values()))
        fa.set_op_handle("aten::scaled_dot_product_attention", sdpa_handle, "aten::cdist", cdist_handle)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        by_op = fa.by_operator()
        total = int(fa.total())
    return OpCount(total, {k: int(by_op.get(k, 0)) for k in EXTRA_OPS})


# ---- per-preset table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MacsRow:
    preset: str
    step: str              # "full", "partial", "null", "text_encoder", "decoder"
    branch: int | None
    convention: str
    macs_g: float
    fraction_of_full: float

    def as_dict(self) -> dict:
        return {"preset": self.preset, "step": self.step, "branch": "" if self.branch is None else self.branch,
                "convention": self.convention, "macs_g": self.macs_g, "fraction_of_full": self.fraction_of_full}


@dataclass
class MacsTable:
    """Raw counts of one preset at batch 1: ``counts[key] = (total, attention, cdist)``, keys ``full``,
    ``partial:<b>``, ``text_encoder``, ``decoder``; conventions are derived from them."""

    preset: str
    num_branches: int
    guidance: bool
    counts: dict[str, tuple[int, int, int]]
    key: dict = field(default_factory=dict)

    # -- derived numbers --
    def unet_macs(self, step: str, branch: int | None = None, convention: str = PAPER) -> int:
        """MACs of one U-Net step (``full`` / ``partial`` at ``branch`` / ``null``) for one image."""
        _check_convention(convention)
        if step == "null":
            return 0
        if step == "full":
            key = "full"
        elif step == "partial":
            if branch is None or not 1 <= branch <= self.num_branches:
                raise UserError(f"branch {branch} out of range: {self.preset} has branches 1..{self.num_branches}")
            key = f"partial:{branch}"
        else:
            raise UserError(f"unknown step {step!r}: use full, partial or null")
        total, attn, cdist = self.counts[key]
        if convention == PAPER:
            return total - attn - cdist
        return total * (2 if self.guidance else 1)

    def part_macs(self, kind: str) -> int | None:
        """Complete-convention MACs of a text encoder (per prompt) or decoder (per image); None if absent."""
        c = self.counts.get(kind)
        return None if c is None else c[0]

    def lookup(self, convention: str = PAPER) -> list[int]:
        """MACs per step type, indexed ``0 = null, b = partial(b), B + 1 = full`` (see schedule_cost)."""
        return ([0] + [self.unet_macs("partial", b, convention) for b in range(1, self.num_branches + 1)]
                + [self.unet_macs("full", None, convention)])

    def rows(self) -> list[MacsRow]:
        out = []
        for conv in CONVENTIONS:
            full = self.unet_macs("full", None, conv)
            steps = [("null", None)] + [("partial", b) for b in range(1, self.num_branches + 1)] + [("full", None)]
            for step, b in steps:
                m = self.unet_macs(step, b, conv)
                out.append(MacsRow(self.preset, step, b, conv, m / G, m / full))
            if conv == COMPLETE:
                for kind in ("text_encoder", "decoder"):
                    m = self.part_macs(kind)
                    if m is not None:
                        out.append(MacsRow(self.preset, kind, None, conv, m / G, m / full))
        return out

    def fractions(self, convention: str = PAPER) -> list[float]:
        """Fraction of a full step's MACs computed by partial(b), b = 1..B."""
        full = self.unet_macs("full", None, convention)
        return [self.unet_macs("partial", b, convention) / full for b in range(1, self.num_branches + 1)]

    # -- serialisation --
    def to_dict(self) -> dict:
        return {"preset": self.preset, "num_branches": self.num_branches, "guidance": self.guidance,
                "counts": {k: list(v) for k, v in self.counts.items()}, "key": self.key}

    @classmethod
    def from_dict(cls, d: dict) -> "MacsTable":
        return cls(d["preset"], int(d["num_branches"]), bool(d["guidance"]),
                   {k: tuple(int(x) for x in v) for k, v in d["counts"].items()}, d.get("key", {}))


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"unknown MACs convention {convention!r}: use one of {', '.join(CONVENTIONS)}")


def _triple(c: OpCount) -> tuple[int, int, int]:
    return (c.total, c.extra.get("attention", 0), c.extra.get("cdist", 0))


@contextlib.contextmanager
def _single_thread():
    """Counting needs one forward pass per step type, not speed: one thread avoids OpenMP oversubscription, which
    made tracing ~7x slower on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure_preset(name: str, progress: bool = False) -> MacsTable:
    """Count every step type of preset ``name`` (full, partial 1..B via the step engine, parts); no caching."""
    with _single_thread():
        return _measure_preset(name, progress)


def _measure_preset(name: str, progress: bool) -> MacsTable:
    from flexiffusion.engine import StepEngine
    from flexiffusion.schedule import Step

    from bench.presets import get_preset

    preset = get_preset(name)
    unet = preset.build_unet()
    sample, t, kwargs = preset.example_inputs(batch_size=1)
    static = {"return_dict": False}
    counts: dict[str, tuple[int, int, int]] = {}
    engine = StepEngine.attach(unet)
    try:
        steps = [Step.full()] + [Step.partial(b) for b in range(1, engine.num_branches + 1)]
        bar = _progress(steps, f"MACs {name}", progress)
        for step in bar:
            # The full step is traced under the engine too: the trace runs the model, which fills the cache
            # that the partial steps read.
            with engine.step(step):
                c = count_call(unet, (sample, t), kwargs, static=static)
            counts["full" if step.kind == "full" else f"partial:{step.branch}"] = _triple(c)
        num_branches = engine.num_branches
    finally:
        engine.detach()
    for part in preset.parts:
        module = preset.build_part(part.kind)
        if part.kind == "text_encoder":
            ids = torch.zeros((1, *part.input_shape), dtype=torch.long)
            c = count_call(module, (ids,), static={"return_dict": False})
        else:
            z = torch.randn((1, *part.input_shape), generator=torch.Generator().manual_seed(0))
            c = count_call(module, (z,), method="decode", static={"return_dict": False})
        counts[part.kind] = _triple(c)
    return MacsTable(name, num_branches, preset.guidance, counts, cache_key(name))


def _progress(items, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False)


# ---- disk cache -------------------------------------------------------------------------------------------------


def _source_digest(module_name: str) -> str:
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin:
        return "missing"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]


def cache_key(name: str) -> dict:
    """What a preset's counts depend on: its architecture and inputs, the engine, and library versions."""
    import importlib.metadata as md

    from bench.presets import get_preset

    preset = get_preset(name)

    def version(dist: str) -> str:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return "none"

    return json.loads(json.dumps({
        "preset": name, "counter": COUNTER_VERSION,
        "unet": [preset.unet_class, preset.config()], "sample_shape": preset.sample_shape,
        "context_shape": preset.context_shape, "num_classes": preset.num_classes, "guidance": preset.guidance,
        "parts": [[p.kind, p.cls, dict(p.config), p.input_shape] for p in preset.parts],
        "engine": _source_digest("flexiffusion.engine"),
        "versions": {d: version(d) for d in ("torch", "diffusers", "fvcore", "transformers")},
    }, sort_keys=True, default=str))


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$FLEXBENCH_CACHE/macs``, else ``~/.cache/flexiffusion-bench/macs``."""
    if root is not None:
        return Path(root)
    base = os.environ.get("FLEXBENCH_CACHE") or "~/.cache/flexiffusion-bench"
    return Path(os.path.expanduser(base)) / "macs"


def _cache_path(root: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key['preset']}-{digest}.json"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def preset_table(name: str, cache: str | os.PathLike | None | bool = None, refresh: bool = False,
                 progress: bool = False) -> MacsTable:
    """The MACs table of preset ``name``, from the disk cache when its key matches, else measured and saved.
    ``cache=False`` disables the disk cache; a path overrides its location."""
    key = cache_key(name)
    if cache is False:
        return measure_preset(name, progress)
    path = _cache_path(cache_root(None if cache is True else cache), key)
    if not refresh and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            data = None
        if data is not None and data.get("key") == key:  # the stored key guards against collisions
            return MacsTable.from_dict(data)
    table = measure_preset(name, progress)
    _atomic_write_text(path, json.dumps(table.to_dict(), indent=1, sort_keys=True))
    return table


# ---- outputs ----------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("preset", "step", "branch", "convention", "macs_g", "fraction_of_full")


def write_csv(tables: Iterable[MacsTable], path: str | os.PathLike) -> Path:
    """One tidy CSV of every row of ``tables`` (columns: CSV_COLUMNS)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for table in tables:
            for row in table.rows():
                w.writerow(row.as_dict())
    return path


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
