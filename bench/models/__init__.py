"""Models the harness runs: one :class:`ModelBundle` per model, loaded by kind from local files only."""
from .bundle import ModelBundle, weights_identity
from .loading import LOADERS, load_model

__all__ = ["ModelBundle", "LOADERS", "load_model", "weights_identity"]
