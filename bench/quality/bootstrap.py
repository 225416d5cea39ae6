"""Bootstrap spread of FID (and of per-image means: :func:`bootstrap_mean`) over images (Efron's bootstrap, normal
interval).

A quality figure on a few hundred images is noisy: :func:`bootstrap_fid` resamples the candidate's image features
with replacement ``B`` times (the reference's too, unless ``resample_reference=False``), recomputes FID each time
and reports the replicates' standard deviation and the normal bootstrap interval ``v -/+ z sd`` at ``level``.
Not the percentile or basic interval: a resample repeats images, which shrinks its covariance's effective sample
size (about 63 % distinct images) and biases FID upward, by far more than its spread when the number of images is
near the feature dimension; the percentile interval then lies wholly above the value and the basic one wholly below
(both seen on the embedded model at 200 images, 128-d features).  The sd is less affected, and the paired
difference of :func:`bootstrap_difference` (two methods sampled from the *same seeds*, the same resampled indices
for both) cancels most of the bias: a difference is called significant only when its interval excludes 0.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


DEFAULT_B = 200
DEFAULT_LEVEL = 0.95


def _fid(x: np.ndarray, y: np.ndarray) -> float:
    from .fidelity import fid_from_statistics

    stats = lambda f: {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)}
    return fid_from_statistics(stats(x), stats(y))


@dataclass(frozen=True)
class Spread:
    """A point value with its normal bootstrap interval and the replicates' standard deviation."""

    value: float
    low: float
    high: float
    sd: float
    b: int
    level: float

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def significant(self) -> bool:
        """For a difference: the interval excludes 0."""
        return self.low > 0 or self.high < 0


def normal_interval(value: float, sd: float, level: float = DEFAULT_LEVEL) -> tuple[float, float]:
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    return value - z * sd, value + z * sd


def _interval(value: float, samples: np.ndarray, b: int, level: float) -> Spread:
    sd = float(samples.std(ddof=1))
    low, high = normal_interval(value, sd, level)
    return Spread(float(value), float(low), float(high), sd, b, level)


def _check(b: int, level: float) -> None:
    if b < 2 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs B >= 2 and 0 < level < 1, got B={b}, level={level}")


def bootstrap_mean(values, b: int = DEFAULT_B, level: float = DEFAULT_LEVEL, seed: int = 0) -> Spread:
    """The mean of per-image values (e.g. each image's PSNR against the teacher's) with its bootstrap interval over
    images: ``B`` resamples of the values with replacement, normal interval.  The values must be finite (a mean
    with an inf in it has no interval)."""
    _check(b, level)
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"bootstrap of a mean needs a non-empty 1-d array of values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap of a mean needs finite values (an inf or NaN mean has no interval)")
    rng = np.random.default_rng(seed)
    samples = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(b)])
    return _interval(float(x.mean()), samples, b, level)


def bootstrap_fid(features, reference, b: int = DEFAULT_B, level: float = DEFAULT_LEVEL, seed: int = 0,
                  resample_reference: bool = True) -> Spread:
    """FID of ``features`` (n, d) against ``reference`` (m, d) with its bootstrap interval over images."""
    _check(b, level)
    x, y = np.asarray(features, np.float64), np.asarray(reference, np.float64)
    rng = np.random.default_rng(seed)
    samples = np.empty(b)
    for i in range(b):
        xi = x[rng.integers(0, len(x), len(x))]
        yi = y[rng.integers(0, len(y), len(y))] if resample_reference else y
        samples[i] = _fid(xi, yi)
    return _interval(_fid(x, y), samples, b, level)


def bootstrap_fid_statistics(features, reference: dict, b: int = DEFAULT_B, level: float = DEFAULT_LEVEL,
                             seed: int = 0) -> Spread:
    """FID of ``features`` (n, d) against fixed reference statistics ``{"mu", "sigma"}`` (a statistics file) with
    its bootstrap interval over the *generated* images only: the real images are not there to resample, so the
    spread leaves out the reference's own sampling noise (it is narrower than :func:`bootstrap_fid`'s)."""
    from .fidelity import fid_from_statistics

    _check(b, level)
    x = np.asarray(features, np.float64)
    ref = {"mu": np.asarray(reference["mu"], np.float64), "sigma": np.asarray(reference["sigma"], np.float64)}
    stats = lambda f: {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)}
    rng = np.random.default_rng(seed)
    samples = np.array([fid_from_statistics(stats(x[rng.integers(0, len(x), len(x))]), ref) for _ in range(b)])
    return _interval(fid_from_statistics(stats(x), ref), samples, b, level)


def bootstrap_difference(features_a, features_b, reference, b: int = DEFAULT_B, level: float = DEFAULT_LEVEL,
                         seed: int = 0, resample_reference: bool = True) -> Spread:
    """FID(a) - FID(b) with a paired bootstrap interval (a and b sampled from the same seeds, same length)."""
    _check(b, level)
    xa, xb, y = (np.asarray(f, np.float64) for f in (features_a, features_b, reference))
    if len(xa) != len(xb):
        raise ValueError(f"a paired bootstrap needs image sets of the same seeds: {len(xa)} vs {len(xb)} images")
    rng = np.random.default_rng(seed)
    samples = np.empty(b)
    for i in range(b):
        idx = rng.integers(0, len(xa), len(xa))
        yi = y[rng.integers(0, len(y), len(y))] if resample_reference else y
        samples[i] = _fid(xa[idx], yi) - _fid(xb[idx], yi)
    return _interval(_fid(xa, y) - _fid(xb, y), samples, b, level)
