"""Class consistency of a class-conditional model: the share of samples the domain classifier assigns to the class
that was requested (e.g. the embedded digits model with the digits CNN).
"""
from __future__ import annotations

from typing import Callable

import torch

from flexiffusion.errors import UserError

from .images import as_images


@torch.no_grad()
def class_consistency(images, labels, classifier: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 256) -> dict:
    """``{"class_consistency": share in [0, 1], "n_images": n}``; ``classifier(uint8 NCHW batch) -> (b, C) logits``."""
    images = as_images(images, "images")
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() != images.n:
        raise UserError(f"class consistency: {images.n} images but {labels.numel()} requested labels")
    if images.n == 0:
        raise UserError("class consistency needs at least 1 image")
    hits = 0
    for i in range(0, images.n, batch_size):
        batch = torch.stack([images[j] for j in range(i, min(i + batch_size, images.n))])
        logits = classifier(batch)
        if logits.dim() != 2 or logits.shape[0] != batch.shape[0]:
            raise UserError(f"classifier must return (batch, classes) logits, got shape {tuple(logits.shape)}")
        if int(labels.max()) >= logits.shape[1] or int(labels.min()) < 0:
            raise UserError(f"requested labels must lie in 0..{logits.shape[1] - 1} (the classifier's classes)")
        hits += int((logits.argmax(-1).cpu() == labels[i:i + batch.shape[0]]).sum())
    return {"class_consistency": hits / images.n, "n_images": images.n}
