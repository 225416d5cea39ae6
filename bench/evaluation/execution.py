"""Execution options of an evaluation (issue 9 section 5): torch.compile, channels_last, bfloat16 autocast.

They change how the U-Net runs, never what the plan is; the teacher runs in the same mode, and the mode is part of
the evaluation setting's key.  ``compile`` compiles the U-Net's building blocks one by one (resnets, attentions,
down/up-samplers, the mid block): the step engine replaces their forwards at partial steps, so compiling the whole
U-Net would trace its Python cache logic and recompile for every step type; compiled leaves are traced once each
and shared by every step type.  The compiled function becomes the block's ``forward`` before the engine attaches,
so the engine's hooks call it as the original forward.
"""
from __future__ import annotations

import contextlib

import torch

from .setting import ExecutionMode

LEAF_CONTAINERS = ("resnets", "attentions", "downsamplers", "upsamplers")


def compiled_leaves(unet) -> list[torch.nn.Module]:
    """The blocks ``compile`` compiles: every resnet / attention / down- and up-sampler, and the mid block."""
    leaves = []
    for blocks in (unet.down_blocks, unet.up_blocks):
        for block in blocks:
            for name in LEAF_CONTAINERS:
                leaves.extend(getattr(block, name, None) or [])
    leaves.append(unet.mid_block)
    return leaves


def bf16_native(device) -> bool:
    """Whether ``device`` runs bfloat16 natively: CUDA with bf16 support, or a CPU with oneDNN bf16 kernels
    (AVX512-BF16 / AMX).  Without them a CPU emulates bf16 (measured here: ~20x slower than fp32)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_mode(mode: ExecutionMode, device) -> None:
    """Refuse, in one line, an execution mode this machine cannot run as intended (before anything is loaded)."""
    from flexiffusion.errors import UserError

    if mode.dtype.startswith("bf16") and not bf16_native(device):
        raise UserError(f"--dtype {mode.dtype} on {device}: this device has no native bfloat16 kernels (CPU without "
                        "AVX512-BF16/AMX), where bf16 is emulated and about 20x slower than fp32: use --dtype fp32")


def compile_cache_dir(root=None):
    """Where torch.compile keeps its compiled kernels (inductor's FX graph and kernel caches) across processes: one
    folder per torch version under the evaluation cache, so a cache of another torch version is never read."""
    from pathlib import Path

    from bench.cache import cache_dir

    return Path(cache_dir(root)) / "inductor" / f"torch-{torch.__version__}"


def prepare(unet, mode: ExecutionMode) -> None:
    """Apply the module-level options of ``mode`` to ``unet`` in place (once, before sampling)."""
    if mode.channels_last:
        unet.to(memory_format=torch.channels_last)
    if mode.dtype == "bf16-weights":
        unet.to(torch.bfloat16)   # the sampler feeds the U-Net its parameters' dtype; latents stay float32
    if mode.compile:
        import os

        import torch._dynamo.config as dynamo

        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))

        leaves = compiled_leaves(unet)
        # blocks of one class share a code object, and dynamo keeps `recompile_limit` graphs per code object (8 by
        # default): with more instances the rest would silently run eager
        dynamo.recompile_limit = max(dynamo.recompile_limit, 2 * len(leaves))
        for module in leaves:
            if not getattr(module, "_flexbench_compiled", False):
                module.forward = torch.compile(module.forward, dynamic=False)
                module._flexbench_compiled = True


def autocast(mode: ExecutionMode, device) -> contextlib.AbstractContextManager:
    """The autocast context of ``mode`` for the sampling loop (bf16), or a no-op (fp32)."""
    if mode.dtype == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
