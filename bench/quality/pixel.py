"""Pixel-space MSE against the teacher (the paper's MSE baseline to rFID, Sec. 5.5, Table 4).

Images are compared pairwise (image ``i`` with image ``i``, same seed) on the [0, 1] scale: ``mean((a - b)^2)``
over all pixels of all images.
"""
from __future__ import annotations

import torch

from flexiffusion.errors import UserError

from .images import as_images, check_same_kind


def mse(images, reference, chunk: int = 256) -> dict:
    """``{"mse": mean squared error on [0, 1], "n_images": n}`` between paired image sets."""
    a, b = as_images(images, "images"), as_images(reference, "reference")
    check_same_kind(a, b)
    if a.n != b.n:
        raise UserError(f"MSE pairs images by seed: {a.name} has {a.n} images, {b.name} {b.n}")
    if a.n == 0:
        raise UserError("MSE needs at least 1 image pair")
    ta, tb = a.tensor(), b.tensor()
    total = 0.0
    for i in range(0, a.n, chunk):  # float64 in chunks: exact enough, bounded memory for large images
        d = ta[i:i + chunk].double() - tb[i:i + chunk].double()
        total += float((d * d).sum())
    return {"mse": total / (255.0 ** 2 * ta.numel()), "n_images": a.n}
