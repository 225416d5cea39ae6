"""AutoDiffusion's fitness on the Flexiffusion search's evaluation machinery (``bench.evaluation``): the same
:class:`~bench.evaluation.evaluator.Evaluator` (teacher, fixed reference statistics, prefix reuse), executors
(local or Ray) and results store, with every evaluation committed the moment it completes.

A candidate is a plan of K full steps plus :class:`~bench.evaluation.evaluator.PlanExtras`: the scheduler over its
timestep subset, its layer drops as a hook, a tag and per-step prefix tokens.

Prefix reuse, and where it is sound.  A step of the subset scheduler (first-order DPM-Solver++ = DDIM) moves the
latents from sigma(t_i) to sigma(t_{i+1}), so the state after ``k`` steps depends on t_0..t_k (one timestep more
than the steps taken) and on the drop sets of steps 0..k-1: a key of (t_i, drops_i) pairs alone would be wrong
(two candidates sharing t_0..t_{k-1} but not t_k differ after step k).  Moreover resuming restores the stored
scheduler as a whole (``flexiffusion.scheduler_state.restore_scheduler`` checks and loads its timestep grid), so a
state can only serve a candidate on the same grid.  Hence: the tag holds the candidate's whole timestep set, and
token ``i`` is ``"t_i:drops_i"``; candidates with the same timesteps whose first ``k`` drop sets agree (stage 2's
drop mutations, crossovers of one grid) resume after step ``k``, bit-identical to sampling from noise (tested).
Reuse across grids that share a prefix (stage 1's timestep mutations) would need a restore of only the
step-dependent scheduler fields into the new grid: not done.

Store: one result per evaluated candidate under ``autodiffusion-eval/<setting key>/<candidate digest>`` (one row
per metric); a stored candidate is read back, never re-evaluated.  The evolution is seeded and its random choices
depend only on fitness values, so rerunning a killed search replays it against the stored evaluations and ends
with the identical result (kill -9 resume, tested); identical candidates are evaluated once.
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Sequence

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

from .candidate import Candidate
from .sampling import dropping, subset_scheduler

EVAL_PREFIX = "autodiffusion-eval"
METRICS = ("fitness", "rfid", "fid", "mse", "sampling_s", "features_s", "distance_s", "io_s", "resumed_at",
           "unet_image_steps", "nfe")


def step_tokens(c: Candidate) -> tuple[str, ...]:
    """Per-step prefix keys ``"t_i:drops_i"`` (within the tag of the candidate's grid; see the module docstring)."""
    return tuple(f"{t}:{'.'.join(map(str, sorted(d)))}" for t, d in c.steps)


def grid_tag(c: Candidate) -> str:
    return "autodiffusion:" + ",".join(map(str, c.timesteps))


def _drop_hook(candidate: Candidate, unet):
    return dropping(unet, candidate)


def candidate_plan(c: Candidate) -> Plan:
    return Plan.full(len(c.timesteps), name=f"autodiffusion[{c.key()}]")


def candidate_extras(c: Candidate):
    """The evaluator's extras of a candidate (picklable: they travel to Ray actors)."""
    from bench.evaluation.evaluator import PlanExtras

    return PlanExtras(grid_tag(c), subset_scheduler(c.timesteps), functools.partial(_drop_hook, c),
                      step_tokens(c))


class StoredEvaluation:
    """Fitness ``candidate -> float`` (lower is better) through an executor of ``bench.evaluation``, reading the
    results store first and committing each new evaluation; ``many(candidates)`` evaluates a batch (on Ray in
    parallel).  ``store=None``: no persistence.  The executor is built on the first evaluation not in the store,
    so a fully stored replay loads no model."""

    def __init__(self, setting, store=None, executor: str = "local", cache_dir=None, **executor_kwargs):
        self.setting, self.store, self.executor_name = setting, store, executor
        self.kwargs = {"cache_dir": cache_dir, **executor_kwargs}
        self.setting_key = setting.key()
        self._executor = None
        self.done = self.cached = 0

    def key(self, c: Candidate) -> str:
        from bench.cache import stable_hash

        return f"{EVAL_PREFIX}/{self.setting_key}/{stable_hash(c.key())}"

    @property
    def executor(self):
        if self._executor is None:
            from bench.evaluation.executors import make_executor

            self._executor = make_executor(self.executor_name, self.setting, **self.kwargs)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def _stored(self, c: Candidate) -> float | None:
        from bench.evaluation.stored import stored_fitness

        return stored_fitness(self.store, self.key(c))

    def _rows(self, c: Candidate, result: dict) -> list[dict]:
        s = self.setting
        base = {"experiment": "autodiffusion-search", "method": f"autodiffusion-K{len(c.timesteps)}",
                "model": s.model, "weights": s.weights, "scheduler": "ddim-subset", "n_images": s.n_images,
                "seeds": f"{s.seeds[0]}-{s.seeds[-1]}", "extra": {"evaluation": self.setting_key,
                                                                 "candidate": c.key()}}
        out = []
        for m in METRICS:
            if m in result:
                v = float(result[m])
                out.append({**base, "metric": m, "value": None if math.isinf(v) or math.isnan(v) else v})
        return out

    def many(self, candidates: Sequence[Candidate]) -> list[float]:
        values: dict[str, float] = {}
        todo: dict[str, Candidate] = {}   # identical candidates evaluated once
        for c in candidates:
            k = c.key()
            if k in values or k in todo:
                continue
            v = self._stored(c)
            if v is None:
                todo[k] = c
            else:
                values[k] = v
                self.cached += 1
        pending = list(todo.values())
        chunk = 1 if self.executor_name == "local" else max(1, len(pending))  # local: commit each as it completes
        for lo in range(0, len(pending), chunk):
            cands = pending[lo:lo + chunk]
            results = self.executor.map([candidate_plan(c) for c in cands], [candidate_extras(c) for c in cands])
            for c, r in zip(cands, results):
                if self.store is not None:
                    self.store.put(self.key(c), self._rows(c, r))
                values[c.key()] = float(r["fitness"])
                self.done += 1
        return [values[c.key()] for c in candidates]

    def __call__(self, c: Candidate) -> float:
        return self.many([c])[0]


@contextlib.contextmanager
def stored_evaluation(setting, store=None, executor: str = "local", **kwargs):
    """A :class:`StoredEvaluation` whose executor is closed at the end of the block."""
    ev = StoredEvaluation(setting, store, executor, **kwargs)
    try:
        yield ev
    finally:
        ev.close()
