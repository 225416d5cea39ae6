"""Quality metrics: FID / KID / precision-recall / IS (torch-fidelity), rFID against a cached teacher, CLIP score,
class consistency, pixel MSE, per-image PSNR / SSIM / LPIPS against paired images (torchmetrics) and Kendall's tau;
all in one registry (:mod:`bench.quality.registry`).  A model's quality reference (real data: source, folder or FID
statistics file; extractor weights; CLIP; prompts) is checked before any sampling by
:func:`bench.quality.reference.check_reference`.

Heavy libraries (torch-fidelity, open_clip, scipy, torchmetrics) are imported on first use, not here.
"""
from bench.cache import Cache, cache_dir
from .class_consistency import class_consistency
from .clip_score import ClipScorer, clip_score
from .extractors import DEFAULT_EXTRACTOR, Extractor, available_extractors
from .features import FeatureSet, fid_statistics
from .fidelity import fid_from_statistics, fidelity, fidelity_from_features
from .images import ImageSet, as_images
from .pixel import mse
from .ranking import kendall_tau
from .registry import compute, get_metric, register_metric
from .similarity import lpips, psnr, ssim
from .reference import CheckedReference, QualityReference, check_reference, resolve_real, save_statistics
from .rfid import RelativeFID, TeacherSpec, teacher_plan
from .statistics import ReferenceStatistics, load_statistics

__all__ = [
    "Cache", "cache_dir", "class_consistency", "ClipScorer", "clip_score", "DEFAULT_EXTRACTOR", "Extractor",
    "available_extractors", "FeatureSet", "fid_statistics", "fid_from_statistics", "fidelity",
    "fidelity_from_features", "ImageSet", "as_images", "mse", "psnr", "ssim", "lpips", "kendall_tau", "compute",
    "get_metric", "register_metric", "RelativeFID", "TeacherSpec", "teacher_plan", "CheckedReference", "QualityReference",
    "check_reference", "resolve_real", "save_statistics", "ReferenceStatistics", "load_statistics",
]
