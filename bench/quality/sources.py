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


def resolve_input(spec: str | os.PathLike, name: str) -> tuple[ImageSet, str]:
    """(images, cache label) of a named source or a folder of images."""
    if str(spec) in SOURCES:
        return as_images(SOURCES[str(spec)](), name), str(spec)
    if Path(spec).is_dir():
        return as_images(spec, name), f"folder-{Path(spec).resolve().name}"
    raise UserError(f"{name}: {spec} is neither a folder of images nor a named source ({', '.join(SOURCES)})")
