"""Per-image similarity to the teacher: PSNR, SSIM and LPIPS of image ``i`` against the teacher's image ``i``.

What cache-dit, pruna and TeaCache report next to FID: how close each accelerated image stays to the image the
unaccelerated model makes from the same seed.  Pairs are compared on the [0, 1] scale (uint8 / 255); a row reports
the mean over its images with a bootstrap interval (:func:`bench.quality.bootstrap.bootstrap_mean`, bench.rows).

* **PSNR** (dB) = ``10 log10(1 / MSE)`` per image, data range 1 (torchmetrics' ``peak_signal_noise_ratio``, float64).
  An image equal to the teacher's has MSE 0 and PSNR **+inf** (no cap: the teacher against itself is inf); a mean
  over images with an inf is inf and gets no interval.
* **SSIM** (Wang et al. 2004) per image: torchmetrics' ``structural_similarity_index_measure`` with its defaults
  (Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, reflected borders cropped), data range 1, float64, averaged
  over the image's pixels and channels.  1 for identical images.
* **LPIPS** (Zhang et al. 2018) per image: torchmetrics' LPIPS head (its linear layers ship inside torchmetrics) on
  torchvision's ImageNet backbone (AlexNet by default), which is **read only from a local file**, never downloaded:
  ``$FLEXBENCH_LPIPS_WEIGHTS`` when set, else torch hub's checkpoint path
  (``<torch.hub.get_dir()>/checkpoints/alexnet-owt-7be5be79.pth``, where torchvision itself would put it).  Without
  that file the value is the text ``"needs <path>"`` (:func:`lpips_missing`), which a row stores and a cell shows.
  Grayscale images are repeated to three channels; images under 64 pixels a side are resized to 64 x 64 (bilinear,
  as torch-fidelity's LPIPS does: AlexNet's pooling needs that much).  0 for identical images.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from flexiffusion.errors import UserError

from .images import as_images, check_same_kind

LPIPS_ENV = "FLEXBENCH_LPIPS_WEIGHTS"
# torchvision's ImageNet checkpoint of each LPIPS backbone (the file name of its weights' URL)
LPIPS_BACKBONES = {"alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
                   "vgg": ("vgg16", "vgg16-397923af.pth"),
                   "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")}
LPIPS_MIN_SIDE = 64
SSIM_MIN_SIDE = 6            # torchmetrics reflects 5 pixels of border for its 11-pixel window
PIXELS_PER_CHUNK = 1 << 22   # float64 values per chunk of image pairs (bounded memory for large images)


def _pairs(images, reference, what: str):
    a, b = as_images(images, "images"), as_images(reference, "reference")
    check_same_kind(a, b)
    if a.n != b.n:
        raise UserError(f"{what} pairs images by seed: {a.name} has {a.n} images, {b.name} {b.n}; give both the "
                        "same seeds")
    if a.n == 0:
        raise UserError(f"{what} needs at least 1 image pair")
    return a.tensor(), b.tensor()


def _chunks(ta: torch.Tensor, tb: torch.Tensor, dtype=torch.float64):
    """Pairs of [0, 1] float chunks."""
    step = max(1, PIXELS_PER_CHUNK // max(1, ta[0].numel()))
    for i in range(0, len(ta), step):
        yield ta[i:i + step].to(dtype) / 255.0, tb[i:i + step].to(dtype) / 255.0


def psnr_per_image(images, reference) -> np.ndarray:
    """PSNR in dB of each image against its pair (data range 1); +inf for an identical pair."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    ta, tb = _pairs(images, reference, "PSNR")
    out = [peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3)) for x, y in _chunks(ta, tb)]
    return torch.cat(out).numpy()


def ssim_per_image(images, reference) -> np.ndarray:
    """SSIM of each image against its pair (Gaussian window 11, sigma 1.5, data range 1)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ta, tb = _pairs(images, reference, "SSIM")
    if min(ta.shape[2:]) < SSIM_MIN_SIDE:
        raise UserError(f"SSIM's 11-pixel window needs images of at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} "
                        f"pixels, got {tuple(ta.shape[2:])}")
    out = [structural_similarity_index_measure(x, y, data_range=1.0, reduction="none") for x, y in _chunks(ta, tb)]
    return torch.cat(out).numpy()


# ---- LPIPS ---------------------------------------------------------------------------------------------------------
def lpips_weights_path(net: str = "alex") -> Path:
    """Where the LPIPS backbone's weights are looked for: ``$FLEXBENCH_LPIPS_WEIGHTS``, else torch hub's checkpoint
    path of torchvision's ImageNet file (nothing is looked up on the network)."""
    if net not in LPIPS_BACKBONES:
        raise UserError(f"unknown LPIPS network {net!r}: choose one of {', '.join(LPIPS_BACKBONES)}")
    given = os.environ.get(LPIPS_ENV)
    if given:
        return Path(given).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net][1]


