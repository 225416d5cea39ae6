"""Per-sample seeds (as in EDM's generate.py): image i's initial noise depends only on seeds[i], so any image
can be regenerated whatever the batch size or its position in a batch.

Each sample has numbered random streams: stream 0 (initial noise) is seeded with the seed itself, as a diffusers
pipeline given ``torch.Generator().manual_seed(seed)`` is; stream k > 0 (e.g. the per-step noise of DDIM at
eta > 0) with 64 bits drawn from numpy's ``SeedSequence((seed, k))``, a hash of the pair, so no (seed, stream) pair
shares a generator seed with another (unlike ``seed + offset``, which collides once seeds reach the offset).

Every stream is a CPU generator, whatever device the model runs on: a CUDA generator seeded alike draws other
numbers (another algorithm, Philox), so noise drawn on the device would make images depend on it.  Initial noise is
drawn on the CPU and moved (:func:`noise_for_seeds`); step noise (DDIM eta > 0, SDE solvers) is drawn by diffusers'
``randn_tensor`` from these CPU generators on the CPU and then moved to the model output's device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

INITIAL_NOISE, STEP_NOISE = 0, 1  # the streams the harness uses


def stream_seed(seed: int, stream: int = INITIAL_NOISE) -> int:
    """The generator seed of ``stream`` of sample ``seed``."""
    seed, stream = int(seed), int(stream)
    if seed < 0 or stream < 0:
        from .errors import UserError

        raise UserError(f"seeds and streams are non-negative integers, got seed {seed}, stream {stream}")
    if stream == INITIAL_NOISE:
        return seed
    return int(np.random.SeedSequence((seed, stream)).generate_state(1, np.uint64)[0])


def generators(seeds: Sequence[int], stream: int = INITIAL_NOISE, device="cpu") -> list[torch.Generator]:
    """One CPU generator per sample for random stream ``stream`` (0: initial noise, 1: step noise, ...).

    ``device`` must be the CPU (kept for callers that pass it): generators on another device would draw other
    numbers for the same seeds, so a UserError says so."""
    if torch.device(device).type != "cpu":
        from .errors import UserError

        raise UserError(f"per-sample generators live on the CPU (got device {str(device)!r}): noise is drawn there "
                        "and moved, so that a seed gives the same image on every device")
    return [torch.Generator("cpu").manual_seed(stream_seed(s, stream)) for s in seeds]


def cpu_noise(seeds: Sequence[int], shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of ``(len(seeds), *shape)`` on the CPU, one row per seed from its own generator (as
    diffusers' ``randn_tensor`` draws with a list of CPU generators)."""
    rows = [torch.randn((1, *shape), generator=g, dtype=dtype, device="cpu") for g in generators(seeds)]
    return torch.cat(rows)


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int], dtype=torch.float32, device="cpu") -> torch.Tensor:
    """:func:`cpu_noise` moved to ``device``: drawn on the CPU whatever the device, so the same seed gives the same
    noise on every device (the copy is exact) and the same as a diffusers pipeline given CPU generators."""
    return cpu_noise(seeds, shape, dtype).to(device)


def parse_seeds(text: str) -> list[int]:
    """Parse ``"0-99"`` / ``"1,5,7"`` / ``"0-9,20"`` into a list of seeds."""
    from .errors import UserError

    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            seeds.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise UserError(f"malformed seeds {text!r}: use e.g. '0-999' or '1,5,7'") from None
    if not seeds:
        raise UserError(f"no seeds in {text!r}: use e.g. '0-999'")
    return seeds
