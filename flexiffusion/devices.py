"""Devices: the one parser of a ``--device`` name, the synchronisation a timer needs, and what a result records.

The suite runs on the CPU and on CUDA only.  :func:`resolve_device` turns ``auto`` / ``cpu`` / ``cuda`` /
``cuda:N`` into a :class:`torch.device` or refuses with one :class:`~flexiffusion.errors.UserError` line that names
the fix; :func:`synchronize` waits for the device's queued work (a no-op on the CPU, whose kernels are synchronous),
so that a wall-clock timer started or stopped after it measures the work and not its launch.
:func:`strict_float32` switches TF32 off for a block (CUDA float32 matmuls and convolutions otherwise round their
inputs to 10 mantissa bits on Ampere and later, which a CPU-vs-CUDA parity check must not compare against).

Random numbers never depend on the device: every seeded draw of the suite is made by CPU generators and moved
afterwards (:mod:`flexiffusion.seeds`).
"""
from __future__ import annotations

import contextlib

import torch

from .errors import UserError

SUPPORTED = ("cpu", "cuda")


def _plural(n: int) -> str:
    return f"{n} CUDA device" + ("" if n == 1 else "s")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device of a ``--device`` value: ``auto`` (CUDA if available, else the CPU), ``cpu``, ``cuda`` (the current
    CUDA device, with its index) or ``cuda:N``.  One-line UserError for an unparsable name, a device type the suite
    does not run on (mps, xpu, meta, ...), CUDA without CUDA here, or a CUDA index this machine does not have."""
    if isinstance(name, torch.device):
        text = str(name)
    else:
        text = str(name).strip().lower()
    if text == "auto":
        return resolve_device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in SUPPORTED:
        raise UserError(f"device {name!r} is not supported: flexbench runs on cpu or cuda (use --device cpu)")
    if device.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available here: use --device cpu")
    count = torch.cuda.device_count()
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.index >= count:
        valid = "cuda:0" if count == 1 else f"cuda:0 .. cuda:{count - 1}"
        raise UserError(f"{text} requested, this machine has {_plural(count)}: use {valid}")
    return device


def synchronize(device: str | torch.device) -> None:
    """Wait until ``device`` has finished its queued work (CUDA); a no-op on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: str | torch.device) -> str:
    """The accelerator's name (``torch.cuda.get_device_name``) or the CPU's."""
    import platform

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def describe(device: str | torch.device) -> dict:
    """What a timing or parity result records about its device: name and, on CUDA, capability, memory, the CUDA and
    cuDNN versions and whether TF32 was allowed (float32 matmuls / convolutions)."""
    device = torch.device(device)
    out = {"device": str(device), "device_name": device_name(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update({"cuda_capability": f"{props.major}.{props.minor}",
                    "cuda_memory_gib": round(props.total_memory / 2 ** 30, 1),
                    "cuda_version": torch.version.cuda, "cudnn_version": torch.backends.cudnn.version(),
                    "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                    "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)})
    return out


@contextlib.contextmanager
def strict_float32():
    """Float32 arithmetic without TF32 for the block (``torch.backends.cuda.matmul.allow_tf32 = False``,
    ``torch.backends.cudnn.allow_tf32 = False``, matmul precision ``highest``); the previous settings are restored."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
        torch.set_float32_matmul_precision(saved[2])
