"""Fitness through the results store: the one stored-fitness path of both searches (Flexiffusion's
:class:`bench.search.driver.StoredFitness` and AutoDiffusion's :class:`bench.search.autodiffusion.StoredEvaluation`).

An evaluation is stored as tidy rows under one key, one of them ``metric == "fitness"``; an infinite fitness
(a candidate that failed) is stored as NULL.  :class:`StoredEvaluations` reads every item's fitness back from the
store first and evaluates only the missing ones, committing each result the moment its batch returns, so a killed
search loses at most the batch in flight and a rerun replays it against the store (kill -9 resume).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

from flexiffusion.errors import UserError


def fitness_of(rows, store=None, key: str = "") -> float:
    """The fitness among a stored result's ``rows`` (NULL: infinite); a result without a fitness row is one
    :class:`UserError` line (the store was written by another program)."""
    for r in rows:
        if r["metric"] == "fitness":
            return math.inf if r["value"] is None else float(r["value"])
    where = f"results store {store.path}: " if store is not None else ""
    raise UserError(f"{where}result {key} has no fitness row (written by another program?): use another --store")


def stored_fitness(store, key: str) -> float | None:
    """The fitness stored under ``key``, ``None`` if nothing is stored there (or there is no store)."""
    rows = store.get(key) if store is not None else None
    return None if rows is None else fitness_of(rows, store, key)


def metric_rows(base: dict, values: dict) -> list[dict]:
    """One store row per metric value (``base``: the columns every row shares); NaN and infinity stored as NULL."""
    out = []
    for metric, value in values.items():
        value = float(value)
        out.append({**base, "metric": metric, "value": None if math.isinf(value) or math.isnan(value) else value})
    return out


class StoredEvaluations:
    """``evaluations(items) -> fitness values`` (in order) through the results store.

    ``key(item)``: the item's store key; ``evaluate(items) -> result dicts`` (each with ``fitness``) for
    ``batch`` items at a time (1: every evaluation committed the moment it completes); ``rows(item, result)``: the
    store rows of one evaluation.  Items with the same key are evaluated once; a stored item is read back, never
    evaluated again.  ``store=None``: nothing is read or stored.  ``done`` / ``cached``: evaluations computed / read
    back; ``on_result()`` is called after each new one."""

    def __init__(self, store, key: Callable[[object], str], evaluate: Callable[[list], Sequence[dict]],
                 rows: Callable[[object, dict], list[dict]], batch: int = 1):
        self.store, self.key, self.evaluate, self.rows, self.batch = store, key, evaluate, rows, batch
        self.done = self.cached = 0
        self.on_result: Callable[[], None] | None = None
        self.on_stored: Callable[[object], None] | None = None   # called with each item read back from the store

    def _commit(self, key: str, item, result: dict) -> float:
        if self.store is None:
            return float(result["fitness"])
        stored, _ = self.store.get_or_put(key, lambda: self.rows(item, result))
        return fitness_of(stored.rows, self.store, key)

    def __call__(self, items: Sequence) -> list[float]:
        keys = [self.key(it) for it in items]
        values: dict[str, float] = {}
        todo: dict[str, object] = {}
        for k, it in zip(keys, items):
            if k in values or k in todo:
                continue
            v = stored_fitness(self.store, k)
            if v is None:
                todo[k] = it
            else:
                values[k] = v
                self.cached += 1
                if self.on_stored is not None:
                    self.on_stored(it)
        pending = list(todo.items())
        step = max(1, int(self.batch))
        for lo in range(0, len(pending), step):
            chunk = pending[lo:lo + step]
            results = list(self.evaluate([it for _, it in chunk]))
            if len(results) != len(chunk):
                raise RuntimeError(f"the evaluation returned {len(results)} results for {len(chunk)} items")
            for (k, it), result in zip(chunk, results):
                values[k] = self._commit(k, it, result)
                self.done += 1
                if self.on_result is not None:
                    self.on_result()
        return [values[k] for k in keys]
