"""AutoDiffusion end to end on a model bundle: search space from the U-Net, fitness, evolution, best candidate."""
from __future__ import annotations

from dataclasses import dataclass

from flexiffusion.errors import UserError

from .candidate import SearchSpace
from .layers import droppable_layers
from .sampling import FIDFitness, RFIDFitness
from .search import Evolution, EvolutionConfig, SearchResult

FITNESSES = ("fid", "rfid")


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
        return self


def search(bundle, config: AutoDiffusionConfig, checkpoint=None, batch_size: int = 64, progress: bool = True,
           cache_dir=None) -> SearchResult:
    """Run the two-stage search on ``bundle``; resumable through ``checkpoint``."""
    config.validate()
    names = droppable_layers(bundle.unet)
    space = SearchSpace(int(bundle.scheduler_config.get("num_train_timesteps", 1000)), config.k, len(names),
                        config.budget_layers, config.max_drop_fraction)
    seeds = range(config.search_seed_offset, config.search_seed_offset + config.search_images)
    if config.fitness == "fid":
        fitness = FIDFitness(bundle, seeds, config.real, batch_size, cache_dir)
    else:
        fitness = RFIDFitness(bundle, seeds, config.teacher_steps, batch_size, cache_dir)
    return Evolution(space, fitness, config.evolution, checkpoint, progress).run()
