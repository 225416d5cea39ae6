"""On-disk cache of expensive stages (images -> features -> statistics), keyed by what produced them.

Each entry is one ``.pt`` file whose name is a readable prefix plus a hash of its key (a JSON-able dict), e.g.
``stats-fid/digits-train-digits-cnn-1437-3f2a9c1d0b7e4a21.pt``.  Writes are atomic (temporary file in the same
directory, then ``os.replace``), so an interrupted run never leaves a half-written entry behind.  The directory is
``$FLEXBENCH_CACHE`` or ``~/.cache/flexiffusion-bench``; nothing is created until the first write.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
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


class Cache:
    """A directory of stage results; ``get_or_compute(stage, key, fn)`` computes on a miss and saves atomically."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True):
        self.root = cache_dir(root)
        self.enabled = enabled

    def path(self, stage: str, key: dict, label: str = "") -> Path:
        name = f"{_slug(label)}-{stable_hash(key)}.pt" if label else f"{stable_hash(key)}.pt"
        return self.root / _slug(stage) / name

    def load(self, stage: str, key: dict, label: str = "") -> Any | None:
        if not self.enabled:
            return None
        p = self.path(stage, key, label)
        if not p.is_file():
            return None
        entry = torch.load(p, map_location="cpu", weights_only=False)
        # The key is stored beside the value: a hash collision or a hand-copied file is caught here.
        return entry["value"] if entry.get("key") == json.loads(json.dumps(key, default=str)) else None

    def save(self, stage: str, key: dict, value: Any, label: str = "") -> None:
        if not self.enabled:
            return
        p = self.path(stage, key, label)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save({"key": json.loads(json.dumps(key, default=str)), "value": value}, f)
            os.replace(tmp, p)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def get_or_compute(self, stage: str, key: dict, fn: Callable[[], Any], label: str = "") -> Any:
        value = self.load(stage, key, label)
        if value is None:
            value = fn()
            self.save(stage, key, value, label)
        return value
