"""Relative FID (rFID) of Flexiffusion, Sec. 4.3: FID between a candidate's images and the teacher's.

The teacher is the unaccelerated model on the same base grid (the all-full plan, or a custom teacher plan).  It
generates its images once per :class:`TeacherSpec` key (model, every weight, scheduler name and full config, grid
length, teacher plan, seeds, guidance, condition, device, dtype, sample shape; not the batch size, fitness or
extractor); images, features (keyed by their extractor) and FID statistics are cached on disk, and table rows and
searches build the same key (:meth:`TeacherSpec.of_bundle`), so they share one teacher.  Image ``i`` of teacher and candidate comes from the same seed, so the image generator
(``plan -> uint8 NCHW images``) must close over the seeds of the spec; the real one, on a model bundle, is built by
:func:`bench.evaluation.relative_fid` (this module does not import the generator: quality and generation are
siblings).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import torch

from bench.cache import Cache, stable_hash
from flexiffusion.errors import UserError

from .extractors import DEFAULT_EXTRACTOR, Extractor
from .features import FeatureSet
from .fidelity import MIN_IMAGES, fid_from_statistics
from .images import ImageSet, as_images, check_same_kind
from .pixel import mse


DEFAULT_PLAN = "all-full"  # TeacherSpec.plan of the default teacher: every step of the base grid a full step


@dataclass(frozen=True)
class TeacherSpec:
    """Everything the teacher's images depend on; :meth:`key` (all fields) keys the cache.

    ``weights_hash`` covers every module that produces the images (U-Net, text encoder, decoder / VAE);
    ``scheduler_config`` is the bundle's full scheduler config (e.g. ``timestep_spacing``); ``plan`` is the digest of
    a custom teacher plan (``DEFAULT_PLAN``: all full steps); ``extra`` holds the condition (prompt and label
    hashes, conditioning kind).  ``n_images`` is ``len(seeds)``.  :meth:`of_bundle` fills it from a bundle.
    """

    model_id: str
    weights_hash: str
    scheduler: str
    grid_length: int
    seeds: tuple[int, ...]
    guidance: float | None = None
    extra: dict = field(default_factory=dict)  # anything else the images depend on (prompts, class labels, ...)
    scheduler_config: dict = field(default_factory=dict)
    plan: str = DEFAULT_PLAN
    device: str = "cpu"
    dtype: str = "torch.float32"
    sample_shape: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "sample_shape", tuple(int(s) for s in self.sample_shape))
        if not isinstance(self.scheduler, str):
            raise UserError("rFID teacher: the scheduler must be a registry name (a factory cannot key the cache)")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError("rFID teacher: seeds must be distinct (one seed per image)")
        if len(self.seeds) < MIN_IMAGES["fid"]:
            raise UserError(f"rFID needs at least {MIN_IMAGES['fid']} images (seeds); got {len(self.seeds)}")

    @classmethod
    def of_bundle(cls, bundle, seeds, grid_length: int, *, scheduler: str = "ddim", guidance_scale=None,
                  prompts=None, labels=None, plan=None, extra: dict | None = None) -> "TeacherSpec":
        """The spec of the teacher of a :class:`bench.models.ModelBundle` sampled by ``bench.generate``: the one
        teacher key of table rows and searches alike (no batch size, fitness or extractor in it).  ``extra``: what
        else the images depend on (e.g. a non-default execution mode)."""
        from bench.models import weights_identity

        extra = {"prompts": stable_hash(list(prompts)) if prompts is not None else None,
                 "labels": stable_hash([int(l) for l in labels]) if labels is not None else None,
                 "conditioning": bundle.conditioning, **(extra or {})}
        param = next(bundle.unet.parameters())
        guidance = None if guidance_scale is None else float(guidance_scale)
        return cls(bundle.name, weights_identity(bundle), scheduler, int(grid_length), tuple(seeds),
                   guidance, extra, scheduler_config=dict(bundle.scheduler_config),
                   plan=DEFAULT_PLAN if plan is None else plan.digest(), device=str(param.device),
                   dtype=str(param.dtype), sample_shape=tuple(bundle.sample_shape))

    @property
    def n_images(self) -> int:
        return len(self.seeds)

    def key(self) -> dict:
        d = asdict(self)
        d["seeds"] = stable_hash(list(self.seeds))  # the key stays short; the hash covers order and values
        d["scheduler_config"] = stable_hash(self.scheduler_config)
        d["n_images"] = self.n_images
        return d

    @property
    def label(self) -> str:
        return f"teacher-{self.model_id}-{self.scheduler}{self.grid_length}-{self.n_images}"


def teacher_plan(grid_length: int):
    """The teacher's plan: every step of the base grid a full step."""
    from flexiffusion.schedule import Plan

    return Plan.full(grid_length, name="teacher")


