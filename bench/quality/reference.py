"""A model's quality reference (real data, feature extractor and its weights, CLIP, prompts), checked before any
sampling.

:func:`check_reference` validates everything a quality measurement will read, without building any network and
fast (well under a second for a 50,000-image folder, imports aside), and returns what it resolved
(:class:`CheckedReference`).  Every refusal is one :class:`~flexiffusion.errors.UserError` line naming the file,
what is wrong and the flag that fixes it.

* ``real``: a named source (:data:`bench.quality.sources.SOURCES`; its image shape is known without loading it), a
  folder of images, or an FID statistics file (``.npz`` with ``mu`` (d,) and ``sigma`` (d, d),
  :mod:`bench.quality.statistics`; d must be the extractor's FID feature dimension, 2048 for
  ``inception-v3-compat``).  A folder must hold images (``IMAGE_EXTENSIONS``) of exactly the model's height, width
  and channel count: PIL modes ``L`` / ``1`` / ``I`` / ``I;16`` / ``F`` count as 1 channel, every other mode as 3
  (``RGB``, palette ``P``, ``CMYK``, ``YCbCr``: read as RGB), and images with an alpha channel (``RGBA``, ``LA``,
  ``PA``) are **refused**: an alpha channel has no single right background, and FID references are RGB; convert them
  to RGB first.  Only headers are read, and not of every file in a large folder: all of them up to
  ``HEADER_CHECK_ALL`` files, else the first ``HEADER_CHECK_FIRST`` (sorted by name) and ``HEADER_CHECK_RANDOM``
  more drawn at random (fixed seed); the note in :attr:`CheckedReference.notes` says how many.  (Opening every
  header of 50,000 PNGs takes 3-5 s on a 2-core machine; the full read happens when the features are extracted,
  where a stray file still stops with one line.)
* ``extractor``: known (ours or registered with torch-fidelity); its weights file found locally
  (:func:`bench.quality.extractors.find_weights`; an explicit one must exist) and loadable as a state dict (read
  with ``mmap``, tensors not touched).
* CLIP (text models only): ``clip_pretrained`` a local file (must exist and be a state dict) or an open_clip tag
  whose weights are already in the local cache (:func:`bench.quality.clip_score.resolve_clip_weights`); the model
  name known to open_clip.  Both None: the model's own scoring CLIP, checked when the model is loaded.
* ``prompts_file``: readable UTF-8 text, one prompt per line, blank lines dropped; empty is an error.

A row measured against a statistics file has FID and IS but no precision / recall (they need the real images'
features): the row stores :data:`NEEDS_REAL_IMAGES` for them and says why (:data:`STATISTICS_NOTE`).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flexiffusion.errors import UserError

from .statistics import ReferenceStatistics, is_statistics_path, load_statistics, write_statistics

HEADER_CHECK_ALL = 4000      # folders up to this many images: every header is checked
HEADER_CHECK_FIRST = 1000    # larger folders: the first ones (sorted by name) ...
HEADER_CHECK_RANDOM = 1000   # ... and this many more at random (seed HEADER_SEED)
HEADER_SEED = 0
NEEDS_REAL_IMAGES = "needs real images"   # what a row stores (and a cell shows) for precision / recall vs statistics
STATISTICS_NOTE = "precision/recall need a folder of real images, not a statistics file"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
REAL_HINT = "pass --real DIR (a folder of real images) or --real FILE.npz (FID statistics: mu, sigma)"


@dataclass(frozen=True)
class QualityReference:
    """What a model's quality is measured against (see the module docstring); plain, picklable values."""

    real: str | None
    extractor: str
    extractor_weights: str | None = None
    clip_model: str | None = None
    clip_pretrained: str | None = None
    prompts_file: str | None = None


