"""AutoDiffusion end to end on a model bundle: search space from the U-Net, fitness, evolution, best candidate.

The fitness runs on the Flexiffusion search's evaluation machinery (:mod:`baselines.autodiffusion.evaluation`:
``bench.evaluation``'s Evaluator and executors, every evaluation committed to the results store): ``fid`` against
real data (as published), ``rfid`` against the teacher (``teacher_steps`` DDIM steps on the search seeds) or
``mse`` against the teacher.  Any other callable ``candidate -> float`` (lower is better) can be passed to
:func:`search`.  A searched candidate is stored in the results store under a key of the model weights and the
whole config, so a second run (or the table) reuses it; a killed search resumes by replaying against the stored
evaluations.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

from flexiffusion.errors import UserError

from .candidate import Candidate, SearchSpace
from .layers import droppable_layers
from .search import Evolution, EvolutionConfig, SearchResult

SEARCH_EXPERIMENT = "autodiffusion-search"
SEARCH_VERSION = 2  # 2: fitness through bench.evaluation (FixedReferenceFID), evaluations in the store
FITNESSES = ("fid", "rfid", "mse")  # bench.evaluation.setting.FITNESS_KINDS


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


def evaluation_setting(bundle, config: AutoDiffusionConfig, batch_size: int = 64, weights: str | None = None,
                       threads: int | None = None):
    """The :class:`~bench.evaluation.setting.EvaluationSetting` of ``config``'s fitness on ``bundle``."""
    from bench.evaluation.setting import EvaluationSetting

    return EvaluationSetting.for_images(config.search_images, config.search_seed_offset, model=bundle.name,
                                        weights=weights, scheduler="ddim", grid_length=config.teacher_steps,
                                        fitness=config.fitness, real=config.real,
                                        batch_size=min(batch_size, config.search_images), threads=threads,
                                        device=str(bundle.device))


def search(bundle, config: AutoDiffusionConfig, store=None, batch_size: int = 64, progress: bool = True,
           cache_dir=None, fitness: Callable[[Candidate], float] | None = None, executor: str = "local",
           checkpoint=None, weights: str | None = None, **executor_kwargs) -> SearchResult:
    """Run the two-stage search on ``bundle``.  Fitness: ``config.fitness`` through ``bench.evaluation`` on
    ``executor`` (``local`` | ``ray``), every evaluation committed to ``store`` (a results store; a rerun replays
    against it), unless ``fitness`` (any ``candidate -> float``, lower is better) is given.  ``checkpoint``: the
    evolution's own JSON checkpoint (optional)."""
    from .evaluation import stored_evaluation

    config.validate()
    space = search_space(bundle, config)
    if fitness is not None:
        return Evolution(space, fitness, config.evolution, checkpoint, progress).run()
    setting = evaluation_setting(bundle, config, batch_size, weights)
    with stored_evaluation(setting, store, executor, cache_dir=cache_dir, **executor_kwargs) as ev:
        return Evolution(space, ev, config.evolution, checkpoint, progress).run()


def search_key(bundle, config: AutoDiffusionConfig) -> str:
    from bench.cache import stable_hash

    ident = {"v": SEARCH_VERSION, "model": bundle.name, "weights": bundle.weights_id, "config": asdict(config)}
    return f"{SEARCH_EXPERIMENT}:{bundle.name}:K{config.k}:{stable_hash(json.loads(json.dumps(ident)))}"


def searched_candidate(bundle, config: AutoDiffusionConfig, store=None, cache_dir=None, progress: bool = True,
                       batch_size: int = 256, executor: str = "local", weights: str | None = None) -> Candidate:
    """The best candidate of ``config``'s search: from ``store`` when stored, else searched (every evaluation
    committed to ``store``, so a killed search resumes) and stored."""
    key = search_key(bundle, config)
    if store is not None and store.has(key):
        rows = store.get(key)
        return Candidate.from_key(rows[0]["extra"]["candidate"])
    result = search(bundle, config, store, batch_size, progress, cache_dir, executor=executor, weights=weights)
    if store is not None:
        extra = {"candidate": result.best.key(), "history": result.history, "config": asdict(config)}
        store.put(key, [{"experiment": SEARCH_EXPERIMENT, "method": f"autodiffusion-K{config.k}", "model": bundle.name,
                         "weights": bundle.weights_id, "metric": f"search_{config.fitness}", "value": result.fitness,
                         "n_images": config.search_images, "extra": extra},
                        {"experiment": SEARCH_EXPERIMENT, "method": f"autodiffusion-K{config.k}", "model": bundle.name,
                         "weights": bundle.weights_id, "metric": "search_evaluations", "value": result.evaluations,
                         "n_images": config.search_images, "extra": extra}])
    return result.best