def lpips_missing(net: str = "alex") -> str:
    """``""`` when the backbone's weights file is here, else the text a row stores for LPIPS: ``needs <path>``."""
    path = lpips_weights_path(net)
    return "" if path.is_file() else f"needs {path}"


def _backbone_state(model: torch.nn.Module, path: Path, arch: str) -> dict:
    """torchvision's ``features.<i>.<param>`` of the checkpoint, renamed to torchmetrics' ``slice<k>.<i>.<param>``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:   # a truncated or foreign file: name it, say what it should be
        raise UserError(f"{path}: not a readable torchvision {arch} checkpoint ({type(exc).__name__}); replace it "
                        f"with torchvision's ImageNet weights of {arch}") from None
    out = {}
    for name, value in model.state_dict().items():
        source = "features." + name.split(".", 1)[1]
        if source not in state or state[source].shape != value.shape:
            problem = "misses" if source not in state else "has another shape for"
            raise UserError(f"{path}: {problem} {source}: not torchvision's {arch} checkpoint; replace it with "
                            f"torchvision's ImageNet weights of {arch}")
        out[name] = state[source]
    return out


def lpips_model(net: str = "alex", resize: int | None = None) -> torch.nn.Module:
    """torchmetrics' LPIPS network with the backbone read from :func:`lpips_weights_path` (UserError naming the file
    when it is not there); built with a random backbone first, so torchvision never downloads anything."""
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    missing = lpips_missing(net)
    if missing:
        raise UserError(f"LPIPS {missing} (torchvision's ImageNet weights of {LPIPS_BACKBONES[net][0]}; or set "
                        f"{LPIPS_ENV}=FILE): nothing is downloaded")
    model = _NoTrainLpips(net=net, pnet_rand=True, resize=resize)
    path = lpips_weights_path(net)
    model.net.load_state_dict(_backbone_state(model.net, path, LPIPS_BACKBONES[net][0]))
    return model.eval()


def lpips_per_image(images, reference, net: str = "alex", batch_size: int = 64) -> np.ndarray:
    """LPIPS of each image against its pair; UserError naming the weights file when it is not here."""
    ta, tb = _pairs(images, reference, "LPIPS")
    small = min(ta.shape[2:]) < LPIPS_MIN_SIDE
    model = lpips_model(net, resize=LPIPS_MIN_SIDE if small else None)
    out = []
    with torch.no_grad():
        for i in range(0, len(ta), batch_size):
            x, y = (t[i:i + batch_size].float() / 255.0 for t in (ta, tb))
            if x.shape[1] == 1:
                x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
            out.append(model(x, y, normalize=True).reshape(-1).double())
    return torch.cat(out).numpy()


def lpips_setting(net: str = "alex", shape=None) -> dict:
    """How LPIPS is (or would be) measured, for a row's ``extra`` and key: network, backbone file identity or what
    is missing, resize."""
    from .reference import file_identity

    missing = lpips_missing(net)
    out = {"net": net, "weights": missing or file_identity(lpips_weights_path(net))}
    if shape is not None and min(shape[-2:]) < LPIPS_MIN_SIDE:
        out["resize"] = LPIPS_MIN_SIDE
    return out


# ---- all three -----------------------------------------------------------------------------------------------------
def per_image(images, reference, lpips: str | None = "alex") -> dict:
    """``{"psnr_db": array, "ssim": array, "lpips": array or "needs <file>"}`` (no LPIPS key when ``lpips`` is
    None); one value per image pair."""
    out = {"psnr_db": psnr_per_image(images, reference), "ssim": ssim_per_image(images, reference)}
    if lpips is not None:
        missing = lpips_missing(lpips)
        out["lpips"] = missing or lpips_per_image(images, reference, lpips)
    return out


def mean(values) -> float | str:
    """The mean of per-image values (a text, e.g. a missing file, stays the text; an inf makes it inf)."""
    return values if isinstance(values, str) else float(np.mean(values))


def psnr(images, reference) -> dict:
    """``{"psnr_db": mean PSNR in dB, "n_images"}`` of paired (same-seed) images."""
    values = psnr_per_image(images, reference)
    return {"psnr_db": mean(values), "n_images": len(values)}


def ssim(images, reference) -> dict:
    """``{"ssim": mean SSIM, "n_images"}`` of paired (same-seed) images."""
    values = ssim_per_image(images, reference)
    return {"ssim": mean(values), "n_images": len(values)}


def lpips(images, reference, net: str = "alex") -> dict:
    """``{"lpips": mean LPIPS or "needs <file>", "n_images"}`` of paired (same-seed) images."""
    missing = lpips_missing(net)
    if missing:
        return {"lpips": missing, "n_images": len(_pairs(images, reference, "LPIPS")[0])}
    values = lpips_per_image(images, reference, net)
    return {"lpips": mean(values), "n_images": len(values)}
