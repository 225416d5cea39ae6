"""Image inputs of every metric: in-memory tensors or image folders, validated once, as uint8 CHW items.

torch-fidelity consumes a ``Dataset`` whose items are bare uint8 CHW tensors (a ``TensorDataset``'s tuples are
rejected), so both forms become an :class:`ImageSet`.  Float tensors are mapped from ``value_range`` (default
[0, 1]) to 0..255 with rounding; a NaN or inf pixel is an error naming the image indices, never a silent clamp.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bench.cache import tensor_hash
from flexiffusion.errors import UserError


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHANNELS = (1, 3)
GRAY_MODES = ("L", "1", "I;16", "I", "F")        # PIL modes read as one channel; every other mode as RGB
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")  # modes with transparency (refused as an FID reference)


class ImageSet(Dataset):
    """``n`` images of shape ``(C, H, W)``; item ``i`` is a uint8 CHW tensor.  ``key`` is a content hash."""

    def __init__(self, name: str, n: int, shape: tuple[int, int, int]):
        self.name, self.n, self.shape = name, n, tuple(shape)
        self._key: str | None = None

    def __len__(self) -> int:
        return self.n

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self._content_hash()
        return self._key

    def tensor(self) -> torch.Tensor:
        """All images as one uint8 NCHW tensor."""
        return torch.stack([self[i] for i in range(self.n)]) if self.n else torch.empty(0, *self.shape, dtype=torch.uint8)

    def _content_hash(self) -> str:
        raise NotImplementedError


class TensorImages(ImageSet):
    def __init__(self, images: torch.Tensor, name: str = "images"):
        super().__init__(name, images.shape[0], images.shape[1:])
        self.images = images

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def tensor(self) -> torch.Tensor:
        return self.images

    def _content_hash(self) -> str:
        return tensor_hash(self.images)


class FolderImages(ImageSet):
    """The image files directly inside a folder, in sorted name order; grayscale files stay single-channel."""

    def __init__(self, folder: str | os.PathLike, name: str | None = None):
        from PIL import Image

        folder = Path(folder)
        if not folder.is_dir():
            raise UserError(f"{name or folder}: {folder} is not a directory of images")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise UserError(f"{name or folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        shapes = {}
        for p in files:  # headers only: PIL reads size and mode without decoding pixels
            with Image.open(p) as im:
                shapes.setdefault((1 if im.mode in GRAY_MODES else 3, im.height, im.width), p)
        if len(shapes) > 1:
            desc = "; ".join(f"{s} e.g. {p.name}" for s, p in shapes.items())
            raise UserError(f"{name or folder}: images of different sizes or channel counts in {folder}: {desc}")
        super().__init__(name or str(folder), len(files), next(iter(shapes)))
        self.files = files

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("L" if self.shape[0] == 1 else "RGB")
            arr = np.array(im, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return torch.from_numpy(np.ascontiguousarray(arr))

    def _content_hash(self) -> str:
        h = hashlib.sha256()
        for p in self.files:
            h.update(p.name.encode() + b"\0" + p.read_bytes())
        return h.hexdigest()[:16]


def float_to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0), name: str = "images"):
    """Float NCHW in ``value_range`` -> uint8 NCHW; NaN/inf pixels raise a UserError naming the image indices."""
    finite = torch.isfinite(images).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        shown = ", ".join(map(str, bad[:20])) + (f" ... ({len(bad)} in all)" if len(bad) > 20 else "")
        raise UserError(f"{name}: NaN or inf pixels in image(s) {shown}")
    lo, hi = value_range
    return ((images.double() - lo) / (hi - lo) * 255.0).round().clamp(0, 255).to(torch.uint8)


def as_images(x, name: str = "images", value_range: tuple[float, float] = (0.0, 1.0)) -> ImageSet:
    """An :class:`ImageSet` from an ImageSet, a folder path, or a uint8/float NCHW tensor or array."""
    if isinstance(x, ImageSet):
        return x
    if isinstance(x, (str, os.PathLike)):
        return FolderImages(x, name)
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_tensor(x):
        raise UserError(f"{name}: expected an image tensor (N, C, H, W) or a folder, got {type(x).__name__}")
    if x.dim() != 4:
        raise UserError(f"{name}: expected a 4-d (N, C, H, W) image tensor, got shape {tuple(x.shape)}")
    if x.shape[1] not in CHANNELS:
        raise UserError(f"{name}: expected {' or '.join(map(str, CHANNELS))} channels (NCHW), got shape {tuple(x.shape)}")
    if x.dtype.is_floating_point:
        x = float_to_uint8(x, value_range, name)
    elif x.dtype != torch.uint8:
        raise UserError(f"{name}: expected uint8 (0..255) or float images, got dtype {x.dtype}")
    return TensorImages(x.detach().cpu().contiguous(), name)


def check_same_kind(a: ImageSet, b: ImageSet) -> None:
    """Two sets compared by a metric must have the same image shape (channels, height, width)."""
    if a.shape != b.shape:
        raise UserError(
            f"{a.name} and {b.name} differ in image shape (C, H, W): {a.shape} vs {b.shape}; "
            "compare images of one size and channel count"
        )


def require_count(images: ImageSet, minimum: int, what: str) -> None:
    if images.n < minimum:
        raise UserError(f"{what} needs at least {minimum} images; {images.name} has {images.n}")
