"""Fréchet distance against fixed reference statistics (the teacher's or real data's), fast for many candidates.

FID = |mu_c - mu_r|^2 + tr(S_c) + tr(S_r) - 2 tr sqrt(S_c S_r).  The eigenvalues of S_c S_r equal those of
R S_c R with R = S_r^(1/2) (similar matrices), and R S_c R is symmetric positive semi-definite: so the square root
of the reference covariance is computed once (symmetric eigensolver), and each candidate costs two matrix products
and one symmetric eigenvalue problem (``numpy.linalg.eigvalsh``) instead of torch-fidelity's non-symmetric
``eigvals`` of S_c S_r (seconds per candidate for 2048-d Inception features).  Eigenvalues below zero are float64
round-off of a singular covariance and count as zero, as the real part of torch-fidelity's complex square root does.

From the candidate's features ``X`` (n x d) it is cheaper still: with ``Y = (X - mean) R / sqrt(n - 1)``,
``R S_c R = Y^T Y``, whose non-zero eigenvalues are those of the n x n matrix ``Y Y^T``: one n x d x d product and
an eigenproblem of size min(n, d), no covariance of the candidate at all.
"""
from __future__ import annotations

import numpy as np


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


class FixedReferenceFID:
    """FID of candidate statistics ``{"mu", "sigma"}`` (float64) against one fixed reference."""

    def __init__(self, reference: dict):
        self.mu = np.asarray(reference["mu"], dtype=np.float64)
        sigma = np.asarray(reference["sigma"], dtype=np.float64)
        self.root = psd_sqrt(sigma)
        self.trace = float(np.trace(sigma))

    def __call__(self, stats: dict) -> float:
        mu, sigma = np.asarray(stats["mu"], dtype=np.float64), np.asarray(stats["sigma"], dtype=np.float64)
        if mu.shape != self.mu.shape:
            raise ValueError(f"feature dimension {mu.shape} differs from the reference's {self.mu.shape}")
        m = self.root @ sigma @ self.root
        w = np.linalg.eigvalsh((m + m.T) / 2)
        tr_covmean = float(np.sqrt(np.clip(w, 0, None)).sum())
        diff = mu - self.mu
        return float(diff @ diff + np.trace(sigma) + self.trace - 2 * tr_covmean)

    def from_features(self, features) -> float:
        """FID of the candidate's ``(n, d)`` features (any array or tensor) against the reference."""
        x = np.asarray(features, dtype=np.float64)
        n, d = x.shape
        if d != self.mu.shape[0]:
            raise ValueError(f"feature dimension {d} differs from the reference's {self.mu.shape[0]}")
        mu = x.mean(axis=0)
        centred = x - mu
        y = centred @ self.root / np.sqrt(n - 1)
        w = np.linalg.eigvalsh(y @ y.T if n < d else y.T @ y)
        tr_covmean = float(np.sqrt(np.clip(w, 0, None)).sum())
        diff = mu - self.mu
        return float(diff @ diff + (centred * centred).sum() / (n - 1) + self.trace - 2 * tr_covmean)
