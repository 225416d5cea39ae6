"""The fitness of search candidates (Flexiffusion Sec. 4.3): rFID against the teacher (default), FID against real
data, or pixel MSE against the teacher (Table 4), for any :class:`~flexiffusion.schedule.Plan`.

An :class:`Evaluator` is built from a picklable :class:`~bench.evaluation.setting.EvaluationSetting`: it loads the
model once, and the teacher (the all-full plan on the same grid, same seeds, same execution mode) or the real
data's statistics once per setting (cached on disk by :class:`bench.quality.RelativeFID` / the feature cache; the
teacher under the key table rows use too, so a search and a row on the same model, grid and seeds share it).
Sampling runs through :func:`bench.generate.sample_batches`, the batched loop every plan's images come from.

Stages per candidate: sampling -> features -> distance.  Sampling uses **prefix reuse**: before each full step of
a candidate (a segment boundary) the sampler state of every batch is kept in a bounded :class:`StateStore`; a later
candidate whose first ``k`` tokens equal a stored prefix resumes there.  The state after ``k`` steps depends only on
those ``k`` tokens, batches and seeds are the same, and the same code path runs the remaining steps, so its images
are bit-identical to sampling it from noise (tested) and so is its fitness: an evaluation is deterministic, and a
value read back from the results store equals a recomputed one.  The distance against fixed reference statistics
is :class:`~bench.evaluation.frechet.FixedReferenceFID` (the reference's covariance root computed once).

Fitness ``fid`` reads the setting's ``real``: a named source or folder (its features cached), or FID statistics (an
``.npz`` with ``mu`` / ``sigma``, :mod:`bench.quality.statistics`) used as they are.

Per-plan extras (:class:`PlanExtras`) let other methods use the same machinery: a scheduler factory (AutoDiffusion's
timestep subsets) and a hook active while the plan samples (its layer drops); their ``tag`` scopes prefix reuse,
and their ``tokens`` (one per step) replace the plan's tokens as prefix keys where a step's tokens alone do not
determine the state (an AutoDiffusion step is a full step whose effect depends on its timesteps and drops).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from flexiffusion.errors import UserError
from flexiffusion.schedule import FULL, PARTIAL, Plan
from flexiffusion.threads import num_threads

from . import execution
from .frechet import FixedReferenceFID
from .setting import EvaluationSetting
from .states import StateStore

DEFAULT_STATE_BUDGET = 1 << 30  # bytes of sampler states kept for prefix reuse
NO_CACHE = {"kept": [], "contexts": {}}  # a step-engine cache holding no features


@dataclass(frozen=True)
class PlanExtras:
    """Per-plan additions: ``scheduler(config, grid_length, device)`` replacing the setting's scheduler, ``hook(unet)``
    a context manager active while the plan samples; ``tag`` names them (states are reused only within a tag);
    ``tokens``: per-step prefix keys replacing ``plan.tokens()`` (the state after ``k`` steps must depend only on
    ``tokens[:k]``, the tag and the setting)."""

    tag: str
    scheduler: Callable | None = None
    hook: Callable | None = None
    tokens: tuple[str, ...] | None = None


def resume_needs(plan: Plan, k: int) -> frozenset[int]:
    """Branches whose cached features ``plan`` needs when it resumes before step ``k``: those of its partial steps
    up to its next full step."""
    needs = set()
    for step in plan.steps[k:]:
        if step.kind == FULL:
            break
        if step.kind == PARTIAL:
            needs.add(step.branch)
    return frozenset(needs)


def boundaries(plan: Plan, start: int = 0) -> list[int]:
    """Indices after ``start`` where the plan has a full step (its segment starts), then the plan's end."""
    return [j for j in range(start + 1, len(plan)) if plan.steps[j].kind == FULL] + [len(plan)]


