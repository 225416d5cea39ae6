"""The evaluation setting: everything a candidate's fitness depends on except the plan, as plain picklable data.

A setting holds no model object: an :class:`~bench.evaluation.evaluator.Evaluator` (in this process or in a Ray
actor) builds the model, the teacher and the reference statistics from it.  ``key()`` is a stable hash of every
field plus the identity of the model weights and of the feature extractor (so the teacher's identity too: the
teacher is the all-full plan under the same setting); the search stores an evaluation under
``setting.key() + plan digest``.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

FITNESS_KINDS = ("rfid", "fid", "mse")  # rFID vs the teacher (default), FID vs real data, pixel MSE vs the teacher
DTYPES = ("fp32", "bf16", "bf16-weights")  # bf16: autocast; bf16-weights: the U-Net's weights cast to bfloat16
FITNESS_VERSION = 1  # bump when the way a fitness value is computed changes: old stored values stop matching


@dataclass(frozen=True)
class ExecutionMode:
    """How the U-Net runs (candidates and teacher alike): ``torch.compile``, channels_last memory format, and
    float32 or bfloat16 autocast.  All off by default (eager fp32)."""

    compile: bool = False
    channels_last: bool = False
    dtype: str = "fp32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise UserError(f"unknown execution dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")

    @property
    def label(self) -> str:
        parts = [p for p, on in (("compile", self.compile), ("channels_last", self.channels_last)) if on]
        return "+".join(parts + [self.dtype])


@dataclass(frozen=True)
class EvaluationSetting:
    """Model, sampler, images and fitness of an evaluation; see the module docstring."""

    model: str = "embedded"
    weights: str | None = None            # path of the weights (None: the model's default)
    scheduler: str = "ddim"
    grid_length: int = 100
    seeds: tuple[int, ...] = tuple(range(250))
    guidance: float | None = None
    prompts: tuple[str, ...] = ()         # text models: one prompt per image (seed order; one given = for all)
    fitness: str = "rfid"
    real: str = "digits-train"            # the real data of fitness "fid"
    extractor: str = "digits-cnn"
    mode: ExecutionMode = field(default_factory=ExecutionMode)
    batch_size: int = 250
    device: str = "cpu"
    threads: int | None = None            # torch threads while evaluating (part of the key: kernels may block
                                          # differently with another count)
    extractor_weights: str | None = None  # the extractor's weights file (None: its default, looked up locally)

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.prompts:  # stored one per image, so that a batch's prompts are a slice
            from bench.generate import expand_prompts

            object.__setattr__(self, "prompts", tuple(str(p) for p in expand_prompts(self.prompts, len(self.seeds))))
        if self.fitness not in FITNESS_KINDS:
            raise UserError(f"unknown fitness {self.fitness!r}: choose one of {', '.join(FITNESS_KINDS)}")
        if len(set(self.seeds)) != len(self.seeds) or len(self.seeds) < 2:
            raise UserError(f"an evaluation needs at least 2 distinct seeds (one per image); got {len(self.seeds)}")
        if self.grid_length < 1 or self.batch_size < 1:
            raise UserError("grid length and batch size must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"threads must be >= 1, got {self.threads}")
        if isinstance(self.mode, dict):
            object.__setattr__(self, "mode", ExecutionMode(**self.mode))

    @classmethod
    def for_images(cls, n_images: int, first_seed: int = 0, **kwargs) -> "EvaluationSetting":
        """A setting over seeds ``first_seed .. first_seed + n_images - 1``."""
        return cls(seeds=tuple(range(first_seed, first_seed + int(n_images))), **kwargs)

    @property
    def n_images(self) -> int:
        return len(self.seeds)

    def prompts_for(self, lo: int, hi: int) -> list[str] | None:
        """The prompts of images ``lo .. hi - 1`` (seed order), or None for a model without prompts."""
        return list(self.prompts[lo:hi]) if self.prompts else None

    def provenance(self) -> dict:
        """The ``device`` and ``threads`` columns of results measured under this setting: its device and thread
        count (``threads`` None: the count torch runs with in this process now, which the evaluation then uses)."""
        import torch

        return {"device": self.device,
                "threads": int(self.threads) if self.threads is not None else torch.get_num_threads()}

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["prompts"]:
            del d["prompts"]  # settings without prompts keep the keys they had before prompts existed
        if d["extractor_weights"] is None:
            del d["extractor_weights"]  # and those without extractor weights the keys from before that field
        return d

    def key(self) -> str:
        """Stable hash of the setting, the model weights' identity and the extractor's fingerprint.  Extractor
        weights and a statistics file as ``real`` count by their content (sha256), not their path."""
        from bench.cache import stable_hash
        from bench.quality.reference import file_identity
        from bench.quality.statistics import is_statistics_path

        d = self.to_dict()
        d["seeds"] = stable_hash(list(self.seeds))
        if self.extractor_weights is not None:
            d["extractor_weights"] = file_identity(self.extractor_weights)
        if is_statistics_path(self.real) and Path(self.real).is_file():   # (a missing one fails when read)
            d["real"] = f"statistics:{file_identity(self.real)}"
        d.update(weights_identity=weights_identity(self.model, self.weights),
                 extractor_identity=extractor_identity(self.extractor, self.extractor_weights),
                 fitness_version=FITNESS_VERSION)
        return stable_hash(d)

    def reference(self):
        """The :class:`bench.quality.reference.QualityReference` of this setting's features (no CLIP: fitness
        has none)."""
        from bench.quality.reference import QualityReference

        return QualityReference(self.real, self.extractor, self.extractor_weights)


@functools.lru_cache(maxsize=None)
def weights_identity(model: str, weights: str | None) -> str:
    """The weights' identity by model name and weights path: :func:`bench.models.weights_identity` (the one
    definition) of the model as loaded, computed once per process."""
    from bench.models import load_model, weights_identity as identity

    return identity(load_model(model, weights))


@functools.lru_cache(maxsize=None)
def extractor_identity(name: str, weights: str | None = None) -> str:
    """``name:fingerprint`` of the extractor's parameters (with ``weights``: that file's), once per process."""
    from bench.quality.extractors import Extractor

    return f"{name}:{Extractor(name, weights, cuda=False).fingerprint}"
