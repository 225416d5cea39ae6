"""Memory of a row's sampling: the peak over a block of work, and the bytes the step engine's feature cache holds.

* :class:`PeakMemory` -- the peak over a ``with`` block.  On CUDA: ``torch.cuda.max_memory_allocated`` of the
  device, its peak statistics reset at the start: the most bytes PyTorch's allocator held in tensors at once
  (weights, activations, latents, the engine's cache; not the allocator's reserved but unused blocks, not other
  processes), what cache-dit and pruna report.  On the CPU PyTorch keeps no such statistics (and ``tracemalloc``
  sees no tensor storage), so the measure is the **process's peak resident set size** (Linux ``VmHWM`` of
  ``/proc/self/status``, reset at the start by writing 5 to ``/proc/self/clear_refs``): everything resident at once,
  the interpreter, libraries, weights and the allocator's retained free memory included.  It compares rows of one
  process and setting, not one method's own bytes.  Where the reset is not possible (not Linux) the peak is None
  and :attr:`PeakMemory.missing` says why.
* :class:`CacheProbe` -- the most bytes the step engine's cache held at once during a block (read after every
  U-Net call, all cache contexts of classifier-free guidance together, each tensor storage once): the deep features
  full steps keep for partial steps (DeepCache's cache).  The sampler's held model output of null steps is not
  counted (one output per image, whatever the plan).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from flexiffusion.engine import attached_engine

MIB = 2 ** 20
KIB = 2 ** 10
CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RSS_MISSING = "needs Linux /proc/self/clear_refs"   # what a row stores when the CPU peak cannot be measured


def _status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), flags=re.M)
    if match is None:
        raise OSError(f"{STATUS} has no {field}")
    return int(match.group(1))


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.peak_bytes`` (None when not measurable: ``missing``),
    ``peak.start_bytes`` (the same measure when the block began) and ``peak.measure`` (what was read)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.peak_bytes: int | None = None
        self.start_bytes: int | None = None
        self.missing = ""

    @property
    def measure(self) -> str:
        return "cuda max_memory_allocated" if self.cuda else "process peak RSS (VmHWM)"

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return self
        try:
            CLEAR_REFS.write_text("5")           # VmHWM := VmRSS (Linux >= 4.0)
            self.start_bytes = _status_kib("VmRSS") * KIB
        except OSError:
            self.missing = RSS_MISSING
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        elif not self.missing:
            try:
                self.peak_bytes = _status_kib("VmHWM") * KIB
            except OSError:
                self.missing = RSS_MISSING

    def record(self) -> dict:
        """What was measured, for a row's ``extra``."""
        return {"measure": self.measure, "device": str(self.device), "peak_bytes": self.peak_bytes,
                "start_bytes": self.start_bytes, **({"missing": self.missing} if self.missing else {})}


class CacheProbe:
    """``with CacheProbe(unet) as probe: ...`` then ``probe.max_bytes``: the most bytes the step engine attached to
    ``unet`` held in its cache after any U-Net call of the block (0 when no call kept features)."""

    def __init__(self, unet: torch.nn.Module):
        self.unet = unet
        self.max_bytes = 0
        self.calls = 0
        self._handle = None

    def _after(self, module, args, output) -> None:
        self.calls += 1
        engine = attached_engine(self.unet)
        if engine is not None:
            self.max_bytes = max(self.max_bytes, engine.cache_nbytes())

    def __enter__(self) -> "CacheProbe":
        self._handle = self.unet.register_forward_hook(self._after)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
