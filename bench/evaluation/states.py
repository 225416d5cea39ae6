"""Bounded LRU store of sampler states for prefix reuse (Flexiffusion search, issue 9 section 5).

A state after ``k`` steps of a plan depends only on the first ``k`` tokens of the plan (and the setting: model,
scheduler, seeds, execution mode), so a candidate that shares its first ``k`` tokens with an evaluated one can
resume from that state instead of sampling from noise; the result is bit-identical.  An entry is keyed by
``(scope, token prefix, kept branches)``: ``scope`` is the evaluation setting's key (plus a tag for per-plan
extras such as a custom scheduler), ``kept`` the branches whose features the state's step-engine cache holds (a
resuming plan whose partial steps before its next full step need other branches cannot use it).  The value is
one :class:`~flexiffusion.sampler.SamplerState` per batch of seeds.

Memory is bounded by ``budget_bytes`` (tensors counted, least recently used evicted first).  With ``directory``,
an evicted entry is written to disk (atomically) and read back on a later hit.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch

Key = tuple  # (scope, prefix tokens, kept branches)


class StateStore:
    """``put(key, states)`` / ``lookup(scope, tokens, usable)``; see the module docstring."""

    def __init__(self, budget_bytes: int = 1 << 30, directory=None):
        self.budget = int(budget_bytes)
        self.directory = Path(directory) if directory is not None else None
        self._mem: OrderedDict[Key, tuple[list, int]] = OrderedDict()
        self._by_prefix: dict[tuple, set[Key]] = {}  # (scope, prefix) -> keys in memory or on disk
        self._on_disk: set[Key] = set()
        self.bytes = 0
        self.stats = {"hits": 0, "misses": 0, "puts": 0, "evictions": 0, "disk_writes": 0, "disk_reads": 0}

    def __len__(self) -> int:
        return len(self._mem)

    def _file(self, key: Key) -> Path:
        scope, prefix, kept = key
        name = hashlib.sha256(repr((scope, " ".join(prefix), sorted(kept))).encode()).hexdigest()[:24]
        return self.directory / f"{name}.pt"

    def put(self, key: Key, states: list) -> None:
        """Keep ``states`` under ``key`` (most recently used); evict beyond the budget."""
        scope, prefix, kept = key
        key = (scope, tuple(prefix), frozenset(kept))
        size = sum(st.nbytes() for st in states)
        if size > self.budget:
            return
        if key in self._mem:
            self.bytes -= self._mem.pop(key)[1]
        self._mem[key] = (states, size)
        self.bytes += size
        self._by_prefix.setdefault(key[:2], set()).add(key)
        self.stats["puts"] += 1
        while self.bytes > self.budget:
            old, (old_states, old_size) = self._mem.popitem(last=False)
            self.bytes -= old_size
            self.stats["evictions"] += 1
            if self.directory is not None and old not in self._on_disk:
                from flexiffusion.io import atomic_write

                self.directory.mkdir(parents=True, exist_ok=True)
                atomic_write(self._file(old), lambda p: torch.save([s.to_dict() for s in old_states], p))
                self._on_disk.add(old)
                self.stats["disk_writes"] += 1
            elif old not in self._on_disk:
                self._by_prefix[old[:2]].discard(old)

    def _get(self, key: Key) -> list | None:
        if key in self._mem:
            self._mem.move_to_end(key)
            return self._mem[key][0]
        if key in self._on_disk:
            from flexiffusion.sampler import SamplerState

            data = torch.load(self._file(key), map_location="cpu", weights_only=True)
            states = [SamplerState.from_dict(d) for d in data]
            self.stats["disk_reads"] += 1
            self.put(key, states)
            return states
        return None

    def lookup(self, scope: str, tokens: Sequence[str], usable: Callable[[int, frozenset], bool]
               ) -> tuple[int, list | None]:
        """The deepest stored state of ``scope`` whose prefix ``tokens`` starts with and for which
        ``usable(k, kept)`` holds: ``(k, states)``, or ``(0, None)``."""
        tokens = tuple(tokens)
        for k in range(len(tokens) - 1, 0, -1):
            for key in self._by_prefix.get((scope, tokens[:k]), ()):
                if usable(k, key[2]):
                    self.stats["hits"] += 1
                    return k, self._get(key)
        self.stats["misses"] += 1
        return 0, None
