"""The method registry: every baseline is a named method with a config dataclass, turned into a
:class:`bench.rows.Run` (plan + scheduler + hooks + cost) that the common harness measures.

Methods: ``teacher`` (DDIM, all steps full), ``ddim``, ``plms``, ``dpm-multistep`` and ``dpm-singlestep`` (DPM-Solver,
orders 1-3), ``deepcache`` (uniform, any branch, any scheduler), ``deepcache-plus`` (the "+" schedules, SD or LDM
form), ``tome`` (a full plan with token merging), ``autodiffusion`` (searched timesteps + dropped layers).  ToMe
combines with any method (``Experiment.tome``).  An experiment is plain data, ``{"method": NAME, "config": {...},
"tome": {...} | null}``, e.g. from a JSON file.

Building a run is two-phase: :meth:`Experiment.validate` checks everything against the model (branches, grid,
orders, ToMe's transformer blocks, AutoDiffusion's budget) without running anything, so bad input fails before
anything is computed or written; :meth:`Experiment.build` then prepares the run (AutoDiffusion searches here,
its best candidate stored and reused).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import types
import typing
from dataclasses import asdict, dataclass
from typing import Any, Callable

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan

from .autodiffusion.method import AutoDiffusionConfig
from .autodiffusion.search import EvolutionConfig
from .deepcache import DeepCacheConfig, DeepCachePlusConfig
from .tome import ToMeConfig, transformer_blocks

ORDERS = (1, 2, 3)


# ---- configs ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepsConfig:
    """A plain sampler: every step full."""

    steps: int = 100


@dataclass(frozen=True)
class SolverConfig:
    """DPM-Solver (Lu et al. 2022) at ``steps`` steps of order ``order`` (1-3)."""

    steps: int = 10
    order: int = 3

    def validate(self) -> "SolverConfig":
        if self.order not in ORDERS:
            raise UserError(f"DPM-Solver order {self.order} not supported: choose 1, 2 or 3")
        return self


@dataclass(frozen=True)
class ToMeMethodConfig:
    """A full plan of ``steps`` steps of ``scheduler`` with ToMe (the experiment's ``tome``, default ToMeConfig())."""

    steps: int = 50
    scheduler: str = "plms"


@dataclass
class Context:
    """What building a run may use: the results store (AutoDiffusion's search result), the cache folder."""

    store: Any = None
    cache_dir: Any = None
    progress: bool = True


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    plan: Callable        # (config) -> (Plan, scheduler name)
    help: str
    build: Callable | None = None   # (config, bundle, ctx, tome) -> Run, for methods that are more than a plan


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def _full(scheduler: str, label: str):
    def plan(c):
        from flexiffusion.schedulers import grid_length

        return Plan.full(grid_length(scheduler, c.steps), f"{label}-{c.steps}"), scheduler
    return plan


def _solver(kind: str):
    def plan(c: SolverConfig):
        c.validate()
        name = f"dpm{c.order}" if kind == "multistep" else f"dpm-singlestep{c.order}"
        return Plan.full(c.steps, f"dpm-solver-{c.order}-{kind}-{c.steps}"), name
    return plan


def _deepcache(c: DeepCacheConfig):
    return c.plan(), c.scheduler


def _tome_full(c: ToMeMethodConfig):
    from flexiffusion.schedulers import grid_length

    return Plan.full(grid_length(c.scheduler, c.steps), f"tome-{c.scheduler}{c.steps}"), c.scheduler


register_method(Method("teacher", StepsConfig, _full("ddim", "teacher"), "DDIM, every step full (the teacher)"))
register_method(Method("ddim", StepsConfig, _full("ddim", "ddim"), "DDIM (eta 0) at any step count"))
register_method(Method("plms", StepsConfig, _full("plms", "plms"), "PLMS (PNDM without Runge-Kutta warm-up)"))
register_method(Method("dpm-multistep", SolverConfig, _solver("multistep"), "DPM-Solver multistep, order 1-3"))
register_method(Method("dpm-singlestep", SolverConfig, _solver("singlestep"), "DPM-Solver singlestep, order 1-3"))
register_method(Method("deepcache", DeepCacheConfig, _deepcache, "DeepCache, uniform interval N at a branch"))
register_method(Method("deepcache-plus", DeepCachePlusConfig, _deepcache,
                       "DeepCache '+' (non-uniform: form sd = quad around a center, ldm = quad from 0)"))
register_method(Method("tome", ToMeMethodConfig, _tome_full, "ToMe (tomesd) on a full plan"))


# ---- configs from data -----------------------------------------------------------------------------------------
def _matches(kind, value) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    return True


def config_from_dict(cls: type, data: dict | None, what: str = "config"):
    """``cls(**data)`` with nested dataclasses; unknown fields and values of the wrong type are a UserError."""
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{what} must be an object of fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data or {}) - set(names))
    if unknown:
        raise UserError(f"{what} has no field {unknown[0]!r}: its fields are {', '.join(names)}")
    kwargs = {}
    for name, value in (data or {}).items():
        hint = hints[name]
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        nested = next((k for k in kinds if dataclasses.is_dataclass(k)), None)
        if nested is not None and isinstance(value, dict):
            value = config_from_dict(nested, value, f"{what}.{name}")
        elif not any(_matches(k, value) for k in kinds):
            raise UserError(f"{what}.{name} = {value!r}: expected {' or '.join(getattr(k, '__name__', str(k)) for k in kinds)}")
        kwargs[name] = value
    return cls(**kwargs)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in asdict(value).items()}
    return value


