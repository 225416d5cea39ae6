"""The embedded data set: scikit-learn's ``load_digits`` (1797 labelled 8x8 digits, shipped inside the wheel).

Images are upsampled 8x8 -> 16x16 with *bilinear* interpolation (``align_corners=False``, no antialiasing), because
nearest-neighbour upsampling would give blocky 2x2 pixels that a 16x16 model learns trivially and that make every
local feature of the classifier constant over 2x2 patches; bilinear keeps strokes smooth.  The raw 0..16 intensities
are scaled to [0, 1] before upsampling and to [-1, 1] after, single channel (N, 1, 16, 16).

Split (fixed, never re-drawn): ``sklearn.model_selection.train_test_split`` with ``test_size=0.2``, ``stratify=y``,
``random_state=0`` -> ``N_TRAIN = 1437`` train images and ``N_HELDOUT = 360`` held-out images.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

RESOLUTION = 16
NUM_CLASSES = 10
SPLIT_SEED = 0
HELDOUT_FRACTION = 0.2
N_TOTAL = 1797
N_TRAIN = 1437
N_HELDOUT = 360


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW (0..255) -> [-1, 1] float32 NCHW."""
    return images.to(torch.float32) / 127.5 - 1.0


@lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False)
    x = (x * 2.0 - 1.0).clamp(-1, 1).contiguous()
    y = torch.from_numpy(digits.target.astype(np.int64))
    idx = np.arange(len(y))
    train_idx, held_idx = train_test_split(
        idx, test_size=HELDOUT_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
    )
    return x, y, np.sort(train_idx), np.sort(held_idx)


def load_split(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float32 NCHW in [-1, 1], 16x16x1) and int64 labels of ``split``: "train", "heldout" or "all"."""
    x, y, train_idx, held_idx = _all_digits()
    if split == "all":
        return x.clone(), y.clone()
    if split == "train":
        idx = torch.from_numpy(train_idx)
    elif split == "heldout":
        idx = torch.from_numpy(held_idx)
    else:
        raise ValueError(f"unknown split {split!r}: expected 'train', 'heldout' or 'all'")
    return x[idx].clone(), y[idx].clone()