@dataclass(frozen=True)
class CheckedReference:
    """A :class:`QualityReference` after :func:`check_reference`: the values settings carry (``real``,
    ``extractor``, ``extractor_weights``, ``clip_model``, ``clip_pretrained``: as given, so that a setting's key stays
    what it was) and what they resolved to."""

    real: str | None
    extractor: str
    extractor_weights: str | None = None      # as given (None: looked up, or the extractor needs none)
    clip_model: str | None = None             # as given (None with clip_pretrained None: the model's own CLIP)
    clip_pretrained: str | None = None
    prompts_file: str | None = None
    prompts: tuple[str, ...] | None = None    # the prompts file's lines (None: no file given)
    real_kind: str | None = None              # "source" | "folder" | "statistics" | None (not given)
    real_path: str | None = None              # the folder's / file's absolute path (None for a named source)
    real_label: str | None = None             # its cache / provenance label
    real_count: int | None = None             # images in the source / folder (statistics: as recorded, else None)
    image_shape: tuple[int, int, int] | None = None
    weights_file: str | None = None           # the extractor's local weights file (None: it needs none)
    fid_layer: str | None = None
    feature_dim: int | None = None            # the FID layer's dimension (known, or None where not needed)
    clip_weights: str | None = None           # the CLIP weights file resolved (None: not checked / random)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def statistics(self) -> bool:
        """Whether the real data is a statistics file (FID only: no precision / recall / KID)."""
        return self.real_kind == "statistics"


# ---- small pieces ---------------------------------------------------------------------------------------------
def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:limit]}"


def _check_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape) < 1:
        raise UserError(f"image shape {tuple(image_shape)}: expected (C, H, W) with 1 or 3 channels")
    return shape


def _describe(shape) -> str:
    c, h, w = shape
    return f"{h}x{w} with {c} channel{'s' if c != 1 else ''}"


_IDENTITY: dict[tuple, str] = {}


def file_identity(path) -> str:
    """``sha256:<hex>`` of a file's content, computed once per process per (path, mtime, size)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise UserError(f"{path}: no such file (its content keys the results): pass an existing file") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _IDENTITY:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _IDENTITY[key] = f"sha256:{h.hexdigest()}"
    return _IDENTITY[key]


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") for n in zf.namelist())


def check_state_dict(path, flag: str, what: str, torchscript: bool = False) -> list[str]:
    """The parameter names of a weights file, read cheaply (safetensors header; ``torch.load`` with ``mmap``, which
    maps rather than reads the tensors); one UserError line if it is not a state dict (``torchscript``: a
    TorchScript archive is accepted too, as open_clip loads OpenAI's original CLIP files)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {path}: {what} does not exist: pass an existing file")
    if p.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), "pt") as f:
                keys = list(f.keys())
        except Exception as exc:  # noqa: BLE001  (any parse failure is the user's file)
            raise UserError(f"{flag} {path}: {what} is not a readable safetensors file ({_first_line(exc)}): pass "
                            "the right file") from None
    else:
        import torch

        try:
            try:
                sd = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                sd = torch.load(p, map_location="cpu", weights_only=True)  # a legacy (non-zip) torch file
        except Exception as exc:  # noqa: BLE001
            if torchscript and _is_torchscript(p):
                return ["<torchscript>"]
            raise UserError(f"{flag} {path}: {what} is not loadable as a state dict ({_first_line(exc)}): pass the "
                            "right file") from None
        if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
            sd = sd["state_dict"]  # a training checkpoint
        if not isinstance(sd, Mapping) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
            raise UserError(f"{flag} {path}: {what} holds a {type(sd).__name__}, not a state dict of tensors: pass "
                            "the right file")
        keys = list(sd)
    if not keys:
        raise UserError(f"{flag} {path}: {what} holds no tensors: pass the right file")
    return keys


# ---- extractor ------------------------------------------------------------------------------------------------
def check_extractor(name: str, weights: str | None = None) -> str | None:
    """The extractor's local weights file (None: it needs none), checked: the name known, an explicit file present,
    a required file found and loadable.  Builds nothing."""
    from .extractors import KNOWN_EXTRACTORS, _registry, available_extractors, find_weights

    if name not in KNOWN_EXTRACTORS and name not in _registry():
        raise UserError(f"--extractor {name}: unknown feature extractor; valid: {', '.join(available_extractors())}")
    if weights is not None and not Path(weights).is_file():
        raise UserError(f"--extractor-weights {weights}: weights file of extractor {name!r} does not exist: pass "
                        "an existing file (or drop the flag to use the default weights)")
    found = find_weights(name, weights)
    if found is not None:
        check_state_dict(found, "--extractor-weights", f"weights file of extractor {name!r}")
    return found


