"""AutoDiffusion end to end on a model bundle: search space from the U-Net, fitness, evolution, best candidate.

The fitness is the caller's: any callable ``candidate -> float`` (lower is better, optionally with
``many(candidates)``).  The harness lends its own (the Flexiffusion search's evaluation machinery, every
evaluation committed to the results store) through the registry's ``Context``:
``fid`` against real data (as published), ``rfid`` against the teacher (``teacher_steps`` DDIM steps on the search
seeds) or ``mse`` against the teacher.  A searched candidate is stored in the results store under a key of the
model weights and the whole config, so a second run (or the table) reuses it; a killed search resumes by replaying
against the stored evaluations.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager

from flexiffusion.errors import UserError

from .candidate import Candidate, SearchSpace
from .layers import droppable_layers
from .search import Evolution, EvolutionConfig, SearchResult

SEARCH_EXPERIMENT = "autodiffusion-search"
SEARCH_VERSION = 2  # 2: fitness through the harness's evaluator (FixedReferenceFID), evaluations in the store
FITNESSES = ("fid", "rfid", "mse")  # the fitness kinds of the harness's evaluation setting (tested equal)


@dataclass(frozen=True)
class AutoDiffusionConfig:
    """K steps; budget on executed layers (None: timesteps only); fitness "fid" (vs real data, as published) or
    "rfid" (vs the teacher, ``teacher_steps`` DDIM steps); ``search_images`` images per evaluation, seeds from
    ``search_seed_offset`` (kept apart from the seeds that rows are measured on)."""

    k: int = 4
    budget_layers: int | None = None
    max_drop_fraction: float = 0.1
    fitness: str = "fid"
    real: str = "digits-train"
    teacher_steps: int = 100
    search_images: int = 256
    search_seed_offset: int = 1_000_000
    evolution: EvolutionConfig = EvolutionConfig()

    def validate(self) -> "AutoDiffusionConfig":
        if self.fitness not in FITNESSES:
            raise UserError(f"unknown AutoDiffusion fitness {self.fitness!r}: choose one of {', '.join(FITNESSES)}")
        if self.fitness != "fid" and self.teacher_steps < 1:
            raise UserError(f"teacher steps must be >= 1, got {self.teacher_steps}")
        if self.search_images < 2:
            raise UserError(f"the fitness needs at least 2 images per evaluation, got {self.search_images}")
        self.evolution.validate()
        return self


def search_space(bundle, config: AutoDiffusionConfig) -> SearchSpace:
    """The space of ``config`` on ``bundle``'s U-Net (raises UserError for K outside the training grid or a budget
    that no candidate can meet)."""
    names = droppable_layers(bundle.unet)
    return SearchSpace(int(bundle.scheduler_config.get("num_train_timesteps", 1000)), config.k, len(names),
                       config.budget_layers, config.max_drop_fraction)


Fitness = Callable[[Candidate], float]
FitnessFactory = Callable[[object, AutoDiffusionConfig, object], ContextManager[Fitness]]


def search(bundle, config: AutoDiffusionConfig, fitness: Fitness | None = None, checkpoint=None,
           progress: bool = True) -> SearchResult:
    """Run the two-stage search on ``bundle`` with ``fitness`` (any ``candidate -> float``, lower is better;
    ``fitness.many(candidates)`` evaluates a batch when it has it).  ``checkpoint``: the evolution's own JSON
    checkpoint (optional).  The harness runs it with its stored fitness (``Context.search_fitness``)."""
    config.validate()
    space = search_space(bundle, config)
    if fitness is None:
        raise UserError("AutoDiffusion's search needs a fitness (candidate -> float): build the autodiffusion "
                        "experiment with the harness's context, which lends its stored fitness")
    return Evolution(space, fitness, config.evolution, checkpoint, progress).run()


def search_key(bundle, config: AutoDiffusionConfig) -> str:
    from bench.cache import stable_hash
    from bench.results import result_key

    ident = {"v": SEARCH_VERSION, "model": bundle.name, "weights": bundle.weights_id, "config": asdict(config)}
    return result_key(SEARCH_EXPERIMENT, bundle.name, f"K{config.k}", stable_hash(json.loads(json.dumps(ident))))


def _result_rows(bundle, config: AutoDiffusionConfig, result: SearchResult) -> list[dict]:
    extra = {"candidate": result.best.key(), "history": result.history, "config": asdict(config)}
    common = {"experiment": SEARCH_EXPERIMENT, "method": f"autodiffusion-K{config.k}", "model": bundle.name,
              "weights": bundle.weights_id, "n_images": config.search_images, "extra": extra}
    return [{**common, "metric": f"search_{config.fitness}", "value": result.fitness},
            {**common, "metric": "search_evaluations", "value": result.evaluations}]


def searched_candidate(bundle, config: AutoDiffusionConfig, store=None, fitness: FitnessFactory | None = None,
                       progress: bool = True) -> Candidate:
    """The best candidate of ``config``'s search: from ``store`` when stored, else searched with the fitness
    ``fitness(bundle, config, store)`` lends (a context manager; the harness's commits every evaluation to
    ``store``, so a killed search resumes) and stored."""
    def compute() -> list[dict]:
        if fitness is None:
            from ..run import MissingInput

            raise MissingInput(f"AutoDiffusion K={config.k}: its search is not stored and no fitness was given to "
                               "run it", "flexbench run autodiffusion ... (searches it)")
        with fitness(bundle, config, store) as f:
            return _result_rows(bundle, config, search(bundle, config, f, progress=progress))

    if store is None:
        rows = compute()
    else:
        rows = store.get_or_put(search_key(bundle, config), compute)[0].rows
    return Candidate.from_key(rows[0]["extra"]["candidate"])
