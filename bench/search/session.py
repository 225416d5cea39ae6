"""One Flexiffusion search from a preset, as plain values: :class:`SearchRequest` -> :func:`run_request`.

``flexbench search`` parses its arguments into a request and prints; ``flexbench demo`` builds one in-process.  The
request is checked before anything is written (budget below the cheapest candidate, a corrupted store, the same
name with another setting), then Algorithm 1 runs over the results store (bench.search.driver)."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from .setup import G, check_model, search_config, space_of, text_condition

DEFAULT_STORE = "runs/results.sqlite"


@dataclass(frozen=True)
class SearchRequest:
    """Everything a search takes (``None``: the preset's value)."""

    preset: str
    seed: int | None = None
    name: str | None = None
    store: str = DEFAULT_STORE
    out: str | None = None
    # the space
    layout: str = "tile"
    segments: tuple | str | None = None
    branches: tuple | str | None = None
    intervals: tuple | str | None = None
    budget: float | None = None            # G avg MACs
    model: str | None = None
    # Algorithm 1 (B.2)
    iterations: int | None = None
    parents: int | None = None
    children: int | None = None
    population: int | None = None
    max_tries: int | None = None
    initial: int | None = None
    n_m: int | None = None
    # the evaluation
    images: int | None = None
    first_seed: int = 0
    prompts: str | None = None             # a prompts file (text models)
    real: str | None = None                # real data of fitness "fid" (default: the model's)
    extractor: str | None = None           # feature extractor (default: the model's)
    extractor_weights: str | None = None   # its local weights file (default: looked up)
    guidance: float | None = None
    fitness: str = "rfid"
    weights: str | None = None
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 250
    compile: bool = False
    channels_last: bool = False
    dtype: str = "fp32"
    executor: str = "local"
    actors: int = 2
    address: str | None = None
    cache_dir: str | None = None
    # the fast mode (bench.search.fast): adaptive image counts, final Pareto set and best re-evaluated exactly
    fast: bool = False
    screen_stages: tuple | str | None = None   # image counts of the screening stages (default 32, 96)
    screen_z: float | None = None              # margin in units of the measured noise (default 2)
    screen_epsilon: float | None = None        # chance per parent draw that a stopped child was the parent

    @classmethod
    def from_namespace(cls, ns) -> "SearchRequest":
        """The request of a parsed ``flexbench search`` command line."""
        return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})


@dataclass
class PreparedSearch:
    request: SearchRequest
    run: object          # bench.search.driver.SearchRun
    setting: object      # bench.evaluation.setting.EvaluationSetting
    cost: object         # bench.cost.schedule_cost.CostModel
    out: Path
    finish: Callable | None = None   # the fast mode's exact re-evaluation

    @property
    def name(self) -> str:
        return self.run.name

    def describe(self) -> str:
        r, s = self.run, self.setting
        mode = ""
        if self.request.fast:
            screen = r.backend.describe["screen"]
            mode = (f"; fast mode: stages {'/'.join(map(str, screen['stages']))} images, z {screen['z']}, "
                    "final Pareto set and best re-evaluated exactly")
        return (f"search {r.name}: {r.space.count():.3e} candidates, budget {r.budget / G:.4g} G avg MACs "
                f"({100 * r.budget / self.cost.full_macs:.1f} % of the teacher), {s.n_images} images per candidate "
                f"({s.fitness}), {r.config.iterations} iterations; store {self.request.store}{mode}")