def _dummy_dim(extractor, layer: str) -> int:
    import torch

    from .extractors import _registry

    x = _registry()[extractor.name].get_dummy_input_for_compile()
    module = extractor.module((layer,))
    with torch.no_grad():
        out = module(x.to(next(module.parameters(), torch.empty(0)).device))
    return int((out[0] if isinstance(out, (tuple, list)) else out).shape[-1])


def fid_layer_and_dim(name: str, weights: str | None = None) -> tuple[str, int]:
    """(FID layer, its feature dimension) of extractor ``name``: from :data:`KNOWN_EXTRACTORS` without building it,
    else by building it and running torch-fidelity's dummy input through it."""
    from .extractors import KNOWN_EXTRACTORS, Extractor

    spec = KNOWN_EXTRACTORS.get(name)
    if spec is not None and spec.fid_layer is not None and spec.fid_dim is not None:
        return spec.fid_layer, spec.fid_dim
    ex = Extractor(name, weights, cuda=False)
    return fid_dim_of(ex)


def fid_dim_of(extractor) -> tuple[str, int]:
    """(FID layer, dimension) of a built :class:`~bench.quality.extractors.Extractor`."""
    layer = extractor.layer_for("fid")
    if layer is None:
        raise UserError(f"--extractor {extractor.name}: feature extractor provides no FID layer; choose another")
    spec = extractor.spec
    if spec.fid_layer == layer and spec.fid_dim is not None:
        return layer, spec.fid_dim
    return layer, _dummy_dim(extractor, layer)


# ---- real data ------------------------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[str]:
    from .images import IMAGE_EXTENSIONS

    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file())


