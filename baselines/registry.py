"""The method registry: every method is a named method with a config dataclass, turned into a
:class:`baselines.run.Run` (plan + scheduler + hooks + cost) that the common row harness measures.

Methods: ``teacher`` (DDIM, all steps full), ``ddim``, ``plms``, ``dpm-multistep`` and ``dpm-singlestep`` (DPM-Solver,
orders 1-3), ``deepcache`` (uniform, any branch, any scheduler), ``deepcache-plus`` (the "+" schedules, SD or LDM
form), ``tome`` (a full plan with token merging), ``pattern`` and ``random`` (hand-made schedules on the DDIM grid,
:mod:`baselines.schedules`), ``flexiffusion`` (the best plan of a stored Flexiffusion search), ``autodiffusion``
(searched timesteps + dropped layers).  ToMe combines with any method (``Experiment.tome``).  An experiment is plain
data, ``{"method": NAME, "config": {...}, "tome": {...} | null}``, e.g. from a JSON file.

Building a run is two-phase: :meth:`Experiment.validate` checks everything against the model (branches, grid,
orders, ToMe's transformer blocks, AutoDiffusion's budget) without running anything, so bad input fails before
anything is computed or written; :meth:`Experiment.build` then prepares the run (AutoDiffusion searches here,
its best candidate stored and reused).  Methods whose run needs more than their config get it from the
:class:`Context` the harness passes in (the results store, Flexiffusion's stored searches, AutoDiffusion's fitness):
``baselines`` imports none of the harness's row, evaluation, search or experiment layers.
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
from .run import MissingInput, Run
from .schedules import PatternConfig, RandomConfig, pattern, random
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


@dataclass(frozen=True)
class FlexiffusionConfig:
    """The best plan of a stored Flexiffusion search: the search called ``search``, else the newest search of
    ``preset``; ``search_args``: the space restrictions of the search that fills it (shown in its command).
    ``plan`` (step tokens) and ``scheduler``: the stored plan and its sampler, filled in from the store
    (:meth:`Experiment.resolve`), or given."""

    preset: str = ""
    search: str = ""
    search_args: str = ""
    plan: list | tuple = ()
    scheduler: str = ""

    def __post_init__(self):
        object.__setattr__(self, "plan", tuple(self.plan))

    def validate(self) -> "FlexiffusionConfig":
        if not (self.preset or self.search or self.plan):
            raise UserError("the flexiffusion method needs a stored search: config preset (its newest search) or "
                            "search (a search's --name), e.g. flexbench run flexiffusion --search NAME")
        return self


@dataclass
class Context:
    """What building a run may use: the results store, the cache folder, and what the harness lends the methods
    that are more than a plan:

    * ``stored_search(preset, name, search_args) -> (step tokens, scheduler, search name)``: a stored Flexiffusion
      search's best plan (raises :class:`MissingInput` when there is none);
    * ``search_fitness(bundle, config, store)``: a context manager giving AutoDiffusion's search fitness
      ``candidate -> float`` (with ``many(candidates)``) for :class:`AutoDiffusionConfig` ``config``.
    """

    store: Any = None
    cache_dir: Any = None
    progress: bool = True
    stored_search: Callable | None = None
    search_fitness: Callable | None = None


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    plan: Callable | None   # (config) -> (Plan, scheduler name); None: only building on a model decides it
    help: str
    build: Callable | None = None     # (config, bundle, ctx, experiment) -> Run, for methods that are more than a plan
    check: Callable | None = None     # (config, bundle): the checks against the model that need no plan
    resolve: Callable | None = None   # (config, ctx) -> config completed from the context (a stored search's plan)
    describe: Callable | None = None  # (config) -> a note on where the plan comes from


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
register_method(Method("pattern", PatternConfig, pattern, "a segment of step tokens (f, n, p<branch>) repeated over "
                       "a DDIM grid, e.g. Table 10's handcrafted 'f p3 p3'"))
register_method(Method("random", RandomConfig, random, "segments of seeded random interval and branch on a DDIM grid"))


# ---- Flexiffusion: the best plan of a stored search -------------------------------------------------------------
def _flexiffusion_plan(c: FlexiffusionConfig):
    """The stored plan once resolved (None before: it comes from the results store)."""
    c.validate()
    if not c.plan:
        return None
    return Plan.from_tokens(c.plan, f"flexiffusion[{c.search or c.preset}]"), c.scheduler or "ddim"


def _flexiffusion_resolve(c: FlexiffusionConfig, ctx: "Context") -> FlexiffusionConfig:
    c.validate()
    if c.plan:
        return c
    if ctx is None or ctx.stored_search is None:
        raise UserError(f"the flexiffusion method reads its plan from a stored search ({c.search or c.preset}): "
                        "build it with the harness's context (the results store)")
    tokens, scheduler, name = ctx.stored_search(c.preset, c.search, c.search_args)
    return dataclasses.replace(c, search=name, plan=tuple(tokens), scheduler=scheduler)


register_method(Method("flexiffusion", FlexiffusionConfig, _flexiffusion_plan,
                       "Flexiffusion: the best plan of a stored search (config search = its name, or preset = the "
                       "preset's newest)", resolve=_flexiffusion_resolve,
                       describe=lambda c: f"best plan of search {c.search}" if c.search else ""))


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

    def resolve(self, ctx: Context | None = None) -> "Experiment":
        """This experiment with its config completed from ``ctx`` (Flexiffusion: the stored search's name and best
        plan); itself for methods that need nothing more.  Raises :class:`MissingInput` when that is not stored."""
        if self.spec.resolve is None:
            return self
        return dataclasses.replace(self, config=self.spec.resolve(self._config(), ctx))

    def plan(self) -> tuple[Plan, str] | None:
        """``(plan, scheduler)`` as the config decides them, without a model; None when only building on a model
        decides them (AutoDiffusion's search) or the context does and :meth:`resolve` has not run yet."""
        return None if self.spec.plan is None else self.spec.plan(self._config())

    def describe(self) -> str:
        """A note on where the plan comes from ("" when the config says it all)."""
        return self.spec.describe(self._config()) if self.spec.describe is not None else ""

    def validate(self, bundle) -> "Experiment":
        """Every check that needs no sampling (and, for a method with a :meth:`resolve` step, nothing stored):
        raises UserError."""
        from flexiffusion.engine import StepEngine
        from flexiffusion.schedulers import make_scheduler_for_grid

        config = self._config()
        if self.tome is not None:
            self.tome.validate()
            if not transformer_blocks(bundle.unet):
                raise UserError(f"ToMe needs transformer blocks (BasicTransformerBlock); model {bundle.name!r} "
                                f"({type(bundle.unet).__name__}) has none: leave ToMe off for this model")
        if self.spec.check is not None:
            self.spec.check(config, bundle)
        planned = self.plan()
        if planned is None:   # decided on the model (a search) or from the context: checked then
            return self
        plan, scheduler = planned
        make_scheduler_for_grid(scheduler, bundle.scheduler_config, len(plan))
        plan.validate(StepEngine(bundle.unet).num_branches)
        return self

    def build(self, bundle, ctx: Context | None = None) -> Run:
        """The :class:`baselines.run.Run` of this experiment (resolved from ``ctx`` and validated first)."""
        ctx = ctx or Context()
        experiment = self.resolve(ctx).validate(bundle)
        config = experiment._config()
        if experiment.spec.build is not None:
            return experiment.spec.build(config, bundle, ctx, experiment)
        planned = experiment.plan()
        if planned is None:
            raise UserError(f"method {self.method}: its plan is not known here (no results store to read it from)")
        return plan_run(experiment, bundle, *planned)

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
    from .costing import bundle_cost_models

    def macs():  # rows are sampled without classifier-free guidance
        return {c: m.total_macs(plan) for c, m in bundle_cost_models(bundle, experiment.tome).items()}

    return Run(experiment.method, experiment.default_label(plan.name), experiment.to_dict(), plan, scheduler,
               scheduler, macs, tome_hooks(bundle, experiment.tome))


# ---- AutoDiffusion ---------------------------------------------------------------------------------------------
def _autodiffusion_check(config: AutoDiffusionConfig, bundle) -> None:
    from .autodiffusion.method import search_space

    config.validate()
    search_space(bundle, config)


def _autodiffusion_build(config: AutoDiffusionConfig, bundle, ctx: Context, experiment: Experiment):
    from .autodiffusion.layers import droppable_layers
    from .autodiffusion.method import searched_candidate
    from .autodiffusion.sampling import dropping, subset_scheduler
    from .costing import DropCost, example_inputs

    candidate = searched_candidate(bundle, config, ctx.store, ctx.search_fitness, ctx.progress)
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


register_method(Method("autodiffusion", AutoDiffusionConfig, None,
                       "AutoDiffusion: searched timesteps (+ dropped layers under a layer budget)",
                       build=_autodiffusion_build, check=_autodiffusion_check))


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


__all__ = ["METHODS", "Method", "Experiment", "Context", "MissingInput", "Run", "StepsConfig", "SolverConfig",
           "ToMeMethodConfig", "PatternConfig", "RandomConfig", "FlexiffusionConfig", "EvolutionConfig",
           "register_method", "get_method", "config_from_dict", "experiments_from_json"]
