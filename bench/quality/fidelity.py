"""FID, KID, precision/recall and Inception Score from (cached) features, through torch-fidelity's own formulas.

``fidelity(input1, input2, metrics=...)`` is ``torch_fidelity.calculate_metrics`` split into its stages so that the
reference side (real data) is extracted once and cached: features -> statistics -> metric.  Convention as in
torch-fidelity: ``input1`` is generated, ``input2`` the reference (precision asks "is a generated sample in the
real manifold?").  The result is one flat dict, e.g. ``{"fid": 12.3, "n_images": 1000, "n_reference": 1437}``.
"""
from __future__ import annotations

from bench.cache import Cache
from flexiffusion.errors import UserError

from .extractors import DEFAULT_EXTRACTOR, Extractor
from .features import FeatureSet
from .images import ImageSet, as_images, check_same_kind, require_count

FIDELITY_METRICS = ("fid", "kid", "prc", "isc")
BINARY = ("fid", "kid", "prc")
KID_SUBSETS, KID_SUBSET_SIZE, PRC_NEIGHBORHOOD, ISC_SPLITS, RNG_SEED = 100, 1000, 3, 10, 2020
# Fewest images per input: a covariance needs 2, the k-th neighbour ball needs k + 1, IS needs one per split.
MIN_IMAGES = {"fid": 2, "kid": 2, "prc": PRC_NEIGHBORHOOD + 1, "isc": ISC_SPLITS}


def fid_from_statistics(stats1: dict, stats2: dict) -> float:
    """Fréchet distance of two Gaussians (torch-fidelity's ``fid_statistics_to_metric``)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return fid_statistics_to_metric(stats1, stats2, False)[KEY_METRIC_FID]


def check_metrics(metrics, need_input2: bool = True) -> tuple[str, ...]:
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in FIDELITY_METRICS]
    if unknown or not metrics:
        raise UserError(f"unknown fidelity metric(s) {unknown or metrics}; valid: {', '.join(FIDELITY_METRICS)}")
    return metrics


def check_counts(metrics, images1: ImageSet, images2: ImageSet | None) -> None:
    for m in metrics:
        require_count(images1, MIN_IMAGES[m], m.upper())
        if m in BINARY and images2 is not None:
            require_count(images2, MIN_IMAGES[m], m.upper())


def layers_for(extractor: Extractor, metrics) -> dict[str, str]:
    layers = {m: extractor.layer_for(m) for m in metrics}
    missing = [m for m, l in layers.items() if l is None]
    if missing:
        raise UserError(f"feature extractor {extractor.name!r} provides no layer for {', '.join(missing)}")
    return layers


def fidelity_from_features(fs1: FeatureSet, fs2: FeatureSet | None, metrics, layers: dict[str, str]) -> dict:
    """The flat metric dict from two feature sets (``fs2`` may be None for IS only)."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    out: dict = {}
    if "fid" in metrics:
        out["fid"] = fid_from_statistics(fs1.statistics(layers["fid"]), fs2.statistics(layers["fid"]))
    if "kid" in metrics:
        subset = min(KID_SUBSET_SIZE, fs1.n, fs2.n)
        kid = kid_features_to_metric(fs1.features(layers["kid"]), fs2.features(layers["kid"]), kid_subsets=KID_SUBSETS,
                                     kid_subset_size=subset, rng_seed=RNG_SEED, verbose=False)
        out.update(kid_mean=kid["kernel_inception_distance_mean"], kid_std=kid["kernel_inception_distance_std"],
                   kid_subset_size=subset)
    if "prc" in metrics:
        prc = prc_features_to_metric(fs1.features(layers["prc"]), fs2.features(layers["prc"]),
                                     prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True, verbose=False)
        out.update(precision=prc["precision"], recall=prc["recall"], f_score=prc["f_score"])
    if "isc" in metrics:
        isc = isc_features_to_metric(fs1.features(layers["isc"]), ISC_SPLITS, True, RNG_SEED)
        out.update(isc_mean=isc["inception_score_mean"], isc_std=isc["inception_score_std"])
    out["n_images"] = fs1.n
    if fs2 is not None:
        out["n_reference"] = fs2.n
    return out


