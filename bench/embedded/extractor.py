"""torch-fidelity feature extractor "digits-cnn": the embedded digit classifier as a domain feature extractor.

Features: ``"features"`` (128-d penultimate activations, after ReLU) for FID / KID / precision-recall, and
``"logits_unbiased"`` (the 10 class logits) for the Inception Score.  Input, as torch-fidelity hands it over: uint8
NCHW.  Single-channel 16x16 is native; 3-channel input is averaged to grey and other sizes are resized (bilinear,
antialiased) to 16x16, so image folders of saved PNGs work too.  Weights: the shipped
``bench/embedded/weights/classifier.safetensors`` (offline), or ``feature_extractor_weights_path``.

Registration happens on import; :func:`ensure_registered` is the idempotent way to ask for it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert

from bench.embedded.classifier import load_classifier_weights
from bench.embedded.data import RESOLUTION

NAME = "digits-cnn"


class FeatureExtractorDigitsCNN(FeatureExtractorBase):
    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            from bench.embedded.loader import load_classifier

            self.model = load_classifier()
        else:
            self.model = load_classifier_weights(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        vassert(x.dim() == 4 and x.shape[1] in (1, 3), f"Input is not Bx1xHxW or Bx3xHxW: {tuple(x.shape)}")
        x = x.to(torch.float32)
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if tuple(x.shape[-2:]) != (RESOLUTION, RESOLUTION):
            x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False, antialias=True)
        x = x / 127.5 - 1.0
        features, logits = self.model.features_and_logits(x)
        out = {"features": features, "logits_unbiased": logits}
        return tuple(out[name].to(torch.float32) for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits_unbiased"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, RESOLUTION, RESOLUTION, dtype=torch.uint8)


def ensure_registered() -> str:
    """Register "digits-cnn" with torch-fidelity unless it already is; returns the name."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if NAME not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(NAME, FeatureExtractorDigitsCNN)
    return NAME


ensure_registered()
