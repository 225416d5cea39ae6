"""The search driver: a space, a cost model and a fitness backend, run as Algorithm 1 over the results store.

Every evaluation is committed to the store (:class:`bench.store.ResultStore`) the moment it completes, one row per
metric under the key ``flexiffusion-eval/<evaluation setting key>/<candidate digest>``; an evaluation already
stored under the same setting is read back, never recomputed.  The search is seeded and its random choices depend
only on costs and fitness values, so rerunning a killed search replays it against the stored evaluations and ends
with the identical population, best candidate and Pareto set (kill -9 resume).

A search run is registered in the store's metadata as ``search/<name>`` with its setting (space, budget,
Algorithm 1 settings, seed, evaluation setting); the same name with another setting is refused before anything is
written.  Outputs (written atomically at the end): ``best.json`` (the best plan), ``pareto/NN-<digest>.json`` and
``summary.json`` in the output folder, a ``flexiffusion-search/<search key>`` result in the store and the search's
cost (Table 5: :func:`search_cost_rows`) as ``search-cost/<name>/<search key>``.
"""
from __future__ import annotations

import functools

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from flexiffusion.errors import UserError
from flexiffusion.io import atomic_write_json
from flexiffusion.search.evolution import CandidateFitness, EvolutionConfig, Proposal, SearchResult, evolve
from flexiffusion.search.space import SearchSpace

from bench.evaluation.stored import StoredEvaluations, metric_rows

from bench.results import result_key

EVAL_PREFIX = "flexiffusion-eval"
SEARCH_PREFIX = "flexiffusion-search"
FLOAT_METRICS = ("fitness", "rfid", "fid", "mse", "sampling_s", "features_s", "distance_s", "io_s")


def stable_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


@dataclass
class Backend:
    """Fitness of the search's proposals under one evaluation setting.

    ``rows(proposals, space) -> list[dict]`` returns per :class:`~flexiffusion.search.evolution.Proposal`
    (candidate, compiled plan, digest, avg MACs) at least ``fitness`` and the metrics to store; ``key``: the
    evaluation setting's key; ``describe``: the setting as plain data (stored with the search); ``fields``: columns
    of every stored row (model, weights, scheduler, n_images, seeds, ...).
    """

    key: str
    rows: Callable[[Sequence[Proposal], SearchSpace], list[dict]]
    describe: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    batch: int = 1        # proposals per call (1: each evaluation is committed the moment it completes)
    observe: Callable | None = None   # observe(population) before each round (the fast mode's screening)


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


def eval_key(backend_key: str, digest: str) -> str:
    """``flexiffusion-eval/<evaluation setting key>/<candidate digest>``: one stored evaluation of the search."""
    return result_key(EVAL_PREFIX, backend_key, digest)


class StoredFitness(StoredEvaluations, CandidateFitness):
    """Algorithm 1's fitness of proposals (:class:`~bench.evaluation.stored.StoredEvaluations`): read from the
    store first, every new evaluation committed under :func:`eval_key` of the proposal's digest."""

    def __init__(self, run: SearchRun, store):
        self.run = run
        super().__init__(store, self.eval_key, lambda proposals: run.backend.rows(proposals, run.space), self._rows,
                         run.backend.batch)
        note = getattr(run.backend, "note", None)
        if note is not None:   # the fast mode: an evaluation read back joins this round's members as it did first
            self.on_stored = lambda proposal: note(proposal.digest)

    def observe(self, population) -> None:
        observe = getattr(self.run.backend, "observe", None)
        if observe is not None:
            observe(population)

    def eval_key(self, proposal: Proposal) -> str:
        return eval_key(self.run.backend.key, proposal.digest)

    def _rows(self, p: Proposal, result: dict) -> list[dict]:
        space = self.run.space
        dpm = {"orders": space.orders(p.candidate)} if space.solver == "dpm" else {}
        base = {"experiment": "search", "method": "flexiffusion", "plan_digest": p.digest,
                "plan": {**p.plan.to_dict(), **dpm}, "grid": len(p.plan), **self.run.backend.fields,
                "extra": {"evaluation": self.run.backend.key, "candidate": p.candidate.key(), "layout": space.layout,
                          "solver": space.solver, "profile": self.run.backend.describe.get("profile", "exact")}}
        metrics = {"avg_macs": p.avg_macs, "nfe": p.plan.nfe}
        metrics.update({k: result[k] for k in FLOAT_METRICS if k in result})
        metrics.update({k: v for k, v in result.items() if k not in metrics and isinstance(v, (int, float))
                        and k not in ("n_images",)})
        return metric_rows(base, metrics)


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
    """Raise :class:`UserError` if ``path`` is not a results store; the ``search/<name>`` metadata if any (read
    without writing anything: :func:`bench.store.peek_meta`; :func:`register` checks again once the store is open)."""
    from bench.store import peek_meta

    return peek_meta(path, f"search/{name}" if name else None)


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


