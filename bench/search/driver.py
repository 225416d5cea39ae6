"""The search driver: a space, a cost model and a fitness backend, run as Algorithm 1 over the results store.

Every evaluation is committed to the store (:class:`bench.store.ResultStore`) the moment it completes, one row per
metric under the key ``flexiffusion-eval/<evaluation setting key>/<candidate digest>``; an evaluation already
stored under the same setting is read back, never recomputed.  The search is seeded and its random choices depend
only on costs and fitness values, so rerunning a killed search replays it against the stored evaluations and ends
with the identical population, best candidate and Pareto set (kill -9 resume).

A search run is registered in the store's metadata as ``search/<name>`` with its setting (space, budget,
Algorithm 1 settings, seed, evaluation setting); the same name with another setting is refused before anything is
written.  Outputs (written atomically at the end): ``best.json`` (the best plan), ``pareto/NN-<digest>.json`` and
``summary.json`` in the output folder, and a ``flexiffusion-search/<search key>`` result in the store.
"""
from __future__ import annotations

import functools

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from flexiffusion.errors import UserError
from flexiffusion.io import atomic_write_json
from flexiffusion.schedule import Plan
from flexiffusion.search.evolution import EvolutionConfig, SearchResult, evolve
from flexiffusion.search.space import Candidate, SearchSpace

EVAL_PREFIX = "flexiffusion-eval"
SEARCH_PREFIX = "flexiffusion-search"
FLOAT_METRICS = ("fitness", "rfid", "fid", "mse", "sampling_s", "features_s", "distance_s", "io_s")


def stable_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def candidate_of(plan: Plan) -> Candidate:
    """The candidate a plan was compiled from (its name is ``flexiffusion[<candidate key>]``)."""
    m = re.fullmatch(r"flexiffusion\[(.*)\]", plan.name)
    if not m:
        raise UserError(f"plan {plan.name!r} was not compiled from a search candidate")
    return Candidate.from_key(m.group(1))


@dataclass
class Backend:
    """Fitness of plans under one evaluation setting.

    ``rows(plans, space) -> list[dict]`` returns per plan at least ``fitness`` and the metrics to store;
    ``key``: the evaluation setting's key; ``describe``: the setting as plain data (stored with the search);
    ``fields``: columns of every stored row (model, weights, scheduler, n_images, seeds, ...).
    """

    key: str
    rows: Callable[[Sequence[Plan], SearchSpace], list[dict]]
    describe: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    batch: int = 1        # plans per call (1: each evaluation is committed the moment it completes)


@dataclass
class SearchRun:
    name: str
    space: SearchSpace
    budget: float                      # avg MACs
    config: EvolutionConfig
    step_macs: tuple[int, ...]         # null, partial 1..B, full
    backend: Backend
    preset: str = ""

    def setting(self) -> dict:
        return {"space": self.space.to_dict(), "budget": self.budget, "config": self.config.to_dict(),
                "step_macs": list(self.step_macs), "evaluation": self.backend.key,
                "evaluation_setting": self.backend.describe, "preset": self.preset}

    def key(self) -> str:
        return stable_key(self.setting())

    def check(self) -> None:
        check_budget(self.space, self.step_macs, self.budget)


def check_budget(space: SearchSpace, step_macs: Sequence[int], budget: float) -> None:
    """Bad input before anything is written: a budget below the cheapest candidate of the space."""
    cheapest = space.cheapest(step_macs)
    low = space.avg_macs(cheapest, step_macs)
    if budget < low:
        raise UserError(f"budget {budget / 1e9:.6g} G avg MACs is below the cheapest candidate of the space "
                        f"({low / 1e9:.6g} G: {min(space.segments)} segments of {cheapest.segments[0].token()}): "
                        "raise the budget or choose lighter choices")


