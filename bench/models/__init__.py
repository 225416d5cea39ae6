"""Models the harness runs: one :class:`ModelBundle` per model, loaded from local files only.

``load_model(name, weights)`` takes a name of the model vocabulary (:mod:`.catalog`: ``ddpm-cifar10``, ``ldm-4-g``,
``sd-v1.5``, ``embedded``, tiny stand-ins, ...) or a loader kind of :data:`LOADERS` (``ddpm``, ``ldm``, ``sd``)."""
from .bundle import ModelBundle, weights_identity
from .loading import LOADERS
from .loading import load_model as _load


def load_model(name: str, path: str | None = None, device="cpu", dtype=None):
    """The bundle of a model name or loader kind (a model name's default weights when ``path`` is None)."""
    import torch

    from .catalog import MODELS, get_model

    if name in MODELS:
        entry = get_model(name)
        name, path = entry.loader, path if path is not None or entry.shipped else entry.default_weights
    elif name not in LOADERS:
        get_model(name)   # one line naming the vocabulary
    return _load(name, path, device=device, dtype=dtype or torch.float32)


__all__ = ["ModelBundle", "LOADERS", "load_model", "weights_identity"]
