"""Stand-ins for the quality tests: a tiny torch-fidelity feature extractor and helpers (no weights, no network)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

NAME = "test-proj"
FEATURE_DIM = 12


class ProjectionExtractor(FeatureExtractorBase):
    """Fixed random projection of 4x4-pooled images: a 12-d "feat" layer (FID/KID/PRC) and 10 "logits" (IS)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(16, FEATURE_DIM, generator=g))
        self.register_buffer("head", torch.randn(FEATURE_DIM, 10, generator=g))

    @staticmethod
    def get_provided_features_list():
        return ("feat", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "feat", "kid": "feat", "prc": "feat"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        assert x.dtype == torch.uint8
        h = F.adaptive_avg_pool2d(x.float() / 255.0, 4).mean(1).flatten(1)  # (n, 16)
        feat = torch.tanh(h @ self.w)
        out = {"feat": feat, "logits": 3 * feat @ self.head}
        return tuple(out[k] for k in self.features_list)


def register() -> str:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(NAME, ProjectionExtractor)
    return NAME


def random_images(n: int, seed: int, shape=(1, 16, 16), low: int = 0, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, *shape), generator=g, dtype=torch.uint8)
