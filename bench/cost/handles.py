"""fvcore operator handles for what its defaults count as zero: scaled-dot-product attention and ``cdist``.

Attention: ``softmax(QK^T)V`` costs ``B*Lq*Lk*d_qk`` MACs for the scores and ``B*Lq*Lk*d_v`` for the weighted sum
(B includes heads); ``cdist`` (vector quantisation): one MAC per coordinate of each pair.  Each handle reports under
its own operator name, so the paper convention can leave them out.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence


def _batch(dims: Sequence[int]) -> int:
    b = 1
    for s in dims:
        b *= int(s)
    return b


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(QK^T)V: ``B*Lq*Lk*d_qk`` (scores) + ``B*Lq*Lk*d_v`` (weighted sum); B includes heads."""
    *batch, lq, d_qk = q_shape
    lk, d_v = k_shape[-2], v_shape[-1]
    return _batch(batch) * lq * lk * (d_qk + d_v)


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
    return Counter({"cdist": _batch(batch) * p * r * m})


HANDLES = {"aten::scaled_dot_product_attention": sdpa_handle, "aten::cdist": cdist_handle}
# Operator names the handles add on top of fvcore's defaults; the paper convention leaves them out.
EXTRA_OPS = ("attention", "cdist")