class StoredFitness:
    """``evaluate(plans) -> fitness`` for Algorithm 1 that reads the store first and commits every new evaluation."""

    def __init__(self, run: SearchRun, store):
        self.run, self.store = run, store
        self.done = self.cached = 0
        self.on_result: Callable[[], None] | None = None

    def eval_key(self, plan: Plan) -> str:
        return f"{EVAL_PREFIX}/{self.run.backend.key}/{self.run.space.digest(candidate_of(plan))}"

    def _stored(self, key: str) -> float | None:
        from bench.evaluation.stored import stored_fitness

        return stored_fitness(self.store, key)

    def _rows(self, plan: Plan, result: dict) -> list[dict]:
        space, cost = self.run.space, self.run.space.plan_cost(self.run.step_macs)
        cand = candidate_of(plan)
        base = {"experiment": "search", "method": "flexiffusion", "plan_digest": space.digest(cand),
                "plan": {**plan.to_dict(), **({"orders": space.orders(cand)} if space.solver == "dpm" else {})},
                "grid": len(plan), **self.run.backend.fields,
                "extra": {"evaluation": self.run.backend.key, "candidate": cand.key(), "layout": space.layout,
                          "solver": space.solver}}
        metrics = {"avg_macs": cost(plan), "nfe": plan.nfe}
        metrics.update({k: result[k] for k in FLOAT_METRICS if k in result})
        metrics.update({k: v for k, v in result.items() if k not in metrics and isinstance(v, (int, float))
                        and k not in ("n_images",)})
        out = []
        for metric, value in metrics.items():
            value = float(value)
            out.append({**base, "metric": metric, "value": None if math.isinf(value) or math.isnan(value) else value})
        return out

    def __call__(self, plans: Sequence[Plan]) -> list[float]:
        values: dict[int, float] = {}
        todo = []
        for i, plan in enumerate(plans):
            v = self._stored(self.eval_key(plan))
            if v is None:
                todo.append(i)
            else:
                values[i] = v
                self.cached += 1
        b = max(1, self.run.backend.batch)
        for lo in range(0, len(todo), b):
            chunk = todo[lo:lo + b]
            results = self.run.backend.rows([plans[i] for i in chunk], self.run.space)
            for i, result in zip(chunk, results):
                self.store.put(self.eval_key(plans[i]), self._rows(plans[i], result))
                values[i] = float(result["fitness"])
                self.done += 1
                if self.on_result is not None:
                    self.on_result()
        return [values[i] for i in range(len(plans))]


def _refuse_other_setting(stored: str, run: SearchRun, path) -> None:
    """UserError unless the stored ``search/<name>`` metadata is this run's setting."""
    try:
        theirs = json.loads(stored)
        same, setting = theirs.get("key") == run.key(), theirs.get("setting", {})
    except (ValueError, AttributeError):
        same, setting = False, {}
    if not same:
        mine = json.loads(json.dumps(run.setting(), default=str))
        diff = sorted(k for k, v in mine.items() if setting.get(k) != v)
        raise UserError(f"results store {path} holds search {run.name!r} with another setting (differs in "
                        f"{', '.join(diff) or 'its metadata'}): use another --store or --name")


def register(run: SearchRun, store) -> None:
    """Record the run's setting under ``search/<name>``; refuse a different setting under the same name."""
    stored = store.get_meta(f"search/{run.name}")
    if stored is None:
        store.set_meta(f"search/{run.name}", json.dumps({"key": run.key(), "setting": run.setting()},
                                                        sort_keys=True, default=str))
    else:
        _refuse_other_setting(stored, run, store.path)


def _stored_search(path, name: str | None) -> str | None:
    """Raise :class:`UserError` if ``path`` is not a results store; the ``search/<name>`` metadata if any.

    The store is opened ``immutable`` (no lock, no -wal/-shm files created): nothing is written.  Such a reader
    does not see what a killed writer left in the write-ahead log; :func:`register` checks again once the store is
    open."""
    import sqlite3

    path = Path(path)
    if not path.exists():
        return None
    if path.is_dir():
        raise UserError(f"results store {path} is a directory: give a file path, e.g. runs/results.sqlite")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                return None
            if not {"meta", "results", "rows"} <= tables:
                raise sqlite3.DatabaseError("tables of another program")
            db.execute("SELECT count(*) FROM rows").fetchone()
            row = db.execute("SELECT value FROM meta WHERE name=?", (f"search/{name}",)).fetchone() if name else None
            return row[0] if row else None
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"results store {path} is corrupted or not a results store ({exc}): move it away or use "
                        "another --store") from None


