"""Scoped torch intra-op thread count: ``torch.set_num_threads`` for one block, the previous value restored."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Run the block with ``n`` torch threads (``None``: leave as is) and restore the previous count afterwards,
    also when the block raises. Yields the count in effect. ``n < 1`` is a ``ValueError``."""
    previous = torch.get_num_threads()
    if n is None:
        yield previous
        return
    if int(n) < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(int(n))
    try:
        yield int(n)
    finally:
        torch.set_num_threads(previous)
