"""Per-sample seeds (as in EDM's generate.py): image i's initial noise depends only on seeds[i], so any image
can be regenerated whatever the batch size or its position in a batch."""
from __future__ import annotations

from typing import Sequence

import torch


def generators(seeds: Sequence[int], offset: int = 0) -> list[torch.Generator]:
    """One CPU generator per sample (``offset`` separates streams, e.g. initial noise vs. step noise)."""
    return [torch.Generator("cpu").manual_seed(int(s) + offset) for s in seeds]


def noise_for_seeds(seeds: Sequence[int], shape: Sequence[int], dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Standard normal noise of ``(len(seeds), *shape)``; drawn on the CPU as diffusers' ``randn_tensor`` does
    with a list of generators, so the same seed gives the same noise as a diffusers pipeline."""
    rows = [torch.randn((1, *shape), generator=g, dtype=dtype) for g in generators(seeds)]
    return torch.cat(rows).to(device)


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