def check_image_folder(folder, image_shape, flag: str = "--real") -> tuple[int, int]:
    """``(images, headers checked)`` of a folder of real images, every checked header of the model's size and
    channel count (see the module docstring for which files are checked and how modes count)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .images import ALPHA_MODES, GRAY_MODES, IMAGE_EXTENSIONS

    shape = _check_shape(image_shape)
    p = Path(folder)
    if not p.is_dir():
        raise UserError(f"{flag} {folder}: no such folder: {REAL_HINT}")
    files = _image_files(p)
    if not files:
        raise UserError(f"{flag} {folder}: the folder holds no images ({', '.join(IMAGE_EXTENSIONS)}): put the real "
                        f"images there, or pass --real FILE.npz")
    if len(files) <= HEADER_CHECK_ALL:
        picked = files
    else:
        rest = np.random.default_rng(HEADER_SEED).choice(len(files) - HEADER_CHECK_FIRST, HEADER_CHECK_RANDOM,
                                                          replace=False)
        picked = files[:HEADER_CHECK_FIRST] + [files[HEADER_CHECK_FIRST + int(i)] for i in sorted(rest)]
    c, h, w = shape
    for name in picked:
        try:
            with Image.open(p / name) as im:
                mode, (iw, ih) = im.mode, im.size
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"{flag} {folder}: {name} is not a readable image ({_first_line(exc)}): remove or "
                            "replace it") from None
        if mode in ALPHA_MODES:
            raise UserError(f"{flag} {folder}: {name} has an alpha channel (mode {mode}); FID references are RGB: "
                            "convert the images to RGB (e.g. PIL's image.convert('RGB')) and pass --real again")
        ic = 1 if mode in GRAY_MODES else 3
        if (ic, ih, iw) != shape:
            raise UserError(f"{flag} {folder}: {name} is {ih}x{iw} with {ic} channel{'s' if ic != 1 else ''} (mode "
                            f"{mode}), the model makes {_describe(shape)}: pass --real DIR with images of the "
                            "model's size and channels, or --real FILE.npz")
    return len(files), len(picked)


def _check_real(real: str, shape, extractor: str, weights: str | None) -> dict:
    """The ``real_*`` fields (and feature dim / notes) of a given real-data spec."""
    from .sources import SOURCES, source_info

    spec = str(real)
    if spec in SOURCES:
        got, n = source_info(spec)
        if tuple(got) != shape:
            raise UserError(f"--real {spec}: the named source holds images of {_describe(got)}, the model makes "
                            f"{_describe(shape)}: {REAL_HINT}")
        return {"real_kind": "source", "real_label": spec, "real_count": n}
    p = Path(spec)
    if is_statistics_path(spec):
        layer, dim = fid_layer_and_dim(extractor, weights)
        stats = load_statistics(p, feature_dim=dim, extractor=extractor, image_shape=shape)
        return {"real_kind": "statistics", "real_path": str(p.resolve()), "real_label": stats.label,
                "real_count": stats.n_images, "feature_dim": dim, "fid_layer": layer,
                "notes": (f"real: FID statistics of {stats.dim}-d {extractor} features ({p.name}"
                          f"{f', {stats.n_images} images' if stats.n_images else ''}); {STATISTICS_NOTE}",)}
    if p.is_dir():
        n, checked = check_image_folder(p, shape)
        note = (f"real: {n} images in {p}" + ("" if checked == n else
                f" (headers checked: the first {HEADER_CHECK_FIRST} and {checked - HEADER_CHECK_FIRST} at random of "
                f"{n}; the rest are read when the features are extracted)"))
        return {"real_kind": "folder", "real_path": str(p.resolve()), "real_label": f"folder-{p.resolve().name}",
                "real_count": n, "notes": (note,)}
    if p.exists():
        raise UserError(f"--real {spec}: neither a folder of images nor a statistics file (.npz): {REAL_HINT}")
    raise UserError(f"--real {spec}: no such folder, statistics file or named source "
                    f"({', '.join(SOURCES)}): {REAL_HINT}")


# ---- CLIP and prompts -----------------------------------------------------------------------------------------
def _looks_like_file(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(WEIGHT_SUFFIXES)


def check_clip(model: str | None, pretrained: str | None) -> str | None:
    """The local CLIP weights file of (``model``, ``pretrained``), checked offline (None for both: the model's own
    scoring CLIP, not checked here).  ``model`` None: ViT-B-32; ``pretrained`` None: ``openai``."""
    if model is None and pretrained is None:
        return None
    from .clip_score import DEFAULT_MODEL, DEFAULT_PRETRAINED

    model = model or DEFAULT_MODEL
    pretrained = str(pretrained or DEFAULT_PRETRAINED)
    if _looks_like_file(pretrained) or Path(pretrained).is_file():
        check_state_dict(pretrained, "--clip-pretrained", "CLIP weights file", torchscript=True)
    import open_clip

    if model not in open_clip.list_models():
        from bench.embedded.t2i import clip_model as embedded_clip

        if model == embedded_clip.MODEL_NAME:
            embedded_clip.register()
        else:
            raise UserError(f"--clip-model {model}: unknown open_clip model; e.g. "
                            f"{', '.join(open_clip.list_models()[:8])}")
    from .clip_score import resolve_clip_weights

    try:
        found, _ = resolve_clip_weights(model, pretrained)
    except UserError as exc:
        raise UserError(f"--clip-pretrained {pretrained}: {exc} (pass --clip-pretrained FILE or a tag whose "
                        "weights are in the local cache)") from None
    if found is not None and found != pretrained:
        check_state_dict(found, "--clip-pretrained", f"CLIP weights of tag {pretrained!r}", torchscript=True)
    return found


def read_prompts_file(path, flag: str = "--prompts") -> tuple[str, ...]:
    """The prompts of a UTF-8 text file, one per line (surrounding blanks stripped, blank lines dropped)."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise UserError(f"{flag} {path}: prompts file {what}: pass a text file with one prompt per line")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise UserError(f"{flag} {path}: not UTF-8 text (byte {exc.start}, line {line}): save the prompts file as "
                        "UTF-8") from None
    except OSError as exc:
        raise UserError(f"{flag} {path}: unreadable prompts file ({_first_line(exc)})") from None
    prompts = tuple(ln.strip() for ln in text.lstrip("\ufeff").splitlines() if ln.strip())
    if not prompts:
        raise UserError(f"{flag} {path}: the prompts file holds no prompt (only blank lines): write one prompt per "
                        "line")
    return prompts


