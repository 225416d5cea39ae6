"""AutoDiffusion's search fitness on the Flexiffusion search's evaluation machinery (``bench.evaluation``): the same
:class:`~bench.evaluation.evaluator.Evaluator` (teacher, fixed reference statistics, prefix reuse), executors
(local or Ray) and the one stored-fitness path (:class:`bench.evaluation.stored.StoredEvaluations`), with every
evaluation committed the moment it completes.  The method itself (space, evolution, best candidate) lives in
:mod:`baselines.autodiffusion`, which imports none of this: the registry's ``Context`` lends it
:func:`search_fitness`.

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
from typing import Sequence

from baselines.autodiffusion.candidate import Candidate
from baselines.autodiffusion.method import AutoDiffusionConfig, search as evolve_search
from baselines.autodiffusion.sampling import candidate_plan, dropping, subset_scheduler
from bench.evaluation.stored import StoredEvaluations, metric_rows
from bench.results import result_key

EVAL_PREFIX = "autodiffusion-eval"
METRICS = ("fitness", "rfid", "fid", "mse", "sampling_s", "features_s", "distance_s", "io_s", "resumed_at",
           "unet_image_steps", "nfe")
SEARCH_BATCH = 256   # images per generation batch of a search the registry runs (at most its search images)


def step_tokens(c: Candidate) -> tuple[str, ...]:
    """Per-step prefix keys ``"t_i:drops_i"`` (within the tag of the candidate's grid; see the module docstring)."""
    return tuple(f"{t}:{'.'.join(map(str, sorted(d)))}" for t, d in c.steps)


def grid_tag(c: Candidate) -> str:
    return "autodiffusion:" + ",".join(map(str, c.timesteps))


def _drop_hook(candidate: Candidate, unet):
    return dropping(unet, candidate)


def candidate_extras(c: Candidate):
    """The evaluator's extras of a candidate (picklable: they travel to Ray actors)."""
    from bench.evaluation.evaluator import PlanExtras

    return PlanExtras(grid_tag(c), subset_scheduler(c.timesteps), functools.partial(_drop_hook, c),
                      step_tokens(c))


def evaluation_setting(bundle, config: AutoDiffusionConfig, batch_size: int = 64, weights: str | None = None,
                       threads: int | None = None):
    """The :class:`~bench.evaluation.setting.EvaluationSetting` of ``config``'s fitness on ``bundle``."""
    from bench.evaluation.setting import EvaluationSetting

    return EvaluationSetting.for_images(config.search_images, config.search_seed_offset, model=bundle.name,
                                        weights=weights, scheduler="ddim", grid_length=config.teacher_steps,
                                        fitness=config.fitness, real=config.real,
                                        batch_size=min(batch_size, config.search_images), threads=threads,
                                        device=str(bundle.device))


class StoredEvaluation:
    """Fitness ``candidate -> float`` (lower is better) through an executor of ``bench.evaluation``, reading the
    results store first and committing each new evaluation (:class:`~bench.evaluation.stored.StoredEvaluations`);
    ``many(candidates)`` evaluates a batch (on Ray in parallel).  ``store=None``: no persistence.  The executor is
    built on the first evaluation not in the store, so a fully stored replay loads no model."""

    def __init__(self, setting, store=None, executor: str = "local", cache_dir=None, **executor_kwargs):
        self.setting, self.store, self.executor_name = setting, store, executor
        self.kwargs = {"cache_dir": cache_dir, **executor_kwargs}
        self.setting_key = setting.key()
        self._executor = None
        # local: one candidate per call, committed as it completes; Ray: a batch in parallel
        self.evaluations = StoredEvaluations(store, self.key, self._evaluate, self._rows,
                                             batch=1 if executor == "local" else 1 << 30)

    @property
    def done(self) -> int:
        return self.evaluations.done

    @property
    def cached(self) -> int:
        return self.evaluations.cached

    def key(self, c: Candidate) -> str:
        from bench.cache import stable_hash

        return result_key(EVAL_PREFIX, self.setting_key, stable_hash(c.key()))

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

    def _evaluate(self, candidates: Sequence[Candidate]) -> list[dict]:
        return self.executor.map([candidate_plan(c) for c in candidates], [candidate_extras(c) for c in candidates])

    def _rows(self, c: Candidate, result: dict) -> list[dict]:
        s = self.setting
        base = {"experiment": "autodiffusion-search", "method": f"autodiffusion-K{len(c.timesteps)}",
                "model": s.model, "weights": s.weights, "scheduler": "ddim-subset", "n_images": s.n_images,
                "seeds": f"{s.seeds[0]}-{s.seeds[-1]}", **s.provenance(),
                "extra": {"evaluation": self.setting_key, "candidate": c.key()}}
        return metric_rows(base, {m: result[m] for m in METRICS if m in result})

    def many(self, candidates: Sequence[Candidate]) -> list[float]:
        return self.evaluations(list(candidates))

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


def search(bundle, config: AutoDiffusionConfig, store=None, batch_size: int = 64, progress: bool = True,
           cache_dir=None, executor: str = "local", checkpoint=None, weights: str | None = None,
           **executor_kwargs):
    """AutoDiffusion's two-stage search on ``bundle`` with ``config.fitness`` through ``bench.evaluation`` on
    ``executor`` (``local`` | ``ray``), every evaluation committed to ``store`` (a results store; a rerun replays
    against it).  ``checkpoint``: the evolution's own JSON checkpoint (optional)."""
    config.validate()
    setting = evaluation_setting(bundle, config, batch_size, weights)
    with stored_evaluation(setting, store, executor, cache_dir=cache_dir, **executor_kwargs) as ev:
        return evolve_search(bundle, config, ev, checkpoint, progress)


def search_fitness(cache_dir=None, batch_size: int = SEARCH_BATCH, executor: str = "local",
                   weights: str | None = None, **executor_kwargs):
    """The registry ``Context``'s ``search_fitness``: ``(bundle, config, store) -> context manager`` of the stored
    fitness of ``config``'s search on ``bundle`` (every evaluation committed to ``store``)."""
    def fitness(bundle, config: AutoDiffusionConfig, store):
        setting = evaluation_setting(bundle, config, batch_size, weights)
        return stored_evaluation(setting, store, executor, cache_dir=cache_dir, **executor_kwargs)
    return fitness
