"""AutoDiffusion end to end on a model bundle: search space from the U-Net, fitness, evolution, best candidate.

The fitness is pluggable: any callable ``candidate -> float`` (lower is better) can be passed to :func:`search`;
named ones come from :data:`FITNESSES` (``fid`` against real data, as published; ``rfid`` against the teacher).
A searched candidate is stored in the results store under a key of the model weights and the whole config, so a
second run (or the table) reuses it; the search itself checkpoints after every evaluation and resumes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

from flexiffusion.errors import UserError

from .candidate import Candidate, SearchSpace
from .layers import droppable_layers
from .sampling import FIDFitness, RFIDFitness
from .search import Evolution, EvolutionConfig, SearchResult

SEARCH_EXPERIMENT = "autodiffusion-search"
SEARCH_VERSION = 1


def _fid(bundle, config, seeds, batch_size, cache_dir):
    return FIDFitness(bundle, seeds, config.real, batch_size, cache_dir)


def _rfid(bundle, config, seeds, batch_size, cache_dir):
    return RFIDFitness(bundle, seeds, config.teacher_steps, batch_size, cache_dir)


# name -> factory (bundle, config, seeds, batch_size, cache_dir) -> (candidate -> float)
FITNESSES: dict[str, Callable] = {"fid": _fid, "rfid": _rfid}


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


def search(bundle, config: AutoDiffusionConfig, checkpoint=None, batch_size: int = 64, progress: bool = True,
           cache_dir=None, fitness: Callable[[Candidate], float] | None = None) -> SearchResult:
    """Run the two-stage search on ``bundle``; resumable through ``checkpoint``.  ``fitness`` overrides the named
    one of ``config.fitness`` (any ``candidate -> float``, lower is better)."""
    config.validate()
    space = search_space(bundle, config)
    if fitness is None:
        seeds = range(config.search_seed_offset, config.search_seed_offset + config.search_images)
        fitness = FITNESSES[config.fitness](bundle, config, seeds, batch_size, cache_dir)
    return Evolution(space, fitness, config.evolution, checkpoint, progress).run()


def search_key(bundle, config: AutoDiffusionConfig) -> str:
    from bench.cache import stable_hash

    ident = {"v": SEARCH_VERSION, "model": bundle.name, "weights": bundle.weights_id, "config": asdict(config)}
    return f"{SEARCH_EXPERIMENT}:{bundle.name}:K{config.k}:{stable_hash(json.loads(json.dumps(ident)))}"


def searched_candidate(bundle, config: AutoDiffusionConfig, store=None, cache_dir=None, progress: bool = True,
                       batch_size: int = 256) -> Candidate:
    """The best candidate of ``config``'s search: from ``store`` when stored, else searched (checkpointed under
    the cache folder, so a killed search resumes) and stored."""
    from bench.cache import cache_dir as default_cache_dir

    key = search_key(bundle, config)
    if store is not None and store.has(key):
        rows = store.get(key)
        return Candidate.from_key(rows[0]["extra"]["candidate"])
    checkpoint = default_cache_dir(cache_dir) / "autodiffusion" / f"{key.rsplit(':', 1)[-1]}.json"
    result = search(bundle, config, checkpoint, batch_size, progress, cache_dir)
    if store is not None:
        extra = {"candidate": result.best.key(), "history": result.history, "config": asdict(config)}
        store.put(key, [{"experiment": SEARCH_EXPERIMENT, "method": f"autodiffusion-K{config.k}", "model": bundle.name,
                         "weights": bundle.weights_id, "metric": f"search_{config.fitness}", "value": result.fitness,
                         "n_images": config.search_images, "extra": extra},
                        {"experiment": SEARCH_EXPERIMENT, "method": f"autodiffusion-K{config.k}", "model": bundle.name,
                         "weights": bundle.weights_id, "metric": "search_evaluations", "value": result.evaluations,
                         "n_images": config.search_images, "extra": extra}])
    return result.best
