"""What a latency run times (:class:`LatencyCase`), what it returns (:class:`LatencyReport`), and the model it runs.

A report records the case, the environment (:func:`flexiffusion.environment.environment`: device, threads,
library versions, git commit; :func:`flexiffusion.devices.describe`: the device's name and, on CUDA, its capability,
CUDA / cuDNN versions and TF32 settings; the timer) and raw measurements.  A case's ``device`` is any ``--device``
value (:func:`flexiffusion.devices.resolve_device`: ``auto``, ``cpu``, ``cuda``, ``cuda:N``).  The process-wide
preset U-Net (:meth:`Preset.build_unet`) is never moved or cast: a case on another device or dtype runs a private
copy.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch

from flexiffusion.devices import describe, resolve_device
from flexiffusion.environment import environment
from flexiffusion.errors import UserError

from .timing import Measurement


@dataclass(frozen=True)
class LatencyCase:
    """What to time: a preset's U-Net steps at one batch size, thread count and device."""

    preset: str
    batch_size: int = 16
    threads: int | None = 2          # torch intra-op threads on the CPU (None: leave as is)
    device: str = "cpu"              # auto, cpu, cuda, cuda:N (flexiffusion.devices.resolve_device)
    dtype: str = "float32"
    warmup: int = 2
    repeats: int = 10
    branches: tuple[int, ...] | None = None   # partial steps to time; None: every branch, (): none
    guidance: bool | None = None     # None: the preset's own (CFG doubles the U-Net batch)
    native: bool = True              # also time the model's own forward, without the engine attached

    def validate(self) -> "LatencyCase":
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1, got {self.batch_size}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be >= 1, got {self.threads}")
        if self.repeats < 1 or self.warmup < 0:
            raise UserError(f"need repeats >= 1 and warmup >= 0, got {self.repeats} and {self.warmup}")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UserError(f"unknown dtype {self.dtype!r}: use float32, float16 or bfloat16")
        resolve_device(self.device)  # one UserError line: unknown name, no CUDA here, no such CUDA index
        return self

    @property
    def torch_device(self) -> torch.device:
        """The resolved device (``cuda`` with its index)."""
        return resolve_device(self.device)


@dataclass
class LatencyReport:
    """A case, its environment and its measurements; ``to_dict(flat=True)`` / ``to_dataframe()`` for tables."""

    case: LatencyCase
    environment: dict
    measurements: list[Measurement] = field(default_factory=list)

    def get(self, name: str, branch: int | None = None) -> Measurement:
        for m in self.measurements:
            if m.name == name and m.branch == branch:
                return m
        raise KeyError((name, branch))

    def _base(self) -> dict:
        return {**{f"case.{k}": v for k, v in asdict(self.case).items()},
                **{f"env.{k}": v for k, v in self.environment.items()}}

    def rows(self) -> list[dict]:
        """One tidy row per measurement: case, environment and summary."""
        return [{**self._base(), **m.summary(), "values": list(m.values)} for m in self.measurements]

    def to_dict(self, flat: bool = False) -> dict:
        if not flat:
            return {"case": asdict(self.case), "environment": dict(self.environment),
                    "measurements": [{**m.summary(), "values": list(m.values)} for m in self.measurements]}
        out = self._base()
        for m in self.measurements:
            label = m.name if m.branch is None else f"{m.name}.{m.branch}"
            out.update({f"{label}.{k}": v for k, v in m.summary().items() if k not in ("name", "branch")})
        return out

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.rows())


def report_environment(case: LatencyCase, timer, **extra) -> dict:
    """The environment a report records: :func:`environment` (versions, threads, git commit) and the device's
    :func:`describe` (name; on CUDA capability, CUDA / cuDNN versions, TF32 settings), the timer kind, ``extra``."""
    device = case.torch_device
    return {**environment(device, case.threads), **describe(device), "timer": timer.kind, **extra}


def case_unet(preset, device: str | torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The preset's U-Net on ``device`` in ``dtype``.  The process-wide shared module when it already is there
    (used as is; the engine attaches its hooks around each timed call and detaches them), else a private copy:
    the shared module is never moved or cast."""
    shared = preset.build_unet()
    param = next(shared.parameters())
    if param.device == resolve_device(device) and param.dtype == dtype:
        return shared
    return copy.deepcopy(shared).to(device=device, dtype=dtype)


def prepare(case: LatencyCase):
    """``(preset, unet, sample, t, kwargs, guided)`` of one U-Net call of ``case`` (CFG doubles the batch)."""
    from bench.presets import get_preset

    preset = get_preset(case.preset)
    guided = preset.guidance if case.guidance is None else case.guidance
    dtype = getattr(torch, case.dtype)
    device = case.torch_device
    unet = case_unet(preset, device, dtype)
    calls = case.batch_size * (2 if guided else 1)
    sample, t, kwargs = preset.example_inputs(batch_size=calls)  # drawn on the CPU, then moved
    sample = sample.to(device, dtype)
    kwargs = {k: v.to(device, dtype if v.is_floating_point() else v.dtype) for k, v in kwargs.items()}
    return preset, unet, sample, t.to(device), kwargs, guided