# ---- experiments -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """One method with its config (and optionally ToMe on top): plain data, see the module docstring."""

    method: str
    config: Any = None
    tome: ToMeConfig | None = None
    label: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "Experiment":
        if not isinstance(data, dict) or "method" not in data:
            raise UserError('an experiment is an object {"method": NAME, "config": {...}, "tome": {...}}')
        unknown = sorted(set(data) - {"method", "config", "tome", "label"})
        if unknown:
            raise UserError(f"experiment has no field {unknown[0]!r}: use method, config, tome, label")
        method = get_method(data["method"])
        config = config_from_dict(method.config, data.get("config"), f"{method.name} config")
        tome = data.get("tome")
        if tome is not None:
            tome = config_from_dict(ToMeConfig, tome, "tome")
        elif method.name == "tome":
            tome = ToMeConfig()
        return cls(method.name, config, tome, str(data.get("label", "")))

    def to_dict(self) -> dict:
        return {"method": self.method, "config": _plain(self.config), "tome": _plain(self.tome),
                "label": self.label}

    @property
    def spec(self) -> Method:
        return get_method(self.method)

    def _config(self):
        return self.config if self.config is not None else self.spec.config()

    def validate(self, bundle) -> "Experiment":
        """Every check that needs no sampling: raises UserError."""
        from flexiffusion.engine import StepEngine
        from flexiffusion.schedulers import make_scheduler_for_grid

        config = self._config()
        if self.tome is not None:
            self.tome.validate()
            if not transformer_blocks(bundle.unet):
                raise UserError(f"ToMe needs transformer blocks (BasicTransformerBlock); model {bundle.name!r} "
                                f"({type(bundle.unet).__name__}) has none: leave ToMe off for this model")
        if self.method == "autodiffusion":
            from .autodiffusion.method import search_space

            config.validate()
            search_space(bundle, config)
            return self
        plan, scheduler = self.spec.plan(config)
        make_scheduler_for_grid(scheduler, bundle.scheduler_config, len(plan))
        plan.validate(StepEngine(bundle.unet).num_branches)
        return self

    def build(self, bundle, ctx: Context | None = None):
        """The :class:`bench.rows.Run` of this experiment (validated first)."""
        self.validate(bundle)
        ctx = ctx or Context()
        config = self._config()
        if self.spec.build is not None:
            return self.spec.build(config, bundle, ctx, self)
        plan, scheduler = self.spec.plan(config)
        return plan_run(self, bundle, plan, scheduler)

    def default_label(self, plan_name: str) -> str:
        return self.label or (plan_name + (f"+tome{self.tome.ratio:g}" if self.tome else ""))


def tome_hooks(bundle, tome: ToMeConfig | None) -> Callable:
    from .tome import apply_tome, remove_tome

    @contextlib.contextmanager
    def hooks():
        if tome is None:
            yield
            return
        apply_tome(bundle.unet, tome)
        try:
            yield
        finally:
            remove_tome(bundle.unet)
    return hooks


def plan_run(experiment: Experiment, bundle, plan: Plan, scheduler: str):
    """A run whose cost is the plan summed over the step types' MACs (counted with ToMe applied when on)."""
    from bench.rows import Run

    from .costing import bundle_cost_models

    def macs():  # rows are sampled without classifier-free guidance
        return {c: m.total_macs(plan) for c, m in bundle_cost_models(bundle, experiment.tome).items()}

    return Run(experiment.method, experiment.default_label(plan.name), experiment.to_dict(), plan, scheduler,
               scheduler, macs, tome_hooks(bundle, experiment.tome))


# ---- AutoDiffusion ---------------------------------------------------------------------------------------------
def _autodiffusion_plan(c: AutoDiffusionConfig):
    raise UserError("autodiffusion's plan comes from its search: build the experiment on a model")


def _autodiffusion_build(config: AutoDiffusionConfig, bundle, ctx: Context, experiment: Experiment):
    from bench.rows import Run

    from .autodiffusion.layers import droppable_layers
    from .autodiffusion.method import searched_candidate
    from .autodiffusion.sampling import dropping, subset_scheduler
    from .costing import DropCost, example_inputs

    candidate = searched_candidate(bundle, config, ctx.store, ctx.cache_dir, ctx.progress)
    plan = Plan.full(len(candidate.timesteps), f"autodiffusion-K{config.k}"
                     + (f"-L{config.budget_layers}" if config.budget_layers is not None else ""))
    tome = tome_hooks(bundle, experiment.tome)

    @contextlib.contextmanager
    def hooks():
        with dropping(bundle.unet, candidate), tome():
            yield

    def macs():
        if experiment.tome is not None:
            raise UserError("AutoDiffusion + ToMe: MACs of dropped layers with merged tokens are not counted yet")
        cost = DropCost(bundle.unet, example_inputs(bundle), droppable_layers(bundle.unet))
        return {c: cost.total(candidate, c) for c in ("paper", "complete")}

    return Run(experiment.method, experiment.default_label(plan.name), experiment.to_dict(), plan,
               subset_scheduler(candidate.timesteps), "ddim-subset", macs, hooks,
               extra={"candidate": candidate.key()})


register_method(Method("autodiffusion", AutoDiffusionConfig, _autodiffusion_plan,
                       "AutoDiffusion: searched timesteps (+ dropped layers under a layer budget)",
                       build=_autodiffusion_build))


def experiments_from_json(text: str) -> list[Experiment]:
    """An experiment file: one experiment object or a list of them."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"malformed experiment JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise UserError("the experiment file lists no experiments")
    return [Experiment.from_dict(d) for d in items]


__all__ = ["METHODS", "Method", "Experiment", "Context", "StepsConfig", "SolverConfig", "ToMeMethodConfig",
           "EvolutionConfig", "register_method", "get_method", "config_from_dict", "experiments_from_json"]
