"""Adaptive image counts for the search's fast mode: a child is evaluated in stages of images and stops as soon as
it cannot matter to Algorithm 1 (successive screening, with the margin set from measured rFID noise).

What a child's fitness decides in Algorithm 1: its rank in the population ``P`` (kept to the top ``n_u``) and,
through that rank, whether it is ever picked as a parent (the best of ``n_p`` members drawn at random).  A member
with a fraction ``f`` of the population ranked above it is the best of a draw only when the other ``n_p - 1`` drawn
members all rank below it: probability about ``(1 - f) ** (n_p - 1)``.  With ``f = 1 - eps ** (1 / (n_p - 1))``
that is at most ``eps`` per draw (``eps`` = 1e-3 by default: f = 0.25 for B.2's n_p = 25, 0.63 for n_p = 8).  A
full population (``|P| >= n_u``) drops members below rank ``n_u``, which ``f |P| < n_u`` already covers.

Staged evaluation (:class:`Screening`): images ``0 .. n_1 - 1`` are sampled first; the child's rFID on them
(against the teacher's same images) is compared with the members' rFID on the **same** images, read from their
stored features (no sampling).  With ``v_r`` the member value at position ``ceil(f |P|)`` in increasing order, the
child stops when ``log rFID_child > log v_r + margin``; else the next stage's images are sampled, up to all of
them.  A stopped child's fitness is its rFID on the images it ran (``screened`` = 1, ``n_images_used``): an
estimate on fewer images, biased upwards like every small-n FID, so it ranks low.  A child that passes every stage
gets the rFID on all images, the exact mode's computation up to float round-off (its images come from other batches).

Screening starts once ``min_members`` members (default ``n_p // 2``) were evaluated on all images; the initial population
is screened against its members evaluated before it.  The margin (in log rFID) is per stage, from the noise of
paired log rFID differences between two disjoint image sets measured by the yardstick
(:mod:`bench.search.yardstick`: ``sigma_log_diff``), times ``z``.

Features of every evaluated child are kept on disk (the evaluation cache, keyed by the evaluation key and the
digest), so a resumed search sees the same member values and makes the same choices: an evaluation read back from
the store joins the round's members as it did when computed (:meth:`Screening.note`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from flexiffusion.errors import UserError

FEATURES_STAGE = "search-features"


@dataclass(frozen=True)
class ScreenConfig:
    """Stages (image counts below the setting's, increasing), ``epsilon`` (chance per parent draw that a stopped child
    would have been the parent), ``z`` (margin in units of the measured noise), ``sigma`` (measured SD of paired log
    rFID differences per stage: {images: sigma}; a stage without one uses the nearest measured count scaled by
    sqrt(n_measured / n)) and ``min_members`` (members evaluated on all images before screening starts; None: n_p // 2, at least 2)."""

    stages: tuple[int, ...] = (32, 96)
    epsilon: float = 1e-3
    z: float = 2.0
    sigma: dict = field(default_factory=lambda: dict(DEFAULT_SIGMA))
    min_members: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(sorted({int(k) for k in self.stages})))
        object.__setattr__(self, "sigma", {int(k): float(v) for k, v in dict(self.sigma).items()})
        if not self.stages or self.stages[0] < 2:
            raise UserError(f"screening stages must be image counts >= 2, got {list(self.stages)}")
        if not 0 < self.epsilon < 1:
            raise UserError(f"screening epsilon must be in (0, 1), got {self.epsilon}")
        if self.z < 0 or not self.sigma:
            raise UserError("screening needs z >= 0 and at least one measured sigma")

    def margin(self, n: int) -> float:
        """``z`` x the noise of a paired log rFID difference at ``n`` images."""
        if n in self.sigma:
            return self.z * self.sigma[n]
        near = min(self.sigma, key=lambda k: abs(math.log(k / n)))
        return self.z * self.sigma[near] * math.sqrt(near / n)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sigma"] = {str(k): v for k, v in sorted(self.sigma.items())}
        return d


# SD of one paired difference log rFID(a) - log rFID(b) between two candidates, from two disjoint image sets, on the
# embedded model (digits-cnn features, embedded-50 space, 30 candidates): measured by `flexbench search-yardstick
# --preset embedded-50 --candidates 30 --k 32,96,250 --reference-images 500` (2026-12-07, docs/search-cost.md).
# Other models and extractors: measure with the yardstick.
DEFAULT_SIGMA = {32: 0.196, 96: 0.507, 250: 0.226}


def parent_fraction(n_p: int, epsilon: float) -> float:
    """``f``: a member with this fraction of the population above it is the best of a random draw of ``n_p``
    members with probability at most ``epsilon``."""
    if n_p <= 1:
        return 1.0
    return 1.0 - epsilon ** (1.0 / (n_p - 1))


