"""Named image sources of real data, usable wherever a folder is (``--input2 digits-train``).

A named source is cached under its name: its reference features and FID statistics are computed once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from flexiffusion.errors import UserError

from .images import ImageSet, as_images


def digits_uint8(split: str = "all") -> torch.Tensor:
    """The embedded data set's real digits of ``split`` ("train", "heldout", "all") as uint8 NCHW images."""
    from bench.embedded.data import load_split

    from .images import float_to_uint8

    return float_to_uint8(load_split(split)[0], (-1.0, 1.0), f"digits-{split}")


def _digits(split: str) -> Callable[[], torch.Tensor]:
    return lambda: digits_uint8(split)


SOURCES: dict[str, Callable[[], torch.Tensor]] = {
    "digits-train": _digits("train"),
    "digits-heldout": _digits("heldout"),
    "digits-all": _digits("all"),
}


def _digits_shape() -> tuple[int, int, int]:
    from bench.embedded.data import RESOLUTION

    return (1, RESOLUTION, RESOLUTION)


def _digits_count(split: str) -> int:
    from bench.embedded.data import N_HELDOUT, N_TOTAL, N_TRAIN

    return {"train": N_TRAIN, "heldout": N_HELDOUT, "all": N_TOTAL}[split]


# (C, H, W) and image count of each named source, known without loading it (tests/test_quality_reference.py
# holds them equal to the loaded sources)
SOURCE_INFO: dict[str, Callable[[], tuple[tuple[int, int, int], int]]] = {
    f"digits-{split}": (lambda split=split: (_digits_shape(), _digits_count(split)))
    for split in ("train", "heldout", "all")
}


def source_info(name: str) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), number of images) of the named source ``name``, without loading its images where known."""
    if name in SOURCE_INFO:
        return SOURCE_INFO[name]()
    images = as_images(SOURCES[name](), name)
    return images.shape, images.n


def resolve_input(spec: str | os.PathLike, name: str) -> tuple[ImageSet, str]:
    """(images, cache label) of a named source or a folder of images."""
    if str(spec) in SOURCES:
        return as_images(SOURCES[str(spec)](), name), str(spec)
    if Path(spec).is_dir():
        return as_images(spec, name), f"folder-{Path(spec).resolve().name}"
    if str(spec).lower().endswith(".npz"):
        raise UserError(f"{name}: {spec} is a statistics file (mu, sigma); this measure needs the real images "
                        f"themselves: pass a folder of images or a named source ({', '.join(SOURCES)})")
    raise UserError(f"{name}: {spec} is neither a folder of images nor a named source ({', '.join(SOURCES)})")
