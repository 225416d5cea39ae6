"""Short content hashes of what a sampler state depends on: a model's weights, noise, conditions.

:func:`model_fingerprint` hashes each parameter's and buffer's name, shape, dtype and ``sample`` evenly spaced
values (first and last included): cheap enough to call on every sampler run of an 860M-parameter U-Net, and any
retraining or other checkpoint changes those values.  It is remembered per module until a tensor is replaced or
modified in place (torch's version counter).
"""
from __future__ import annotations

import hashlib
import weakref

import torch

_REMEMBERED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _update(h, obj) -> None:
    """Feed a nested structure (tensors, dicts, lists, scalars) into hash ``h``, types and shapes included."""
    if isinstance(obj, torch.Tensor):
        h.update(f"T{tuple(obj.shape)}{obj.dtype}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k in sorted(obj, key=str):
            h.update(repr(k).encode())
            _update(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _update(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def digest(obj) -> str:
    """Hash of a tensor or a nested structure of tensors and plain values (exact: every byte counts)."""
    h = hashlib.sha256()
    _update(h, obj)
    return h.hexdigest()[:16]


def model_fingerprint(module: torch.nn.Module, sample: int = 64) -> str:
    """Hash of a module's weights from names, shapes, dtypes and ``sample`` values per tensor (see module doc)."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    versions = tuple((name, t.data_ptr(), t._version) for name, t in tensors) + (sample,)
    remembered = _REMEMBERED.get(module)
    if remembered is not None and remembered[0] == versions:
        return remembered[1]
    h = hashlib.sha256()
    for name, t in tensors:
        flat = t.detach().reshape(-1)
        if flat.numel() > sample:
            # float32 linspace can round the last index up to numel() for tensors above 2**24 values (SD's U-Net
            # has 29.5 M in one tensor): clamped, so smaller tensors keep exactly the indices they always had
            index = torch.linspace(0, flat.numel() - 1, sample, device=flat.device).long().clamp_(max=flat.numel() - 1)
            flat = flat[index]
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(_tensor_bytes(flat))
    fingerprint = h.hexdigest()[:16]
    _REMEMBERED[module] = (versions, fingerprint)
    return fingerprint
