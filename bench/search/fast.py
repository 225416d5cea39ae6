"""The search's execution profiles: ``exact`` (the default, for reproduction) and ``fast`` (``flexbench search --fast``).

* ``exact``: Algorithm 1 as written over the results store: every candidate's fitness on all its images, eager fp32,
  with the exact levers only (dedup by plan digest and prefix reuse of sampler states: identical fitness values).
* ``fast``: the exact levers plus adaptive image counts (:mod:`bench.search.screening`): a child is evaluated on a
  first block of images and stops when it cannot matter to Algorithm 1.  The levers that change numerics (bf16,
  torch.compile, channels_last) are not in it: on the CPU this suite is measured on, bf16 runs about 20x slower than
  fp32 (no native bfloat16 kernels) and channels_last is slower; ``--dtype`` / ``--compile`` stay separate flags
  whose ranking quality the yardstick (:mod:`bench.search.yardstick`) measures (docs/search-cost.md).

The fast mode's own values are screened estimates for the children that stopped early; so when it ends, its final
Pareto set (over the candidates evaluated on all images) and its best candidate are **re-evaluated in the exact mode**
(:func:`exact_finish`): ``best.json``, ``pareto/`` and the search's result carry exact values only.  The store keeps
both: the fast evaluations under the fast evaluation key (rows with ``screened`` and ``n_images_used``, extra
``profile`` = fast), the exact re-evaluations under the exact setting's key, shared with any exact search.
"""
from __future__ import annotations

from dataclasses import replace

from flexiffusion.errors import UserError
from flexiffusion.search.evolution import Evaluated, SearchResult

PROFILES = {"exact": "every candidate on all images (default; reproduction)",
            "fast": "adaptive image counts (screening), final Pareto set and best re-evaluated exactly"}


def check_fast(request) -> None:
    """Bad input of ``--fast``, before anything is loaded or written (one line each)."""
    if request.executor != "local":
        raise UserError("--fast evaluates children stage by stage against the population in this process: drop "
                        "--executor ray (or run without --fast)")
    if request.fitness != "rfid":
        raise UserError(f"--fast screens rFID against the teacher; fitness {request.fitness!r} is not supported: "
                        "run it without --fast")


def screened_digests(store, key: str, digests) -> set[str]:
    """The digests whose stored fast evaluation under ``key`` stopped early (metric ``screened`` = 1)."""
    from .driver import eval_key

    out = set()
    for d in digests:
        rows = store.get(eval_key(key, d)) or []
        if any(r["metric"] == "screened" and r["value"] for r in rows):
            out.add(d)
    return out


def pareto_of(evaluated) -> list[Evaluated]:
    """Non-dominated in (avg MACs, fitness), cheapest first (as :meth:`SearchResult.pareto`)."""
    out: list[Evaluated] = []
    for e in sorted(evaluated, key=lambda e: (e.avg_macs, e.fitness, e.digest)):
        if not out or e.fitness < out[-1].fitness:
            out.append(e)
    return out


def exact_finish(run, exact_backend):
    """``finish(result, store)`` for :func:`bench.search.driver.run_search`: the fast result's Pareto set (over
    candidates evaluated on all images) and best re-evaluated under ``exact_backend`` (read from the store when an
    exact evaluation exists); returns the exact result (population = the re-evaluated candidates, best first) and the
    summary's ``fast`` section (the fast values, which are screened estimates where ``screened``)."""
    from .driver import StoredFitness

    def finish(result: SearchResult, store):
        screened = screened_digests(store, run.backend.key, result.evaluated)
        full = [e for d, e in result.evaluated.items() if d not in screened]
        targets = {e.digest: e for e in pareto_of(full)}
        targets.setdefault(result.best.digest, result.best)
        exact_run = replace(run, backend=exact_backend)
        if getattr(exact_backend, "prepare", None):
            exact_backend.prepare()
        try:
            values = StoredFitness(exact_run, store)(list(targets.values()))
        finally:
            if getattr(exact_backend, "close", None):
                exact_backend.close()
        exact = {d: Evaluated(e.candidate, d, e.plan, e.avg_macs, float(v)) for (d, e), v in zip(targets.items(), values)}
        population = sorted(exact.values(), key=Evaluated.order)
        fast = {"profile": "fast", "evaluation": run.backend.key, "exact_evaluation": exact_backend.key,
                "screen": run.backend.describe.get("screen"),
                "best": {"digest": result.best.digest, "fitness": result.best.fitness},
                "pareto": [{"digest": e.digest, "avg_macs": e.avg_macs, "fitness": e.fitness} for e in pareto_of(full)],
                "evaluated": len(result.evaluated), "screened": len(screened),
                "population": [{"digest": e.digest, "fitness": e.fitness, "screened": e.digest in screened}
                               for e in result.population]}
        return SearchResult(population, exact, result.history), {"profile": "fast", "fast": fast,
                                                                  "values": "exact re-evaluations"}

    return finish
