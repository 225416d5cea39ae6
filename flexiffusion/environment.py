"""The environment record stored with every result: library versions, device, threads, host, git commit."""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import subprocess
from pathlib import Path

import torch

LIBRARIES = ("torch", "torchvision", "diffusers", "transformers", "torch-fidelity", "torchmetrics", "fvcore",
             "open_clip_torch", "tomesd", "numpy", "scipy", "pandas", "scikit-learn", "ray", "flexiffusion-bench")


def library_version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "none"


@functools.lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    return {name: library_version(name) for name in LIBRARIES}


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the checkout the code runs from ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device) -> str:
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def environment(device="cpu", threads: int | None = None) -> dict:
    """Flat record of where a result was measured (stored with every result row)."""
    dev = torch.device(device)
    return {"device": str(dev), "device_name": device_name(dev), "threads": threads or torch.get_num_threads(),
            "cpu_count": cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "git_commit": git_commit(), **library_versions()}