def check_store_file(path) -> None:
    """Refuse a corrupted or foreign store (before any model is loaded), writing nothing."""
    _stored_search(path, None)


def check_store(path, run: SearchRun) -> None:
    """Refuse a corrupted store or one holding this search name with another setting, writing nothing."""
    stored = _stored_search(path, run.name)
    if stored is not None:
        _refuse_other_setting(stored, run, path)


def _plan_json(e, space: SearchSpace, scheduler: str | None = None) -> dict:
    """A searched plan as ``flexbench sample --plan`` runs it: the steps, the sampler (``scheduler``; a DPM-Solver
    plan's per-segment ``orders`` instead) and the search's figures."""
    d = e.plan.to_dict()
    d.update(candidate=e.candidate.key(), digest=e.digest, avg_macs=e.avg_macs, fitness=e.fitness, nfe=e.plan.nfe)
    if space.solver == "dpm":
        d["orders"] = space.orders(e.candidate)
    elif scheduler:
        d["scheduler"] = scheduler
    return d


def write_outputs(run: SearchRun, result: SearchResult, out: Path, store) -> dict:
    """best.json, pareto/*.json, summary.json (atomic) and the search result in the store."""
    out = Path(out)
    pareto = result.pareto()
    plan_json = functools.partial(_plan_json, space=run.space, scheduler=run.backend.fields.get("scheduler"))
    summary = {"name": run.name, "key": run.key(), "preset": run.preset, "budget_avg_macs": run.budget,
               "best": plan_json(result.best),
               "pareto": [plan_json(e) for e in pareto],
               "population": [{"candidate": e.candidate.key(), "digest": e.digest, "avg_macs": e.avg_macs,
                               "fitness": e.fitness} for e in result.population],
               "history": result.history, "evaluated": len(result.evaluated), "setting": run.setting()}
    names = {f"{i:02d}-{e.digest}.json": e for i, e in enumerate(pareto)}
    for fname, e in names.items():
        atomic_write_json(out / "pareto" / fname, plan_json(e))
    for stale in (out / "pareto").glob("*.json"):   # an earlier search's Pareto files in the same folder
        if stale.name not in names:
            stale.unlink()
    atomic_write_json(out / "best.json", plan_json(result.best))
    atomic_write_json(out / "summary.json", summary)
    best = result.best
    rows = [{"experiment": "search", "method": "flexiffusion", "plan_digest": best.digest,
             "plan": plan_json(best), "grid": len(best.plan), **run.backend.fields,
             "metric": m, "value": v, "extra": {"search": run.name, "pareto": [e.digest for e in pareto]}}
            for m, v in (("best_fitness", best.fitness), ("best_avg_macs", best.avg_macs),
                         ("best_nfe", best.plan.nfe), ("evaluated", len(result.evaluated)))]
    store.put(f"{SEARCH_PREFIX}/{run.key()}", [{**r, "value": None if math.isinf(r["value"]) else r["value"]}
                                               for r in rows])
    return summary


def run_search(run: SearchRun, store_path, out, progress: Callable[[dict, StoredFitness], None] | None = None,
               on_evaluation: Callable[[StoredFitness], None] | None = None
               ) -> tuple[SearchResult, dict, StoredFitness]:
    """Check, register, search (resuming from the store), write the outputs; ``progress`` after each iteration,
    ``on_evaluation`` after each new evaluation."""
    from bench.store import ResultStore

    run.check()
    check_store(store_path, run)
    with ResultStore(store_path) as store:
        register(run, store)
        fitness = StoredFitness(run, store)
        if on_evaluation is not None:
            fitness.on_result = lambda: on_evaluation(fitness)
        result = evolve(run.space, run.space.plan_cost(run.step_macs), fitness, run.budget, run.config,
                        progress=None if progress is None else (lambda stats: progress(stats, fitness)))
        summary = write_outputs(run, result, out, store)
    return result, summary, fitness
