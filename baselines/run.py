"""What a method hands the common row harness (its ``measure``): a :class:`Run`, nothing
method-specific; and :class:`MissingInput`, what building a run raises when something it needs is not stored yet.
Defined here, with the methods, so that ``baselines`` never imports the harness's row layer."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from flexiffusion.errors import UserError
from flexiffusion.schedule import Plan


class MissingInput(UserError):
    """What building a run needs is not stored yet (a search); ``command`` is the command that stores it."""

    def __init__(self, message: str, command: str = ""):
        super().__init__(message)
        self.command = command


@dataclass
class Run:
    """One method ready to run."""

    method: str                       # registry name, e.g. "deepcache"
    label: str                        # row label, e.g. "deepcache-N5-b3"
    config: dict                      # the method's config as data (part of the key)
    plan: Plan
    scheduler: str | Callable         # a registry name or a factory (config, grid_length, device) -> scheduler
    scheduler_name: str               # stored; for factories a description such as "ddim-subset"
    macs: Callable[[], dict]          # {"paper": int, "complete": int}: U-Net MACs of one image
    hooks: Callable[[], ContextManager] = contextlib.nullcontext   # attached while generating (ToMe, drops)
    extra: dict = field(default_factory=dict)                       # stored with every row (e.g. the candidate)
