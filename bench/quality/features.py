"""Features and FID statistics of one image set, computed lazily and cached under keys of what produced them.

The stages are torch-fidelity's: images -> features (per layer) -> statistics (mu, sigma) -> metric.  A
:class:`FeatureSet` with a ``source`` label is cached on disk (reference data, the rFID teacher) under
``{source, extractor, fingerprint, n_images, content hash}`` (+ layer); one without is computed in memory only
(candidates, evaluated once).  FID statistics are float64 so that a cached statistic and a fresh one agree exactly.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from bench.cache import Cache

from .extractors import Extractor
from .images import ImageSet


def fid_statistics(features: torch.Tensor) -> dict[str, np.ndarray]:
    """Mean and covariance of ``(n, d)`` features, float64 (torch-fidelity's ``fid_features_to_statistics``)."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    n, d = features.shape
    if n <= d:
        warnings.warn(
            f"FID statistics of {n} images in {d} feature dimensions: the covariance is singular (rank <= {n - 1}) "
            f"and FID is biased; use more than {d} images (the paper uses 1000 for rFID)",
            stacklevel=3,
        )
    return fid_features_to_statistics(features.double())


class FeatureSet:
    """Features of ``images`` by ``extractor`` for ``layers``; ``features(layer)`` and ``statistics(layer)``."""

    def __init__(self, images: ImageSet, extractor: Extractor, layers, *, source: str | None = None,
                 cache: Cache | None = None, batch_size: int = 64):
        self.images, self.extractor, self.batch_size = images, extractor, batch_size
        self.layers = tuple(sorted(set(layers)))
        self.n = images.n
        self.source = source
        self.cache = cache if (cache is not None and source is not None) else None
        self._features: dict[str, torch.Tensor] | None = None
        self._stats: dict[str, dict] = {}

    def key(self, layer: str) -> dict:
        return {"source": self.source, "extractor": self.extractor.name, "fingerprint": self.extractor.fingerprint,
                "layer": layer, "n_images": self.n, "content": self.images.key}

    def _label(self, layer: str) -> str:
        return f"{self.source}-{self.extractor.name}-{layer}-{self.n}"

    def _load_or_extract(self) -> dict[str, torch.Tensor]:
        if self._features is None:
            cached = {}
            if self.cache is not None:
                cached = {l: self.cache.load("features", self.key(l), self._label(l)) for l in self.layers}
            if self.cache is None or any(v is None for v in cached.values()):
                cached = self.extractor.extract(self.images, self.images.shape[0], self.layers, self.batch_size)
                if self.cache is not None:
                    for l in self.layers:
                        self.cache.save("features", self.key(l), cached[l], self._label(l))
            self._features = cached
        return self._features

    def features(self, layer: str) -> torch.Tensor:
        return self._load_or_extract()[layer]

    def statistics(self, layer: str) -> dict[str, np.ndarray]:
        if layer not in self._stats:
            compute = lambda: fid_statistics(self.features(layer))
            if self.cache is None:
                self._stats[layer] = compute()
            else:
                self._stats[layer] = self.cache.get_or_compute("stats-fid", self.key(layer), compute, self._label(layer))
        return self._stats[layer]
