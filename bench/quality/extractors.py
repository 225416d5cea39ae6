"""Feature extractors: any torch-fidelity registered name, plus what we know about the ones we ship or require.

``inception-v3-compat`` (standard FID) needs a local weights file, never a download: torch-fidelity's
``weights-inception-2015-12-05-6726825d.pth`` or pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the same
TF-2015-12-05 conversion, identical parameter names and shapes).  ``digits-cnn`` is the embedded domain extractor,
registered with torch-fidelity by importing ``bench.embedded.extractor``; it is the default here.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from bench.cache import cache_dir, module_fingerprint
from flexiffusion.errors import UserError

DEFAULT_EXTRACTOR = "digits-cnn"
INCEPTION_WEIGHTS = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
METRICS_WITH_LAYER = ("fid", "kid", "prc", "isc")


@dataclass(frozen=True)
class ExtractorSpec:
    """What the harness knows about an extractor beyond torch-fidelity's registry."""

    in_channels: int | None = None  # 3: single-channel images are repeated to RGB; None: passed unchanged
    weights_files: tuple[str, ...] = ()  # one of these must exist locally (no downloads)
    module: str | None = None  # importing it registers the extractor with torch-fidelity
    fid_layer: str | None = None  # its FID layer and that layer's feature dimension, known without building it
    fid_dim: int | None = None    # (bench.quality.reference checks statistics files against them; tested)


KNOWN_EXTRACTORS: dict[str, ExtractorSpec] = {
    "inception-v3-compat": ExtractorSpec(in_channels=3, weights_files=INCEPTION_WEIGHTS, fid_layer="2048",
                                         fid_dim=2048),
    "digits-cnn": ExtractorSpec(module="bench.embedded.extractor", fid_layer="features",
                                fid_dim=128),  # takes 1 or 3 channels itself
}


def _registry() -> dict:
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    return FEATURE_EXTRACTORS_REGISTRY


def available_extractors() -> list[str]:
    return sorted(set(_registry()) | set(KNOWN_EXTRACTORS))


def weights_search_paths(filename: str) -> list[Path]:
    """Where a weights file is looked for: the bench cache's ``weights/`` and torch hub's ``checkpoints/``."""
    return [cache_dir() / "weights" / filename, Path(torch.hub.get_dir()) / "checkpoints" / filename]


def find_weights(name: str, weights_path: str | os.PathLike | None = None) -> str | None:
    """The local weights file of extractor ``name`` (None if it needs none); UserError if required and missing."""
    spec = KNOWN_EXTRACTORS.get(name, ExtractorSpec())
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise UserError(f"feature extractor {name!r}: weights file {weights_path} does not exist")
        return str(weights_path)
    for filename in spec.weights_files:
        for p in weights_search_paths(filename):
            if p.is_file():
                return str(p)
    if spec.weights_files:
        where = " or ".join(str(p) for p in weights_search_paths(spec.weights_files[0]))
        raise UserError(
            f"feature extractor {name!r} needs its weights file {spec.weights_files[0]} (or "
            f"{', '.join(spec.weights_files[1:])}), which is not available offline: put it at {where}, or pass its "
            f"path (--extractor-weights / weights_path=); or use the embedded extractor {DEFAULT_EXTRACTOR!r}"
        )
    return None


class _RepeatToRGB(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.base[i].expand(3, -1, -1).contiguous()


class Extractor:
    """A resolved extractor: torch-fidelity modules per layer set, local weights, device, and a fingerprint."""

    def __init__(self, name: str = DEFAULT_EXTRACTOR, weights_path=None, cuda: bool | None = None):
        spec = KNOWN_EXTRACTORS.get(name)
        if spec and spec.module and name not in _registry():
            try:
                importlib.import_module(spec.module)
            except ModuleNotFoundError as exc:
                raise UserError(f"feature extractor {name!r} is provided by {spec.module}, not importable: {exc}")
        if name not in _registry():
            raise UserError(f"unknown feature extractor {name!r}; valid: {', '.join(available_extractors())}")
        self.name = name
        self.spec = spec or ExtractorSpec()
        self.weights_path = find_weights(name, weights_path)
        self.cuda = torch.cuda.is_available() if cuda is None else bool(cuda)
        self._modules: dict[tuple[str, ...], torch.nn.Module] = {}
        self._fingerprint: str | None = None

    def layer_for(self, metric: str) -> str | None:
        """torch-fidelity's default layer of this extractor for ``metric`` (None if it provides none)."""
        try:
            return _registry()[self.name].get_default_feature_layer_for_metric(metric)
        except (NotImplementedError, KeyError, ValueError):
            return None

    def module(self, layers: tuple[str, ...]) -> torch.nn.Module:
        if layers not in self._modules:
            from torch_fidelity.utils import create_feature_extractor

            kwargs = {"feature_extractor_weights_path": self.weights_path} if self.weights_path else {}
            self._modules[layers] = create_feature_extractor(self.name, list(layers), cuda=self.cuda,
                                                             verbose=False, **kwargs)
        return self._modules[layers]

    @property
    def fingerprint(self) -> str:
        """Hash of the extractor's parameters and buffers: a retrained extractor never hits old cache entries."""
        if self._fingerprint is None:
            module = next(iter(self._modules.values()), None) or self.module(self.default_layers())
            self._fingerprint = module_fingerprint(module)
        return self._fingerprint

    def default_layers(self) -> tuple[str, ...]:
        """The distinct default layers of all metrics (the layer set a full fidelity run extracts)."""
        layers = dict.fromkeys(l for m in METRICS_WITH_LAYER if (l := self.layer_for(m)) is not None)
        return tuple(layers) or (_registry()[self.name].get_provided_features_list()[0],)

    def adapt(self, images, channels: int) -> Dataset:
        """The images as this extractor consumes them (grayscale repeated to RGB where it wants 3 channels)."""
        want = self.spec.in_channels
        if want is None or want == channels:
            return images
        if want == 3 and channels == 1:
            return _RepeatToRGB(images)
        raise UserError(f"feature extractor {self.name!r} takes {want}-channel images, got {channels} channels")

    @torch.no_grad()
    def extract(self, images, channels: int, layers: tuple[str, ...], batch_size: int = 64) -> dict[str, torch.Tensor]:
        """Features ``{layer: (n, d) float32}`` of a Dataset of uint8 CHW images, via torch-fidelity's loop."""
        from torch_fidelity.utils import get_featuresdict_from_dataset

        return get_featuresdict_from_dataset(self.adapt(images, channels), self.module(tuple(layers)),
                                             batch_size, self.cuda, True, False)