# ---- the check ------------------------------------------------------------------------------------------------
def check_reference(ref: QualityReference, image_shape: tuple[int, int, int], *, text: bool,
                    needs_real: bool = True) -> CheckedReference:
    """Validate ``ref`` for a model making ``image_shape`` (C, H, W) images (``text``: a text-to-image model:
    prompts and CLIP score) without building any network; ``needs_real=False``: real data is not required (a given
    one is still checked).  Returns the resolved :class:`CheckedReference`; any problem is one UserError line."""
    shape = _check_shape(image_shape)
    weights_file = check_extractor(ref.extractor, ref.extractor_weights)
    out: dict = {}
    if ref.real is None:
        if needs_real:
            raise UserError(f"no real data for FID: {REAL_HINT} (images of {_describe(shape)})")
    else:
        out = _check_real(ref.real, shape, ref.extractor, ref.extractor_weights)
    notes = list(out.pop("notes", ()))
    if "feature_dim" not in out:
        from .extractors import KNOWN_EXTRACTORS

        spec = KNOWN_EXTRACTORS.get(ref.extractor)
        if spec is not None:
            out.update(fid_layer=spec.fid_layer, feature_dim=spec.fid_dim)
    prompts = None
    if ref.prompts_file is not None:
        if not text:
            raise UserError(f"--prompts {ref.prompts_file}: the model takes no text: drop --prompts")
        prompts = read_prompts_file(ref.prompts_file)
    clip_weights = None
    clip_model, clip_pretrained = (ref.clip_model, ref.clip_pretrained) if text else (None, None)
    if text:
        clip_weights = check_clip(clip_model, clip_pretrained)
        if clip_model is None and clip_pretrained is None:
            notes.append("CLIP score: the model's own scoring CLIP (checked when the model loads)")
    return CheckedReference(ref.real, ref.extractor, ref.extractor_weights, clip_model, clip_pretrained,
                            ref.prompts_file, prompts, image_shape=shape, weights_file=weights_file,
                            clip_weights=clip_weights, notes=tuple(notes), **out)


# ---- real data as metrics read it ----------------------------------------------------------------------------
def resolve_real(spec, name: str = "real"):
    """``(reference, label)``: an :class:`~bench.quality.images.ImageSet` (named source or folder) or a
    :class:`~bench.quality.statistics.ReferenceStatistics` (an ``.npz`` file), and its cache label."""
    from .sources import SOURCES, resolve_input

    if str(spec) not in SOURCES and is_statistics_path(spec):
        stats = load_statistics(spec, flag=name)
        return stats, stats.label
    return resolve_input(spec, name)


def save_statistics(folder, extractor: str = "inception-v3-compat", out_npz=None, weights=None, *,
                    batch_size: int = 64, cuda: bool | None = None) -> Path:
    """Write the FID statistics (float64 ``mu``, ``sigma`` of the extractor's FID layer) of a folder of images (or
    a named source) to ``out_npz``, with what made them (extractor, layer, image count and shape), in the form
    :func:`check_reference` and the metrics read.  The features go through the same path as FID against the folder
    itself, so FID against the file equals FID against the folder (tests/test_quality_reference.py)."""
    from .extractors import Extractor
    from .features import FeatureSet
    from .sources import resolve_input

    if out_npz is None or not is_statistics_path(out_npz):
        raise UserError(f"save_statistics: give the output file as a path ending in .npz (got {out_npz})")
    images, _ = resolve_input(folder, "real")
    ex = Extractor(extractor, weights, cuda)
    layer = ex.layer_for("fid")
    if layer is None:
        raise UserError(f"feature extractor {ex.name!r} provides no FID layer")
    stats = FeatureSet(images, ex, [layer], batch_size=batch_size).statistics(layer)
    return write_statistics(out_npz, stats["mu"], stats["sigma"], extractor=ex.name, layer=layer,
                            n_images=images.n, image_shape=images.shape)


__all__ = ["QualityReference", "CheckedReference", "check_reference", "check_extractor", "check_image_folder",
           "check_clip", "check_state_dict", "read_prompts_file", "fid_layer_and_dim", "fid_dim_of",
           "file_identity", "resolve_real", "save_statistics", "ReferenceStatistics", "load_statistics",
           "NEEDS_REAL_IMAGES", "STATISTICS_NOTE"]
