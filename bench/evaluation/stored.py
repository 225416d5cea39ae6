"""Read a candidate's fitness back from the results store: the one reader both searches use (the Flexiffusion
search in ``bench.search.driver`` and AutoDiffusion in ``baselines.autodiffusion.evaluation``).

An evaluation is stored as tidy rows under one key, one of them ``metric == "fitness"``; an infinite fitness
(a candidate that failed) is stored as NULL.
"""
from __future__ import annotations

import math

from flexiffusion.errors import UserError


def stored_fitness(store, key: str) -> float | None:
    """The fitness stored under ``key``, ``None`` if nothing is stored there; a result without a fitness row is
    one :class:`UserError` line (the store was written by another program)."""
    rows = store.get(key) if store is not None else None
    if rows is None:
        return None
    for r in rows:
        if r["metric"] == "fitness":
            return math.inf if r["value"] is None else float(r["value"])
    raise UserError(f"results store {store.path}: result {key} has no fitness row (written by another program?): "
                    "use another --store")
