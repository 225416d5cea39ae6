"""Registry of quality metrics: name -> callable returning one flat dict of named values.

Every metric reports how many images (``n_images``) — or, for rankings, candidates (``n_candidates``) — it used,
e.g. ``compute("fid", images, reference, extractor="digits-cnn") == {"fid": 12.3, "n_images": 1000, ...}``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import partial
from typing import Callable

from flexiffusion.errors import UserError

COUNT_KEYS = ("n_images", "n_candidates")


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., dict]
    summary: str


METRICS: dict[str, Metric] = {}


def register_metric(name: str, fn: Callable[..., dict], summary: str = "") -> Metric:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"metric name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    if not callable(fn):
        raise ValueError(f"metric {name!r}: fn must be callable")
    METRICS[name] = Metric(name, fn, summary)
    return METRICS[name]


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        raise UserError(f"unknown metric {name!r}; valid: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def compute(name: str, *args, **kwargs) -> dict:
    """Run metric ``name`` and check its result is a flat dict with a count of what it used."""
    out = get_metric(name).fn(*args, **kwargs)
    if not isinstance(out, dict) or not any(k in out for k in COUNT_KEYS):
        raise TypeError(f"metric {name!r} must return a dict with one of {COUNT_KEYS}")
    for k, v in out.items():
        if not isinstance(v, (numbers.Number, str)):
            raise TypeError(f"metric {name!r}: value {k!r} is a {type(v).__name__}, not a number or string")
    return out


def _rfid(evaluator, plan) -> dict:
    return evaluator(plan)


def _register_builtins() -> None:
    from .class_consistency import class_consistency
    from .clip_score import clip_score
    from .fidelity import fidelity
    from .pixel import mse
    from .ranking import kendall_tau
    from .similarity import lpips, psnr, ssim

    register_metric("fid", partial(fidelity, metrics=("fid",)), "Fréchet distance of features (torch-fidelity)")
    register_metric("kid", partial(fidelity, metrics=("kid",)), "kernel inception distance, polynomial kernel")
    register_metric("prc", partial(fidelity, metrics=("prc",)), "precision / recall / F-score (k = 3 neighbours)")
    register_metric("isc", partial(fidelity, input2=None, metrics=("isc",)), "Inception Score (10 splits)")
    register_metric("fidelity", partial(fidelity, metrics=("fid", "kid", "prc", "isc")), "FID, KID, PRC and IS")
    register_metric("rfid", _rfid, "relative FID against the cached teacher: rfid(RelativeFID, plan)")
    register_metric("mse", mse, "pixel MSE on [0, 1] against paired (same-seed) images")
    register_metric("psnr", psnr, "mean per-image PSNR (dB, data range 1) against paired (same-seed) images")
    register_metric("ssim", ssim, "mean per-image SSIM (Gaussian window 11) against paired (same-seed) images")
    register_metric("lpips", lpips, "mean per-image LPIPS against paired images (local backbone weights only)")
    register_metric("clip_score", clip_score, "100 * max(cos(image, prompt), 0), open_clip")
    register_metric("class_consistency", class_consistency, "share of samples classified as the requested class")
    register_metric("kendall_tau", kendall_tau, "Kendall's tau-b between two score lists, with p-value")


_register_builtins()
