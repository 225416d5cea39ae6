"""Bootstrap spread of FID (bench.quality.bootstrap) on synthetic Gaussians with a known Fréchet distance."""
import numpy as np
import pytest

from bench.quality.bootstrap import bootstrap_difference, bootstrap_fid

D, N = 4, 400


def _gauss(shift: float, seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)) + shift / np.sqrt(D)   # |mean|^2 = shift^2


def test_interval_covers_the_known_distance_and_has_a_sane_width():
    # N(0, I) vs N(m, I), |m|^2 = 1: the true FID is exactly 1 (equal covariances).
    s = bootstrap_fid(_gauss(0, 1), _gauss(1.0, 2), b=100, seed=0)
    assert s.low < 1.0 < s.high
    assert 0.05 < s.high - s.low < 1.5          # sd of FID at n=400, d=4 is ~0.15: interval ~0.6 wide
    assert s.low <= s.value <= s.high and s.sd > 0 and s.b == 100 and s.level == 0.95


def test_equal_distributions_are_not_significantly_different():
    ref = _gauss(1.0, 3)
    d = bootstrap_difference(_gauss(0, 4), _gauss(0, 5), ref, b=100)
    assert not d.significant and d.low < 0 < d.high


def test_a_real_gap_is_significant_with_the_right_sign():
    ref = _gauss(0, 3)
    d = bootstrap_difference(_gauss(1.5, 4), _gauss(0, 5), ref, b=100)   # true FID 2.25 vs 0
    assert d.significant and d.low > 1.0 and abs(d.value - 2.25) < 0.8


def test_unpaired_sets_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        bootstrap_difference(_gauss(0, 1, 10), _gauss(0, 2, 11), _gauss(0, 3), b=5)
