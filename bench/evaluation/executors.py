"""Where candidates are evaluated: in this process (:class:`LocalExecutor`) or on Ray actors (:class:`RayExecutor`).

Both take a picklable :class:`~bench.evaluation.setting.EvaluationSetting` (never a model), build an
:class:`~bench.evaluation.evaluator.Evaluator` once per process or actor (model, teacher statistics, state store),
and have the same interface: ``map(plans, extras=None) -> results`` in input order.  An evaluation is
deterministic (prefix reuse is bit-identical to sampling from noise), so which actor evaluates a plan changes
nothing but the time: the Ray executor gives the local executor's values.

Ray is an optional extra (``pip install .[ray]``): ``RayExecutor(setting, actors=2)`` starts a local instance
(``ray.init(num_cpus=actors, include_dashboard=False)``) unless Ray is already initialised or ``address=`` names
an existing cluster; usage statistics are off (``RAY_USAGE_STATS_ENABLED=0``).  Each actor takes ``cpus_per_actor``
CPUs (or ``gpus_per_actor`` GPUs); plans are dealt to actors in contiguous runs, so children of one parent tend to
meet the states their siblings left.
"""
from __future__ import annotations

import os
from typing import Sequence

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

from .setting import EvaluationSetting


class LocalExecutor:
    """Evaluate in this process with one :class:`Evaluator` (built on first use)."""

    def __init__(self, setting: EvaluationSetting, **evaluator_kwargs):
        self.setting, self.kwargs = setting, evaluator_kwargs
        self._evaluator = None

    @property
    def evaluator(self):
        if self._evaluator is None:
            from .evaluator import Evaluator

            self._evaluator = Evaluator(self.setting, **self.kwargs).prepare()
        return self._evaluator

    def map(self, plans: Sequence[Plan], extras=None) -> list[dict]:
        return self.evaluator.evaluate(list(plans), extras)

    def close(self) -> None:
        self._evaluator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("the Ray executor needs the optional extra: pip install 'flexiffusion-bench[ray]' "
                        "(or use --executor local)") from None
    return ray


class _Worker:
    """A Ray actor's body: one Evaluator, built when the actor starts."""

    def __init__(self, setting: EvaluationSetting, kwargs: dict):
        from .evaluator import Evaluator

        self.evaluator = Evaluator(setting, **kwargs).prepare()

    def evaluate(self, plans, extras):
        return self.evaluator.evaluate(plans, extras)


class RayExecutor:
    """Evaluate on ``actors`` Ray actors; see the module docstring."""

    def __init__(self, setting: EvaluationSetting, actors: int = 2, *, address: str | None = None,
                 cpus_per_actor: float = 1, gpus_per_actor: float = 0, object_store_memory: int = 200 << 20,
                 **evaluator_kwargs):
        if actors < 1:
            raise UserError(f"the Ray executor needs at least 1 actor, got {actors}")
        ray = _ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._started = False
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in ("PYTHONPATH", "FLEXBENCH_CACHE") if k in os.environ}
            env["RAY_USAGE_STATS_ENABLED"] = "0"
            if address is not None:
                ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, int(actors * cpus_per_actor)), include_dashboard=False,
                         object_store_memory=object_store_memory, runtime_env={"env_vars": env},
                         log_to_driver=False)
            self._started = True
        self.setting = setting
        # the teacher (or real data) is prepared by the first actor; the others read it from the disk cache
        cls = ray.remote(num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)(_Worker)
        first = cls.remote(setting, evaluator_kwargs)
        ray.get(first.__ray_ready__.remote())
        self.actors = [first] + [cls.remote(setting, evaluator_kwargs) for _ in range(actors - 1)]

    def map(self, plans: Sequence[Plan], extras=None) -> list[dict]:
        ray = _ray()
        plans = list(plans)
        extras = [None] * len(plans) if extras is None else list(extras)
        if len(extras) != len(plans):
            raise UserError(f"{len(extras)} extras for {len(plans)} plans: give one (or None) per plan")
        n = len(self.actors)
        bounds = [round(i * len(plans) / n) for i in range(n + 1)]
        futures = [a.evaluate.remote(plans[lo:hi], extras[lo:hi])
                   for a, lo, hi in zip(self.actors, bounds, bounds[1:]) if hi > lo]
        return [r for part in ray.get(futures) for r in part]

    def close(self) -> None:
        ray = _ray()
        for a in getattr(self, "actors", []):
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(name: str, setting: EvaluationSetting, **kwargs):
    """An executor by name (``local`` | ``ray``)."""
    if name not in EXECUTORS:
        raise UserError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](setting, **kwargs)
