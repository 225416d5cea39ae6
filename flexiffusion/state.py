"""The sampler loop's state between steps, as plain data: resumable, savable, cheap to ship between processes.

A :class:`SamplerState` holds tensors, numbers, strings and lists only (the scheduler as data, see
:mod:`flexiffusion.scheduler_state`), so ``torch.load(weights_only=True)`` reads it back, pickling it for a Ray
worker copies tensors and nothing else, and it survives library upgrades that keep the schedulers' fields.

It records what it depends on (:func:`dependencies`): a resume under another model, denoiser, guidance, noise,
condition, step arguments or step-noise generators fails with one line naming the difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import UserError
from .fingerprint import digest, model_fingerprint
from .io import atomic_write

FORMAT = 1

# what a state depends on, in the words of the error message
DEPENDENCY_NAMES = {"model": "model weights", "denoiser": "denoiser", "guidance": "guidance (scale, mode)",
                    "noise": "initial noise", "cond": "condition", "step_kwargs": "scheduler step arguments",
                    "step_noise": "step-noise generators (seeds)"}


@dataclass
class SamplerState:
    """Everything the loop carries between steps; ``index`` steps of the plan ``prefix`` have been run.

    ``scheduler``: the scheduler's state as data; ``cache``: the step engine's cache (``{"kept": branches,
    "contexts": ...}``); ``last_output``: the model output a following null step holds; ``depends``: what the state
    depends on; ``generators``: the states of the step-noise generators (stochastic samplers).
    """

    index: int
    latents: torch.Tensor
    scheduler: dict
    cache: dict = field(default_factory=dict)
    last_output: torch.Tensor | None = None
    prefix: tuple[str, ...] = ()
    depends: dict = field(default_factory=dict)
    generators: list[torch.Tensor] | None = None

    @property
    def kept(self) -> frozenset[int]:
        """Branches whose features the last full step kept (a resume may run partial steps at these only)."""
        return frozenset(self.cache.get("kept", ()))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "index": self.index, "latents": self.latents, "scheduler": self.scheduler,
                "cache": self.cache, "last_output": self.last_output, "prefix": list(self.prefix),
                "depends": self.depends, "generators": self.generators}

    @classmethod
    def from_dict(cls, data: dict) -> "SamplerState":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"not a sampler state of format {FORMAT}: store it again with this version")
        return cls(data["index"], data["latents"], data["scheduler"], data["cache"], data["last_output"],
                   tuple(data["prefix"]), data["depends"], data["generators"])

    def save(self, path) -> None:
        """Write the state to ``path`` atomically (a uniquely named temporary file, then a rename)."""
        atomic_write(path, lambda tmp: torch.save(self.to_dict(), tmp))

    @classmethod
    def load(cls, path) -> "SamplerState":
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"sampler state {path} not found") from None
        except Exception as exc:  # corrupted file, or not a plain-data state
            raise UserError(f"{path} is not a readable sampler state ({type(exc).__name__}): store it again") from None
        return cls.from_dict(data)

    def clone(self) -> "SamplerState":
        """A copy whose containers are independent (tensors are shared: nothing modifies them in place)."""
        return SamplerState.from_dict(_copy_containers(self.to_dict()))

    def nbytes(self) -> int:
        """Bytes of tensor storage the state holds (shared storages counted once)."""
        return storage_nbytes(self.to_dict())


def storage_nbytes(obj) -> int:
    """Bytes of the distinct tensor storages in a nested structure (a view or a stand-in counts its storage)."""
    seen, total = set(), 0
    for t in _tensors(obj):
        s = t.untyped_storage()
        if (s.data_ptr(), s.nbytes()) not in seen:
            seen.add((s.data_ptr(), s.nbytes()))
            total += s.nbytes()
    return total


def _copy_containers(obj):
    if isinstance(obj, dict):
        return {k: _copy_containers(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copy_containers(v) for v in obj)
    return obj


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def step_generators(step_kwargs: dict) -> list[torch.Generator]:
    """The generators a stochastic scheduler step draws from (``generator=`` one or a list per sample)."""
    gens = step_kwargs.get("generator")
    if gens is None:
        return []
    return list(gens) if isinstance(gens, (list, tuple)) else [gens]


def dependencies(denoiser, noise: torch.Tensor, cond, step_kwargs: dict) -> dict:
    """What a run's states depend on besides the scheduler (checked by the scheduler's own state) and the plan."""
    unet = getattr(denoiser, "unet", None)
    other = {k: v for k, v in step_kwargs.items() if k != "generator"}
    gens = step_generators(step_kwargs)
    return {"model": model_fingerprint(unet) if isinstance(unet, torch.nn.Module) else None,
            "denoiser": f"{type(denoiser).__module__}.{type(denoiser).__qualname__}",
            "guidance": [getattr(denoiser, "guidance_scale", None), getattr(denoiser, "cfg", None)],
            "noise": digest(noise),
            "cond": digest(cond),
            "step_kwargs": digest(other),
            # the seeds, not the current states: a resume passes the generators seeded afresh, or the parent's
            "step_noise": digest([g.initial_seed() for g in gens]) if gens else None}


def check_dependencies(stored: dict, current: dict) -> None:
    """One-line UserError naming the first thing a resume would run under differently from the stored state."""
    for key, name in DEPENDENCY_NAMES.items():
        if stored.get(key) != current.get(key):
            raise UserError(f"cannot resume: the state was made with other {name} than this run's; resume with the "
                            "same ones, or sample from the start")