def write_outputs(run: SearchRun, result: SearchResult, out: Path, store, search_s: float | None = None,
                  computed: int | None = None, cost_result: SearchResult | None = None,
                  extra: dict | None = None) -> dict:
    """best.json, pareto/*.json, summary.json (atomic) and the search result in the store; with ``search_s`` (the
    wall time of the search, :func:`run_search`) also its Table 5 cost result (:func:`search_cost_rows`, over
    ``cost_result``'s evaluations when given: the fast mode reports exact re-evaluations in ``result``).
    ``extra``: more summary fields (the fast mode's own values)."""
    out = Path(out)
    pareto = result.pareto()
    plan_json = functools.partial(_plan_json, space=run.space, scheduler=run.backend.fields.get("scheduler"))
    summary = {"name": run.name, "key": run.key(), "preset": run.preset, "budget_avg_macs": run.budget,
               "best": plan_json(result.best),
               "pareto": [plan_json(e) for e in pareto],
               "population": [{"candidate": e.candidate.key(), "digest": e.digest, "avg_macs": e.avg_macs,
                               "fitness": e.fitness} for e in result.population],
               "history": result.history, "evaluated": len(result.evaluated), "setting": run.setting(),
               **(extra or {})}
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
    store.get_or_put(result_key(SEARCH_PREFIX, run.key()),
                     lambda: [{**r, "value": None if math.isinf(r["value"]) else r["value"]} for r in rows])
    if search_s is not None:
        store.get_or_put(search_cost_key(run), lambda: search_cost_rows(run, cost_result or result, store, search_s,
                                                                        computed))
    return summary


COST_PREFIX = COST_EXPERIMENT = "search-cost"
EVAL_SECONDS = ("sampling_s", "features_s", "distance_s", "io_s")


def search_cost_key(run: SearchRun) -> str:
    """``search-cost/<name>/<search key>``: one Table 5 result per stored search (a name's ``/`` read as ``_``)."""
    return result_key(COST_PREFIX, run.name.replace("/", "_"), run.key())


def _resolution(preset: str) -> int | None:
    """The image side (px) of a search preset's model: its decoder's output for a latent model, else the side of
    what the sampler denoises (the cost preset's architecture, bench.presets); None for a run without a preset."""
    from bench.presets import get_preset as cost_preset
    from bench.search.presets import get_preset

    try:
        arch = cost_preset(get_preset(preset).cost_preset)
    except UserError:
        return None
    decoders = [p for p in arch.parts if p.kind == "decoder" and "sample_size" in p.config]
    return int(decoders[0].config["sample_size"]) if decoders else int(arch.sample_shape[-1])