def fid_against_statistics(stats: dict, reference, extractor: str = "") -> float:
    """FID of candidate statistics ``{"mu", "sigma"}`` against a :class:`ReferenceStatistics` (float64 both sides;
    a dimension mismatch is one UserError line)."""
    import numpy as np

    mu = np.asarray(stats["mu"], np.float64)
    reference.require_dim(int(mu.shape[0]), extractor or "the extractor")
    return fid_from_statistics({"mu": mu, "sigma": np.asarray(stats["sigma"], np.float64)}, reference.as_dict())


def _fidelity_vs_statistics(input1, stats, metrics, extractor, weights_path, batch_size, cuda, value_range) -> dict:
    unavailable = [m for m in metrics if m in BINARY and m != "fid"]
    if unavailable:
        raise UserError(f"{', '.join(m.upper() for m in unavailable)} need the real images' features, not a "
                        f"statistics file ({stats.path}): pass a folder of real images (FID and IS work with the file)")
    images1 = as_images(input1, "input1", value_range)
    check_counts(metrics, images1, None)
    ex = extractor if isinstance(extractor, Extractor) else Extractor(extractor, weights_path, cuda)
    layers = layers_for(ex, metrics)
    fs1 = FeatureSet(images1, ex, layers.values(), batch_size=batch_size)
    out = fidelity_from_features(fs1, None, [m for m in metrics if m != "fid"], layers)
    if "fid" in metrics:
        out["fid"] = fid_against_statistics(fs1.statistics(layers["fid"]), stats, ex.name)
    if stats.n_images is not None:
        out["n_reference"] = stats.n_images
    return out


def fidelity(input1, input2=None, metrics=("fid",), *, extractor: str | Extractor = DEFAULT_EXTRACTOR,
             weights_path=None, reference_source: str | None = "input2", batch_size: int = 64,
             cuda: bool | None = None, cache_dir=None, cache: bool = True, value_range=(0.0, 1.0)) -> dict:
    """FID / KID / precision-recall / IS of ``input1`` against ``input2`` (tensors or folders).

    ``input2`` is the reference: its features and statistics are cached under ``reference_source`` (None: not
    cached).  It may also be FID statistics (an ``.npz`` path or a :class:`ReferenceStatistics`): then FID and IS
    only (KID and precision / recall need the real features: one UserError line).  Inputs are validated before
    anything is extracted or written.
    """
    from .statistics import ReferenceStatistics, is_statistics_path, load_statistics

    metrics = check_metrics(metrics)
    if is_statistics_path(input2):
        input2 = load_statistics(input2, flag="input2")
    if isinstance(input2, ReferenceStatistics):
        return _fidelity_vs_statistics(input1, input2, metrics, extractor, weights_path, batch_size, cuda,
                                       value_range)
    images1 = as_images(input1, "input1", value_range)
    images2 = None if input2 is None else as_images(input2, "input2", value_range)
    if images2 is None and any(m in BINARY for m in metrics):
        raise UserError(f"{', '.join(m for m in metrics if m in BINARY)} compare two image sets: give input2")
    if images2 is not None:
        check_same_kind(images1, images2)
    check_counts(metrics, images1, images2)
    ex = extractor if isinstance(extractor, Extractor) else Extractor(extractor, weights_path, cuda)
    layers = layers_for(ex, metrics)
    store = Cache(cache_dir, enabled=cache)
    fs1 = FeatureSet(images1, ex, layers.values(), batch_size=batch_size)
    fs2 = None if images2 is None else FeatureSet(images2, ex, [layers[m] for m in metrics if m in BINARY],
                                                  source=reference_source, cache=store, batch_size=batch_size)
    return fidelity_from_features(fs1, fs2, metrics, layers)
