"""Precomputed FID statistics of real data: an ``.npz`` file with ``mu`` (d,) and ``sigma`` (d, d).

The form of torch-fidelity's (0.3) ``fid_statistics_file`` and pytorch-fid's ``--save-stats``: the mean and
covariance of the reference's features at the extractor's FID layer.  FID against such a file is the usual Fréchet
distance of the candidate's statistics to (mu, sigma) (torch-fidelity's formula,
:func:`bench.quality.fidelity.fid_from_statistics`); what needs the reference's *features* (precision / recall, KID,
a bootstrap over real images) cannot be computed from it.

Files written by :func:`bench.quality.reference.save_statistics` also carry what made them (``extractor``,
``layer``, ``n_images``, ``image_shape``), which :func:`load_statistics` checks when asked; files without these
keys (torch-fidelity's, pytorch-fid's) are checked by their dimension only.  The arrays are read as float64.
Every problem is one :class:`~flexiffusion.errors.UserError` line naming the file and the fix.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flexiffusion.errors import UserError

STATS_SUFFIX = ".npz"
META_KEYS = ("extractor", "layer", "n_images", "image_shape")
WRITE_HINT = "write one with bench.quality.reference.save_statistics(FOLDER, EXTRACTOR, OUT.npz)"


def is_statistics_path(spec) -> bool:
    """Whether ``spec`` names a statistics file (by its ``.npz`` suffix; it need not exist)."""
    return isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith(STATS_SUFFIX)


@dataclass(frozen=True, eq=False)
class ReferenceStatistics:
    """FID statistics of a reference (float64 ``mu`` (d,), ``sigma`` (d, d)) and what the file says made them."""

    mu: np.ndarray
    sigma: np.ndarray
    path: str
    meta: dict = field(default_factory=dict)  # extractor, layer, n_images, image_shape where the file records them

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @property
    def n_images(self) -> int | None:
        return self.meta.get("n_images")

    @property
    def label(self) -> str:
        """The cache / provenance label of this reference."""
        return f"stats-{Path(self.path).stem}"

    def as_dict(self) -> dict:
        """``{"mu", "sigma"}``, torch-fidelity's statistics form."""
        return {"mu": self.mu, "sigma": self.sigma}

    def require_dim(self, dim: int, extractor: str, flag: str = "--real") -> None:
        if self.dim != dim:
            raise UserError(f"{flag} {self.path}: statistics of {self.dim}-d features, but extractor {extractor!r} "
                            f"gives {dim}-d FID features: pass statistics of {extractor} features (or the "
                            f"--extractor that made them)")


def _headers(path: Path, flag: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an ``.npz`` archive, from the ``.npy`` headers only (nothing loaded)."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:  # a newer header version: read the array itself
                        with np.load(path, allow_pickle=False) as npz:
                            arr = npz[info.filename[:-4]]
                        out[info.filename[:-4]] = (arr.shape, arr.dtype)
                        continue
                    shape, _, dtype = read(fp)
                out[info.filename[:-4]] = (tuple(shape), dtype)
            return out
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise UserError(f"{flag} {path}: not an .npz statistics file ({type(exc).__name__}: {exc}); give an .npz "
                        f"with mu and sigma ({WRITE_HINT}) or pass --real DIR") from None


def _meta(npz, names) -> dict:
    meta = {}
    for k in META_KEYS:
        if k in names:
            v = npz[k]
            meta[k] = (str(v.item()) if v.dtype.kind in "US" else
                       tuple(int(x) for x in v.reshape(-1)) if k == "image_shape" else int(v.item()))
    return meta


def load_statistics(path, *, feature_dim: int | None = None, extractor: str | None = None,
                    image_shape: tuple[int, int, int] | None = None, flag: str = "--real") -> ReferenceStatistics:
    """The statistics of ``path``, checked: an .npz with ``mu`` (d,) and ``sigma`` (d, d) of real, finite floats;
    ``d == feature_dim`` when given; the file's recorded ``extractor`` / ``image_shape`` (if any) equal to
    ``extractor`` / ``image_shape`` when given.  Keys and shapes are checked from the array headers before any array
    is read."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not an .npz file" if p.is_dir() else "does not exist"
        raise UserError(f"{flag} {path}: statistics file {what}: pass --real FILE.npz (mu, sigma) or --real DIR")
    heads = _headers(p, flag)
    missing = [k for k in ("mu", "sigma") if k not in heads]
    if missing:
        raise UserError(f"{flag} {path}: statistics file lacks {' and '.join(missing)} (has: "
                        f"{', '.join(sorted(heads)) or 'nothing'}); an FID statistics file holds mu (d,) and sigma "
                        f"(d, d): {WRITE_HINT}")
    (mu_shape, mu_dtype), (sigma_shape, sigma_dtype) = heads["mu"], heads["sigma"]
    if len(mu_shape) != 1 or mu_shape[0] < 1 or tuple(sigma_shape) != (mu_shape[0], mu_shape[0]):
        raise UserError(f"{flag} {path}: mu has shape {mu_shape} and sigma {sigma_shape}; expected mu (d,) and sigma "
                        f"(d, d) of one feature dimension d: {WRITE_HINT}")
    for name, dtype in (("mu", mu_dtype), ("sigma", sigma_dtype)):
        if dtype.kind not in "fi":
            raise UserError(f"{flag} {path}: {name} has dtype {dtype}, not real numbers: {WRITE_HINT}")
    d = mu_shape[0]
    if feature_dim is not None and d != feature_dim:
        raise UserError(f"{flag} {path}: statistics of {d}-d features, but extractor {extractor!r} gives "
                        f"{feature_dim}-d FID features: pass statistics of {extractor} features (or the --extractor "
                        f"that made them)")
    try:
        with np.load(p, allow_pickle=False) as npz:
            mu, sigma = np.asarray(npz["mu"], np.float64), np.asarray(npz["sigma"], np.float64)
            meta = _meta(npz, heads)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise UserError(f"{flag} {path}: unreadable statistics file ({type(exc).__name__}: {exc}): {WRITE_HINT}") \
            from None
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{flag} {path}: mu or sigma holds NaN or inf values: recompute the statistics "
                        f"({WRITE_HINT})")
    if extractor is not None and meta.get("extractor") not in (None, extractor):
        raise UserError(f"{flag} {path}: statistics of {meta['extractor']!r} features, but the extractor is "
                        f"{extractor!r}: pass --extractor {meta['extractor']} or statistics of {extractor} features")
    if image_shape is not None and meta.get("image_shape") not in (None, tuple(image_shape)):
        c, h, w = meta["image_shape"]
        raise UserError(f"{flag} {path}: statistics of {h}x{w} images with {c} channel(s), the model makes "
                        f"{'x'.join(map(str, image_shape[1:]))} with {image_shape[0]}: pass --real statistics (or a "
                        f"folder) of images of the model's size")
    return ReferenceStatistics(mu, sigma, str(path), meta)


def write_statistics(path, mu, sigma, **meta) -> Path:
    """Write ``mu`` / ``sigma`` (float64) and ``meta`` (META_KEYS) to an .npz, atomically."""
    from flexiffusion.io import atomic_write

    p = Path(path)
    if not is_statistics_path(p):
        raise UserError(f"statistics file {path}: give a path ending in {STATS_SUFFIX}")
    unknown = set(meta) - set(META_KEYS)
    if unknown:
        raise ValueError(f"unknown statistics metadata {sorted(unknown)}; valid: {', '.join(META_KEYS)}")
    arrays = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
    arrays.update({k: np.asarray(v) for k, v in meta.items() if v is not None})
    p.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(p, write)
    return p