def search_cost_rows(run: SearchRun, result: SearchResult, store, search_s: float,
                     computed: int | None = None) -> list[dict]:
    """Table 5's rows of one finished search (experiment ``search-cost``, one row per metric):

    * ``resolution``: the image side in px of the preset's model (:func:`_resolution`);
    * ``budget_g``: the budget, G avg MACs;
    * ``evaluations``: the candidates Algorithm 1 evaluates as written, the initial population plus every child of
      every iteration, duplicates included (the fitness memo asks for each distinct candidate once);
    * ``distinct_evaluations``: the distinct candidates evaluated (fitness computed or read from the store);
    * ``search_s``: the **wall time of the run that completed the search** -- Algorithm 1 with its evaluations, from
      the start of Algorithm 1 to its last iteration, not the teacher's preparation before it nor the outputs.  A
      resumed (or repeated) search reads the evaluations an earlier run stored in about no time, so its wall time
      covers only what the completing run computed (``extra.computed_evaluations`` says how many); the result is
      written once, by the first run that completes the search, and kept by later ones;
    * ``device_hours``: the device time the search's evaluations took, the sum over its distinct evaluations of their
      stored seconds (sampling, features, distance, state I/O) / 3600, whichever run computed them: the same for an
      interrupted and an uninterrupted search, and more than the wall time when actors evaluate in parallel (an
      evaluation shared with another search of the same evaluation setting counts with the seconds it took there);
      no value when the evaluations stored no seconds.

    ``device`` and ``threads`` are those the evaluations ran with (the backend's fields)."""
    history = result.history
    evaluations = (history[0]["new_evaluations"] + sum(h["children"] for h in history[1:])) if history else None
    seconds, timed = 0.0, 0
    for digest in result.evaluated:   # StoredFitness stores each evaluation under eval_key
        rows = store.get(eval_key(run.backend.key, digest)) or []
        got = [r["value"] for r in rows if r["metric"] in EVAL_SECONDS and r["value"] is not None]
        seconds += sum(got)
        timed += bool(got)
    base = {"experiment": COST_EXPERIMENT, "method": "flexiffusion", "grid": run.space.grid,
            **run.backend.fields,   # model, weights, scheduler, seeds and the evaluations' device and threads
            "extra": {"search": run.name, "label": run.name, "preset": run.preset, "search_key": run.key(),
                      "computed_evaluations": computed, "timed_evaluations": timed}}
    values = {"resolution": _resolution(run.preset), "budget_g": run.budget / 1e9, "evaluations": evaluations,
              "distinct_evaluations": len(result.evaluated), "search_s": float(search_s),
              "device_hours": seconds / 3600 if timed else None}
    return [{**base, "metric": m, "value": v} for m, v in values.items()]


def run_search(run: SearchRun, store_path, out, progress: Callable[[dict, StoredFitness], None] | None = None,
               on_evaluation: Callable[[StoredFitness], None] | None = None, finish: Callable | None = None
               ) -> tuple[SearchResult, dict, StoredFitness]:
    """Check, register, search (resuming from the store), write the outputs and the search's cost result
    (:func:`search_cost_rows`, its wall time measured here); ``progress`` after each iteration, ``on_evaluation``
    after each new evaluation.  ``finish(result, store) -> (result, summary extra)`` replaces the result before the
    outputs are written (the fast mode's exact re-evaluation, :mod:`bench.search.fast`)."""
    import time

    from bench.store import ResultStore

    run.check()
    check_store(store_path, run)
    with ResultStore(store_path) as store:
        register(run, store)
        fitness = StoredFitness(run, store)
        if on_evaluation is not None:
            fitness.on_result = lambda: on_evaluation(fitness)
        t0 = time.perf_counter()
        result = evolve(run.space, run.space.plan_cost(run.step_macs), fitness, run.budget, run.config,
                        progress=None if progress is None else (lambda stats: progress(stats, fitness)))
        search_s = time.perf_counter() - t0
        if finish is None:
            summary = write_outputs(run, result, out, store, search_s, fitness.done)
        else:
            reported, extra = finish(result, store)
            summary = write_outputs(run, reported, out, store, search_s, fitness.done, cost_result=result, extra=extra)
            result = reported
    return result, summary, fitness
