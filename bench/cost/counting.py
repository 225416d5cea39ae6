"""Multiply-accumulates (MACs) of one model call, traced once with fvcore and split into two conventions.

fvcore's ``FlopCountAnalysis`` counts one fused multiply-add as one "flop", i.e. it reports MACs.

* ``paper`` -- fvcore's default handles at batch 1, U-Net only.  fvcore has no handle for
  ``aten::scaled_dot_product_attention`` and counts it as zero, so the attention matmuls (QK^T, AV) are missing.
  This is the convention of Flexiffusion's tables (and DeepCache's): 6.10 / 248.7 / 99.82 / 338.76 G per full step.
* ``complete`` -- the same count plus attention and ``cdist`` (:mod:`bench.cost.handles`, closed forms).

Both come from one trace: the handles put attention and cdist under their own operator names, and ``paper`` is the
total without them -- exactly what fvcore's default reports.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch

from flexiffusion.errors import UserError
from flexiffusion.threads import num_threads

from .handles import EXTRA_OPS, HANDLES

PAPER, COMPLETE = "paper", "complete"
CONVENTIONS = (PAPER, COMPLETE)
G = 1e9


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UserError(f"unknown MACs convention {convention!r}: use one of {', '.join(CONVENTIONS)}")


class Call(torch.nn.Module):
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

    def triple(self) -> tuple[int, int, int]:
        """``(total, attention, cdist)``, as stored in a :class:`bench.cost.table.MacsTable`."""
        return (self.total, self.extra.get("attention", 0), self.extra.get("cdist", 0))


def count_call(module: torch.nn.Module, args: Sequence[torch.Tensor], kwargs: dict | None = None,
               method: str = "forward", static: dict | None = None) -> OpCount:
    """Trace ``module.method(*args, **kwargs, **static)`` with fvcore once and count MACs in both conventions.

    Counting needs one forward pass, not speed: it runs on one thread (OpenMP oversubscription made tracing ~7x
    slower on a shared 2-core machine); the caller's thread count is restored afterwards."""
    with warnings.catch_warnings():  # importing fvcore.nn jit-scripts its focal loss: a torch FutureWarning
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    kwargs = dict(kwargs or {})
    wrapper = Call(module, method, len(args), list(kwargs), static)
    with torch.no_grad(), num_threads(1):
        fa = FlopCountAnalysis(wrapper, tuple(args) + tuple(kwargs.values()))
        for name, handle in HANDLES.items():
            fa.set_op_handle(name, handle)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        fa.tracer_warnings("none")
        by_op = fa.by_operator()
        total = int(fa.total())
    return OpCount(total, {k: int(by_op.get(k, 0)) for k in EXTRA_OPS})