class Screening:
    """The fast mode's fitness rows: staged evaluation of each proposal with an :class:`Evaluator`.

    ``observe(population)`` (Algorithm 1, before each round) sets the members a child is compared with; children
    evaluated on all images during the round join them."""

    def __init__(self, evaluator, config: ScreenConfig, n_p: int, key: str, cache_dir=None):
        from bench.cache import Cache

        if evaluator.setting.fitness != "rfid":
            raise UserError(f"the fast mode screens rFID against the teacher; fitness {evaluator.setting.fitness!r} "
                            "is not supported: run it without --fast")
        self.ev, self.config, self.key = evaluator, config, key
        n = evaluator.setting.n_images
        self.n = n
        self.stages = tuple(k for k in config.stages if k < n) + (n,)
        self.fraction = parent_fraction(n_p, config.epsilon)
        self.min_members = config.min_members if config.min_members is not None else max(2, n_p // 2)
        self.cache = Cache(cache_dir)
        self.members: list = []          # digests of the population (best first) and of this round's full evaluations
        self._features: dict[str, torch.Tensor] = {}
        self._values: dict[tuple[str, int], float] = {}
        self._teacher: dict[int, object] = {}
        self.stopped = [0] * len(self.stages)   # children stopped at each stage (the last: evaluated on all)

    # ---- Algorithm 1's view ---------------------------------------------------------------------------------
    def observe(self, population) -> None:
        self.members = [e.digest for e in population]

    def note(self, digest: str) -> None:
        """An evaluation of this round read back from the store (a resumed search): it joins the members as it did
        when it was computed (evaluated on all images), so the rest of the round decides as the first run did."""
        f = self.features_of(digest)
        if f is not None and f.shape[0] >= self.n and digest not in self.members:
            self.members.append(digest)

    # ---- stored features and values ------------------------------------------------------------------------
    def _feature_key(self, digest: str) -> dict:
        return {"evaluation": self.key, "digest": digest}

    def features_of(self, digest: str) -> torch.Tensor | None:
        if digest not in self._features:
            f = self.cache.load(FEATURES_STAGE, self._feature_key(digest))
            if f is None:
                return None
            self._features[digest] = f
        return self._features[digest]

    def _teacher_ref(self, k: int):
        if k not in self._teacher:
            from bench.evaluation.frechet import FixedReferenceFID
            from bench.quality.features import fid_statistics

            if k == self.n:
                self._teacher[k] = self.ev.reference()
            else:
                tf = self.ev.teacher().teacher_features().features(self.ev.layer)
                self._teacher[k] = FixedReferenceFID(fid_statistics(torch.as_tensor(tf[:k], dtype=torch.float64)))
        return self._teacher[k]

    def value(self, features, k: int) -> float:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._teacher_ref(k).from_features(np.asarray(features[:k], dtype=np.float64))

    def member_value(self, digest: str, k: int) -> float | None:
        """rFID of a member on the first ``k`` images, from its stored features (None: not evaluated on them)."""
        if (digest, k) not in self._values:
            f = self.features_of(digest)
            if f is None or f.shape[0] < self.n:   # a screened member has no value at later stages: not compared
                return None
            self._values[(digest, k)] = self.value(f, k)
        return self._values[(digest, k)]

    def threshold(self, k: int) -> float | None:
        """The member value at position ceil(f |P|) of stage ``k`` (None: too few members evaluated on all images,
        or the position lies beyond them)."""
        values = sorted(v for v in (self.member_value(d, k) for d in self.members) if v is not None)
        if len(values) < self.min_members:
            return None
        pos = math.ceil(self.fraction * len(self.members))
        return values[pos] if pos < len(values) else None

    # ---- staged evaluation ---------------------------------------------------------------------------------
    def evaluate_one(self, plan, digest: str, extras=None) -> dict:
        ev = self.ev
        feats, info = [], {"sampling_s": 0.0, "features_s": 0.0, "distance_s": 0.0, "io_s": 0.0,
                           "unet_image_steps": 0}
        lo, value, screened, resumed = 0, math.inf, 0, None
        from flexiffusion.threads import num_threads

        with num_threads(ev.setting.threads):
            for i, hi in enumerate(self.stages):
                t0 = time.perf_counter()
                images, got = ev.images(plan, extras, True, lo, hi)
                t1 = time.perf_counter()
                feats.append(torch.as_tensor(ev.features(images)))
                t2 = time.perf_counter()
                x = torch.cat(feats)
                value = self.value(x, hi)
                t3 = time.perf_counter()
                resumed = got["resumed_at"] if resumed is None else resumed
                info["sampling_s"] += t1 - t0 - got["io_s"]
                info["io_s"] += got["io_s"]
                info["features_s"] += t2 - t1
                info["distance_s"] += t3 - t2
                info["unet_image_steps"] += got["unet_image_steps"]
                lo = hi
                if hi < self.n:
                    limit = self.threshold(hi)
                    if limit is not None and _log(value) > _log(limit) + self.config.margin(hi):
                        screened = 1
                        self.stopped[i] += 1
                        break
            else:
                self.stopped[-1] += 1
        self._features[digest] = x
        self.cache.save(FEATURES_STAGE, self._feature_key(digest), x)
        if not screened:
            self.members.append(digest)   # a full evaluation of this round: compared with from now on
        return {"fitness": value, "rfid": value, "screened": screened, "n_images_used": lo, "nfe": plan.nfe,
                "resumed_at": resumed or 0, **info}


def _log(v: float) -> float:
    return math.log(max(float(v), 1e-12))
