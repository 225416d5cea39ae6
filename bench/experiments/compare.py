"""A ``compare`` pair of an experiment: FID(a) - FID(b) with a paired bootstrap over images (both rows sampled from
the same seeds; bench.quality.bootstrap.bootstrap_difference), stored as rows of experiment "comparison" under
``compare/<hash of both rows' keys and the bootstrap>``."""
from __future__ import annotations

from .cells import Comparison


class _NoFeatures(Exception):
    """A row's image features are not in the cache."""


def paired_difference(ka: str, kb: str, store, cache_dir=None, b: int = 200):
    """FID(row ``ka``) - FID(row ``kb``) with a paired bootstrap over their images
    (:class:`bench.quality.bootstrap.Spread`), from the image features both rows kept in the cache; None when the
    cache does not hold them.  Stores nothing: :func:`compare_pair` stores a spec's pairs, a report computes the
    differences against its reference row the same way (seeded: the same numbers)."""
    from bench.cache import Cache
    from bench.quality import Extractor, FeatureSet
    from bench.quality.bootstrap import bootstrap_difference
    from bench.quality.sources import resolve_input
    from bench.rows import row_features

    fa, fb = row_features(ka, cache_dir), row_features(kb, cache_dir)
    if fa is None or fb is None:
        return None
    setting = store.get(ka)[0]["extra"]["setting"]
    ex = Extractor(setting["extractor"])
    real, label = resolve_input(setting["real"], "real")
    ref = FeatureSet(real, ex, [ex.layer_for("fid")], source=label,
                     cache=Cache(cache_dir)).features(ex.layer_for("fid"))
    return bootstrap_difference(fa, fb, ref, b=b)


def compare_pair(a: str, b: str, cells: dict, store, options) -> Comparison:
    from bench.cache import stable_hash
    from bench.results import result_key

    ca, cb = cells.get(a), cells.get(b)
    missing = [c.label for c in (ca, cb) if c is None or c.status not in ("measured", "reused")]
    if missing:
        return Comparison(a, b, reason=f"no quality rows for {', '.join(missing)}")
    ka, kb = ca.keys[-1], cb.keys[-1]
    key = result_key("compare", stable_hash({"a": ka, "b": kb, "labels": [a, b], "b_boot": options.bootstrap,
                                             "interval": "normal"}))

    def rows() -> list[dict]:   # only when not stored: a stored comparison needs no features (a new cache)
        d = paired_difference(ka, kb, store, options.cache_dir, options.bootstrap)
        if d is None:
            raise _NoFeatures
        first = store.get(ka)[0]
        common = {"experiment": "comparison", "method": f"{a} - {b}", "model": first["model"],
                  "weights": first["weights"], "n_images": first["n_images"], "seeds": first["seeds"],
                  "extra": {"a": ka, "b": kb, "b_resamples": d.b, "level": d.level, "paired": "same seeds",
                            "interval": "normal", "significant": d.significant}}
        return [{**common, "metric": m, "value": v} for m, v in
                (("fid_diff", d.value), ("fid_diff_low", d.low), ("fid_diff_high", d.high), ("fid_diff_sd", d.sd))]

    try:
        store.get_or_put(key, rows)
    except _NoFeatures:
        return Comparison(a, b, reason="image features of a row are not in the cache: remeasure it (new cache)")
    return Comparison(a, b, key)