def prepare(req: SearchRequest) -> PreparedSearch:
    """Space, budget, Algorithm 1 settings, evaluation setting and backend; every check before anything is written."""
    from bench.evaluation import execution
    from bench.evaluation.inputs import resolve_inputs
    from bench.evaluation.setting import EvaluationSetting, ExecutionMode

    from . import driver
    from .fitness import evaluator_backend
    from .presets import get_preset

    preset = get_preset(req.preset)
    check_model(preset, req.model)   # the vocabulary and the preset's model, before anything else
    screen = None
    if req.fast:
        from .fast import check_fast

        check_fast(req)
        screen = screen_config(req)
    execution.check_mode(ExecutionMode(req.compile, req.channels_last, req.dtype), req.device)
    # every input (weights layout, real data for an FID fitness, extractor weights, prompts) checked before loading
    inputs = resolve_inputs(preset.model, req.weights, device=req.device, real=req.real, extractor=req.extractor,
                            extractor_weights=req.extractor_weights, prompts_file=req.prompts,
                            needs_real=req.fitness == "fid", clip=False)
    space, cost, budget = space_of(preset, layout=req.layout, segments=req.segments, branches=req.branches,
                                   intervals=req.intervals, budget_g=req.budget, model=req.model)
    config = search_config(preset, **{f.name: getattr(req, f.name) for f in fields(req) if f.name != "preset"})
    driver.check_budget(space, cost.step_macs, budget)
    driver.check_store_file(req.store)
    name = req.name or f"{preset.name}-{space.layout}-s{config.seed}" + ("-fast" if req.fast else "")
    out = Path(req.out or Path("runs") / "search" / name)
    images = req.images if req.images is not None else preset.images
    bundle = inputs.load()  # its conditioning decides on prompts and guidance
    prompts, guidance = text_condition(bundle, images, req.prompts, req.guidance)
    quality = {"extractor": inputs.extractor}
    if inputs.extractor_weights:
        quality["extractor_weights"] = inputs.extractor_weights
    if req.fitness == "fid":
        quality["real"] = inputs.real
    setting = EvaluationSetting.for_images(
        images, req.first_seed, model=preset.model, weights=req.weights, scheduler=preset.scheduler,
        grid_length=space.grid, prompts=prompts, guidance=guidance, fitness=req.fitness, **quality,
        batch_size=req.batch_size, device=req.device, threads=req.threads,
        mode=ExecutionMode(req.compile, req.channels_last, req.dtype))
    exact = evaluator_backend(setting, space, executor=req.executor, cache_dir=req.cache_dir,
                              actors=req.actors, address=req.address)
    finish = None
    if screen is None:
        backend = exact
    else:
        from .fast import exact_finish
        from .fitness import screening_backend

        backend = screening_backend(setting, space, screen, config.parents, cache_dir=req.cache_dir)
    run = driver.SearchRun(name, space, budget, config, cost.step_macs, backend, preset.name)
    if screen is not None:
        finish = exact_finish(run, exact)
    driver.check_store(req.store, run)
    return PreparedSearch(req, run, setting, cost, out, finish)


def screen_config(req: SearchRequest):
    """The fast mode's :class:`~bench.search.screening.ScreenConfig` from the request (defaults: its own)."""
    from .screening import ScreenConfig

    kwargs = {}
    if req.screen_stages is not None:
        stages = req.screen_stages
        kwargs["stages"] = tuple(int(x) for x in (stages.split(",") if isinstance(stages, str) else stages))
    if req.screen_z is not None:
        kwargs["z"] = req.screen_z
    if req.screen_epsilon is not None:
        kwargs["epsilon"] = req.screen_epsilon
    return ScreenConfig(**kwargs)


def run_prepared(p: PreparedSearch, on_iteration: Callable | None = None, on_evaluation: Callable | None = None):
    """Teacher first, then Algorithm 1 resuming from the store; ``(result, summary, fitness)``."""
    from . import driver

    backend = p.run.backend
    try:
        backend.prepare()
        return driver.run_search(p.run, p.request.store, p.out, on_iteration, on_evaluation, finish=p.finish)
    finally:
        backend.close()


def run_request(req: SearchRequest, on_iteration: Callable | None = None, on_evaluation: Callable | None = None):
    """:func:`prepare` then :func:`run_prepared`: ``(prepared, result, summary, fitness)``."""
    p = prepare(req)
    return (p, *run_prepared(p, on_iteration, on_evaluation))
