"""The suite's one on-disk cache of expensive results, keyed by what produced them: rFID teacher images, features and
FID statistics (:mod:`bench.quality`), MACs tables (:mod:`bench.cost.macs`).

An entry lives at ``ROOT/STAGE/LABEL-HASH.EXT``: a readable label plus a hash of its key (a JSON-able dict), e.g.
``stats-fid/digits-train-digits-cnn-1437-3f2a9c1d0b7e4a21.pt`` or ``macs/embedded-5b0c...json``.  The key is stored
beside the value and compared on every read (a hash collision, a hand-copied or stale file is a miss); an unreadable
entry is a miss too.  Values are ``torch.save`` files (``fmt="pt"``) or JSON (``fmt="json"``, for entries people
read).  Writes are atomic (:mod:`flexiffusion.io`), so an interrupted run never leaves a half-written entry.  ROOT is
``$FLEXBENCH_CACHE`` or ``~/.cache/flexiffusion-bench``; nothing is created until the first write.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

ENV_VAR = "FLEXBENCH_CACHE"
DEFAULT_DIR = "~/.cache/flexiffusion-bench"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache root: ``path`` if given, else ``$FLEXBENCH_CACHE``, else ``~/.cache/flexiffusion-bench``."""
    return Path(os.path.expanduser(str(path or os.environ.get(ENV_VAR) or DEFAULT_DIR)))


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able object, independent of dict order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def _update(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def tensor_hash(t: torch.Tensor, length: int = 16) -> str:
    """Content hash of a tensor: dtype, shape and bytes."""
    h = hashlib.sha256()
    _update(h, t)
    return h.hexdigest()[:length]


def module_fingerprint(module: torch.nn.Module, sample: int | None = None) -> str:
    """Hash of a module's state (names, shapes, dtypes, values).  With ``sample``, only the first and last
    ``sample`` values of each tensor are hashed: hashing every byte of an 860M-parameter U-Net on every run would
    cost seconds, and retrained weights differ there too."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}".encode())
        flat = t.flatten()
        for part in ((flat,) if sample is None else (flat[:sample], flat[-sample:])):
            _update(h, part)
    return h.hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))[:80]


FORMATS = ("pt", "json")


class Cache:
    """A directory of keyed results; ``get_or_compute(stage, key, fn)`` computes on a miss and saves atomically."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = cache_dir(root)
        self.enabled = enabled

    def path(self, stage: str, key: dict, label: str = "", fmt: str = "pt") -> Path:
        if fmt not in FORMATS:
            raise ValueError(f"unknown cache format {fmt!r}: one of {', '.join(FORMATS)}")
        name = f"{_slug(label)}-{stable_hash(key)}" if label else stable_hash(key)
        return self.root / _slug(stage) / f"{name}.{fmt}"

    def load(self, stage: str, key: dict, label: str = "", fmt: str = "pt") -> Any | None:
        """The stored value, or None when absent, unreadable or stored under another key."""
        if not self.enabled:
            return None
        p = self.path(stage, key, label, fmt)
        if not p.is_file():
            return None
        try:
            entry = (json.loads(p.read_text()) if fmt == "json"
                     else torch.load(p, map_location="cpu", weights_only=False))
        except Exception:  # a truncated or foreign file is a miss, measured again and overwritten
            return None
        if not isinstance(entry, dict) or entry.get("key") != _jsonable(key):
            return None
        return entry.get("value")

    def save(self, stage: str, key: dict, value: Any, label: str = "", fmt: str = "pt") -> None:
        if not self.enabled:
            return
        from flexiffusion.io import atomic_write, atomic_write_json

        p = self.path(stage, key, label, fmt)
        entry = {"key": _jsonable(key), "value": value}
        if fmt == "json":
            atomic_write_json(p, entry, indent=1)
        else:
            atomic_write(p, lambda tmp: torch.save(entry, tmp))

    def get_or_compute(self, stage: str, key: dict, fn: Callable[[], Any], label: str = "", fmt: str = "pt") -> Any:
        value = self.load(stage, key, label, fmt)
        if value is None:
            value = fn()
            self.save(stage, key, value, label, fmt)
        return value


def _jsonable(key: dict):
    return json.loads(json.dumps(key, sort_keys=True, default=str))