class RelativeFID:
    """rFID (and pixel MSE) of candidates against a cached teacher; stages: sample -> features -> distance."""

    def __init__(self, generate: Callable[[Any], torch.Tensor], teacher: TeacherSpec, *,
                 extractor: str | Extractor = DEFAULT_EXTRACTOR, weights_path=None, plan=None,
                 batch_size: int = 64, cuda: bool | None = None, cache_dir=None, cache: bool = True,
                 value_range=(0.0, 1.0)):
        self.generate, self.teacher = generate, teacher
        self.extractor = extractor if isinstance(extractor, Extractor) else Extractor(extractor, weights_path, cuda)
        self.layer = self.extractor.layer_for("fid")
        if self.layer is None:
            raise UserError(f"feature extractor {self.extractor.name!r} provides no FID layer")
        if plan is not None:  # a custom teacher plan is another teacher: its digest goes into the key
            if len(plan) != teacher.grid_length:
                raise UserError(f"rFID: the teacher plan has {len(plan)} steps, the base grid {teacher.grid_length}")
            if teacher.plan not in (DEFAULT_PLAN, plan.digest()):
                raise UserError("rFID: the spec names another teacher plan than the one given")
            self.teacher = replace(teacher, plan=plan.digest())
        elif teacher.plan != DEFAULT_PLAN:
            raise UserError("rFID: the spec names a custom teacher plan; pass that plan (plan=...)")
        self.plan = plan
        self.batch_size, self.value_range = batch_size, value_range
        self.store = Cache(cache_dir, enabled=cache)
        self._teacher_images: ImageSet | None = None
        self._teacher_features: FeatureSet | None = None
        self.timings: dict[str, float] = {}  # seconds of the stages of the last __call__

    @property
    def n_images(self) -> int:
        return self.teacher.n_images

    def _check(self, images: torch.Tensor, who: str) -> ImageSet:
        out = as_images(images, who, self.value_range)
        if out.n != self.n_images:
            raise UserError(f"{who}: the generator returned {out.n} images for {self.n_images} seeds")
        return out

    def teacher_images(self) -> ImageSet:
        """The teacher's images: generated on the first call for this key, then read from the cache."""
        if self._teacher_images is None:
            key = self.teacher.key()
            images = self.store.load("teacher-images", key, self.teacher.label)
            if images is None:
                plan = self.plan if self.plan is not None else teacher_plan(self.teacher.grid_length)
                images = self._check(self.generate(plan), "teacher").tensor()  # validated before it is cached
                self.store.save("teacher-images", key, images, self.teacher.label)
            self._teacher_images = as_images(images, "teacher")
        return self._teacher_images

    def has_teacher_images(self) -> bool:
        """Whether the teacher's images are already here (in memory or in the cache; read if cached)."""
        if self._teacher_images is None:
            images = self.store.load("teacher-images", self.teacher.key(), self.teacher.label)
            if images is not None:
                self._teacher_images = as_images(images, "teacher")
        return self._teacher_images is not None

    def provide_teacher_images(self, images) -> None:
        """Take ``images`` as the teacher's (the caller generated them with the teacher's plan, sampler and seeds,
        e.g. timed as a table row) and cache them, instead of sampling them again."""
        images = self._check(images, "teacher").tensor()
        self.store.save("teacher-images", self.teacher.key(), images, self.teacher.label)
        self._teacher_images = as_images(images, "teacher")

    def teacher_features(self) -> FeatureSet:
        if self._teacher_features is None:
            self._teacher_features = FeatureSet(self.teacher_images(), self.extractor, [self.layer],
                                                source=f"{self.teacher.label}-{stable_hash(self.teacher.key())}",
                                                cache=self.store, batch_size=self.batch_size)
        return self._teacher_features

    def sample(self, plan) -> ImageSet:
        """Stage 1: the candidate's images (same seeds as the teacher)."""
        images = self._check(self.generate(plan), "candidate")
        check_same_kind(images, self.teacher_images())
        return images

    def features(self, images: ImageSet) -> FeatureSet:
        """Stage 2: the candidate's features (in memory; a candidate is evaluated once)."""
        fs = FeatureSet(images, self.extractor, [self.layer], batch_size=self.batch_size)
        fs.features(self.layer)
        return fs

    def distance(self, fs: FeatureSet) -> dict:
        """Stage 3: rFID against the teacher's cached statistics, and pixel MSE against its images."""
        teacher = self.teacher_features()
        out = {"rfid": fid_from_statistics(fs.statistics(self.layer), teacher.statistics(self.layer))}
        out["mse"] = mse(fs.images, self.teacher_images())["mse"]
        out["n_images"] = fs.n
        return out

    def score_images(self, images) -> dict:
        """rFID of images already generated from the teacher's seeds (e.g. by another harness)."""
        images = self._check(images, "candidate")
        check_same_kind(images, self.teacher_images())
        return self.distance(self.features(images))

    def __call__(self, plan) -> dict:
        """``{"rfid", "mse", "n_images"}`` of the candidate ``plan``; stage times in ``self.timings``."""
        self.teacher_features().statistics(self.layer)  # teacher work is never counted as the candidate's
        t0 = time.perf_counter()
        images = self.sample(plan)
        t1 = time.perf_counter()
        fs = self.features(images)
        t2 = time.perf_counter()
        out = self.distance(fs)
        t3 = time.perf_counter()
        self.timings = {"sampling_s": t1 - t0, "features_s": t2 - t1, "distance_s": t3 - t2}
        return out
