"""AutoDiffusion's two-stage evolutionary search (Li et al. 2023), seeded and resumable.

Stage 1 searches timesteps only (nothing dropped) until the best candidate stops changing or ``stage1_epochs`` have
passed; stage 2 also mutates the dropped layers, the per-step drop-fraction limit growing by ``max_drop_fraction /
ramp_epochs`` per epoch.  Every epoch: top-k selection by fitness (lower is better), ``mutation`` mutants of random
parents, ``crossover`` crossovers of random parent pairs, random candidates to fill the population; visited
candidates are rejected.  The initial population: DDIM's uniform schedule, mutants of it and random candidates.

Resume, two ways: (1) with a store-backed fitness (the harness's stored evaluation, which the registry's context
lends :func:`baselines.autodiffusion.method.search`) every evaluation is committed to the results store
and a rerun replays the seeded choices against it (no checkpoint needed); (2) with ``checkpoint``: after every evaluation the state (population and RNG state at the start of the epoch, every fitness so far)
is written atomically to ``checkpoint``; a restarted search replays the epoch from that state, takes the stored
fitness of candidates already evaluated, and so ends with exactly the result of an uninterrupted run.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from flexiffusion.errors import UserError
from flexiffusion.io import atomic_write_json

from .candidate import Candidate, SearchSpace

Fitness = Callable[[Candidate], float]


@dataclass(frozen=True)
class EvolutionConfig:
    """The published defaults of the shipped scripts: population 50, top 10, 25 mutants, 10-25 crossovers,
    m_prob 0.25, 10-15 epochs."""

    population: int = 50
    top_k: int = 10
    mutation: int = 25
    crossover: int = 15
    m_prob: float = 0.25
    epochs: int = 10
    stage1_epochs: int = 4
    ramp_epochs: int = 5
    seed: int = 0
    max_tries: int = 50   # attempts per child before giving up (all neighbours visited or infeasible)

    def validate(self) -> "EvolutionConfig":
        if self.top_k < 1 or self.population < self.top_k:
            raise UserError(f"population {self.population} must be >= top_k {self.top_k} >= 1")
        if self.mutation < 0 or self.crossover < 0 or self.epochs < 1:
            raise UserError("mutation and crossover counts must be >= 0 and epochs >= 1")
        if not 0 <= self.m_prob <= 1:
            raise UserError(f"m_prob {self.m_prob} outside [0, 1]")
        return self


@dataclass
class SearchResult:
    best: Candidate
    fitness: float
    history: list = field(default_factory=list)   # per epoch: {epoch, stage, fraction, best, best_fitness}
    evaluations: int = 0


class Evolution:
    """Runs the search; ``fitness(candidate) -> float`` (lower is better, e.g. FID)."""

    def __init__(self, space: SearchSpace, fitness: Fitness, config: EvolutionConfig = EvolutionConfig(),
                 checkpoint: str | Path | None = None, progress: bool = True):
        self.space, self.fitness, self.config = space, fitness, config.validate()
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.progress = progress
        self.scores: dict[str, float] = {}
        self.fresh = 0  # evaluations done by this process (not read from a checkpoint)

    # ---- state ----------------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {"space": asdict(self.space), "config": asdict(self.config)}

    def _save(self, state: dict) -> None:
        if self.checkpoint is not None:
            atomic_write_json(self.checkpoint, {**self._identity(), **state, "scores": self.scores})

    def _load(self) -> dict | None:
        if self.checkpoint is None or not self.checkpoint.exists():
            return None
        data = json.loads(self.checkpoint.read_text())
        if {k: data.get(k) for k in ("space", "config")} != json.loads(json.dumps(self._identity())):
            raise UserError(f"checkpoint {self.checkpoint} belongs to another search (space or settings differ): "
                            "use another checkpoint path or the same settings")
        self.scores = {k: float(v) for k, v in data["scores"].items()}
        return data

    # ---- evaluation -----------------------------------------------------------------------------------------
    def score(self, c: Candidate, state: dict) -> float:
        key = c.key()
        if key not in self.scores:
            self.scores[key] = float(self.fitness(c))
            self.fresh += 1
            self._save(state)
        return self.scores[key]

    def score_all(self, candidates: Sequence[Candidate], state: dict) -> None:
        """Score every candidate not scored yet; through ``fitness.many`` when the fitness has it (an executor
        evaluating a batch, e.g. on Ray actors), else one by one."""
        todo = list({c.key(): c for c in candidates if c.key() not in self.scores}.values())
        if not todo:
            return
        many = getattr(self.fitness, "many", None)
        if many is None:
            for c in todo:
                self.score(c, state)
            return
        for c, v in zip(todo, many(todo)):
            self.scores[c.key()] = float(v)
            self.fresh += 1
        self._save(state)

    def _fraction(self, epoch: int, stage2_start: int | None) -> float:
        if stage2_start is None or epoch < stage2_start:
            return 0.0
        step = self.space.max_drop_fraction / max(1, self.config.ramp_epochs)
        return min(self.space.max_drop_fraction, step * (epoch - stage2_start + 1))

    def _ok(self, c: Candidate, fraction: float) -> bool:
        # stage 1: timesteps only; the budget applies to stage 2's layer choices
        return self.space.feasible(c, fraction, budget=bool(fraction))

    def _children(self, parents: Sequence[Candidate], rng, fraction: float, seen: set[str]) -> list[Candidate]:
        cfg, out = self.config, []

        def add(make) -> None:
            for _ in range(cfg.max_tries):
                c = make()
                if c is not None and c.key() not in seen and self._ok(c, fraction):
                    seen.add(c.key())
                    out.append(c)
                    return

        for _ in range(cfg.mutation):
            add(lambda: self.space.mutate(parents[int(rng.integers(len(parents)))], rng, cfg.m_prob, fraction))
        for _ in range(cfg.crossover if len(parents) > 1 else 0):
            add(lambda: self.space.crossover(*[parents[i] for i in rng.choice(len(parents), 2, replace=False)], rng))
        while len(out) < cfg.population - len(parents):
            before = len(out)
            add(lambda: self.space.random(rng, fraction))
            if len(out) == before:
                break
        return out

    def _rank(self, population: Sequence[Candidate], fraction: float) -> list[Candidate]:
        """Best first; in stage 2 candidates within the budget rank before those above it."""
        over = (lambda c: self.space.budget_layers is not None and self.space.executed(c) > self.space.budget_layers)
        return sorted(population, key=lambda c: (bool(fraction) and over(c), self.scores[c.key()], c.key()))

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        cfg = self.config
        data = self._load()
        if data is None:
            rng = np.random.default_rng(cfg.seed)
            uniform = self.space.uniform()
            seen = {uniform.key()}
            population = [uniform] + self._children([uniform], rng, 0.0, seen)
            state = {"epoch": 0, "stage2_start": None, "history": [], "rng": rng.bit_generator.state,
                     "population": [c.key() for c in population]}
            self._save(state)
        else:
            state = {k: data[k] for k in ("epoch", "stage2_start", "history", "rng", "population")}
        bar = tqdm(total=cfg.epochs, initial=state["epoch"], desc="AutoDiffusion", disable=not self.progress)
        while state["epoch"] < cfg.epochs:
            epoch, stage2 = state["epoch"], state["stage2_start"]
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng"]
            population = [Candidate.from_key(k) for k in state["population"]]
            self.score_all(population, state)
            fraction = self._fraction(epoch, stage2)
            ranked = self._rank(population, fraction)
            best = ranked[0]
            history = state["history"] + [{"epoch": epoch, "stage": 2 if fraction else 1, "fraction": fraction,
                                           "best": best.key(), "best_fitness": self.scores[best.key()]}]
            if stage2 is None and (epoch + 1 >= cfg.stage1_epochs
                                   or (len(history) > 1 and history[-2]["best"] == best.key())):
                stage2 = epoch + 1
            parents = ranked[:cfg.top_k]
            seen = set(self.scores) | {c.key() for c in population}
            children = self._children(parents, rng, self._fraction(epoch + 1, stage2), seen)
            state = {"epoch": epoch + 1, "stage2_start": stage2, "history": history,
                     "rng": rng.bit_generator.state, "population": [c.key() for c in parents + children]}
            self._save(state)
            bar.update(1)
            bar.set_postfix(best=f"{history[-1]['best_fitness']:.3g}", stage=history[-1]["stage"])
        bar.close()
        final = [Candidate.from_key(k) for k in state["population"]]
        self.score_all(final, state)
        ranked = self._rank(final, self.space.max_drop_fraction if state["stage2_start"] is not None else 0.0)
        within = [c for c in ranked if self.space.budget_layers is None
                  or self.space.executed(c) <= self.space.budget_layers]
        if not within:
            raise UserError(f"no evaluated candidate meets the budget of {self.space.budget_layers} executed layers: "
                            "run more epochs, raise the budget or the drop fraction")
        best = within[0]
        return SearchResult(best, self.scores[best.key()], state["history"], len(self.scores))
