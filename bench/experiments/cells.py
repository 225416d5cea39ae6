"""One cell of an experiment = one row of its table on one model: what fills it and what it is now.

Statuses: ``measured`` / ``reused`` (quality and cost rows in the store), ``cost only`` (the model's weights are
not here: MACs from the real architecture with random weights, quality cells say "needs weights"), ``search``
(a Flexiffusion row: filled by a stored search), ``elsewhere`` (another command writes the rows), ``planned``
(--dry-run).  A cell filled by another command's rows (a ``filled_by`` table) is one group of them: ``where`` holds
the store column values that pick the group's rows out of its keys' rows (bench/experiments/runner.py).  A measured
cell knows the timestep of each of its steps and the teacher's grid, so a schedule strip can place every step at its
timestep (AutoDiffusion's K steps are any K timesteps of the training grid, not the first K of the teacher's)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    label: str
    status: str
    keys: list = field(default_factory=list)     # store keys whose rows fill this cell
    command: str = ""                            # the command that fills what is missing
    note: str = ""
    plan: list | None = None                     # step tokens (schedule strips)
    where: dict = field(default_factory=dict)    # store column -> value: only these rows of ``keys`` fill it
    timesteps: list | None = None                # the timestep of each step as the row ran (None: not known)
    base_grid: list | None = None                # the teacher's timesteps (a strip places each step on them)

    def to_dict(self) -> dict:
        return {"label": self.label, "status": self.status, "keys": self.keys, "command": self.command,
                "note": self.note, **({"where": self.where} if self.where else {})}


@dataclass
class Comparison:
    a: str
    b: str
    key: str = ""              # store key of the difference's rows; "" when a side is missing
    reason: str = ""
