"""AutoDiffusion's search space (Li et al. 2023): K timesteps out of the training grid, and per step a set of
dropped layers, under a budget on the total number of executed layers; random sampling, mutation, crossover.

A candidate is a tuple of (timestep, dropped layer indices) pairs sorted by descending timestep: a step's dropped
layers travel with its timestep.  (The original keeps a separate list of skip sets and looks it up by sorted
position, so after a mutation re-sorts the timesteps, drop sets silently move to other timesteps; its mutation of an
existing skip entry uses ``==`` and changes nothing; mutation and crossover skip the budget check.  Here mutation
re-draws the drop set, and every child is checked against the budget and the drop-fraction limit.)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from flexiffusion.errors import UserError


@dataclass(frozen=True)
class Candidate:
    steps: tuple[tuple[int, frozenset[int]], ...]   # (timestep, dropped layer indices), timesteps descending

    @classmethod
    def make(cls, pairs) -> "Candidate":
        pairs = sorted(((int(t), frozenset(int(i) for i in d)) for t, d in pairs), key=lambda p: -p[0])
        return cls(tuple(pairs))

    @property
    def timesteps(self) -> tuple[int, ...]:
        return tuple(t for t, _ in self.steps)

    @property
    def drops(self) -> tuple[frozenset[int], ...]:
        return tuple(d for _, d in self.steps)

    @property
    def dropped(self) -> int:
        return sum(len(d) for d in self.drops)

    def key(self) -> str:
        return json.dumps([[t, sorted(d)] for t, d in self.steps], separators=(",", ":"))

    @classmethod
    def from_key(cls, key: str) -> "Candidate":
        return cls.make((t, d) for t, d in json.loads(key))

    def drop_map(self, layer_names) -> dict[int, frozenset[str]]:
        """``{timestep: layer names}`` for :class:`~baselines.autodiffusion.layers.LayerDropConfig`."""
        return {t: frozenset(layer_names[i] for i in d) for t, d in self.steps if d}


@dataclass(frozen=True)
class SearchSpace:
    """K of ``num_train_timesteps`` timesteps; ``num_layers`` droppable layers per step; the budget caps the total
    number of executed layers over the K steps (None: K * num_layers, i.e. timesteps only)."""

    num_train_timesteps: int
    k: int
    num_layers: int
    budget_layers: int | None = None
    max_drop_fraction: float = 0.1   # per step, reached at the end of stage 2's ramp

    def __post_init__(self):
        if not 1 <= self.k <= self.num_train_timesteps:
            raise UserError(f"K = {self.k} steps: choose 1..{self.num_train_timesteps} (the training grid)")
        if not 0 <= self.max_drop_fraction < 1:
            raise UserError(f"max drop fraction {self.max_drop_fraction} outside [0, 1)")
        if self.budget_layers is not None:
            floor = self.k * self.num_layers - self.k * self.max_drops(self.max_drop_fraction)
            if self.budget_layers < floor:
                raise UserError(f"budget of {self.budget_layers} executed layers is below what any candidate can "
                                f"reach ({floor} = {self.k} steps x {self.num_layers} layers with at most "
                                f"{self.max_drop_fraction:g} dropped per step): raise the budget or the drop fraction")

    @property
    def total_layers(self) -> int:
        return self.k * self.num_layers

    def max_drops(self, fraction: float) -> int:
        return int(math.floor(fraction * self.num_layers + 1e-9))

    def executed(self, c: Candidate) -> int:
        return self.total_layers - c.dropped

    def feasible(self, c: Candidate, fraction: float | None = None, budget: bool = True) -> bool:
        limit = self.max_drops(self.max_drop_fraction if fraction is None else fraction)
        ts = c.timesteps
        return (len(ts) == self.k and len(set(ts)) == self.k and all(0 <= t < self.num_train_timesteps for t in ts)
                and all(len(d) <= limit and all(0 <= i < self.num_layers for i in d) for d in c.drops)
                and (not budget or self.budget_layers is None or self.executed(c) <= self.budget_layers))

    # ---- constructors --------------------------------------------------------------------------------
    def uniform(self) -> Candidate:
        """DDIM's uniform ("leading") spacing: t_i = i * (T // K), nothing dropped."""
        ratio = self.num_train_timesteps // self.k
        return Candidate.make((i * ratio, ()) for i in range(self.k))

    def _drop_set(self, rng: np.random.Generator, fraction: float) -> frozenset[int]:
        n = int(rng.integers(0, self.max_drops(fraction) + 1))
        return frozenset(int(i) for i in rng.choice(self.num_layers, size=n, replace=False))

    def random(self, rng: np.random.Generator, fraction: float = 0.0) -> Candidate:
        ts = rng.choice(self.num_train_timesteps, size=self.k, replace=False)
        return Candidate.make((t, self._drop_set(rng, fraction) if fraction else ()) for t in ts)

    def mutate(self, c: Candidate, rng: np.random.Generator, m_prob: float, fraction: float = 0.0) -> Candidate:
        """Each timestep replaced by an unused one with probability ``m_prob`` (its drop set moves with it); in stage 2
        (``fraction`` > 0) each step's drop set is re-drawn with probability ``m_prob``."""
        used = set(c.timesteps)
        pairs = []
        for t, d in c.steps:
            if rng.random() < m_prob:
                free = np.setdiff1d(np.arange(self.num_train_timesteps), sorted(used))
                new = int(rng.choice(free))
                used.discard(t)
                used.add(new)
                t = new
            if fraction and rng.random() < m_prob:
                d = self._drop_set(rng, fraction)
            pairs.append((t, d))
        return Candidate.make(pairs)

    def crossover(self, a: Candidate, b: Candidate, rng: np.random.Generator) -> Candidate | None:
        """Uniform crossover of the sorted steps; None when the child repeats a timestep."""
        pairs = [pa if rng.random() < 0.5 else pb for pa, pb in zip(a.steps, b.steps)]
        if len({t for t, _ in pairs}) != self.k:
            return None
        return Candidate.make(pairs)