class Evaluator:
    """Fitness of plans under one setting; ``evaluate(plans) -> list[dict]``.

    ``states``: a :class:`StateStore`, a byte budget for a new one, or None (no prefix reuse: every plan sampled
    from noise).  ``cache_branches``: branches whose features every full step keeps and states carry (the search
    space's branches), so that a plan with a partial step right at a stored boundary can resume; None keeps none
    in stored states (a boundary state then serves plans whose next evaluated step there is full).
    """

    def __init__(self, setting: EvaluationSetting, *, states: StateStore | int | None = DEFAULT_STATE_BUDGET,
                 cache_branches: Sequence[int] | None = None, cache_dir=None, progress: bool = False):
        from bench.models import load_model
        from bench.quality.extractors import Extractor

        self.setting = setting
        self.key = setting.key()
        self.states = StateStore(states) if isinstance(states, int) else states
        self.cache_branches = None if cache_branches is None else frozenset(int(b) for b in cache_branches)
        self.cache_dir, self.progress = cache_dir, progress
        with num_threads(setting.threads):
            self.bundle = load_model(setting.model, setting.weights, device=setting.device)
            execution.prepare(self.bundle.unet, setting.mode)
            self.extractor = Extractor(setting.extractor, setting.extractor_weights,
                                       cuda=torch.device(setting.device).type == "cuda")
        self.layer = self.extractor.layer_for("fid")
        if self.layer is None:
            raise UserError(f"feature extractor {setting.extractor!r} provides no FID layer")
        self._reference: FixedReferenceFID | None = None
        self._teacher = None  # RelativeFID holding the cached teacher images and features

    # ---- reference (teacher or real data), once per setting ---------------------------------------------------
    def teacher(self):
        """The :class:`bench.quality.RelativeFID` of this setting (teacher images and features cached on disk).

        Its key is the one teacher key of rows and searches (:meth:`TeacherSpec.of_bundle`): model, weights,
        scheduler and its config, grid, seeds, guidance, prompts, and the execution mode unless it is the default
        (eager fp32); not the batch size, threads, fitness or extractor (features are keyed by their extractor).
        A table row on the same model, grid and seeds reads these images instead of sampling the teacher again."""
        if self._teacher is None:
            from bench.quality.rfid import RelativeFID, TeacherSpec

            from .setting import ExecutionMode

            s = self.setting
            mode = {} if s.mode == ExecutionMode() else {"mode": s.mode.label}
            spec = TeacherSpec.of_bundle(self.bundle, s.seeds, s.grid_length, scheduler=s.scheduler,
                                         guidance_scale=s.guidance, prompts=list(s.prompts) if s.prompts else None,
                                         extra=mode)
            self._teacher = RelativeFID(lambda plan: self.images(plan, reuse=False)[0], spec, extractor=self.extractor,
                                        batch_size=s.batch_size, cache_dir=self.cache_dir)
        return self._teacher

    def reference(self) -> FixedReferenceFID:
        """The fixed statistics fitness is measured against: the teacher's (rfid, mse) or the real data's (fid)."""
        if self._reference is None:
            with num_threads(self.setting.threads):
                if self.setting.fitness == "fid":
                    from bench.cache import Cache
                    from bench.quality.features import FeatureSet
                    from bench.quality.reference import fid_dim_of, resolve_real
                    from bench.quality.statistics import ReferenceStatistics

                    real, label = resolve_real(self.setting.real, "real")
                    if isinstance(real, ReferenceStatistics):   # FID against a statistics file (mu, sigma)
                        real.require_dim(fid_dim_of(self.extractor)[1], self.extractor.name)
                        self._reference = FixedReferenceFID(real.as_dict())
                        return self._reference
                    fs = FeatureSet(real, self.extractor, [self.layer], source=label,
                                    cache=Cache(self.cache_dir), batch_size=self.setting.batch_size)
                else:
                    fs = self.teacher().teacher_features()
                self._reference = FixedReferenceFID(fs.statistics(self.layer))
        return self._reference

    def prepare(self) -> "Evaluator":
        """Build the reference now (teacher sampled or read from the cache), not at the first candidate."""
        self.reference()
        if self.setting.fitness != "fid":
            self.teacher().teacher_images()
        return self

    # ---- sampling with prefix reuse ---------------------------------------------------------------------------
    def _scope(self, extras: PlanExtras | None) -> str:
        return self.key if extras is None else f"{self.key}/{extras.tag}"

    @torch.no_grad()
    def images(self, plan: Plan, extras: PlanExtras | None = None, reuse: bool = True, lo: int = 0,
               hi: int | None = None) -> tuple[torch.Tensor, dict]:
        """uint8 NCHW images of ``plan`` for the setting's seeds (images ``lo .. hi - 1`` of them: the search's
        staged evaluation, :mod:`bench.search.screening`), and what it cost (``resumed_at``: steps taken from a
        stored state; ``unet_image_steps``: network evaluations x images actually run; ``io_s``: state store).
        A range other than all images keeps its sampler states apart (its batches are other batches)."""
        from bench.generate import decode_uint8, sample_batches, scheduler_maker

        s, bundle = self.setting, self.bundle
        hi = s.n_images if hi is None else int(hi)
        if not 0 <= lo < hi <= s.n_images:
            raise UserError(f"image range {lo}..{hi} outside the setting's {s.n_images} images")
        seeds, prompts = s.seeds[lo:hi], s.prompts_for(lo, hi)
        factory = extras.scheduler if extras is not None and extras.scheduler else s.scheduler
        make = scheduler_maker(factory)
        if extras is None or extras.scheduler is None:
            plan.validate(None, s.grid_length)  # candidates and teacher share the base grid
        plan.validate(None, len(make(bundle.scheduler_config, len(plan)).timesteps))
        store = self.states if reuse else None
        scope = self._scope(extras) + ("" if (lo, hi) == (0, s.n_images) else f"/images{lo}-{hi}")
        tokens = tuple(extras.tokens) if extras is not None and extras.tokens is not None else plan.tokens()
        if len(tokens) != len(plan):
            raise UserError(f"{len(tokens)} prefix tokens for a plan of {len(plan)} steps: give one per step")
        t_io = time.perf_counter()
        start, states = (0, None) if store is None else store.lookup(
            scope, tokens, lambda k, kept: resume_needs(plan, k) <= kept)
        io = [time.perf_counter() - t_io]
        stops = boundaries(plan, start) if store is not None else [len(plan)]
        hook = extras.hook(bundle.unet) if extras is not None and extras.hook else contextlib.nullcontext()
        keep = self.cache_branches

        def put(stop, running):  # every batch at a segment boundary: keep the states for later prefixes
            t_io = time.perf_counter()
            kept = running[0].kept if keep else frozenset()  # without cache_branches: features dropped
            store.put((scope, tokens[:stop], kept), [st if keep else replace(st, cache=NO_CACHE) for st in running])
            io[0] += time.perf_counter() - t_io

        with num_threads(s.threads), hook, execution.autocast(s.mode, s.device):
            latents = sample_batches(bundle, plan, seeds, scheduler=factory, guidance_scale=s.guidance,
                                     prompts=prompts, batch_size=s.batch_size,
                                     states=states, stops=stops, cache_branches=keep,
                                     on_stop=put if store is not None else None)
        work = sum(step.evaluates for step in plan.steps[start:]) * len(seeds)
        images = decode_uint8(bundle, latents.float(), s.batch_size)
        return images, {"resumed_at": start, "unet_image_steps": work, "io_s": io[0]}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The fitness layer's features of uint8 images, ``(n, d)``."""
        from bench.quality.images import as_images

        imageset = as_images(images, "candidate")
        return self.extractor.extract(imageset, imageset.shape[0], (self.layer,), self.setting.batch_size)[self.layer]

    # ---- fitness ----------------------------------------------------------------------------------------------
    def evaluate_one(self, plan: Plan, extras: PlanExtras | None = None, reuse: bool = True) -> dict:
        """Fitness and metrics of one plan (see :meth:`evaluate`)."""
        from bench.quality.images import as_images
        from bench.quality.pixel import mse

        reference = self.reference()
        teacher_images = None if self.setting.fitness == "fid" else self.teacher().teacher_images()
        with num_threads(self.setting.threads):
            t0 = time.perf_counter()
            images, info = self.images(plan, extras, reuse)
            t1 = time.perf_counter()
            imageset = as_images(images, "candidate")
            features = self.extractor.extract(imageset, imageset.shape[0], (self.layer,),
                                              self.setting.batch_size)[self.layer]
            t2 = time.perf_counter()
            distance = reference.from_features(features)
            out = {"fid": distance} if self.setting.fitness == "fid" else {"rfid": distance}
            if teacher_images is not None:
                out["mse"] = mse(imageset, teacher_images)["mse"]
            t3 = time.perf_counter()
        out.update(fitness=out[self.setting.fitness], n_images=self.setting.n_images, nfe=plan.nfe,
                   sampling_s=t1 - t0 - info["io_s"], features_s=t2 - t1, distance_s=t3 - t2, **info)
        return out

    def evaluate(self, plans: Sequence[Plan], extras: Sequence[PlanExtras | None] | None = None,
                 reuse: bool = True) -> list[dict]:
        """One dict per plan, in order: ``fitness`` (lower is better) and the metric values (``rfid`` / ``fid``,
        ``mse`` where a teacher exists), ``n_images``, ``nfe``, seconds of ``sampling_s`` / ``features_s`` /
        ``distance_s`` / ``io_s``, ``resumed_at`` and ``unet_image_steps``.  ``reuse=False``: sample from noise."""
        extras = [None] * len(plans) if extras is None else list(extras)
        if len(extras) != len(plans):
            raise UserError(f"{len(extras)} extras for {len(plans)} plans: give one (or None) per plan")
        return [self.evaluate_one(p, e, reuse) for p, e in zip(plans, extras)]

    def __call__(self, plans: Sequence[Plan]) -> list[float]:
        """Fitness values only: the ``evaluate(plans) -> list[float]`` callable of Algorithm 1."""
        return [r["fitness"] for r in self.evaluate(plans)]
